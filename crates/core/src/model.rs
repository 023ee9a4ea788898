//! The records of the Users page: tenants, users, role templates, invitations, tombstones.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{Duration, OffsetDateTime};

use crate::{Email, IdentityId, Permissions, TemplateId, TenantId, UserId};

/// Why a role, status or similar keyword was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {input:?}; expected one of {expected}")]
pub struct KeywordError {
    /// What was being read (`"role"`, `"status"`, …).
    pub kind: &'static str,
    /// The refused text (cut to 64 characters).
    pub input: String,
    /// The accepted words.
    pub expected: &'static str,
}

/// The high-level role of a user ([roles (D1)](crate::Rule::Roles)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds every permission and CRM access; may manage users and templates.
    Admin,
    /// Holds only its direct grants and its role template's permissions.
    User,
}

impl Role {
    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = KeywordError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            _ => Err(KeywordError {
                kind: "role",
                input: s.chars().take(64).collect(),
                expected: "admin, user",
            }),
        }
    }
}

/// Where a user is in its lifecycle ([status transitions (D2)](crate::Rule::StatusTransitions)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Invited; has not accepted yet. Holds nothing.
    Invited,
    /// Accepted; may sign in and act.
    Active,
    /// Blocked; holds nothing but stays in the records.
    Suspended,
}

impl Status {
    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Invited => "invited",
            Status::Active => "active",
            Status::Suspended => "suspended",
        }
    }

    /// Whether an *edit* may move a user from `self` to `to` ([status transitions (D2)](crate::Rule::StatusTransitions)). Staying put is allowed;
    /// `invited → active` happens only by accepting an invitation, never by an edit.
    ///
    /// ```
    /// use tenantry_core::Status;
    /// assert!(Status::Active.edit_allows(Status::Suspended));
    /// assert!(!Status::Invited.edit_allows(Status::Active));
    /// ```
    #[must_use]
    pub const fn edit_allows(self, to: Status) -> bool {
        matches!(
            (self, to),
            (Status::Active, Status::Active | Status::Suspended)
                | (Status::Suspended, Status::Suspended | Status::Active)
                | (Status::Invited, Status::Invited)
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = KeywordError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "invited" => Ok(Status::Invited),
            "active" => Ok(Status::Active),
            "suspended" => Ok(Status::Suspended),
            _ => Err(KeywordError {
                kind: "status",
                input: s.chars().take(64).collect(),
                expected: "invited, active, suspended",
            }),
        }
    }
}

/// A tenant: one customer organisation with its seat limit ([seat limit (D9)](crate::Rule::SeatLimit)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// Its display name (used in invitation mail).
    pub name: String,
    /// The seat limit; `None` is unlimited ([seat limit (D9)](crate::Rule::SeatLimit)).
    pub user_limit: Option<u32>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The per-tenant counters that every change keeps current, and the version that guards
/// every commit ([concurrency (D16)](crate::Rule::Concurrency)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Bumped by every committed change; a commit succeeds only if it is unchanged.
    pub version: u64,
    /// User rows of any status ([seat limit (D9)](crate::Rule::SeatLimit)).
    pub seats_used: u32,
    /// Active admins ([last admin (D8)](crate::Rule::LastAdmin)).
    pub active_admins: u32,
}

/// A tenant with its counters: the snapshot every decision starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantState {
    /// The tenant.
    pub tenant: Tenant,
    /// Its counters and version.
    pub counters: Counters,
}

impl TenantState {
    /// Seat usage as the Users page shows it ([seat limit (D9)](crate::Rule::SeatLimit)).
    #[must_use]
    pub fn seat_usage(&self) -> SeatUsage {
        SeatUsage::new(self.counters.seats_used, self.tenant.user_limit)
    }
}

