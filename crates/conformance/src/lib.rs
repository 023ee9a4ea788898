//! # tenantry-conformance
//!
//! The behaviour suite every tenantry storage backend must pass, in the manner of
//! `object_store`'s shared integration tests: each scenario builds a [`tenantry_service::Tenantry`]
//! on a fresh store from the backend's factory and checks one rule of `docs/rules.md`
//! ([roles (D1)](tenantry_core::Rule::Roles)–[live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)) end to end, through the public service.
//!
//! - [`scenarios`]: one async function per behaviour, named after the rule it checks (kept in
//!   one file per rule family, all re-exported from the module).
//! - [`concurrency`]: many concurrent callers on one tenant ([concurrency (D16)](tenantry_core::Rule::Concurrency)): seats, unique addresses,
//!   the last admin, single-use tokens, unique template names, counted accept attempts ([accept attempts (D24)](tenantry_core::Rule::AcceptAttempts)).
//! - [`model`]: a model-based test (random operation sequences against a reference model).
//! - [`suite!`]: expands to one test per scenario for a backend:
//!
//! ```ignore
//! fn memory_factory() -> tenantry_conformance::StoreFactory {
//!     std::sync::Arc::new(|| Box::pin(async {
//!         std::sync::Arc::new(tenantry_store::InMemoryStore::new())
//!             as std::sync::Arc<dyn tenantry_store::Store>
//!     }))
//! }
//! tenantry_conformance::suite!(memory_factory());
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod concurrency;
pub mod model;
pub mod scenarios;
pub mod support;

#[doc(hidden)]
pub use tokio;

/// A future yielding a fresh, empty store.
pub type StoreFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::sync::Arc<dyn tenantry_store::Store>> + Send>,
>;

/// Makes fresh, empty stores (a new database or schema each time).
pub type StoreFactory = std::sync::Arc<dyn Fn() -> StoreFuture + Send + Sync>;

