//! Scenarios of [listing (D18)](tenantry_core::Rule::Listing).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use tenantry_service::{
    ActorRef, BulkInvite, Cursor, Error, Permissions, QueryError, Role, RoleTemplate, SortBy,
    Status, Store, User, UserEdit, UserId, UserQuery,
};
use time::Duration;

use crate::support::{Env, START, request, request_with, unknown_user};

use super::helpers::status_edit;

// ----------------------------------------------------------------------------------- D18

struct Setup {
    env: Env,
    t1: RoleTemplate,
    t2: RoleTemplate,
}

/// A tenant with 30 users of every status, role, template and CRM setting, with ties in
/// creation time and last login.
async fn listing_setup(store: Arc<dyn Store>) -> Setup {
    let env = Env::new(store).await;
    let t1 = env
        .new_template("One", Permissions::CONVERSATIONS_VIEW)
        .await;
    let t2 = env.new_template("Two", Permissions::ANALYTICS_VIEW).await;
    let names = ["Ann", "bob", "CAT", "dan", "Eve"];
    let domains = ["sales.acme.test", "Support.Acme.test", "acme.test"];
    let mut invited = Vec::new();
    for i in 0..29usize {
        if i % 3 == 0 {
            env.clock.advance(Duration::seconds(1)); // ties in created_at
        }
        let addr = format!("{}{:02}@{}", names[i % 5], (i * 7) % 29, domains[i % 3]);
        let req = if i % 7 == 3 {
            request(&addr, Role::Admin)
        } else {
            request_with(
                &addr,
                Permissions::empty(),
                [None, Some(t1.id), Some(t2.id)][i % 3],
                i % 2 == 0,
            )
        };
        invited.push(env.invite_as(env.tenant, env.admin, &req).await);
    }
    for (i, inv) in invited.iter().enumerate() {
        if i % 4 != 0 {
            if i % 5 == 0 {
                env.clock.advance(Duration::minutes(1)); // ties in last_login
            }
            let u = env.accept(env.tenant, inv).await;
            if i % 6 == 1 {
                env.edit(u.id, &status_edit(Status::Suspended)).await;
            }
        }
    }
    Setup { env, t1, t2 }
}

fn reference_filter(users: &[User], keep: impl Fn(&User) -> bool) -> BTreeSet<UserId> {
    users.iter().filter(|u| keep(u)).map(|u| u.id).collect()
}

/// [listing (D18)](tenantry_core::Rule::Listing): status, role, template, CRM and email-substring filters (alone and combined)
/// select exactly the matching rows, on every page.
pub async fn d18_filters_select_exactly_the_matching_rows(store: Arc<dyn Store>) {
    let Setup { env, t1, t2 } = listing_setup(store).await;
    let all = env.assert_consistent(env.tenant).await;
    assert_eq!(all.len(), 30);
    let q = |f: &dyn Fn(&mut UserQuery)| {
        let mut q = UserQuery {
            limit: 4,
            ..UserQuery::default()
        };
        f(&mut q);
        q
    };
    let cases: Vec<(String, UserQuery, BTreeSet<UserId>)> = vec![
        (
            "status invited".into(),
            q(&|q| q.status = Some(Status::Invited)),
            reference_filter(&all, |u| u.status == Status::Invited),
        ),
        (
            "status active".into(),
            q(&|q| q.status = Some(Status::Active)),
            reference_filter(&all, |u| u.status == Status::Active),
        ),
        (
            "status suspended".into(),
            q(&|q| q.status = Some(Status::Suspended)),
            reference_filter(&all, |u| u.status == Status::Suspended),
        ),
        (
            "role admin".into(),
            q(&|q| q.role = Some(Role::Admin)),
            reference_filter(&all, |u| u.role == Role::Admin),
        ),
        (
            "role user".into(),
            q(&|q| q.role = Some(Role::User)),
            reference_filter(&all, |u| u.role == Role::User),
        ),
        (
            "template one".into(),
            q(&|q| q.template_id = Some(t1.id)),
            reference_filter(&all, |u| u.template_id == Some(t1.id)),
        ),
        (
            "template two".into(),
            q(&|q| q.template_id = Some(t2.id)),
            reference_filter(&all, |u| u.template_id == Some(t2.id)),
        ),
        (
            "crm on".into(),
            q(&|q| q.crm_access = Some(true)),
            reference_filter(&all, |u| u.crm_access),
        ),
        (
            "crm off".into(),
            q(&|q| q.crm_access = Some(false)),
            reference_filter(&all, |u| !u.crm_access),
        ),
        (
            "email SUPPORT".into(),
            q(&|q| q.email_contains = Some("SUPPORT".into())),
            reference_filter(&all, |u| {
                u.email.as_str().to_ascii_lowercase().contains("support")
            }),
        ),
        (
            "email cat".into(),
            q(&|q| q.email_contains = Some("cat".into())),
            reference_filter(&all, |u| {
                u.email.as_str().to_ascii_lowercase().contains("cat")
            }),
        ),
        (
            "email 07@".into(),
            q(&|q| q.email_contains = Some("07@".into())),
            reference_filter(&all, |u| u.email.as_str().contains("07@")),
        ),
        (
            "email none".into(),
            q(&|q| q.email_contains = Some("nobody-has-this".into())),
            BTreeSet::new(),
        ),
        (
            "active + crm + template one".into(),
            q(&|q| {
                q.status = Some(Status::Active);
                q.crm_access = Some(true);
                q.template_id = Some(t1.id);
            }),
            reference_filter(&all, |u| {
                u.status == Status::Active && u.crm_access && u.template_id == Some(t1.id)
            }),
        ),
        (
            "user + invited + email sales, by creation desc".into(),
            q(&|q| {
                q.role = Some(Role::User);
                q.status = Some(Status::Invited);
                q.email_contains = Some("sales".into());
                q.sort = SortBy::CreatedAt;
                q.descending = true;
            }),
            reference_filter(&all, |u| {
                u.role == Role::User
                    && u.status == Status::Invited
                    && u.email.key().contains("sales")
            }),
        ),
    ];
    for (what, query, expected) in cases {
        let got = env.collect(env.tenant, &query).await;
        let ids: Vec<UserId> = got.iter().map(|u| u.id).collect();
        let set: BTreeSet<UserId> = ids.iter().copied().collect();
        assert_eq!(ids.len(), set.len(), "D18: {what}: no row twice");
        assert_eq!(set, expected, "D18: filter {what}");
        if what != "email none" {
            assert!(!expected.is_empty(), "fixture covers {what}");
        }
    }
}