/// Seat usage ([seat limit (D9)](crate::Rule::SeatLimit)): used, limit, remaining and whether the tenant is at its limit.
///
/// ```
/// use tenantry_core::SeatUsage;
/// let s = SeatUsage::new(12, Some(10));
/// assert_eq!((s.remaining, s.at_limit), (Some(0), true));
/// assert_eq!(SeatUsage::new(3, None).remaining, None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatUsage {
    /// Rows that occupy a seat.
    pub used: u32,
    /// The limit; `None` is unlimited.
    pub limit: Option<u32>,
    /// Seats left (`None` when unlimited; 0 when at or over the limit).
    pub remaining: Option<u32>,
    /// Whether no invite can be made now (used ≥ limit).
    pub at_limit: bool,
}

impl SeatUsage {
    /// Computes usage from the count and the limit.
    #[must_use]
    pub fn new(used: u32, limit: Option<u32>) -> Self {
        let remaining = limit.map(|l| l.saturating_sub(used));
        Self {
            used,
            limit,
            remaining,
            at_limit: remaining == Some(0),
        }
    }
}

/// A user row: every column of the user table plus what the rules need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its id (never reused).
    pub id: UserId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Login and notification address, unique per tenant ([unique email (D3)](crate::Rule::UniqueEmail)).
    pub email: Email,
    /// Admin or user ([roles (D1)](crate::Rule::Roles)).
    pub role: Role,
    /// Lifecycle status ([status transitions (D2)](crate::Rule::StatusTransitions)).
    pub status: Status,
    /// The assigned role template, if any ([role templates (D12)](crate::Rule::RoleTemplates)).
    pub template_id: Option<TemplateId>,
    /// CRM access ([CRM access (D5)](crate::Rule::CrmAccess)); always true for admins.
    pub crm_access: bool,
    /// Direct grants ([permission set (D4)](crate::Rule::PermissionSet), [current access (D6)](crate::Rule::CurrentAccess)).
    pub grants: Permissions,
    /// When the row was created (the invite).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The last successful sign-in reported by the host ([sign-in (D14)](crate::Rule::SignIn)).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login: Option<OffsetDateTime>,
    /// When the newest invitation expires, while the user is invited ([invitations (D10)](crate::Rule::Invitations), [expired invitations (D20)](crate::Rule::ExpiredInvitations)).
    #[serde(with = "time::serde::rfc3339::option")]
    pub invite_expires_at: Option<OffsetDateTime>,
    /// The host's identity id of this person, unique per tenant, if the host attached one
    /// ([one person, several tenants (D28)](crate::Rule::OnePersonSeveralTenants)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityId>,
}

impl User {
    /// Whether this user is an active admin (what [last admin (D8)](crate::Rule::LastAdmin) counts).
    #[must_use]
    pub fn is_active_admin(&self) -> bool {
        self.role == Role::Admin && self.status == Status::Active
    }

    /// Whether this user's invitation has expired at `now` ([expired invitations (D20)](crate::Rule::ExpiredInvitations)).
    #[must_use]
    pub fn invitation_expired(&self, now: OffsetDateTime) -> bool {
        self.status == Status::Invited && self.invite_expires_at.is_some_and(|t| t <= now)
    }
}

/// The longest template name, in characters ([role templates (D12)](crate::Rule::RoleTemplates), [names (D22)](crate::Rule::Names)).
pub const MAX_TEMPLATE_NAME_LEN: usize = 64;

/// The longest tenant name, in characters ([names (D22)](crate::Rule::Names)).
pub const MAX_TENANT_NAME_LEN: usize = 100;

/// Why a tenant or template name was refused ([role templates (D12)](crate::Rule::RoleTemplates), [names (D22)](crate::Rule::Names)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty after trimming.
    #[error("the name is empty")]
    Empty,
    /// Longer than allowed.
    #[error("the name is {len} characters long; at most {max} are allowed")]
    TooLong {
        /// Its length in characters, after trimming.
        len: usize,
        /// The most allowed (64 for templates, 100 for tenants).
        max: usize,
    },
    /// Holds a control character (Unicode Cc) or a format character (Unicode Cf: zero-width
    /// characters, bidirectional controls, the byte-order mark), which would let two names
    /// that look the same exist side by side ([names (D22)](crate::Rule::Names)).
    #[error(
        "the name contains U+{:04X} ({}) at character {position}",
        u32::from(*character),
        if character.is_control() { "a control character" } else { "an invisible format character" }
    )]
    ForbiddenCharacter {
        /// The refused character.
        character: char,
        /// Its position: the 0-based index among the characters of the name as given.
        position: usize,
    },
}

