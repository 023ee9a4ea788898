//! Listing the user table ([listing (D18)](tenantry_core::Rule::Listing)): filters, sort orders and keyset cursors.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tenantry_core::{Email, IdentityId, Role, Status, TemplateId, Tenant, TenantId, User, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

/// Rows per page when none is asked for ([listing (D18)](tenantry_core::Rule::Listing)).
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The most rows one page may hold ([listing (D18)](tenantry_core::Rule::Listing)).
pub const MAX_PAGE_SIZE: u32 = 500;

/// The order of the user table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    /// By email key.
    #[default]
    Email,
    /// By creation time.
    CreatedAt,
    /// By last login; users who never signed in come first in ascending order.
    LastLogin,
}

/// One page request of the user table ([listing (D18)](tenantry_core::Rule::Listing)). All filters combine with AND.
///
/// Start from [`UserQuery::default`] (everyone, by email, 50 a page) and set what the page
/// asks for. [`UserQuery::matches`] is what every backend's filter means:
///
/// ```
/// use tenantry_core::{Email, Permissions, Role, Status, TenantId, User, UserId};
/// # let now = time::macros::datetime!(2026-01-01 0:00 UTC);
/// let user = User {
///     id: UserId::from_parts(1_767_225_600_000, [2; 10]),
///     tenant_id: TenantId::from_parts(1_767_225_600_000, [1; 10]),
///     email: Email::parse("bob@acme.test")?, role: Role::User, status: Status::Invited,
///     template_id: None, crm_access: false, grants: Permissions::empty(),
///     created_at: now, last_login: None, invite_expires_at: Some(now + time::Duration::days(7)),
///     identity: None,
/// };
/// use tenantry_store::{SortBy, UserQuery};
///
/// let invited = UserQuery {
///     status: Some(Status::Invited),
///     email_contains: Some("ACME".into()), // ASCII case-insensitive
///     sort: SortBy::CreatedAt,
///     ..UserQuery::default()
/// };
/// assert!(invited.matches(&user));
/// let expired = UserQuery { invitation_expired_at: Some(now + time::Duration::days(8)), ..invited.clone() };
/// assert!(expired.matches(&user));
/// assert!(!UserQuery { role: Some(Role::Admin), ..invited }.matches(&user));
/// assert_eq!(UserQuery { limit: 9_999, ..UserQuery::default() }.effective_limit(), 500);
/// # Ok::<(), tenantry_core::EmailError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserQuery {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this role.
    pub role: Option<Role>,
    /// Only users referencing this template ([role templates (D12)](tenantry_core::Rule::RoleTemplates): who references a template).
    pub template_id: Option<TemplateId>,
    /// Only users with (or without) CRM access as stored.
    pub crm_access: Option<bool>,
    /// Only addresses whose key contains this text (ASCII case-insensitive).
    pub email_contains: Option<String>,
    /// Only users who never signed in or whose last login is before this time ([sign-in (D14)](tenantry_core::Rule::SignIn)).
    #[serde(with = "time::serde::rfc3339::option")]
    pub inactive_since: Option<OffsetDateTime>,
    /// Only invited users whose invitation expired at or before this time ([expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations)).
    #[serde(with = "time::serde::rfc3339::option")]
    pub invitation_expired_at: Option<OffsetDateTime>,
    /// The order.
    pub sort: SortBy,
    /// Reverse the order.
    pub descending: bool,
    /// Continue after this cursor (from the previous page's [`Page::next`]).
    pub after: Option<Cursor>,
    /// Rows per page, 1–500 (default 50).
    pub limit: u32,
}

impl Default for UserQuery {
    fn default() -> Self {
        Self {
            status: None,
            role: None,
            template_id: None,
            crm_access: None,
            email_contains: None,
            inactive_since: None,
            invitation_expired_at: None,
            sort: SortBy::Email,
            descending: false,
            after: None,
            limit: DEFAULT_PAGE_SIZE,
        }
    }
}

