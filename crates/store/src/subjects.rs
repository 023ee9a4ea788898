//! [`SubjectCache`]: the in-memory store's lock-free check index, as a cache of subjects for
//! a store that owns every write to its data (an owning SQLite store, say).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tenantry_core::{Decision, Permissions, Request, Subject, TemplateId, TenantId, UserId};

use crate::HeldCheck;
use crate::memory::check::{Directory, Entry, Found, TenantIndex};

/// A cache of subjects (what a check reads of a user) that answers checks without a lock,
/// for a store that owns every write to its data.
///
/// It is the in-memory store's check index, holding only the users a store put in it: per
/// tenant, a table from user id to one packed word (status, role, CRM flag, grants and a
/// template slot) and a slot per template (its id and permissions), read under a sequence
/// counter, so a reader takes no lock and writes no shared memory. A check of a user the
/// cache does not hold is not answered here ([`SubjectCache::decide_now`] is `None`): the
/// store reads the subject and may [`TenantSubjects::put`] it.
///
/// # Never stale
/// The store keeps it as current as its data ([current access
/// (D6)](tenantry_core::Rule::CurrentAccess)): before a change to a tenant starts it calls
/// [`TenantSubjects::pause`] (no check of that tenant is answered here until the matching
/// [`TenantSubjects::resume`]); once the change has committed or rolled back, and before
/// its caller hears of it, it brings the tenant's entries up to date with what the change
/// wrote (or [`TenantSubjects::clear`]s them), then resumes. A subject read from the store
/// must be put only if no change to its tenant started since the read began. A template
/// edit is one store ([`TenantSubjects::set_template`]), whatever the number of users
/// referencing it.
///
/// # Bounds
/// Tenants are never removed from the cache (readers may be inside them); it indexes at most
/// the number of tenants given to [`SubjectCache::new`], and [`SubjectCache::tenant`] is
/// `None` for any tenant past it (its checks are then the store's to answer). A tenant's
/// table grows with the users ever put in it; [`TenantSubjects::clear`] empties it.
///
/// ```
/// use tenantry_core::{Decision, Permissions, Request, Role, Status, Subject, TenantId, UserId};
/// use tenantry_store::SubjectCache;
///
/// let cache = SubjectCache::new(16);
/// let tenant = TenantId::from_parts(1_767_225_600_000, [1; 10]);
/// let ada = UserId::from_parts(1_767_225_600_000, [2; 10]);
/// assert!(cache.decide_now(tenant, ada, Request::Crm).is_none(), "not cached: ask the store");
///
/// let subject = Subject {
///     tenant_id: tenant,
///     user_id: ada,
///     role: Role::Admin,
///     status: Status::Active,
///     crm_access: false,
///     grants: Permissions::empty(),
///     template: None,
/// };
/// let entries = cache.tenant(tenant).ok_or("room for the tenant")?;
/// assert!(entries.put(&subject));
/// let decision = cache.decide_now(tenant, ada, Request::Crm).ok_or("answered")?;
/// assert_eq!(decision, tenantry_core::authorize_subject(&subject, Request::Crm));
///
/// // A change to the tenant is in flight: the store answers, not the cache.
/// entries.pause();
/// assert!(cache.decide_now(tenant, ada, Request::Crm).is_none());
/// entries.remove(ada);
/// entries.resume();
/// assert!(cache.decide_now(tenant, ada, Request::Crm).is_none(), "removed: ask the store");
/// # Ok::<(), &'static str>(())
/// ```
pub struct SubjectCache {
    directory: Directory<Arc<CachedTenant>>,
    /// The directory's writer lock, and the number of tenants it holds.
    tenants: Mutex<usize>,
    capacity: usize,
}

impl fmt::Debug for SubjectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectCache")
            .field("tenants", &*lock(&self.tenants))
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// One tenant of a [`SubjectCache`]: its check index and the writer's bookkeeping.
pub(crate) struct CachedTenant {
    index: TenantIndex,
    /// Held by every writer of the index (so writers never overlap).
    writer: Mutex<Slots>,
}

