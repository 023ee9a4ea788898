//! Listing the user table ([listing (D18)](tenantry_core::Rule::Listing)): filters, sort orders and keyset cursors.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tenantry_core::{Role, Status, TemplateId, User, UserId};
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

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// The cursor to pass as [`UserQuery::after`] for the next page; `None` on the last.
    pub next: Option<Cursor>,
}

/// A keyset position in the user table: the sort key of the last row read and its id.
///
/// Its text form is opaque to hosts but stable, so it can travel in URLs.
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
    if !s.len().is_multiple_of(2) || s.len() > 2 * 254 {
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