fn sort_key(sort: SortBy, u: &User) -> (String, i128, Option<i128>, UserId) {
    match sort {
        SortBy::Email => (u.email.key().to_owned(), 0, None, u.id),
        SortBy::CreatedAt => (
            String::new(),
            u.created_at.unix_timestamp_nanos(),
            None,
            u.id,
        ),
        SortBy::LastLogin => (
            String::new(),
            0,
            u.last_login.map(time::OffsetDateTime::unix_timestamp_nanos),
            u.id,
        ),
    }
}

/// [listing (D18)](tenantry_core::Rule::Listing): by email, creation time and last login, ascending and descending, with page sizes
/// 1, 4 and 500, keyset paging visits every row exactly once in order (ties broken by id;
/// never-signed-in users first in ascending last-login order).
pub async fn d18_every_sort_pages_every_row_exactly_once(store: Arc<dyn Store>) {
    let Setup { env, .. } = listing_setup(store).await;
    let all = env.users(env.tenant).await;
    assert_eq!(all.len(), 30);
    for sort in [SortBy::Email, SortBy::CreatedAt, SortBy::LastLogin] {
        let mut expected = all.clone();
        expected.sort_by_key(|u| sort_key(sort, u));
        let ids: Vec<UserId> = expected.iter().map(|u| u.id).collect();
        // Ties exist in this fixture, so the tie-break by id is exercised.
        let keys: HashSet<_> = expected
            .iter()
            .map(|u| {
                let mut k = sort_key(sort, u);
                k.3 = UserId::from_uuid(uuid::Uuid::nil());
                k
            })
            .collect();
        if sort != SortBy::Email {
            assert!(keys.len() < expected.len(), "fixture has ties for {sort:?}");
        }
        for descending in [false, true] {
            let want: Vec<UserId> = if descending {
                ids.iter().rev().copied().collect()
            } else {
                ids.clone()
            };
            for limit in [1u32, 4, 500] {
                let got: Vec<UserId> = env
                    .collect(
                        env.tenant,
                        &UserQuery {
                            sort,
                            descending,
                            limit,
                            ..UserQuery::default()
                        },
                    )
                    .await
                    .iter()
                    .map(|u| u.id)
                    .collect();
                assert_eq!(
                    got, want,
                    "D18: {sort:?} descending={descending} limit={limit}"
                );
            }
        }
    }
    // Filtered and sorted together.
    let mut active: Vec<&User> = all.iter().filter(|u| u.status == Status::Active).collect();
    active.sort_by_key(|u| std::cmp::Reverse(sort_key(SortBy::LastLogin, u)));
    let got: Vec<UserId> = env
        .collect(
            env.tenant,
            &UserQuery {
                status: Some(Status::Active),
                sort: SortBy::LastLogin,
                descending: true,
                limit: 3,
                ..UserQuery::default()
            },
        )
        .await
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(got, active.iter().map(|u| u.id).collect::<Vec<_>>());
}