impl CachedTenant {
    pub(crate) fn index(&self) -> &TenantIndex {
        &self.index
    }
}

/// The template slots of a tenant: each template the index names has one, allocated on
/// first use and never reused (a retired slot's template gets a fresh one).
#[derive(Default)]
struct Slots {
    of: HashMap<TemplateId, u32>,
    next: u32,
}

impl Slots {
    fn slot(&mut self, id: TemplateId) -> Option<u32> {
        if let Some(s) = self.of.get(&id) {
            return Some(*s);
        }
        let slot = self.next;
        if !TenantIndex::slot_fits(slot) {
            return None;
        }
        self.next = slot.checked_add(1)?;
        self.of.insert(id, slot);
        Some(slot)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every writer stores whole words inside the index's writer window; a panic cannot
    // leave the bookkeeping half-written in a way that names a wrong slot.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SubjectCache {
    /// An empty cache that indexes at most `tenants` tenants.
    #[must_use]
    pub fn new(tenants: usize) -> Self {
        Self {
            directory: Directory::default(),
            tenants: Mutex::new(0),
            capacity: tenants,
        }
    }

    /// The writer's handle on one tenant's entries, added to the cache if it is not there
    /// yet; `None` when the cache is full (or the id is nil, which is never cached).
    #[must_use]
    pub fn tenant(&self, tenant: TenantId) -> Option<TenantSubjects> {
        let mut count = lock(&self.tenants);
        // The directory's writer lock is held, so no other writer adds the tenant meanwhile.
        if let Some(Entry::Known(cell)) = self.directory.get(tenant) {
            return Some(TenantSubjects {
                tenant,
                cell: Arc::clone(cell),
            });
        }
        if *count >= self.capacity || tenant.as_uuid().is_nil() {
            return None;
        }
        let cell = Arc::new(CachedTenant {
            index: TenantIndex::partial(),
            writer: Mutex::new(Slots::default()),
        });
        self.directory.insert(tenant, Arc::clone(&cell));
        // A directory that failed to hold it answers nothing (`get` is then `None`).
        self.directory.get(tenant)?;
        *count += 1;
        Some(TenantSubjects { tenant, cell })
    }

    #[inline(always)]
    fn cell(&self, tenant: TenantId) -> Option<&Arc<CachedTenant>> {
        match self.directory.get(tenant)? {
            Entry::Known(cell) => Some(cell),
            Entry::Unknown => None,
        }
    }

    /// The check decided from the cache, as [`tenantry_core::authorize_subject`] decides it
    /// on the cached subject; `None` when the cache cannot answer (the user is not cached,
    /// a change to the tenant is in flight, or writers kept interfering): the store answers.
    #[inline]
    #[must_use]
    pub fn decide_now(&self, tenant: TenantId, user: UserId, request: Request) -> Option<Decision> {
        self.cell(tenant)?.index.decide(tenant, user, request)
    }

    /// The cached subject of a user; `None` when the cache cannot answer (as
    /// [`SubjectCache::decide_now`]).
    #[inline]
    #[must_use]
    pub fn subject_now(&self, tenant: TenantId, user: UserId) -> Option<Subject> {
        match self.cell(tenant)?.index.subject(tenant, user)? {
            Found::Subject(s) => Some(s),
            Found::Unknown => None,
        }
    }

    /// Takes hold of a cached user's checks ([`HeldCheck`]): they read the user's word where
    /// it is now, until the tenant's table grows; `None` when the cache cannot answer.
    #[must_use]
    pub fn hold_now(&self, tenant: TenantId, user: UserId) -> Option<HeldCheck> {
        let cell = self.cell(tenant)?;
        let held = cell.index.locate(user)?;
        Some(HeldCheck::cached(Arc::clone(cell), tenant, user, held))
    }
}

/// The writer's handle on one tenant of a [`SubjectCache`] ([`SubjectCache::tenant`]).
/// Every method takes the tenant's writer lock, so writers never overlap; checks read on
/// without a lock, and see each method's whole effect or none of it.
#[derive(Clone)]
pub struct TenantSubjects {
    tenant: TenantId,
    cell: Arc<CachedTenant>,
}

impl fmt::Debug for TenantSubjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantSubjects")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl TenantSubjects {
    /// Runs `f` with the writer lock held and readers kept out of the window.
    fn write<T>(&self, f: impl FnOnce(&TenantIndex, &mut Slots) -> T) -> T {
        let mut slots = lock(&self.cell.writer);
        self.cell.index.write(|ix| f(ix, &mut slots))
    }

