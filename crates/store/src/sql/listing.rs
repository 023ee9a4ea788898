//! The user listing both SQL backends run: filters, sort, keyset cursor and page, built
//! once ([listing (D18)](tenantry_core::Rule::Listing)); and the operators' listing of
//! tenants ([`tenants_listing`]).
//!
//! [`users_listing`] writes the statement and its parameters in a backend's [`Dialect`]; the
//! backend binds each [`Param`] the way its schema stores it (an id as text or `uuid`, a
//! flag as an integer or `boolean`), reads the rows with [`super::user`] and hands them to
//! [`users_page`], which cuts the page and names the next cursor.
//!
//! ```
//! use tenantry_core::{Status, TenantId};
//! use tenantry_store::sql::{Dialect, Param, users_listing};
//! use tenantry_store::UserQuery;
//! let tenant = TenantId::from_parts(1_767_225_600_000, [1; 10]);
//! let query = UserQuery { status: Some(Status::Invited), limit: 20, ..UserQuery::default() };
//! let listing = users_listing(Dialect::POSTGRES, tenant, &query);
//! assert!(listing.sql.contains("WHERE tenant_id = $1 AND status = $2"));
//! assert!(listing.sql.ends_with("ORDER BY email_key ASC, id ASC LIMIT 21"));
//! assert_eq!(listing.params, [Param::Id(tenant.as_uuid()), Param::Text("invited".into())]);
//! let sqlite = users_listing(Dialect::SQLITE, tenant, &query);
//! assert!(sqlite.sql.contains("WHERE tenant_id = ?1 AND status = ?2"));
//! ```

use std::fmt::Write as _;

use tenantry_core::{TenantId, User};
use uuid::Uuid;

use super::{TENANT_COLUMNS, USER_COLUMNS, clamp_i128, nanos_clamped};
use crate::{Cursor, MAX_PAGE_SIZE, Page, SortBy, TenantCursor, UserQuery};

/// What differs between the SQL dialects of the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dialect {
    /// The placeholder of the `n`-th parameter (1-based) is this prefix and `n`.
    pub placeholder: &'static str,
    /// The function whose `f(haystack, needle) > 0` tests that a text contains another.
    pub contains: &'static str,
    /// What follows a text operand so that it compares and sorts byte by byte (empty when
    /// the default collation already does).
    pub bytewise: &'static str,
}

impl Dialect {
    /// SQLite: `?1`, `instr`, and its default `BINARY` collation.
    pub const SQLITE: Dialect = Dialect {
        placeholder: "?",
        contains: "instr",
        bytewise: "",
    };
    /// PostgreSQL: `$1`, `strpos`, and `COLLATE "C"`.
    pub const POSTGRES: Dialect = Dialect {
        placeholder: "$",
        contains: "strpos",
        bytewise: " COLLATE \"C\"",
    };
}

/// A parameter of a statement, bound by the backend in its schema's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// An id (text in SQLite, `uuid` in PostgreSQL).
    Id(Uuid),
    /// A text.
    Text(String),
    /// A 64-bit integer (times are Unix nanoseconds).
    Int(i64),
    /// A flag (an integer in SQLite, `boolean` in PostgreSQL).
    Bool(bool),
}

/// A statement and its parameters, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The statement; it selects [`USER_COLUMNS`] from `users`.
    pub sql: String,
    /// The value of each placeholder, the first one first.
    pub params: Vec<Param>,
}

impl Listing {
    fn and(&mut self, dialect: Dialect, clause: &str, values: impl IntoIterator<Item = Param>) {
        self.sql.push_str(" AND ");
        let mut values = values.into_iter();
        for (i, part) in clause.split('?').enumerate() {
            if i > 0 {
                if let Some(v) = values.next() {
                    self.params.push(v);
                }
                // Writing to a String cannot fail.
                let _ = write!(self.sql, "{}{}", dialect.placeholder, self.params.len());
            }
            self.sql.push_str(part);
        }
    }
}

