//! A cache of the rows every check reads (tenant state, users, templates, subjects) that is
//! never stale for the process that owns the database.
//!
//! Coherence: each tenant has a generation. A change to a tenant bumps it before its batch
//! is sent and again when the batch has ended on the connection (for a cancelled caller:
//! when the next user of the writer has rolled back behind it), and while a change is in
//! flight no read of that tenant is served from or stored into the cache. A read that misses takes a
//! [`Ticket`] with the generation it saw and may store what it read only if the generation is
//! still the same, so a value read before a change can never land in the cache after it.
//! Every commit of this process goes through the store, and the store holds a lock on the
//! database that keeps other processes out (see `SqliteStore::open`), so nothing changes a
//! tenant without bumping its generation.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tenantry_core::{RoleTemplate, Subject, TemplateId, TenantId, TenantState, User, UserId};

/// Entries above this many (users, templates and subjects of all tenants) empty the cache.
const CAPACITY: usize = 100_000;
/// Tenants above this many are forgotten (all but those with a change in flight).
const TENANTS: usize = 10_000;

/// A multiply-fold hasher for the cache's keys, which are ids (UUIDs the service draws at
/// random, or tenant ids): SipHash's protection against chosen keys buys nothing here, since
/// only ids read back from the database are ever stored, and it cost a third of a check.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            for (w, b) in word.iter_mut().zip(chunk) {
                *w = *b;
            }
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

/// A map keyed by ids, hashed with [`IdHasher`].
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// What the cache holds of one tenant.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    generation: u64,
    writing: u32,
    pub(crate) state: Option<TenantState>,
    pub(crate) users: IdMap<UserId, User>,
    pub(crate) templates: IdMap<TemplateId, RoleTemplate>,
    pub(crate) subjects: IdMap<UserId, Subject>,
}

impl Entry {
    fn len(&self) -> usize {
        self.users.len() + self.templates.len() + self.subjects.len()
    }

    fn forget(&mut self) {
        self.state = None;
        self.users.clear();
        self.templates.clear();
        self.subjects.clear();
    }
}

/// Leave to store a value read after a miss, valid while the tenant's generation holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

/// The answer of a lookup.
pub(crate) enum Lookup<T> {
    /// The cached value.
    Hit(T),
    /// Read it from the database; store it with the ticket, if any.
    Miss(Option<Ticket>),
}

/// The cache of one store (shared by its clones).
#[derive(Debug, Default)]
pub(crate) struct Cache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tenants: IdMap<TenantId, Entry>,
    /// Entries held, all tenants together.
    total: usize,
    /// The next generation: unique over the store's life, so a ticket can never match an
    /// entry that was forgotten and made anew.
    next: u64,
}

impl Inner {
    fn entry(&mut self, tenant: TenantId) -> &mut Entry {
        if self.tenants.len() >= TENANTS && !self.tenants.contains_key(&tenant) {
            self.tenants.retain(|_, e| e.writing > 0);
            self.total = self.tenants.values().map(Entry::len).sum();
        }
        let next = &mut self.next;
        self.tenants.entry(tenant).or_insert_with(|| {
            *next = next.wrapping_add(1);
            Entry {
                generation: *next,
                ..Entry::default()
            }
        })
    }
}