impl UserQuery {
    /// Whether a user passes every filter (the reference semantics all backends share).
    #[must_use]
    pub fn matches(&self, user: &User) -> bool {
        self.status.is_none_or(|s| user.status == s)
            && self.role.is_none_or(|r| user.role == r)
            && self.template_id.is_none_or(|t| user.template_id == Some(t))
            && self.crm_access.is_none_or(|c| user.crm_access == c)
            && self
                .email_contains
                .as_deref()
                .is_none_or(|needle| user.email.key().contains(&needle.to_ascii_lowercase()))
            && self
                .inactive_since
                .is_none_or(|t| user.last_login.is_none_or(|l| l < t))
            && self
                .invitation_expired_at
                .is_none_or(|t| user.invitation_expired(t))
    }

    /// The limit, clamped into 1..=500.
    #[must_use]
    pub fn effective_limit(&self) -> u32 {
        self.limit.clamp(1, MAX_PAGE_SIZE)
    }

    /// The sort key of a user under this query's order.
    #[must_use]
    pub fn cursor_of(&self, user: &User) -> Cursor {
        Cursor::of(self.sort, user)
    }
}

/// One page of results. Read a whole table by passing each page's [`Page::next`] on as
/// [`UserQuery::after`] until it is `None`:
///
/// ```
/// # fn block_on<F>(f: F) -> F::Output
/// # where F: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>> {
/// #     // The in-memory store never waits: polling with a no-op waker finishes each call.
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop {
/// #         if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
/// #             return out;
/// #         }
/// #     }
/// # }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> { block_on(async {
/// # use tenantry_core::decide::{self, Acting, Ctx, InviteRequest, NewInvite};
/// # use tenantry_core::{Email, Permissions, Policy, Role, Tenant, TenantId, TokenHash, UserId};
/// # use tenantry_store::{InMemoryStore, Store};
/// # let store = InMemoryStore::new();
/// # let now = time::macros::datetime!(2026-01-01 0:00 UTC);
/// # let tenant = TenantId::from_parts(1_767_225_600_000, [1; 10]);
/// # let ada = UserId::from_parts(1_767_225_600_000, [2; 10]);
/// # let new = Tenant { id: tenant, name: "Acme".into(), user_limit: None, created_at: now };
/// # store.commit(&decide::create_tenant(new, ada, Email::parse("ada@acme.test")?)?, &[]).await?;
/// # let admin = store.user(tenant, ada).await?.ok_or("no admin")?;
/// # let policy = Policy::default();
/// # for (n, email) in [(3u8, "bob@acme.test"), (4, "cy@acme.test")] {
/// #     let state = store.tenant(tenant).await?.ok_or("no tenant")?;
/// #     let ctx = Ctx { state: &state, now, policy: &policy };
/// #     let request = InviteRequest {
/// #         email: Email::parse(email)?, role: Role::User, template_id: None,
/// #         crm_access: false, grants: Permissions::empty(),
/// #     };
/// #     let new = NewInvite {
/// #         user_id: UserId::from_parts(1_767_225_600_000, [n; 10]),
/// #         token_hash: TokenHash([n; 32]),
/// #     };
/// #     let acting = Acting { user: &admin, template: None };
/// #     store.commit(&decide::invite(ctx, &acting, &request, None, false, new)?, &[]).await?;
/// # }
/// // A tenant with Ada (admin) and two invited users.
/// use tenantry_store::{Page, UserQuery};
///
/// let mut query = UserQuery { limit: 2, ..UserQuery::default() };
/// let mut emails = Vec::new();
/// loop {
///     let page: Page<_> = store.list_users(tenant, &query).await?;
///     emails.extend(page.items.iter().map(|u| u.email.to_string()));
///     let Some(next) = page.next else { break };
///     query.after = Some(next);
/// }
/// assert_eq!(emails, ["ada@acme.test", "bob@acme.test", "cy@acme.test"]);
/// # Ok(()) }) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T, C = Cursor> {
    /// The rows.
    pub items: Vec<T>,
    /// The cursor to pass for the next page ([`UserQuery::after`] for users); `None` on the
    /// last.
    pub next: Option<C>,
}