    /// The tenant whose entries these are.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// How many users the tenant's entries hold.
    #[must_use]
    pub fn len(&self) -> usize {
        self.cell.index.users_len()
    }

    /// Whether the tenant's entries hold no user.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops the cache answering checks of this tenant until the matching
    /// [`TenantSubjects::resume`]: call it before a change to the tenant starts. Pauses
    /// nest (each needs its own resume).
    pub fn pause(&self) {
        self.write(|ix, _| ix.pause());
    }

    /// Ends one [`TenantSubjects::pause`].
    pub fn resume(&self) {
        self.write(|ix, _| ix.resume());
    }

    /// Stores a subject read from the store (its template's permissions too, which every
    /// cached user of that template then reads). `false`, changing nothing, when the subject
    /// is of another tenant or its user id is nil; `false` when the tenant's index could not
    /// hold it, which stops the tenant's checks being answered here at all.
    pub fn put(&self, subject: &Subject) -> bool {
        if subject.tenant_id != self.tenant || subject.user_id.as_uuid().is_nil() {
            return false;
        }
        self.write(|ix, slots| {
            let slot = match subject.template {
                None => None,
                Some((id, perms)) => match slots.slot(id) {
                    Some(slot) => {
                        if !ix.set_template(slot, id, Some(perms)) {
                            ix.distrust();
                            return false;
                        }
                        Some(slot)
                    }
                    // Out of slots: the word says to ask the store.
                    None => None,
                },
            };
            let ok = ix.set_user(
                subject.user_id,
                Some(TenantIndex::pack_subject(subject, slot)),
            );
            if !ok {
                ix.distrust();
            }
            ok
        })
    }

    /// Forgets one user (deleted, or changed in a way the store will read again).
    pub fn remove(&self, user: UserId) {
        self.write(|ix, _| {
            if !ix.set_user(user, None) {
                ix.distrust();
            }
        });
    }

    /// A template's new permissions, read at the next check of every cached user of it.
    pub fn set_template(&self, id: TemplateId, permissions: Permissions) {
        self.write(|ix, slots| {
            if let Some(slot) = slots.of.get(&id)
                && !ix.set_template(*slot, id, Some(permissions))
            {
                ix.distrust();
            }
        });
    }

    /// Stops answering for every cached user of a template (it was deleted, or its users
    /// were moved to another): their checks are asked of the store, and a later
    /// [`TenantSubjects::put`] of a user of it starts afresh.
    pub fn retire_template(&self, id: TemplateId) {
        self.write(|ix, slots| {
            if let Some(slot) = slots.of.remove(&id) {
                ix.retire_template(slot);
            }
        });
    }