impl Cache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave an entry half-written in a way that
        // matters: every write replaces whole values.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached subject of a user, if the cache holds it now; never creates an entry.
    /// `None` also while a change to the tenant is in flight.
    #[inline]
    pub(crate) fn subject(&self, tenant: TenantId, user: UserId) -> Option<Subject> {
        let g = self.lock();
        let entry = g.tenants.get(&tenant)?;
        if entry.writing > 0 {
            return None;
        }
        entry.subjects.get(&user).copied()
    }

    /// Looks a value up with `pick`.
    pub(crate) fn get<T: Clone>(
        &self,
        tenant: TenantId,
        pick: impl FnOnce(&Entry) -> Option<&T>,
    ) -> Lookup<T> {
        let mut g = self.lock();
        let entry = g.entry(tenant);
        if entry.writing > 0 {
            return Lookup::Miss(None);
        }
        match pick(entry) {
            Some(v) => Lookup::Hit(v.clone()),
            None => Lookup::Miss(Some(Ticket(entry.generation))),
        }
    }

    /// Stores what a miss read, with `put`, unless the tenant changed since the ticket.
    pub(crate) fn put(
        &self,
        tenant: TenantId,
        ticket: Option<Ticket>,
        put: impl FnOnce(&mut Entry),
    ) {
        let Some(Ticket(generation)) = ticket else {
            return;
        };
        let mut g = self.lock();
        let inner = &mut *g;
        if inner.total >= CAPACITY {
            for e in inner.tenants.values_mut() {
                e.forget();
            }
            inner.total = 0;
        }
        if let Some(entry) = inner.tenants.get_mut(&tenant)
            && entry.writing == 0
            && entry.generation == generation
        {
            let before = entry.len();
            put(entry);
            inner.total = inner
                .total
                .saturating_add(entry.len())
                .saturating_sub(before);
        }
    }

    /// Marks a change to the tenant in flight: nothing of the tenant is served or stored
    /// until [`Cache::end`]. The writer ends it only once the change's batch has finished on
    /// the connection (committed or rolled back), also when the committing future was
    /// cancelled, since the batch may still commit after that.
    pub(crate) fn start(&self, tenant: TenantId) {
        self.bump(tenant, true);
    }

    /// Ends what [`Cache::start`] began.
    pub(crate) fn end(&self, tenant: TenantId) {
        self.bump(tenant, false);
    }

    fn bump(&self, tenant: TenantId, start: bool) {
        let mut g = self.lock();
        g.next = g.next.wrapping_add(1);
        let generation = g.next;
        let entry = g.entry(tenant);
        let held = entry.len();
        entry.forget();
        entry.generation = generation;
        entry.writing = if start {
            entry.writing.saturating_add(1)
        } else {
            entry.writing.saturating_sub(1)
        };
        g.total = g.total.saturating_sub(held);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn state(version: u64) -> TenantState {
        TenantState {
            tenant: tenantry_core::Tenant {
                id: TenantId::from_uuid(uuid::Uuid::nil()),
                name: "t".into(),
                user_limit: None,
                created_at: time::OffsetDateTime::UNIX_EPOCH,
            },
            counters: tenantry_core::Counters {
                version,
                seats_used: 0,
                active_admins: 0,
            },
        }
    }

    fn miss(l: Lookup<TenantState>) -> Option<Ticket> {
        match l {
            Lookup::Miss(t) => t,
            Lookup::Hit(_) => panic!("expected a miss"),
        }
    }

    #[test]
    fn a_value_read_before_a_change_never_lands_after_it() {
        let c = Cache::default();
        let t = TenantId::from_uuid(uuid::Uuid::nil());
        let ticket = miss(c.get(t, |e| e.state.as_ref()));
        // A change starts and ends while the read is on its way.
        c.start(t);
        c.end(t);
        c.put(t, ticket, |e| e.state = Some(state(1)));
        assert!(
            miss(c.get(t, |e| e.state.as_ref())).is_some(),
            "stale value refused"
        );
    }

    #[test]
    fn a_subject_is_answered_now_only_while_nothing_changed() {
        let c = Cache::default();
        let t = TenantId::from_uuid(uuid::Uuid::nil());
        let u = UserId::from_parts(1, [1; 10]);
        let s = Subject {
            tenant_id: t,
            user_id: u,
            role: tenantry_core::Role::User,
            status: tenantry_core::Status::Active,
            crm_access: false,
            grants: tenantry_core::Permissions::USERS_VIEW,
            template: None,
        };
        assert!(c.subject(t, u).is_none(), "nothing cached, no entry made");
        let Lookup::Miss(ticket) = c.get(t, |e| e.subjects.get(&u)) else {
            panic!("expected a miss");
        };
        c.put(t, ticket, |e| {
            e.subjects.insert(u, s);
        });
        assert_eq!(c.subject(t, u), Some(s));
        c.start(t);
        assert!(c.subject(t, u).is_none(), "not while a change is in flight");
        c.end(t);
        assert!(c.subject(t, u).is_none(), "forgotten after the change");
    }

    #[test]
    fn nothing_is_served_or_stored_while_a_change_is_in_flight() {
        let c = Cache::default();
        let t = TenantId::from_uuid(uuid::Uuid::nil());
        let ticket = miss(c.get(t, |e| e.state.as_ref()));
        c.put(t, ticket, |e| e.state = Some(state(1)));
        assert!(
            matches!(c.get(t, |e| e.state.as_ref()), Lookup::Hit(s) if s.counters.version == 1)
        );
        c.start(t);
        assert!(
            miss(c.get(t, |e| e.state.as_ref())).is_none(),
            "no ticket mid-change"
        );
        c.end(t);
        let ticket = miss(c.get(t, |e| e.state.as_ref()));
        c.put(t, ticket, |e| e.state = Some(state(2)));
        assert!(
            matches!(c.get(t, |e| e.state.as_ref()), Lookup::Hit(s) if s.counters.version == 2)
        );
    }
}