/// A keyset position in the user table: the sort key of the last row read and its id.
///
/// Its text form is opaque to hosts but stable, so it can travel in URLs; serde writes
/// it as that text.
///
/// ```
/// use tenantry_core::{Email, Permissions, Role, Status, TenantId, User, UserId};
/// # let now = time::macros::datetime!(2026-01-01 0:00 UTC);
/// let user = User {
///     id: UserId::from_parts(1_767_225_600_000, [2; 10]),
///     tenant_id: TenantId::from_parts(1_767_225_600_000, [1; 10]),
///     email: Email::parse("bob@acme.test")?, role: Role::User, status: Status::Invited,
///     template_id: None, crm_access: false, grants: Permissions::empty(),
///     created_at: now, last_login: None, invite_expires_at: Some(now + time::Duration::days(7)),
///     identity: None,
/// };
/// use tenantry_store::{Cursor, SortBy};
///
/// let cursor = Cursor::of(SortBy::Email, &user);
/// let text = cursor.to_string(); // e.g. `?after=…` in the next page's link
/// let back: Cursor = text.parse()?;
/// assert_eq!(back, cursor);
/// assert_eq!((back.sort(), back.user_id()), (SortBy::Email, user.id));
/// assert_eq!(serde_json::to_string(&cursor)?, format!("\"{text}\""));
/// assert!("e.not-hex.0".parse::<Cursor>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cursor {
    /// After this email key.
    Email(String, UserId),
    /// After this creation time (Unix nanoseconds).
    CreatedAt(i128, UserId),
    /// After this last login (Unix nanoseconds; `None` for never).
    LastLogin(Option<i128>, UserId),
}

impl Cursor {
    /// The cursor just after `user` in `sort` order.
    #[must_use]
    pub fn of(sort: SortBy, user: &User) -> Self {
        match sort {
            SortBy::Email => Cursor::Email(user.email.key().to_owned(), user.id),
            SortBy::CreatedAt => Cursor::CreatedAt(user.created_at.unix_timestamp_nanos(), user.id),
            SortBy::LastLogin => Cursor::LastLogin(
                user.last_login.map(OffsetDateTime::unix_timestamp_nanos),
                user.id,
            ),
        }
    }

    /// The order this cursor belongs to.
    #[must_use]
    pub fn sort(&self) -> SortBy {
        match self {
            Cursor::Email(..) => SortBy::Email,
            Cursor::CreatedAt(..) => SortBy::CreatedAt,
            Cursor::LastLogin(..) => SortBy::LastLogin,
        }
    }

    /// The user id part.
    #[must_use]
    pub fn user_id(&self) -> UserId {
        match self {
            Cursor::Email(_, id) | Cursor::CreatedAt(_, id) | Cursor::LastLogin(_, id) => *id,
        }
    }
}

/// Why a cursor string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid page cursor")]
pub struct CursorError;

fn hex_encode(s: &str) -> String {
    use fmt::Write as _;
    s.bytes()
        .fold(String::with_capacity(s.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn hex_decode(s: &str) -> Result<String, CursorError> {
    hex_decode_max(s, 254)
}

/// Decodes at most `max` bytes of hex-encoded UTF-8.
fn hex_decode_max(s: &str, max: usize) -> Result<String, CursorError> {
    if !s.len().is_multiple_of(2) || s.len() > 2 * max {
        return Err(CursorError);
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(CursorError)
        })
        .collect::<Result<Vec<u8>, _>>()?;
    String::from_utf8(bytes).map_err(|_| CursorError)
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cursor::Email(key, id) => write!(f, "e.{}.{}", hex_encode(key), id.as_uuid().simple()),
            Cursor::CreatedAt(t, id) => write!(f, "c.{t}.{}", id.as_uuid().simple()),
            Cursor::LastLogin(Some(t), id) => write!(f, "l.{t}.{}", id.as_uuid().simple()),
            Cursor::LastLogin(None, id) => write!(f, "l.-.{}", id.as_uuid().simple()),
        }
    }
}

impl FromStr for Cursor {
    type Err = CursorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, '.');
        let (Some(kind), Some(key), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CursorError);
        };
        let id = UserId::from_uuid(Uuid::try_parse(id).map_err(|_| CursorError)?);
        let time = |k: &str| k.parse::<i128>().map_err(|_| CursorError);
        match kind {
            "e" => Ok(Cursor::Email(hex_decode(key)?, id)),
            "c" => Ok(Cursor::CreatedAt(time(key)?, id)),
            "l" if key == "-" => Ok(Cursor::LastLogin(None, id)),
            "l" => Ok(Cursor::LastLogin(Some(time(key)?), id)),
            _ => Err(CursorError),
        }
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(CursorError))
    }
}