/// [listing (D18)](tenantry_core::Rule::Listing): keyset paging stays correct while rows are added, changed and deleted between
/// pages: no row is returned twice and every row present throughout is returned once.
pub async fn d18_paging_is_stable_while_rows_change(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(env.invite(&format!("m{i:02}@acme.test")).await.user.id);
    }
    for sort in [SortBy::Email, SortBy::CreatedAt] {
        let mut q = UserQuery {
            sort,
            limit: 3,
            ..UserQuery::default()
        };
        let mut seen: Vec<UserId> = Vec::new();
        let mut deleted = HashSet::new();
        let mut round = 0;
        loop {
            let page = env
                .app
                .list_users(env.tenant, ActorRef::System, &q)
                .await
                .unwrap();
            seen.extend(page.items.iter().map(|u| u.id));
            let Some(next) = page.next else { break };
            q.after = Some(next);
            round += 1;
            env.clock.advance(Duration::seconds(1));
            // Add rows before and after the cursor, delete an unread one, edit another.
            env.invite(&format!("a{sort:?}{round:02}@acme.test")).await;
            env.invite(&format!("z{sort:?}{round:02}@acme.test")).await;
            if let Some(victim) = ids
                .iter()
                .rev()
                .find(|id| !seen.contains(id) && !deleted.contains(*id))
                .copied()
            {
                env.app
                    .delete_user(env.tenant, env.admin, victim)
                    .await
                    .unwrap();
                deleted.insert(victim);
            }
            if let Some(e) = ids
                .iter()
                .find(|id| !seen.contains(id) && !deleted.contains(*id))
                .copied()
            {
                env.edit(
                    e,
                    &UserEdit {
                        crm_access: Some(round % 2 == 0),
                        ..UserEdit::default()
                    },
                )
                .await;
            }
        }
        let unique: HashSet<UserId> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "D18 {sort:?}: no row twice");
        for id in ids.iter().chain(std::iter::once(&env.admin)) {
            if !deleted.contains(id) {
                assert!(
                    unique.contains(id),
                    "D18 {sort:?}: a row present throughout was skipped"
                );
            }
        }
        for id in &deleted {
            assert!(
                !unique.contains(id),
                "D18 {sort:?}: a deleted row was returned"
            );
        }
        ids.retain(|id| !deleted.contains(id));
    }
}

/// [listing (D18)](tenantry_core::Rule::Listing): a page holds 1–500 rows (50 by default); other sizes and cursors of another sort
/// order are refused with typed errors.
pub async fn d18_page_size_and_cursor_errors(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let bulk = BulkInvite {
        emails: (0..60).map(|i| format!("bulk{i:02}@acme.test")).collect(),
        ..BulkInvite::default()
    };
    env.app
        .invite_many(env.tenant, env.admin, &bulk)
        .await
        .unwrap();
    assert_eq!(UserQuery::default().limit, 50);
    let page = env
        .app
        .list_users(env.tenant, ActorRef::System, &UserQuery::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 50, "D18: 50 rows by default");
    let cursor = page.next.expect("more rows");
    let rest = env
        .app
        .list_users(
            env.tenant,
            ActorRef::System,
            &UserQuery {
                after: Some(cursor.clone()),
                ..UserQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 11);
    assert!(rest.next.is_none());
    let full = env
        .app
        .list_users(
            env.tenant,
            ActorRef::System,
            &UserQuery {
                limit: 500,
                ..UserQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(full.items.len(), 61);
    assert!(full.next.is_none());
    for limit in [0u32, 501, 10_000] {
        let q = UserQuery {
            limit,
            ..UserQuery::default()
        };
        assert!(
            matches!(env.app.list_users(env.tenant, ActorRef::System, &q).await, Err(Error::Query(QueryError::LimitOutOfRange { limit: l })) if l == limit),
            "D18: limit {limit}"
        );
        assert!(matches!(
            env.app
                .inactive_users(env.tenant, ActorRef::System, START, &q)
                .await,
            Err(Error::Query(_))
        ));
        assert!(matches!(
            env.app
                .expired_invitations(env.tenant, ActorRef::System, &q)
                .await,
            Err(Error::Query(_))
        ));
    }
    let mismatched = UserQuery {
        sort: SortBy::CreatedAt,
        after: Some(cursor),
        ..UserQuery::default()
    };
    assert!(matches!(
        env.app
            .list_users(env.tenant, ActorRef::System, &mismatched)
            .await,
        Err(Error::Query(QueryError::CursorMismatch))
    ));
    // A cursor past every row gives an empty last page.
    let past = Cursor::Email("~~~~".into(), unknown_user());
    let page = env
        .app
        .list_users(
            env.tenant,
            ActorRef::System,
            &UserQuery {
                after: Some(past),
                ..UserQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(page.items.is_empty() && page.next.is_none());
}
