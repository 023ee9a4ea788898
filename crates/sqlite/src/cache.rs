//! A cache of the rows every check reads (tenant state, users, templates, subjects) that is
//! never stale for the process that owns the database.
//!
//! Subjects sit in a [`SubjectCache`], the in-memory store's lock-free check index, so a
//! check answered from the cache takes no lock (for the first [`INDEXED`] tenants the cache
//! meets; later ones keep their subjects in the locked map with the other rows). The rest
//! sits behind one `Mutex`, which every writer of either holds.
//!
//! Coherence: each tenant has a generation. A change to a tenant runs on the writer thread,
//! which bumps the generation before its `BEGIN` and again after its `COMMIT` or `ROLLBACK`
//! (also when its caller has gone: the job runs to its end whatever happens to the caller),
//! and while a change is in flight no read of that tenant is served from or stored into the
//! cache. After the commit, and before the caller hears of it, the writer brings the
//! tenant's cached rows up to date with what the change wrote ([`apply_change`]: a template
//! edit rewrites the cached subjects of its users in place, a user edit its row and
//! subject); a rolled-back change leaves them as they were. A read that misses takes a
//! [`Ticket`] with the generation it saw and may store what it read only if the generation
//! is still the same, so a value read before a change can never land in the cache after it.
//! Every commit of this process goes through the store, and the store holds a lock on the
//! database that keeps other processes out (see `SqliteStore::open`), so nothing changes a
//! tenant without bumping its generation.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tenantry_core::{
    Change, Decision, Permissions, Request, RoleTemplate, Subject, TemplateId, TenantId,
    TenantState, User, UserId, Write,
};
use tenantry_store::{HeldCheck, SubjectCache, TenantSubjects};
use time::{OffsetDateTime, UtcOffset};

/// Rows above this many (users, templates and the subjects not in the index, all tenants
/// together) are forgotten, all at once.
const CAPACITY: usize = 100_000;
/// Subjects in the lock-free index above this many (all tenants together) are forgotten, all
/// at once (each costs some 24 to 64 bytes there, with the table's slack and the
/// generations it outgrew).
const SUBJECTS: usize = 1 << 20;
/// Tenants above this many are forgotten (all but those with a change in flight).
const TENANTS: usize = 10_000;
/// Tenants whose subjects the lock-free index holds (each costs some 3 KB of index for the
/// life of the store, whether or not its entry is forgotten).
const INDEXED: usize = 4_096;

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
#[derive(Debug)]
pub(crate) struct Entry {
    generation: u64,
    writing: u32,
    pub(crate) state: Option<TenantState>,
    pub(crate) users: IdMap<UserId, User>,
    pub(crate) templates: IdMap<TemplateId, RoleTemplate>,
    pub(crate) subjects: Subjects,
}

impl Entry {
    /// The rows held in maps (counted against [`CAPACITY`]) and the subjects held in the
    /// index (against [`SUBJECTS`]).
    fn sizes(&self) -> (usize, usize) {
        let rows = self.users.len() + self.templates.len();
        match &self.subjects {
            Subjects::Indexed(ix) => (rows, ix.len()),
            Subjects::Map(m) => (rows + m.len(), 0),
        }
    }

    /// Forgets the rows held in maps (the subjects in the index stay: each is kept current
    /// on its own).
    fn forget_rows(&mut self) {
        self.state = None;
        self.users.clear();
        self.templates.clear();
        if let Subjects::Map(m) = &mut self.subjects {
            m.clear();
        }
    }

    fn forget(&mut self) {
        self.forget_rows();
        self.subjects.clear();
    }
}

/// The cached subjects of a tenant: in the lock-free index, or (past [`INDEXED`] tenants)
/// in a map behind the cache's lock. Written only with that lock held.
#[derive(Debug)]
pub(crate) enum Subjects {
    Indexed(TenantSubjects),
    Map(IdMap<UserId, Subject>),
}

impl Subjects {
    /// The subject in the map (the index is read without the lock, by [`Cache::subject`]).
    pub(crate) fn in_map(&self, user: UserId) -> Option<&Subject> {
        match self {
            Self::Indexed(_) => None,
            Self::Map(m) => m.get(&user),
        }
    }

    pub(crate) fn put(&mut self, s: Subject) {
        match self {
            Self::Indexed(ix) => {
                // `false` only for a subject of another tenant (never: the store reads by
                // tenant) or an index that could not hold it, which then answers nothing.
                let _ = ix.put(&s);
            }
            Self::Map(m) => {
                m.insert(s.user_id, s);
            }
        }
    }