/// A keyset position in the listing of tenants, which is ordered by name, then id: the last
/// tenant read. Its text form (`t.<hex name>.<id>`) is opaque but stable, like [`Cursor`]'s.
///
/// ```
/// use tenantry_core::{Tenant, TenantId};
/// use tenantry_store::TenantCursor;
/// let tenant = Tenant {
///     id: TenantId::from_parts(1_767_225_600_000, [1; 10]),
///     name: "Acme".into(), user_limit: None,
///     created_at: time::macros::datetime!(2026-01-01 0:00 UTC),
/// };
/// let cursor = TenantCursor::of(&tenant);
/// let back: TenantCursor = cursor.to_string().parse()?;
/// assert_eq!(back, cursor);
/// assert_eq!((back.name.as_str(), back.id), ("Acme", tenant.id));
/// assert!("t.zz.0".parse::<TenantCursor>().is_err());
/// # Ok::<(), tenantry_store::CursorError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantCursor {
    /// The last tenant's name.
    pub name: String,
    /// The last tenant's id.
    pub id: TenantId,
}

impl TenantCursor {
    /// The position right after `tenant`.
    #[must_use]
    pub fn of(tenant: &Tenant) -> Self {
        Self {
            name: tenant.name.clone(),
            id: tenant.id,
        }
    }
}

/// Who a membership lookup is about ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Person {
    /// The person with this canonical address ([`Email::key`]): the users of every tenant
    /// whose address has this key.
    Email(Email),
    /// The person with this identity id: the users of every tenant the host attached it to.
    Identity(IdentityId),
}

/// One tenant where a person is a user ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)):
/// what a host needs to pick the tenant after its own sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The tenant's name.
    pub tenant_name: String,
    /// The person's user in that tenant.
    pub user_id: UserId,
    /// The user's address there.
    pub email: Email,
    /// The user's role there.
    pub role: Role,
    /// The user's status there.
    pub status: Status,
    /// The user's last sign-in there.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login: Option<OffsetDateTime>,
    /// The identity id the host attached to that user, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityId>,
}

impl Membership {
    /// The membership of `user`, a user of `tenant`.
    #[must_use]
    pub fn of(tenant: &Tenant, user: &User) -> Self {
        Self {
            tenant_id: tenant.id,
            tenant_name: tenant.name.clone(),
            user_id: user.id,
            email: user.email.clone(),
            role: user.role,
            status: user.status,
            last_login: user.last_login,
            identity: user.identity.clone(),
        }
    }

    /// The position right after this membership in a listing (tenant name, then id).
    #[must_use]
    pub fn cursor(&self) -> TenantCursor {
        TenantCursor {
            name: self.tenant_name.clone(),
            id: self.tenant_id,
        }
    }
}

impl fmt::Display for TenantCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "t.{}.{}",
            hex_encode(&self.name),
            self.id.as_uuid().simple()
        )
    }
}

impl FromStr for TenantCursor {
    type Err = CursorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, '.');
        let (Some("t"), Some(name), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CursorError);
        };
        // A tenant name is at most 100 characters of at most 4 bytes each (D22).
        Ok(Self {
            name: hex_decode_max(name, 400)?,
            id: TenantId::from_uuid(Uuid::try_parse(id).map_err(|_| CursorError)?),
        })
    }
}

