//! Scenarios of [concurrency (D16)](tenantry_core::Rule::Concurrency).

use std::sync::Arc;

use tenantry_core::decide::{self, Acting, Ctx, NewInvite};
use tenantry_core::{MessageId, TokenHash};
use tenantry_service::{ActorRef, Message, Permissions, Policy, Role, Store, StoreError, UserId};

use crate::support::{Env, request, unknown_template, unknown_user};

use super::helpers::name;

// ----------------------------------------------------------------------------------- D16

/// [concurrency (D16)](tenantry_core::Rule::Concurrency): a change that names rows which do not exist — a user, a tenant, a message — is
/// refused by the store as a whole: nothing of it lands, not even its audit event, and the
/// version stays.
pub async fn d16_store_refuses_changes_to_missing_rows_and_writes_nothing(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let st = env.app.store();
    let state = st.tenant(env.tenant).await.unwrap().unwrap();
    let audit = env.audit(env.tenant).await.len();
    let mut ghost = env.user(env.tenant, env.admin).await;
    ghost.id = unknown_user();
    ghost.role = Role::User;
    let mut counters = state.counters;
    counters.version += 1;
    let event = env.audit(env.tenant).await.last().unwrap().event.clone();
    let forged = tenantry_core::decide::Change {
        tenant_id: env.tenant,
        expected_version: state.counters.version,
        counters,
        writes: vec![tenantry_core::decide::Write::UpdateUser(ghost)],
        events: vec![event.clone()],
    };
    let refused = st.commit(&forged, &[]).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Conflict {
                constraint: tenantry_store::Constraint::MissingRow
            })
        ),
        "{refused:?}"
    );
    assert_eq!(env.counters(env.tenant).await, state.counters);
    assert_eq!(env.audit(env.tenant).await.len(), audit);

    // A tenant that does not exist: not found, for changes and for audit events alike.
    let mut elsewhere = forged.clone();
    elsewhere.tenant_id = tenantry_service::TenantId::from_parts(1, [9; 10]);
    elsewhere.writes.clear();
    assert!(matches!(
        st.commit(&elsewhere, &[]).await,
        Err(StoreError::NotFound)
    ));
    let mut stray = event;
    stray.tenant_id = elsewhere.tenant_id;
    assert!(matches!(
        st.append_audit(&stray).await,
        Err(StoreError::NotFound)
    ));
    // A delivery result for a message that does not exist.
    let unknown = MessageId::from_parts(1, [9; 10]);
    assert!(matches!(
        st.record_delivery(
            env.tenant,
            unknown,
            &tenantry_store::DeliveryUpdate::Sent {
                at: env.clock_now()
            }
        )
        .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(env.counters(env.tenant).await, state.counters);
    assert_eq!(env.audit(env.tenant).await.len(), audit);
}

/// [concurrency (D16)](tenantry_core::Rule::Concurrency): a change decided on a snapshot whose version is no longer current is refused with
/// a version mismatch and writes nothing (no row, no audit event, no outbox message).
pub async fn d16_stale_snapshot_commit_is_refused_and_writes_nothing(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let st = env.app.store();
    let stale = st.tenant(env.tenant).await.unwrap().unwrap();
    let policy = Policy::default();
    let ctx = Ctx {
        state: &stale,
        now: env.clock_now(),
        policy: &policy,
    };
    let first = decide::set_user_limit(ctx, ActorRef::System, Some(50));
    let second = decide::set_user_limit(ctx, ActorRef::System, Some(60));
    st.commit(&first, &[]).await.unwrap();
    let audit = env.audit(env.tenant).await.len();
    let after_first = env.counters(env.tenant).await;
    assert_eq!(after_first.version, stale.counters.version + 1);
    let refused = st.commit(&second, &[]).await;
    assert!(
        matches!(refused, Err(StoreError::VersionMismatch { .. })),
        "D16: {refused:?}"
    );
    assert_eq!(
        env.app.tenant(env.tenant).await.unwrap().tenant.user_limit,
        Some(50)
    );
    assert_eq!(env.counters(env.tenant).await, after_first);
    assert_eq!(env.audit(env.tenant).await.len(), audit);

    // A stale invite with its outbox message: nothing of it lands.
    let admin = env.user(env.tenant, env.admin).await;
    let acting = Acting {
        user: &admin,
        template: None,
    };
    let ctx = Ctx {
        state: &stale,
        now: env.clock_now(),
        policy: &policy,
    };
    let new = NewInvite {
        user_id: unknown_user(),
        token_hash: TokenHash([7; 32]),
    };
    let change = decide::invite(
        ctx,
        &acting,
        &request("stale@acme.test", Role::User),
        None,
        false,
        new,
    )
    .unwrap();
    let message = fake_message(env.tenant, new.user_id);
    let refused = st.commit(&change, std::slice::from_ref(&message)).await;
    assert!(
        matches!(refused, Err(StoreError::VersionMismatch { .. })),
        "D16: {refused:?}"
    );
    assert_eq!(env.counters(env.tenant).await, after_first);
    assert!(st.user(env.tenant, new.user_id).await.unwrap().is_none());
    assert!(
        st.invitation(env.tenant, &new.token_hash)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        env.app
            .outbox_message(env.tenant, message.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(env.audit(env.tenant).await.len(), audit);
    env.assert_consistent(env.tenant).await;
}

/// [concurrency (D16)](tenantry_core::Rule::Concurrency): the store's unique constraints (email key, template name key, user id) refuse a
/// change that the decision wrongly allowed, and the whole change is rolled back.
pub async fn d16_store_unique_constraints_are_the_second_line(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let st = Arc::clone(env.app.store());
    let existing = env.invite("taken@acme.test").await.user;
    env.new_template("Agents", Permissions::empty()).await;
    let policy = Policy::default();
    let admin = env.user(env.tenant, env.admin).await;
    let acting = Acting {
        user: &admin,
        template: None,
    };

    // The email key, told "not taken".
    let state = st.tenant(env.tenant).await.unwrap().unwrap();
    let ctx = Ctx {
        state: &state,
        now: env.clock_now(),
        policy: &policy,
    };
    let new = NewInvite {
        user_id: unknown_user(),
        token_hash: TokenHash([9; 32]),
    };
    let change = decide::invite(
        ctx,
        &acting,
        &request(" TAKEN@acme.test", Role::User),
        None,
        false,
        new,
    )
    .unwrap();
    let message = fake_message(env.tenant, new.user_id);
    let audit = env.audit(env.tenant).await.len();
    let r = st.commit(&change, std::slice::from_ref(&message)).await;
    assert!(
        matches!(r, Err(StoreError::Conflict { .. })),
        "D3/D16: duplicate email key: {r:?}"
    );
    assert_eq!(
        env.counters(env.tenant).await,
        state.counters,
        "D16: rolled back"
    );
    assert!(st.user(env.tenant, new.user_id).await.unwrap().is_none());
    assert!(
        st.invitation(env.tenant, &new.token_hash)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        env.app
            .outbox_message(env.tenant, message.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(env.audit(env.tenant).await.len(), audit);

    // The template name key, told "not taken".
    let ctx = Ctx {
        state: &state,
        now: env.clock_now(),
        policy: &policy,
    };
    let change = decide::create_template(
        ctx,
        &acting,
        unknown_template(),
        name("AGENTS"),
        Permissions::empty(),
        false,
    )
    .unwrap();
    let r = st.commit(&change, &[]).await;
    assert!(
        matches!(r, Err(StoreError::Conflict { .. })),
        "D12/D16: duplicate name key: {r:?}"
    );
    assert_eq!(env.counters(env.tenant).await, state.counters);
    assert_eq!(
        env.app
            .templates(env.tenant, ActorRef::System)
            .await
            .unwrap()
            .len(),
        1
    );

    // A user id that exists.
    let ctx = Ctx {
        state: &state,
        now: env.clock_now(),
        policy: &policy,
    };
    let new = NewInvite {
        user_id: existing.id,
        token_hash: TokenHash([10; 32]),
    };
    let change = decide::invite(
        ctx,
        &acting,
        &request("fresh@acme.test", Role::User),
        None,
        false,
        new,
    )
    .unwrap();
    let r = st.commit(&change, &[]).await;
    assert!(
        matches!(r, Err(StoreError::Conflict { .. })),
        "D11/D16: duplicate user id: {r:?}"
    );
    assert_eq!(env.user(env.tenant, existing.id).await, existing);
    assert_eq!(env.counters(env.tenant).await, state.counters);
    assert_eq!(env.audit(env.tenant).await.len(), audit);
    env.assert_consistent(env.tenant).await;
}

fn fake_message(tenant: tenantry_service::TenantId, user: UserId) -> Message {
    Message {
        id: MessageId::from_uuid(uuid::Uuid::now_v7()),
        tenant_id: tenant,
        user_id: user,
        to: "stale@acme.test".into(),
        subject: "s".into(),
        text: "t".into(),
        html: "h".into(),
        date: None,
    }
}