/// The name errors of role templates (the same rules as every name, [names (D22)](crate::Rule::Names)).
pub type TemplateNameError = NameError;

/// Whether `c` is a Unicode format character (general category Cf), as of Unicode 16.
///
/// The core depends on no Unicode tables crate, so the Cf ranges are listed here; they change
/// rarely (Unicode 16 added none to those of 15.1).
#[must_use]
pub fn is_format_char(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Checks a name against [names (D22)](crate::Rule::Names): trimmed of surrounding white space, 1..=`max` characters, no
/// control (Cc) or format (Cf) character. Returns the trimmed name.
///
/// # Errors
/// [`NameError`] saying what is wrong, and for a refused character which one and where.
pub fn check_name(input: &str, max: usize) -> Result<&str, NameError> {
    let trimmed = input.trim();
    let lead = input
        .get(..input.len().saturating_sub(input.trim_start().len()))
        .map_or(0, |s| s.chars().count());
    if let Some((i, c)) = trimmed
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() || is_format_char(*c))
    {
        return Err(NameError::ForbiddenCharacter {
            character: c,
            position: lead.saturating_add(i),
        });
    }
    let len = trimmed.chars().count();
    if len == 0 {
        return Err(NameError::Empty);
    }
    if len > max {
        return Err(NameError::TooLong { len, max });
    }
    Ok(trimmed)
}

/// A tenant name: 1–100 characters after trimming, no control or format characters ([names (D22)](crate::Rule::Names)).
///
/// ```
/// use tenantry_core::{NameError, TenantName};
/// assert_eq!(TenantName::parse("  Acme Support ")?.as_str(), "Acme Support");
/// assert!(matches!(
///     TenantName::parse("Acme\u{202e}"),
///     Err(NameError::ForbiddenCharacter { character: '\u{202e}', position: 4 })
/// ));
/// # Ok::<(), NameError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantName(String);

impl TenantName {
    /// Validates a name (trimmed of surrounding white space).
    ///
    /// # Errors
    /// [`NameError`] saying why.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        check_name(input, MAX_TENANT_NAME_LEN).map(|s| Self(s.to_owned()))
    }

    /// The name (trimmed).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned string.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantName({:?})", self.0)
    }
}

impl FromStr for TenantName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for TenantName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TenantName::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A role template name: 1–64 characters, no control or format characters ([names (D22)](crate::Rule::Names)), unique per
/// tenant ignoring case ([role templates (D12)](crate::Rule::RoleTemplates)).
///
/// ```
/// use tenantry_core::TemplateName;
/// let n = TemplateName::parse(" Support agent ")?;
/// assert_eq!(n.as_str(), "Support agent");
/// assert_eq!(n.key(), "support agent");
/// # Ok::<(), tenantry_core::TemplateNameError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateName {
    display: String,
    key: String,
}

impl TemplateName {
    /// Validates a name (trimmed of surrounding white space).
    ///
    /// # Errors
    /// [`TemplateNameError`] saying why.
    pub fn parse(input: &str) -> Result<Self, TemplateNameError> {
        let trimmed = check_name(input, MAX_TEMPLATE_NAME_LEN)?;
        Ok(Self {
            display: trimmed.to_owned(),
            key: trimmed.to_lowercase(),
        })
    }