/// The statement that reads one page of `query` in `tenant`: every filter, the order with
/// the id as tie-breaker, strictly after the cursor (on the index `(tenant_id, key, id)`,
/// never `OFFSET`), and one row more than the page so [`users_page`] knows whether another
/// follows. A cursor of another order is ignored (the first page).
#[must_use]
pub fn users_listing(dialect: Dialect, tenant: TenantId, query: &UserQuery) -> Listing {
    let mut l = Listing {
        sql: format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = {}1",
            dialect.placeholder
        ),
        params: vec![Param::Id(tenant.as_uuid())],
    };
    if let Some(s) = query.status {
        l.and(dialect, "status = ?", [Param::Text(s.as_str().to_owned())]);
    }
    if let Some(r) = query.role {
        l.and(dialect, "role = ?", [Param::Text(r.as_str().to_owned())]);
    }
    if let Some(t) = query.template_id {
        l.and(dialect, "template_id = ?", [Param::Id(t.as_uuid())]);
    }
    if let Some(c) = query.crm_access {
        l.and(dialect, "crm_access = ?", [Param::Bool(c)]);
    }
    if let Some(needle) = &query.email_contains {
        let clause = format!("{}(email_key, ?) > 0", dialect.contains);
        l.and(dialect, &clause, [Param::Text(needle.to_ascii_lowercase())]);
    }
    if let Some(since) = query.inactive_since {
        l.and(dialect, "login_key < ?", [Param::Int(nanos_clamped(since))]);
    }
    if let Some(at) = query.invitation_expired_at {
        l.and(
            dialect,
            "status = 'invited' AND invite_expires_at IS NOT NULL AND invite_expires_at <= ?",
            [Param::Int(nanos_clamped(at))],
        );
    }
    let (column, cmp, dir) = match (query.sort, query.descending) {
        (SortBy::Email, false) => ("email_key", ">", "ASC"),
        (SortBy::Email, true) => ("email_key", "<", "DESC"),
        (SortBy::CreatedAt, false) => ("created_at", ">", "ASC"),
        (SortBy::CreatedAt, true) => ("created_at", "<", "DESC"),
        (SortBy::LastLogin, false) => ("login_key", ">", "ASC"),
        (SortBy::LastLogin, true) => ("login_key", "<", "DESC"),
    };
    let key = match query.after.as_ref().filter(|c| c.sort() == query.sort) {
        Some(Cursor::Email(k, id)) => Some((Param::Text(k.clone()), *id)),
        Some(Cursor::CreatedAt(t, id)) => Some((Param::Int(clamp_i128(*t)), *id)),
        Some(Cursor::LastLogin(t, id)) => Some((Param::Int(t.map_or(i64::MIN, clamp_i128)), *id)),
        None => None,
    };
    if let Some((value, id)) = key {
        let clause = format!("({column}, id) {cmp} (?, ?)");
        l.and(dialect, &clause, [value, Param::Id(id.as_uuid())]);
    }
    let _ = write!(
        l.sql,
        " ORDER BY {column} {dir}, id {dir} LIMIT {}",
        u64::from(query.effective_limit()) + 1
    );
    l
}

/// The statement of the operators' listing ([`Store::tenants`](crate::Store::tenants)):
/// tenants by name in byte order, then id, strictly after `after` (a keyset on the index
/// `(name, id)`, never `OFFSET`), at most `limit` rows, clamped into 1..=501 (one more than
/// the largest page). It selects [`TENANT_COLUMNS`] (read them with [`super::tenant`]) from
/// `tenants`; the limit is its last parameter, so each dialect has two statements only.
///
/// ```
/// use tenantry_core::TenantId;
/// use tenantry_store::sql::{Dialect, Param, TENANT_COLUMNS, tenants_listing};
/// use tenantry_store::TenantCursor;
/// let first = tenants_listing(Dialect::SQLITE, None, 9_999);
/// assert_eq!(first.sql, format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name, id LIMIT ?1"));
/// assert_eq!(first.params, [Param::Int(501)]);
/// let id = TenantId::from_parts(1_767_225_600_000, [1; 10]);
/// let after = TenantCursor { name: "Acme".into(), id };
/// let next = tenants_listing(Dialect::POSTGRES, Some(&after), 50);
/// assert!(next.sql.ends_with(
///     r#"FROM tenants WHERE (name COLLATE "C", id) > ($1 COLLATE "C", $2) ORDER BY name COLLATE "C", id LIMIT $3"#
/// ));
/// assert_eq!(next.params, [Param::Text("Acme".into()), Param::Id(id.as_uuid()), Param::Int(50)]);
/// ```
#[must_use]
pub fn tenants_listing(dialect: Dialect, after: Option<&TenantCursor>, limit: u32) -> Listing {
    let Dialect {
        placeholder: p,
        bytewise: b,
        ..
    } = dialect;
    let limit = Param::Int(i64::from(limit.clamp(1, MAX_PAGE_SIZE + 1)));
    match after {
        Some(c) => Listing {
            sql: format!(
                "SELECT {TENANT_COLUMNS} FROM tenants WHERE (name{b}, id) > ({p}1{b}, {p}2) \
                 ORDER BY name{b}, id LIMIT {p}3"
            ),
            params: vec![
                Param::Text(c.name.clone()),
                Param::Id(c.id.as_uuid()),
                limit,
            ],
        },
        None => Listing {
            sql: format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name{b}, id LIMIT {p}1"),
            params: vec![limit],
        },
    }
}