impl Serialize for TenantCursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TenantCursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(CursorError))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tenantry_core::{Email, Permissions};
    use time::macros::datetime;

    fn user() -> User {
        User {
            id: UserId::from_parts(1_767_225_600_000, [2; 10]),
            tenant_id: TenantId::from_parts(1_767_225_600_000, [1; 10]),
            email: Email::parse("Bob@Acme.test").unwrap(),
            role: Role::User,
            status: Status::Active,
            template_id: Some(TemplateId::from_parts(1_767_225_600_000, [3; 10])),
            crm_access: true,
            grants: Permissions::empty(),
            created_at: datetime!(2026-01-01 0:00 UTC),
            last_login: Some(datetime!(2026-02-01 0:00 UTC)),
            invite_expires_at: None,
            identity: None,
        }
    }

    #[test]
    fn every_filter_is_an_equality_or_a_strict_bound() {
        let u = user();
        let q = UserQuery::default;
        assert!(
            UserQuery {
                role: Some(Role::User),
                ..q()
            }
            .matches(&u)
        );
        assert!(
            !UserQuery {
                role: Some(Role::Admin),
                ..q()
            }
            .matches(&u)
        );
        assert!(
            UserQuery {
                template_id: u.template_id,
                ..q()
            }
            .matches(&u)
        );
        let other = TemplateId::from_parts(1_767_225_600_000, [4; 10]);
        assert!(
            !UserQuery {
                template_id: Some(other),
                ..q()
            }
            .matches(&u)
        );
        assert!(
            !UserQuery {
                crm_access: Some(false),
                ..q()
            }
            .matches(&u)
        );
        assert!(
            UserQuery {
                email_contains: Some("BOB@".into()),
                ..q()
            }
            .matches(&u)
        );
        let login = u.last_login.unwrap();
        // Inactive since a time: a last login strictly before it.
        assert!(
            UserQuery {
                inactive_since: Some(login + time::Duration::SECOND),
                ..q()
            }
            .matches(&u)
        );
        assert!(
            !UserQuery {
                inactive_since: Some(login),
                ..q()
            }
            .matches(&u)
        );
        assert!(
            !UserQuery {
                inactive_since: Some(login - time::Duration::SECOND),
                ..q()
            }
            .matches(&u)
        );
        let never = User {
            last_login: None,
            ..u
        };
        assert!(
            UserQuery {
                inactive_since: Some(login),
                ..q()
            }
            .matches(&never)
        );
    }

    #[test]
    fn every_cursor_kind_survives_its_text() {
        let u = user();
        for sort in [SortBy::Email, SortBy::CreatedAt, SortBy::LastLogin] {
            let c = Cursor::of(sort, &u);
            assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        }
        let never = Cursor::of(
            SortBy::LastLogin,
            &User {
                last_login: None,
                ..user()
            },
        );
        assert_eq!(never, Cursor::LastLogin(None, u.id));
        assert_eq!(never.to_string().parse::<Cursor>().unwrap(), never);
        let id = u.id.as_uuid().simple();
        assert_eq!(
            format!("c.-5.{id}").parse::<Cursor>().unwrap(),
            Cursor::CreatedAt(-5, u.id)
        );
        assert!(format!("l.x.{id}").parse::<Cursor>().is_err());
        assert!(format!("c.-.{id}").parse::<Cursor>().is_err());
        assert!(format!("x.00.{id}").parse::<Cursor>().is_err());
    }

    #[test]
    fn a_tenant_cursor_holds_the_longest_name_and_no_more() {
        let id = TenantId::from_parts(1_767_225_600_000, [1; 10]);
        // 100 characters of 4 bytes each: the longest tenant name (D22).
        let name = "\u{1F600}".repeat(100);
        let c = TenantCursor { name, id };
        assert_eq!(c.to_string().parse::<TenantCursor>().unwrap(), c);
        let longer = TenantCursor {
            name: format!("{}a", c.name),
            id,
        };
        assert!(longer.to_string().parse::<TenantCursor>().is_err());
        let simple = id.as_uuid().simple();
        assert!(
            format!("t.616.{simple}").parse::<TenantCursor>().is_err(),
            "odd hex length"
        );
        assert!(
            format!("t.ff.{simple}").parse::<TenantCursor>().is_err(),
            "not UTF-8"
        );
        assert_eq!(
            format!("t.6162.{simple}")
                .parse::<TenantCursor>()
                .unwrap()
                .name,
            "ab"
        );
        // The user cursors' email keys stay at most 254 bytes.
        let key = "a".repeat(255);
        assert!(
            format!("e.{}.{simple}", hex_encode(&key))
                .parse::<Cursor>()
                .is_err()
        );
        let key = "a".repeat(254);
        assert!(
            format!("e.{}.{simple}", hex_encode(&key))
                .parse::<Cursor>()
                .is_ok()
        );
    }
}