    /// A name read back from storage that was written before [names (D22)](crate::Rule::Names) refused format
    /// characters: it is kept as stored (trimmed), so an upgrade never makes an existing
    /// template unreadable. Stores use it only after [`TemplateName::parse`] refused the
    /// stored text; input from people always goes through `parse`.
    ///
    /// ```
    /// use tenantry_core::TemplateName;
    /// assert!(TemplateName::parse("Support\u{200b} agent").is_err());
    /// let old = TemplateName::stored("Support\u{200b} agent");
    /// assert_eq!(old.as_str(), "Support\u{200b} agent");
    /// ```
    #[must_use]
    pub fn stored(text: &str) -> Self {
        let trimmed = text.trim();
        Self {
            display: trimmed.to_owned(),
            key: trimmed.to_lowercase(),
        }
    }

    /// The name as typed (trimmed).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The case-insensitive key that must be unique per tenant.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for TemplateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for TemplateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TemplateName({:?})", self.display)
    }
}

impl FromStr for TemplateName {
    type Err = TemplateNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for TemplateName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.display)
    }
}

impl<'de> Deserialize<'de> for TemplateName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TemplateName::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A reusable permission set ([role templates (D12)](crate::Rule::RoleTemplates)). Users reference it; its permissions are read at every
/// check, never copied ([current access (D6)](crate::Rule::CurrentAccess)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleTemplate {
    /// Its id.
    pub id: TemplateId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its name.
    pub name: TemplateName,
    /// The permissions it grants.
    pub permissions: Permissions,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The SHA-256 hash of an invitation token; only this is stored ([invitations (D10)](crate::Rule::Invitations)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Lowercase hex, 64 characters.
    #[must_use]
    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", self.to_hex())
    }
}

/// How an invitation was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvitationKind {
    /// The first invitation, with the user row.
    Initial,
    /// A resend (rate limited, [invitations (D10)](crate::Rule::Invitations)).
    Resend,
}

/// What became of an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvitationState {
    /// Can still be accepted until it expires.
    Pending,
    /// Accepted (single use, [invitations (D10)](crate::Rule::Invitations)).
    Used,
    /// Invalidated by a resend, an email change, a delete or too many failed accept
    /// attempts ([accept attempts (D24)](crate::Rule::AcceptAttempts)).
    Revoked,
}

/// One issued invitation token (only its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// The token's hash.
    pub token_hash: TokenHash,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The invited user.
    pub user_id: UserId,
    /// Initial invite or resend.
    pub kind: InvitationKind,
    /// Pending, used or revoked.
    pub state: InvitationState,
    /// When it was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops being accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Sign-ups tried on this token with a wrong address ([accept attempts (D24)](crate::Rule::AcceptAttempts)); the
    /// [`MAX_ACCEPT_ATTEMPTS`]th revokes it.
    #[serde(default)]
    pub failed_attempts: u32,
}

/// Failed accept attempts (wrong address) after which an invitation's token dies ([accept attempts (D24)](crate::Rule::AcceptAttempts)).
pub const MAX_ACCEPT_ATTEMPTS: u32 = 5;

/// Who acted: a user of the tenant, or the host itself (billing, provisioning, sign-in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum ActorRef {
    /// A user of the tenant.
    User(UserId),
    /// The host application (no user acted).
    System,
}

/// What remains of a deleted user so hosts can attribute its records ([permanent delete (D11)](crate::Rule::PermanentDelete)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The deleted user's id.
    pub user_id: UserId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its address at deletion.
    pub email: Email,
    /// When it was deleted.
    #[serde(with = "time::serde::rfc3339")]
    pub deleted_at: OffsetDateTime,
    /// Who deleted it.
    pub deleted_by: ActorRef,
}

/// Settings of the rules that are configurable ([invitations (D10)](crate::Rule::Invitations)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// How long an invitation can be accepted (default 7 days).
    pub invite_ttl: Duration,
    /// At most this many resends to one user …
    pub resend_limit: u32,
    /// … within this window (default 3 in 10 minutes).
    pub resend_window: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            invite_ttl: Duration::days(7),
            resend_limit: 3,
            resend_window: Duration::minutes(10),
        }
    }
}