/// Expands to the whole conformance suite for one backend: one
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` per scenario and per
/// concurrency scenario (each on a fresh store from the factory), and one `#[test]
/// fn model_based()` running [`model::run`].
///
/// The argument is an expression evaluating to a [`StoreFactory`]; it is evaluated once per
/// test, in the scope where the macro is invoked. The tests are placed in a module named
/// `conformance`, so `cargo test conformance::d9` selects the [seat limit (D9)](tenantry_core::Rule::SeatLimit) scenarios.
///
/// Every `pub async fn NAME(store: Arc<dyn Store>)` in `src/scenarios/` and
/// `src/concurrency.rs` must be listed in this macro's definition, and only those: the crate's
/// `tests/suite_complete.rs` fails, naming them, when a scenario is missing or a name is stale.
///
/// ```ignore
/// tenantry_conformance::suite!(memory_factory());
/// ```
#[macro_export]
macro_rules! suite {
    ($factory:expr $(,)?) => {
        fn __tenantry_conformance_factory() -> $crate::StoreFactory {
            $factory
        }
        $crate::__suite_tests! {
            scenarios: [
                d1_admin_holds_everything_user_only_what_is_granted,
                d2_status_transitions_persist_and_refusals_change_nothing,
                d3_email_unique_by_canonical_key,
                d3_email_change_collisions,
                d4_permission_sets_round_trip_through_the_store,
                d5_crm_access_rules_persist,
                d6_template_edits_reach_users_at_next_authorize,
                d6_inactive_and_deleted_users_hold_nothing,
                d7_manager_limits_follow_current_stored_state,
                d8_last_admin_cannot_be_demoted_suspended_or_deleted,
                d9_invite_at_limit_fails_and_stores_nothing,
                d9_limit_lowered_below_usage_blocks_invites_until_under,
                d10_accept_activates_with_matching_email_only,
                d10_token_is_single_use,
                d10_token_expires_after_ttl,
                d10_accept_at_exact_expiry_is_refused_one_nanosecond_before_accepted,
                d10_resend_invalidates_older_tokens_and_expired_can_be_resent,
                d10_email_change_revokes_tokens,
                d10_resend_is_rate_limited,
                d10_invalid_tokens_share_one_error_kind,
                d10_token_hash_collision_is_refused_by_the_store,
                d11_delete_leaves_tombstone_and_attribution,
                d11_ids_never_reused_and_email_reinvitable,
                d12_template_names_unique_case_insensitive,
                d12_template_users_lists_referencing_users,
                d12_delete_referenced_template_refuse_detach_reassign,
                d13_audit_records_changes_and_refused_attempts,
                d13_permission_changes_record_before_and_after_sets,
                d13_audit_feed_pages_without_gaps_or_repeats,
                d14_sign_in_records_last_login_and_refuses_inactive_users,
                d14_inactive_users_are_listed,
                d15_foreign_ids_behave_as_not_found,
                d15_lists_audit_and_outbox_stay_within_the_tenant,
                d16_stale_snapshot_commit_is_refused_and_writes_nothing,
                d16_store_refuses_changes_to_missing_rows_and_writes_nothing,
                d16_store_unique_constraints_are_the_second_line,
                d17_message_queued_in_invite_commit_and_delivered_after,
                d17_transient_failure_is_retried_after_backoff,
                d17_permanent_failure_is_marked_failed_with_reason,
                d17_claimed_message_is_leased_until_the_lease_expires,
                d17_late_delivery_result_does_not_overwrite_a_final_state,
                d7_unauthorized_actor_learns_nothing_about_ids,
                d17_dispatch_all_delivers_every_tenant,
                d18_filters_select_exactly_the_matching_rows,
                d18_every_sort_pages_every_row_exactly_once,
                d18_paging_is_stable_while_rows_change,
                d18_page_size_and_cursor_errors,
                d19_bulk_invite_outcomes_with_exact_seat_limit,
                d20_expired_invitations_listed_and_purged_in_one_call,
                d13_refused_invite_records_the_address_tried,
                d13_template_changes_name_exactly_the_users_whose_access_changed,
                d13_refusals_by_non_users_are_recorded_sampled,
                d21_address_change_of_a_stronger_invitee_is_refused_and_changes_nothing,
                d21_stronger_active_and_suspended_users_cannot_be_edited_or_deleted,
                d21_resend_delete_and_purge_of_stronger_invitations_are_refused,
                d21_users_within_the_managers_own_access_can_be_managed,
                d21_template_changes_reaching_stronger_users_are_refused,
                d22_tenant_names_refuse_control_and_format_characters,
                d22_only_an_admin_renames_its_tenant,
                d15_tenants_are_listed_by_name_in_pages,
                d22_template_names_refuse_control_and_format_characters,
                d23_first_seat_required_and_only_an_id_conflict_is_tenant_exists,
                d24_wrong_addresses_count_down_and_the_fifth_kills_the_token,
                d24_failed_attempts_count_per_live_invitation_only,
                d25_inline_delivery_sends_only_the_calls_own_messages,
                d25_inline_delivery_is_bounded_by_its_deadline,
                d26_live_links_are_never_readable_after_the_call,
                d26_returned_links_work_exactly_once,
                d28_memberships_list_every_tenant_of_an_address,
                d28_an_address_change_moves_the_email_membership,
                d28_identity_ids_are_unique_per_tenant_and_set_by_admins,
                d28_deleted_users_leave_both_lookups,
                d28_concurrent_claims_of_one_identity_leave_one_holder,
            ],
            concurrency: [
                d16_concurrent_invites_at_limit,
                d16_concurrent_invites_of_one_address,
                d16_concurrent_bulk_invites_at_limit,
                d16_admins_demote_suspend_and_delete_each_other,
                d16_concurrent_accepts_of_one_token,
                d16_concurrent_resends_respect_rate_limit,
                d16_concurrent_template_renames_to_one_name,
                d16_concurrent_template_creates_with_one_name,
                d24_concurrent_wrong_addresses_count_exactly_five,
                d27_sign_ins_never_contend_with_admin_edits,
            ],
        }
    };
}

/// The body of [`suite!`]; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __suite_tests {
    (
        scenarios: [$($scenario:ident),* $(,)?],
        concurrency: [$($concurrent:ident),* $(,)?] $(,)?
    ) => {
        /// The tenantry conformance suite (generated by `tenantry_conformance::suite!`).
        mod conformance {
            // `#[tokio::test]` names `tokio::…` in its expansion; resolve it to the runtime
            // the conformance crate re-exports, so the backend crate needs no tokio of its own.
            #[allow(unused_imports)]
            use $crate::tokio;

            $(
                #[$crate::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let store = (super::__tenantry_conformance_factory())().await;
                    $crate::scenarios::$scenario(store).await;
                }
            )*

            $(
                #[$crate::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $concurrent() {
                    let store = (super::__tenantry_conformance_factory())().await;
                    $crate::concurrency::$concurrent(store).await;
                }
            )*

            #[test]
            fn model_based() {
                $crate::model::run(super::__tenantry_conformance_factory(), 256, 50);
            }
        }
    };
}