    fn remove(&mut self, user: UserId) {
        match self {
            Self::Indexed(ix) => ix.remove(user),
            Self::Map(m) => {
                m.remove(&user);
            }
        }
    }

    fn clear(&mut self) {
        match self {
            Self::Indexed(ix) => ix.clear(),
            Self::Map(m) => m.clear(),
        }
    }

    fn pause(&self) {
        if let Self::Indexed(ix) = self {
            ix.pause();
        }
    }

    fn resume(&self) {
        if let Self::Indexed(ix) = self {
            ix.resume();
        }
    }

    /// D6: a template's users see its new permissions at their next check, no round trip.
    fn set_template(&mut self, id: TemplateId, permissions: Permissions) {
        match self {
            Self::Indexed(ix) => ix.set_template(id, permissions),
            Self::Map(m) => {
                for s in m.values_mut() {
                    if let Some((t, perms)) = &mut s.template
                        && *t == id
                    {
                        *perms = permissions;
                    }
                }
            }
        }
    }

    /// The template's users are read again at their next check.
    fn forget_template(&mut self, id: TemplateId) {
        match self {
            Self::Indexed(ix) => ix.retire_template(id),
            Self::Map(m) => m.retain(|_, s| s.template.is_none_or(|(t, _)| t != id)),
        }
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
#[derive(Debug)]
pub(crate) struct Cache {
    inner: Mutex<Inner>,
    /// The subjects of the first [`INDEXED`] tenants, read without the lock.
    index: SubjectCache,
    /// [`CAPACITY`] and [`SUBJECTS`] (smaller in tests).
    limits: (usize, usize),
}

impl Default for Cache {
    fn default() -> Self {
        Self::with_indexed(INDEXED)
    }
}

impl Cache {
    /// A cache whose lock-free index holds the subjects of at most `tenants` tenants.
    fn with_indexed(tenants: usize) -> Self {
        Self {
            inner: Mutex::default(),
            index: SubjectCache::new(tenants),
            limits: (CAPACITY, SUBJECTS),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    tenants: IdMap<TenantId, Entry>,
    /// Rows held in maps, all tenants together.
    total: usize,
    /// Subjects held in the index, all tenants together.
    indexed: usize,
    /// The next generation: unique over the store's life, so a ticket can never match an
    /// entry that was forgotten and made anew.
    next: u64,
}

impl Inner {
    /// Counts an entry's change of sizes, from `before` to `after` ([`Entry::sizes`]).
    fn count(&mut self, before: (usize, usize), after: (usize, usize)) {
        self.total = self.total.saturating_add(after.0).saturating_sub(before.0);
        self.indexed = self
            .indexed
            .saturating_add(after.1)
            .saturating_sub(before.1);
    }

    fn entry(&mut self, tenant: TenantId, index: &SubjectCache) -> &mut Entry {
        if self.tenants.len() >= TENANTS && !self.tenants.contains_key(&tenant) {
            self.tenants.retain(|_, e| {
                let keep = e.writing > 0;
                if !keep {
                    e.subjects.clear();
                }
                keep
            });
            (self.total, self.indexed) = self
                .tenants
                .values()
                .map(Entry::sizes)
                .fold((0, 0), |(r, i), (er, ei)| (r + er, i + ei));
        }
        let next = &mut self.next;
        self.tenants.entry(tenant).or_insert_with(|| {
            *next = next.wrapping_add(1);
            let subjects = match index.tenant(tenant) {
                Some(ix) => {
                    // What the index still holds of a tenant whose entry was forgotten is
                    // forgotten with it.
                    ix.clear();
                    Subjects::Indexed(ix)
                }
                None => Subjects::Map(IdMap::default()),
            };
            Entry {
                generation: *next,
                writing: 0,
                state: None,
                users: IdMap::default(),
                templates: IdMap::default(),
                subjects,
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
    /// `None` also while a change to the tenant is in flight. Read without a lock from the
    /// index, else from the locked map.
    #[inline]
    pub(crate) fn subject(&self, tenant: TenantId, user: UserId) -> Option<Subject> {
        self.index
            .subject_now(tenant, user)
            .or_else(|| self.subject_in_map(tenant, user))
    }

    /// The subject of a tenant past the index, from the locked map (never while a change to
    /// the tenant is in flight).
    fn subject_in_map(&self, tenant: TenantId, user: UserId) -> Option<Subject> {
        let g = self.lock();
        let entry = g.tenants.get(&tenant)?;
        if entry.writing > 0 {
            return None;
        }
        entry.subjects.in_map(user).copied()
    }

    /// A check decided on the cached subject, as [`Cache::subject`] finds it.
    #[inline]
    pub(crate) fn decide(
        &self,
        tenant: TenantId,
        user: UserId,
        request: Request,
    ) -> Option<Decision> {
        if let Some(d) = self.index.decide_now(tenant, user, request) {
            return Some(d);
        }
        let s = self.subject_in_map(tenant, user)?;
        Some(tenantry_core::authorize_subject(&s, request))
    }

    /// A cached user's checks, held (only for tenants in the index).
    pub(crate) fn hold(&self, tenant: TenantId, user: UserId) -> Option<HeldCheck> {
        self.index.hold_now(tenant, user)
    }

    /// Looks a value up with `pick`.
    pub(crate) fn get<T: Clone>(
        &self,
        tenant: TenantId,
        pick: impl FnOnce(&Entry) -> Option<&T>,
    ) -> Lookup<T> {
        let mut g = self.lock();
        let entry = g.entry(tenant, &self.index);
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
        if inner.total >= self.limits.0 {
            for e in inner.tenants.values_mut() {
                e.forget_rows();
            }
            inner.total = 0;
        }
        if inner.indexed >= self.limits.1 {
            for e in inner.tenants.values_mut() {
                if let Subjects::Indexed(ix) = &e.subjects {
                    ix.clear();
                }
            }
            inner.indexed = 0;
        }
        if let Some(entry) = inner.tenants.get_mut(&tenant)
            && entry.writing == 0
            && entry.generation == generation
        {
            let before = entry.sizes();
            put(entry);
            let after = entry.sizes();
            inner.count(before, after);
        }
    }

    /// Marks a change to the tenant in flight: nothing of the tenant is served or stored
    /// until [`Cache::end`]. The writer thread ends it once the change's transaction has
    /// committed or rolled back (also when the committing caller has gone).
    pub(crate) fn start(&self, tenant: TenantId) {
        let mut g = self.lock();
        g.next = g.next.wrapping_add(1);
        let generation = g.next;
        let entry = g.entry(tenant, &self.index);
        entry.generation = generation;
        entry.writing = entry.writing.saturating_add(1);
        entry.subjects.pause();
    }

    /// Ends what [`Cache::start`] began: `update` brings the tenant's rows up to date with
    /// what the change wrote, or answers `false` to forget them.
    pub(crate) fn end(&self, tenant: TenantId, update: impl FnOnce(&mut Entry) -> bool) {
        let mut g = self.lock();
        g.next = g.next.wrapping_add(1);
        let generation = g.next;
        let inner = &mut *g;
        let entry = inner.entry(tenant, &self.index);
        let before = entry.sizes();
        if !update(entry) {
            entry.forget();
        }
        entry.generation = generation;
        if entry.writing > 0 {
            entry.writing -= 1;
            entry.subjects.resume();
        }
        let after = entry.sizes();
        inner.count(before, after);
    }
}

/// A time as the database gives it back (UTC).
fn utc(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(UtcOffset::UTC)
}

/// A user row as the database gives it back.
fn user_row(u: &User, created_at: OffsetDateTime) -> User {
    User {
        created_at: utc(created_at),
        last_login: u.last_login.map(utc),
        invite_expires_at: u.invite_expires_at.map(utc),
        ..u.clone()
    }
}

/// The subject of `u` as the database would read it now, if the cache knows its template.
fn subject_of(e: &Entry, u: &User) -> Option<Subject> {
    match u.template_id {
        None => Some(Subject::of(u, None)),
        Some(t) => e.templates.get(&t).map(|tp| Subject::of(u, Some(tp))),
    }
}

fn put_subject(e: &mut Entry, u: &User) {
    match subject_of(e, u) {
        Some(s) => e.subjects.put(s),
        None => e.subjects.remove(u.id),
    }
}

/// Applies a committed change to the tenant's cached rows, exactly as the commit wrote them
/// (write by write, in order); `false` when a write is one this cache does not know, and the
/// tenant's rows must be forgotten.
pub(crate) fn apply_change(e: &mut Entry, change: &Change) -> bool {
    for w in &change.writes {
        match w {
            Write::InsertTenant(tn) => {
                e.state = Some(TenantState {
                    tenant: tenantry_core::Tenant {
                        created_at: utc(tn.created_at),
                        ..tn.clone()
                    },
                    counters: change.counters,
                });
            }
            Write::UpdateTenant(tn) => {
                if let Some(s) = &mut e.state {
                    s.tenant.name.clone_from(&tn.name);
                    s.tenant.user_limit = tn.user_limit;
                }
            }
            Write::InsertUser(u) => {
                e.users.insert(u.id, user_row(u, u.created_at));
                put_subject(e, u);
            }
            Write::UpdateUser(u) => {
                // The update writes every column but the id, tenant and creation time.
                if let Some(old) = e.users.get(&u.id) {
                    let row = user_row(u, old.created_at);
                    e.users.insert(u.id, row);
                }
                put_subject(e, u);
            }
            Write::DeleteUser(tomb) => {
                e.users.remove(&tomb.user_id);
                e.subjects.remove(tomb.user_id);
            }
            Write::InsertTemplate(tp) => {
                e.templates.insert(
                    tp.id,
                    RoleTemplate {
                        created_at: utc(tp.created_at),
                        updated_at: utc(tp.updated_at),
                        ..tp.clone()
                    },
                );
            }
            Write::UpdateTemplate(tp) => {
                if let Some(old) = e.templates.get_mut(&tp.id) {
                    old.name = tp.name.clone();
                    old.permissions = tp.permissions;
                    old.updated_at = utc(tp.updated_at);
                }
                // D6: its users' next checks see the new permissions, without a round trip.
                e.subjects.set_template(tp.id, tp.permissions);
            }
            Write::DeleteTemplate(id) => {
                e.templates.remove(id);
                e.subjects.forget_template(*id);
            }
            Write::MoveTemplateUsers { from, to } => {
                for u in e.users.values_mut() {
                    if u.template_id == Some(*from) {
                        u.template_id = *to;
                    }
                }
                // Its users are read again at their next check (a rare write: a template
                // deleted with its users moved to another).
                e.subjects.forget_template(*from);
            }
            Write::InsertInvitation(_)
            | Write::RevokeInvitations(_)
            | Write::UseInvitation(_)
            | Write::FailAcceptAttempt { .. } => {}
            #[allow(unreachable_patterns)]
            _ => return false,
        }
    }
    if let Some(s) = &mut e.state {
        s.counters = change.counters;
    }
    true
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
        c.end(t, |_| false);
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
        let Lookup::Miss(ticket) = c.get(t, |e| e.subjects.in_map(u)) else {
            panic!("expected a miss");
        };
        c.put(t, ticket, |e| {
            e.subjects.put(s);
        });
        assert_eq!(c.subject(t, u), Some(s));
        c.start(t);
        assert!(c.subject(t, u).is_none(), "not while a change is in flight");
        c.end(t, |_| false);
        assert!(c.subject(t, u).is_none(), "forgotten after the change");
    }

    /// The same answers whichever home a tenant's subjects have: the lock-free index (the
    /// first tenants) or the locked map (past them).
    #[test]
    fn d6_template_writes_reach_cached_subjects_in_the_index_and_in_the_map() {
        use tenantry_core::{Action, Category, Permission, Permissions, Request};
        let edit = Request::Permission(Permission::new(Category::Users, Action::Edit));
        for indexed in [1, 0] {
            let c = Cache::with_indexed(indexed);
            let t = TenantId::from_parts(1_767_225_600_000, [1; 10]);
            let u = UserId::from_parts(1_767_225_600_000, [2; 10]);
            let tp = TemplateId::from_parts(1_767_225_600_000, [3; 10]);
            let s = Subject {
                tenant_id: t,
                user_id: u,
                role: tenantry_core::Role::User,
                status: tenantry_core::Status::Active,
                crm_access: false,
                grants: Permissions::empty(),
                template: Some((tp, Permissions::USERS_EDIT)),
            };
            let Lookup::Miss(ticket) = c.get(t, |e| e.subjects.in_map(u)) else {
                panic!("expected a miss");
            };
            c.put(t, ticket, |e| e.subjects.put(s));
            assert_eq!(
                c.hold(t, u).is_some(),
                indexed > 0,
                "held only from the index"
            );
            assert!(
                c.decide(t, u, edit).unwrap().is_allowed(),
                "indexed {indexed}"
            );
            let template = RoleTemplate {
                id: tp,
                tenant_id: t,
                name: tenantry_core::TemplateName::parse("Agents").unwrap(),
                permissions: Permissions::USERS_VIEW,
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                updated_at: time::OffsetDateTime::UNIX_EPOCH,
            };
            let change = |w: Write| Change {
                tenant_id: t,
                expected_version: 0,
                counters: tenantry_core::Counters::default(),
                writes: vec![w],
                events: Vec::new(),
            };
            c.start(t);
            assert!(c.subject(t, u).is_none(), "not while a change is in flight");
            c.end(t, |e| {
                apply_change(e, &change(Write::UpdateTemplate(template.clone())))
            });
            let now = c.subject(t, u).unwrap();
            assert_eq!(
                now.template,
                Some((tp, Permissions::USERS_VIEW)),
                "indexed {indexed}"
            );
            assert!(!c.decide(t, u, edit).unwrap().is_allowed());
            c.start(t);
            c.end(t, |e| apply_change(e, &change(Write::DeleteTemplate(tp))));
            assert!(
                c.subject(t, u).is_none(),
                "read again after its template went"
            );
            assert!(c.decide(t, u, edit).is_none());
        }
    }

    /// Past its limit of rows the cache forgets its rows but not the subjects in its index,
    /// and past its limit of indexed subjects those (and only those).
    #[test]
    fn each_limit_forgets_only_what_it_counts() {
        let mut c = Cache::with_indexed(1);
        c.limits = (2, 3);
        let t = TenantId::from_parts(1_767_225_600_000, [1; 10]);
        let u = |n: u8| UserId::from_parts(1_767_225_600_000, [n; 10]);
        let put_subject = |n: u8| {
            let s = Subject {
                tenant_id: t,
                user_id: u(n),
                role: tenantry_core::Role::User,
                status: tenantry_core::Status::Active,
                crm_access: false,
                grants: tenantry_core::Permissions::empty(),
                template: None,
            };
            let Lookup::Miss(ticket) = c.get(t, |e| e.subjects.in_map(u(n))) else {
                panic!("expected a miss");
            };
            c.put(t, ticket, |e| e.subjects.put(s));
        };
        let put_state = |v: u64| {
            let ticket = miss(c.get(t, |e| e.state.as_ref()));
            c.put(t, ticket, |e| e.state = Some(state(v)));
        };
        put_subject(1);
        put_subject(2);
        put_state(1);
        assert!(matches!(c.get(t, |e| e.state.as_ref()), Lookup::Hit(_)));
        put_subject(3);
        assert!(c.subject(t, u(1)).is_some() && c.subject(t, u(3)).is_some());
        // A fourth subject's put finds 3 in the index: they are forgotten, then it is stored.
        put_subject(4);
        assert!(c.subject(t, u(1)).is_none() && c.subject(t, u(3)).is_none());
        assert!(c.subject(t, u(4)).is_some());
        assert!(
            matches!(c.get(t, |e| e.state.as_ref()), Lookup::Hit(_)),
            "the rows stay"
        );
        // Two rows (the templates; the state is not counted): the next put forgets the rows,
        // the state with them, not the subject.
        let Lookup::Miss(ticket) = c.get(t, |e| e.users.get(&u(8))) else {
            panic!("expected a miss");
        };
        c.put(t, ticket, |e| {
            for n in [8, 9] {
                let id = TemplateId::from_parts(1, [n; 10]);
                e.templates.insert(
                    id,
                    RoleTemplate {
                        id,
                        tenant_id: t,
                        name: tenantry_core::TemplateName::parse("A").unwrap(),
                        permissions: tenantry_core::Permissions::empty(),
                        created_at: time::OffsetDateTime::UNIX_EPOCH,
                        updated_at: time::OffsetDateTime::UNIX_EPOCH,
                    },
                );
            }
        });
        put_subject(5);
        assert!(
            miss(c.get(t, |e| e.state.as_ref())).is_some(),
            "rows forgotten"
        );
        assert!(c.subject(t, u(4)).is_some(), "the indexed subject stays");
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
        c.end(t, |_| false);
        let ticket = miss(c.get(t, |e| e.state.as_ref()));
        c.put(t, ticket, |e| e.state = Some(state(2)));
        assert!(
            matches!(c.get(t, |e| e.state.as_ref()), Lookup::Hit(s) if s.counters.version == 2)
        );
    }
}
