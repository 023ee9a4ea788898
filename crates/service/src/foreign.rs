//! Sampling of refusals whose actor is not a user of the tenant ([audit log (D13)](tenantry_core::Rule::AuditLog)).
//!
//! Anyone can name any tenant, so recording each such refusal would let a flood grow a
//! tenant's log without bound. Per tenant, the first refusal in each [`WINDOW`] is recorded;
//! the ones after it in the same window are only counted, and the next recorded one carries
//! that count ([`Field::UnrecordedRefusals`](tenantry_core::Field::UnrecordedRefusals)). So
//! a tenant's log gains at most one such event per window, whatever the rate.
//!
//! The counts live in this process's memory: at most [`MAX_TENANTS`] tenants are tracked at
//! once (entries whose window has passed are dropped first), a restart loses the counts not
//! yet recorded, and when every tracked tenant is in a live window a new tenant's refusal is
//! counted in a process-wide total, reported by a `tracing` warning, instead of recorded.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tenantry_core::TenantId;
use time::{Duration, OffsetDateTime};

/// The sampling window: one recorded refusal per tenant per window.
pub(crate) const WINDOW: Duration = Duration::minutes(1);
/// The most tenants whose counts are kept at once.
pub(crate) const MAX_TENANTS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the last refusal of this tenant was recorded.
    recorded_at: OffsetDateTime,
    /// Refusals counted since, not recorded.
    unrecorded: u64,
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sample {
    /// Record it, with this many earlier ones that were only counted.
    Record { unrecorded: u64 },
    /// Only counted.
    Counted,
}

#[derive(Debug, Default)]
pub(crate) struct Sampler {
    entries: Mutex<(HashMap<TenantId, Entry>, u64)>,
}

impl Sampler {
    /// Decides for one refusal in `tenant` at `now`.
    pub(crate) fn sample(&self, tenant: TenantId, now: OffsetDateTime) -> Sample {
        let mut guard = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (entries, overflow) = &mut *guard;
        if let Some(entry) = entries.get_mut(&tenant) {
            if now - entry.recorded_at < WINDOW && now >= entry.recorded_at {
                entry.unrecorded = entry.unrecorded.saturating_add(1);
                return Sample::Counted;
            }
            let unrecorded = entry.unrecorded;
            *entry = Entry {
                recorded_at: now,
                unrecorded: 0,
            };
            return Sample::Record { unrecorded };
        }
        if entries.len() >= MAX_TENANTS {
            // Windows that have passed with nothing left to report go first.
            entries.retain(|_, e| now - e.recorded_at < WINDOW || e.unrecorded > 0);
        }
        if entries.len() >= MAX_TENANTS {
            *overflow = overflow.saturating_add(1);
            tracing::warn!(
                target: "tenantry",
                tenant = %tenant,
                not_recorded = *overflow,
                "refusals of non-users: too many tenants tracked; counted here only"
            );
            return Sample::Counted;
        }
        entries.insert(
            tenant,
            Entry {
                recorded_at: now,
                unrecorded: 0,
            },
        );
        Sample::Record { unrecorded: 0 }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tenant(n: u16) -> TenantId {
        let b = n.to_be_bytes();
        TenantId::from_parts(1, [0, 0, 0, b[0], b[1], 0, 0, 0, 0, 0])
    }

    #[test]
    fn one_recorded_per_window_then_the_count() {
        let s = Sampler::default();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(s.sample(tenant(1), t0), Sample::Record { unrecorded: 0 });
        for i in 1..=9 {
            assert_eq!(
                s.sample(tenant(1), t0 + Duration::seconds(i)),
                Sample::Counted
            );
        }
        // Another tenant has its own window.
        assert_eq!(s.sample(tenant(2), t0), Sample::Record { unrecorded: 0 });
        assert_eq!(
            s.sample(tenant(1), t0 + WINDOW),
            Sample::Record { unrecorded: 9 }
        );
        assert_eq!(
            s.sample(tenant(1), t0 + WINDOW + Duration::seconds(1)),
            Sample::Counted
        );
    }

    #[test]
    fn the_tracked_tenants_are_bounded() {
        let s = Sampler::default();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        for n in 0..u16::try_from(MAX_TENANTS).unwrap() {
            assert_eq!(s.sample(tenant(n), t0), Sample::Record { unrecorded: 0 });
        }
        let extra = tenant(u16::MAX);
        assert_eq!(
            s.sample(extra, t0),
            Sample::Counted,
            "all windows live: counted only"
        );
        // Once the windows have passed (with nothing unreported), room is made.
        assert_eq!(
            s.sample(extra, t0 + WINDOW),
            Sample::Record { unrecorded: 0 }
        );
        assert!(s.entries.lock().unwrap().0.len() <= MAX_TENANTS);
    }
}