    /// Forgets every cached user of the tenant.
    pub fn clear(&self) {
        self.write(|ix, slots| {
            ix.clear_users();
            for (_, slot) in slots.of.drain() {
                ix.retire_template(slot);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use tenantry_core::{Action, Category, Permission, Reason, Role, Status};

    const VIEW: Request = Request::Permission(Permission::new(Category::Users, Action::View));
    const EDIT: Request = Request::Permission(Permission::new(Category::Users, Action::Edit));

    fn ids() -> (TenantId, UserId, UserId, TemplateId) {
        (
            TenantId::from_parts(1_767_225_600_000, [1; 10]),
            UserId::from_parts(1_767_225_600_000, [2; 10]),
            UserId::from_parts(1_767_225_600_000, [3; 10]),
            TemplateId::from_parts(1_767_225_600_000, [4; 10]),
        )
    }

    fn subject(
        tenant: TenantId,
        user: UserId,
        template: Option<(TemplateId, Permissions)>,
    ) -> Subject {
        Subject {
            tenant_id: tenant,
            user_id: user,
            role: Role::User,
            status: Status::Active,
            crm_access: false,
            grants: Permissions::USERS_VIEW,
            template,
        }
    }

    #[test]
    fn d6_a_cached_subject_is_answered_as_authorize_subject_decides() {
        let (t, a, b, tp) = ids();
        let c = SubjectCache::new(4);
        let e = c.tenant(t).unwrap();
        let sa = subject(t, a, None);
        let sb = subject(t, b, Some((tp, Permissions::USERS_EDIT)));
        assert!(e.put(&sa) && e.put(&sb));
        for r in [Request::Crm, VIEW, EDIT] {
            assert_eq!(
                c.decide_now(t, a, r),
                Some(tenantry_core::authorize_subject(&sa, r))
            );
            assert_eq!(
                c.decide_now(t, b, r),
                Some(tenantry_core::authorize_subject(&sb, r))
            );
            assert_eq!(
                c.hold_now(t, b).unwrap().decide_now(r),
                Some(tenantry_core::authorize_subject(&sb, r))
            );
        }
        assert_eq!(c.subject_now(t, b), Some(sb));
        let other = TenantId::from_parts(1_767_225_600_000, [9; 10]);
        assert_eq!(
            c.subject_now(other, a),
            None,
            "an unknown tenant is asked of the store"
        );
        assert!(
            !e.put(&subject(other, a, None)),
            "another tenant's subject is refused"
        );
        assert_eq!(
            c.subject_now(t, UserId::from_parts(1, [7; 10])),
            None,
            "an uncached user is asked"
        );
        // A cache holds only some users: one it lacks is the store's to answer, never an
        // unknown user (which would deny a user the store holds).
        let uncached = UserId::from_parts(1, [7; 10]);
        assert_eq!(
            c.decide_now(t, uncached, VIEW),
            None,
            "an uncached user is asked"
        );
        let held = c.hold_now(t, a).unwrap();
        e.remove(a);
        assert_eq!(c.decide_now(t, a, VIEW), None, "a removed user is asked");
        assert_eq!(held.decide_now(VIEW), None, "held, a removed user is asked");
    }

    #[test]
    fn d6_a_template_edit_reaches_every_cached_user_and_retiring_asks_the_store() {
        let (t, a, b, tp) = ids();
        let c = SubjectCache::new(4);
        let e = c.tenant(t).unwrap();
        e.put(&subject(t, a, Some((tp, Permissions::USERS_EDIT))));
        e.put(&subject(t, b, Some((tp, Permissions::USERS_EDIT))));
        let held = c.hold_now(t, a).unwrap();
        let edit = EDIT;
        assert!(c.decide_now(t, b, edit).unwrap().is_allowed());
        e.pause();
        assert_eq!(c.decide_now(t, b, edit), None, "paused");
        assert_eq!(held.decide_now(edit), None, "paused, held too");
        e.set_template(tp, Permissions::USERS_VIEW);
        e.resume();
        for u in [a, b] {
            let d = c.decide_now(t, u, edit).unwrap();
            assert!(!d.is_allowed(), "the edit is seen at the next check");
            assert_eq!(
                c.subject_now(t, u).unwrap().template,
                Some((tp, Permissions::USERS_VIEW))
            );
        }
        assert!(!held.decide_now(edit).unwrap().is_allowed());
        e.retire_template(tp);
        assert_eq!(
            c.decide_now(t, a, edit),
            None,
            "retired: asked of the store"
        );
        assert_eq!(held.decide_now(edit), None);
        // Put again with the template (say it was not deleted after all): a fresh slot, and
        // the other user, whose word names the retired one, is still asked.
        e.put(&subject(t, a, Some((tp, Permissions::USERS_EDIT))));
        assert!(c.decide_now(t, a, edit).unwrap().is_allowed());
        assert_eq!(c.decide_now(t, b, edit), None);
    }

    #[test]
    fn d6_pauses_nest_and_clear_forgets_everyone() {
        let (t, a, b, tp) = ids();
        let c = SubjectCache::new(4);
        let e = c.tenant(t).unwrap();
        e.put(&subject(t, a, None));
        e.put(&subject(t, b, Some((tp, Permissions::USERS_EDIT))));
        e.pause();
        e.pause();
        e.resume();
        assert_eq!(c.subject_now(t, a), None, "one pause still in force");
        e.resume();
        assert!(c.subject_now(t, a).is_some());
        e.resume();
        e.pause();
        assert_eq!(
            c.subject_now(t, a),
            None,
            "a resume without a pause does not undo a later pause"
        );
        e.resume();
        e.clear();
        assert_eq!(c.subject_now(t, a), None);
        assert_eq!(c.subject_now(t, b), None);
        e.put(&subject(t, a, None));
        assert_eq!(
            c.decide_now(t, a, Request::Crm).map(|d| d.reason()),
            Some(Reason::NoCrmAccess)
        );
    }

    #[test]
    fn d6_a_removed_user_is_asked_of_the_store_and_the_others_still_answered() {
        let (t, a, b, _) = ids();
        let c = SubjectCache::new(4);
        let e = c.tenant(t).unwrap();
        assert!(e.is_empty());
        e.put(&subject(t, a, None));
        e.put(&subject(t, b, None));
        e.put(&subject(t, b, None));
        assert_eq!(e.len(), 2);
        assert!(!e.is_empty());
        e.remove(a);
        assert_eq!(e.len(), 1);
        assert_eq!(c.subject_now(t, a), None);
        assert_eq!(c.subject_now(t, b), Some(subject(t, b, None)));
        e.remove(UserId::from_parts(1, [5; 10]));
        assert_eq!(e.len(), 1, "removing an uncached user changes nothing");
        assert!(c.subject_now(t, b).is_some());
        e.clear();
        assert!(e.is_empty());
    }

    #[test]
    fn debug_names_counts_and_tenants_only() {
        let (t, a, _, _) = ids();
        let c = SubjectCache::new(4);
        let e = c.tenant(t).unwrap();
        e.put(&subject(t, a, None));
        let cache = format!("{c:?}");
        assert!(
            cache.contains("SubjectCache") && cache.contains("tenants: 1"),
            "{cache}"
        );
        assert!(cache.contains("capacity: 4"), "{cache}");
        let entries = format!("{e:?}");
        assert!(
            entries.contains("TenantSubjects") && entries.contains(&format!("{t:?}")),
            "{entries}"
        );
    }

    #[test]
    fn the_cache_holds_at_most_its_tenants() {
        let c = SubjectCache::new(2);
        let t = |n: u8| TenantId::from_parts(1_767_225_600_000, [n; 10]);
        assert!(c.tenant(t(1)).is_some());
        assert!(c.tenant(t(2)).is_some());
        assert!(
            c.tenant(t(1)).is_some(),
            "known tenants are found when full"
        );
        assert!(c.tenant(t(3)).is_none());
        assert!(c.tenant(TenantId::from_uuid(uuid::Uuid::nil())).is_none());
        let nil_user = subject(t(1), UserId::from_uuid(uuid::Uuid::nil()), None);
        assert!(!c.tenant(t(1)).unwrap().put(&nil_user));
    }
}