/// The page of `query` from the rows its [`users_listing`] returned, in order: at most the
/// query's limit, and the cursor after the last one when more rows followed.
#[must_use]
pub fn users_page(mut rows: Vec<User>, query: &UserQuery) -> Page<User> {
    let limit = usize::try_from(query.effective_limit()).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(|u| query.cursor_of(u))
    } else {
        None
    };
    Page { items: rows, next }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use tenantry_core::{Role, Status, TemplateId, UserId};
    use time::macros::datetime;

    fn tenant() -> TenantId {
        TenantId::from_parts(1_767_225_600_000, [1; 10])
    }

    #[test]
    fn every_filter_takes_its_placeholder_in_order() {
        let t = TemplateId::from_parts(1_767_225_600_000, [3; 10]);
        let id = UserId::from_parts(1_767_225_600_000, [2; 10]);
        let query = UserQuery {
            status: Some(Status::Active),
            role: Some(Role::Admin),
            template_id: Some(t),
            crm_access: Some(true),
            email_contains: Some("AcMe".into()),
            inactive_since: Some(datetime!(2026-01-01 0:00 UTC)),
            invitation_expired_at: Some(datetime!(2026-01-02 0:00 UTC)),
            sort: SortBy::CreatedAt,
            descending: true,
            after: Some(Cursor::CreatedAt(7, id)),
            limit: 9_999,
        };
        let l = users_listing(Dialect::SQLITE, tenant(), &query);
        assert_eq!(
            l.sql,
            format!(
                "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ?1 AND status = ?2 \
                 AND role = ?3 AND template_id = ?4 AND crm_access = ?5 \
                 AND instr(email_key, ?6) > 0 AND login_key < ?7 AND status = 'invited' \
                 AND invite_expires_at IS NOT NULL AND invite_expires_at <= ?8 \
                 AND (created_at, id) < (?9, ?10) ORDER BY created_at DESC, id DESC LIMIT 501"
            )
        );
        assert_eq!(l.params.len(), 10);
        assert_eq!(l.params[5], Param::Text("acme".into()));
        assert_eq!(l.params[4], Param::Bool(true));
        assert_eq!(l.params[8], Param::Int(7));
        assert_eq!(l.params[9], Param::Id(id.as_uuid()));
        let pg = users_listing(Dialect::POSTGRES, tenant(), &query);
        assert!(pg.sql.contains("strpos(email_key, $6) > 0"));
        assert!(pg.sql.contains("(created_at, id) < ($9, $10)"));
        assert_eq!(pg.params, l.params);
    }

    #[test]
    fn the_tenants_listing_compares_bytes_and_clamps_its_limit() {
        let after = TenantCursor {
            name: "Acme".into(),
            id: tenant(),
        };
        let l = tenants_listing(Dialect::SQLITE, Some(&after), 0);
        assert_eq!(
            l.sql,
            format!(
                "SELECT {TENANT_COLUMNS} FROM tenants WHERE (name, id) > (?1, ?2) ORDER BY name, id LIMIT ?3"
            )
        );
        assert_eq!(
            l.params,
            [
                Param::Text("Acme".into()),
                Param::Id(tenant().as_uuid()),
                Param::Int(1)
            ]
        );
        let pg = tenants_listing(Dialect::POSTGRES, None, 501);
        assert_eq!(
            pg.sql,
            format!(
                "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name COLLATE \"C\", id LIMIT $1"
            )
        );
        assert_eq!(pg.params, [Param::Int(501)]);
        assert_eq!(
            tenants_listing(Dialect::POSTGRES, None, 502).params,
            [Param::Int(501)]
        );
    }

    #[test]
    fn a_page_keeps_the_limit_and_names_a_cursor_only_when_more_followed() {
        let user = |i: u8| tenantry_core::User {
            id: UserId::from_parts(1_767_225_600_000, [i; 10]),
            tenant_id: tenant(),
            email: tenantry_core::Email::parse(&format!("u{i}@acme.test")).unwrap(),
            role: Role::User,
            status: Status::Active,
            template_id: None,
            crm_access: false,
            grants: tenantry_core::Permissions::empty(),
            created_at: datetime!(2026-01-01 0:00 UTC),
            last_login: None,
            invite_expires_at: None,
            identity: None,
        };
        let query = UserQuery {
            limit: 2,
            ..UserQuery::default()
        };
        let exact = users_page(vec![user(1), user(2)], &query);
        assert_eq!((exact.items.len(), exact.next), (2, None));
        let more = users_page(vec![user(1), user(2), user(3)], &query);
        assert_eq!(more.items.len(), 2);
        assert_eq!(more.next, Some(query.cursor_of(&user(2))));
        let fewer = users_page(vec![user(1)], &query);
        assert_eq!((fewer.items.len(), fewer.next), (1, None));
    }

    #[test]
    fn a_cursor_of_another_order_is_ignored_and_never_signed_in_sorts_first() {
        let id = UserId::from_parts(1_767_225_600_000, [2; 10]);
        let other = UserQuery {
            after: Some(Cursor::Email("a".into(), id)),
            sort: SortBy::LastLogin,
            ..UserQuery::default()
        };
        let l = users_listing(Dialect::POSTGRES, tenant(), &other);
        assert!(!l.sql.contains("(login_key, id)"));
        assert_eq!(l.params.len(), 1);
        let never = UserQuery {
            after: Some(Cursor::LastLogin(None, id)),
            ..other
        };
        let l = users_listing(Dialect::POSTGRES, tenant(), &never);
        assert!(
            l.sql
                .contains("(login_key, id) > ($2, $3) ORDER BY login_key ASC")
        );
        assert_eq!(l.params[1], Param::Int(i64::MIN));
    }
}
