//! One change per tenant at a time within one service ([concurrency (D16)](tenantry_core::Rule::Concurrency)).
//!
//! Every change is decided on a snapshot and committed only if the tenant's version is
//! unchanged; a change that finds it moved is decided again on a fresh snapshot. That is what
//! keeps the rules exact between processes, but between the callers of one service it is
//! wasted work: eight callers inviting into one tenant at once decide eight times, commit once
//! and retry seven times (on PostgreSQL, about 1.5 refused commits per invite). So the
//! service lets one change per tenant at a time through its gate, in arrival order, and the
//! others wait their turn instead of deciding on a version about to move. Other processes
//! are still settled by the version check; changes to different tenants never wait for each
//! other; reads and sign-ins (which do not move the version, D27) never pass the gate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tenantry_core::TenantId;
use tokio::sync::{Mutex as Turn, OwnedMutexGuard};

/// The gates of one service: one per tenant with a change under way, dropped after the last.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    open: Mutex<HashMap<TenantId, Arc<Turn<()>>>>,
}

/// A change's turn at its tenant's gate; the next caller's turn starts when it is dropped,
/// whether the change finished or its future was dropped half-way.
pub(crate) struct Pass<'a> {
    gates: &'a Gates,
    tenant: TenantId,
    gate: Arc<Turn<()>>,
    turn: Option<OwnedMutexGuard<()>>,
}

impl Gates {
    /// Waits for the tenant's turn (first come, first served).
    pub(crate) async fn enter(&self, tenant: TenantId) -> Pass<'_> {
        let gate = Arc::clone(
            self.open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(tenant)
                .or_default(),
        );
        let mut pass = Pass {
            gates: self,
            tenant,
            gate,
            turn: None,
        };
        pass.turn = Some(Arc::clone(&pass.gate).lock_owned().await);
        pass
    }

    /// Tenants with a change under way or waiting (tests).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        drop(self.turn.take());
        let mut open = self
            .gates
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only the map and this pass hold the gate: nobody else is in it or waiting (they
        // clone it under the same lock), so it goes.
        if Arc::strong_count(&self.gate) == 2 {
            open.remove(&self.tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn tenant(n: u128) -> TenantId {
        TenantId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn d16_one_change_per_tenant_at_a_time_and_the_gate_goes_after_the_last() {
        let gates = Arc::new(Gates::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (gates, inside, most) = (gates.clone(), inside.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let _pass = gates.enter(tenant(1)).await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "two changes of one tenant overlapped"
        );
        assert_eq!(gates.open(), 0, "a gate outlived its last change");
    }

    #[tokio::test]
    async fn d16_other_tenants_do_not_wait_and_a_dropped_caller_frees_its_turn() {
        let gates = Gates::default();
        let first = gates.enter(tenant(1)).await;
        // Another tenant gets its turn while tenant 1's is held.
        let other = tokio::time::timeout(Duration::from_secs(5), gates.enter(tenant(2))).await;
        assert!(other.is_ok(), "a change of another tenant waited");
        drop(other);
        // A caller waiting on tenant 1 whose future is dropped leaves no turn behind.
        let waiting = tokio::time::timeout(Duration::from_millis(20), gates.enter(tenant(1))).await;
        assert!(waiting.is_err(), "tenant 1's second change did not wait");
        assert_eq!(gates.open(), 1);
        drop(first);
        assert_eq!(gates.open(), 0);
        let again = tokio::time::timeout(Duration::from_secs(5), gates.enter(tenant(1))).await;
        assert!(again.is_ok(), "the gate stayed shut after its holder went");
    }
}
