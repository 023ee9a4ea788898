//! The in-memory store: the zero-setup default and the reference backend.

pub(crate) mod check;
mod rows;
mod users;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use tenantry_core::{
    AuditEvent, AuditRecord, Change, Decision, IdentityId, Invitation, InvitationState, MessageId,
    Request, RoleTemplate, Status, Subject, TemplateId, Tenant, TenantId, TenantState, TokenHash,
    Tombstone, User, UserId, Write,
};
use tenantry_mail::Message;
use time::OffsetDateTime;

use self::check::{Directory, Entry, Found, TenantIndex};
use self::users::Users;
use crate::{
    Constraint, DeliveryState, DeliveryUpdate, Membership, OutboxRecord, Page, Person,
    SignInOutcome, Store, StoreError, TenantCursor, UserQuery,
};

/// Keeps every tenant in memory, safe under concurrent use.
///
/// Each tenant sits behind its own lock; a commit takes the tenant's write lock, checks the
/// version, and applies the writes with an undo log, so a refused write leaves nothing
/// behind. Listing uses ordered indexes, so a page costs the rows it reads, not the size of
/// the tenant ([listing (D18)](tenantry_core::Rule::Listing)); claiming due mail reads only
/// the due messages, from an index of pending ones by due time.
///
/// Authorization checks take no lock at all: beside its rows each tenant keeps a check index
/// (per user one packed word of status, role, CRM flag, grants and template slot; per
/// template one slot with its permissions), which every commit updates before it returns, so
/// [`Store::subject_now`] answers on current state ([current access (D6)](tenantry_core::Rule::CurrentAccess))
/// and a template edit is one store whatever the number of its users. Readers write no shared
/// memory, so checks on many threads do not slow each other down.
///
/// Clones share the same data, so a host can hand one clone to the service and keep
/// another for its own reads (an `Arc` of the store works the same way).
///
/// ```
/// # fn block_on<F>(f: F) -> F::Output
/// # where F: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>> {
/// #     // The in-memory store never waits: polling with a no-op waker finishes each call.
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop {
/// #         if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
/// #             return out;
/// #         }
/// #     }
/// # }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> { block_on(async {
/// use tenantry_core::{decide, Email, Tenant, TenantId, UserId};
/// use tenantry_store::{InMemoryStore, Store};
///
/// let store = InMemoryStore::new();
/// let reader = store.clone();
/// let now = time::macros::datetime!(2026-01-01 0:00 UTC);
/// let tenant = TenantId::from_parts(1_767_225_600_000, [1; 10]);
/// let ada = UserId::from_parts(1_767_225_600_000, [2; 10]);
/// let new = Tenant { id: tenant, name: "Acme".into(), user_limit: None, created_at: now };
/// store.commit(&decide::create_tenant(new, ada, Email::parse("ada@acme.test")?)?, &[]).await?;
///
/// let admin = reader.user(tenant, ada).await?.ok_or("no admin")?;
/// assert_eq!(admin.email.as_str(), "ada@acme.test");
/// assert_eq!(reader.audit(tenant, 0, 10).await?.len(), 2); // tenant created, admin added
/// # Ok(()) }) }
/// ```
#[derive(Debug, Default, Clone)]
pub struct InMemoryStore {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// The tenants, for every locked read and write.
    tenants: RwLock<HashMap<TenantId, Arc<TenantCell>>>,
    /// The same tenants for the lock-free check path ([`InMemoryStore::subject_now`]).
    directory: Directory<Arc<TenantCell>>,
    /// Which tenants hold a person ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)).
    people: RwLock<People>,
}

/// The cross-tenant index of people ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)): for a hash of an
/// address key or identity id, the tenants with a user holding it, and how many users
/// there hold that hash. A membership read looks up the hash, then reads each tenant's own
/// index for the exact key, so a hash collision costs a lookup, never a wrong answer. An
/// entry is one word, the hash's high 32 bits over the tenant's number here (tenants are
/// never removed), with a count: 12 bytes per user instead of another copy of the key.
#[derive(Debug, Default)]
struct People {
    /// The tenants by number, in the order they were first indexed.
    tenants: Vec<TenantId>,
    numbers: HashMap<TenantId, u32>,
    /// Set once tenants outnumbered the 32-bit numbers: then every tenant is a candidate
    /// (a scan; the numbers would not run out before the memory did).
    overflow: bool,
    by_email: BTreeMap<u64, u32>,
    by_identity: BTreeMap<u64, u32>,
}

/// FNV-1a: a fixed, keyless hash (the index only narrows; every hit is checked exactly).
fn person_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The high half of a person hash: the part an entry keeps.
const HIGH: u64 = 0xFFFF_FFFF_0000_0000;

impl People {
    /// The entry of `hash` in the tenant numbered `number`.
    fn key(hash: u64, number: u32) -> u64 {
        (hash & HIGH) | u64::from(number)
    }

    /// The tenant's number, given on first use; `None` past 2^32 tenants.
    fn number(&mut self, tenant: TenantId) -> Option<u32> {
        if let Some(n) = self.numbers.get(&tenant) {
            return Some(*n);
        }
        let Ok(n) = u32::try_from(self.tenants.len()) else {
            self.overflow = true;
            return None;
        };
        self.tenants.push(tenant);
        self.numbers.insert(tenant, n);
        Some(n)
    }

    fn count(map: &mut BTreeMap<u64, u32>, key: u64, add: bool) {
        if add {
            let n = map.entry(key).or_insert(0);
            *n = n.saturating_add(1);
        } else if let Some(n) = map.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&key);
            }
        }
    }

    /// Moves one entry of a user from the hash `old` to the hash `new` (either absent).
    fn shift(map: &mut BTreeMap<u64, u32>, number: u32, old: Option<u64>, new: Option<u64>) {
        let (old, new) = (
            old.map(|h| Self::key(h, number)),
            new.map(|h| Self::key(h, number)),
        );
        if old == new {
            return;
        }
        if let Some(k) = old {
            Self::count(map, k, false);
        }
        if let Some(k) = new {
            Self::count(map, k, true);
        }
    }

    /// Moves the entries of one user from its row `old` to its row `new`.
    fn update(&mut self, tenant: TenantId, old: Option<&User>, new: Option<&User>) {
        let Some(number) = self.number(tenant) else {
            return;
        };
        let email = |u: Option<&User>| u.map(|u| person_hash(u.email.key()));
        let identity = |u: Option<&User>| {
            u.and_then(|u| u.identity.as_ref())
                .map(|i| person_hash(i.as_str()))
        };
        Self::shift(&mut self.by_email, number, email(old), email(new));
        Self::shift(&mut self.by_identity, number, identity(old), identity(new));
    }

    /// The tenants that may hold `person`; `None` for every tenant (past 2^32 tenants).
    fn tenants_of(&self, person: &Person) -> Option<Vec<TenantId>> {
        if self.overflow {
            return None;
        }
        let (map, h) = match person {
            Person::Email(e) => (&self.by_email, person_hash(e.key())),
            Person::Identity(i) => (&self.by_identity, person_hash(i.as_str())),
        };
        map.range(Self::key(h, 0)..=Self::key(h, u32::MAX))
            .filter_map(|(k, _)| {
                let n = usize::try_from(k & !HIGH).ok()?;
                self.tenants.get(n).copied()
            })
            .collect::<Vec<_>>()
            .into()
    }
}

/// One user's checks, held by a host ([`Store::hold_now`]): the tenant's check index and the
/// place of the user's word in it, so a check reads that word without finding the tenant
/// and the user again. Never stale ([current access (D6)](tenantry_core::Rule::CurrentAccess)):
/// every check reads the word as it is now, under the index's sequence check, at a place
/// that holds this user's id for as long as the table it is in is current (a key keeps its
/// slot: a removed user's key stays as a tombstone); once the user's table has grown (and the word
/// moved) [`HeldCheck::decide_now`] answers `None` and the caller asks by ids again.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let f = async {
/// use tenantry_core::{decide, Email, Reason, Request, Tenant, TenantId, UserId};
/// use tenantry_store::{InMemoryStore, Store};
///
/// let store = InMemoryStore::new();
/// let now = time::macros::datetime!(2026-01-01 0:00 UTC);
/// let tenant = TenantId::from_parts(1_767_225_600_000, [1; 10]);
/// let ada = UserId::from_parts(1_767_225_600_000, [2; 10]);
/// let new = Tenant { id: tenant, name: "Acme".into(), user_limit: None, created_at: now };
/// store.commit(&decide::create_tenant(new, ada, Email::parse("ada@acme.test")?)?, &[]).await?;
///
/// let held = store.hold_now(tenant, ada).ok_or("held")?;
/// let decision = held.decide_now(Request::Crm).ok_or("answered")?;
/// assert_eq!(decision, store.decide_now(tenant, ada, Request::Crm).ok_or("answered")??);
/// assert_eq!(decision.reason(), Reason::Admin);
/// # Ok::<(), Box<dyn std::error::Error>>(()) };
/// # let mut f = std::pin::pin!(f);
/// # let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// # loop { if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) { return out; } }
/// # }
/// ```
#[derive(Clone)]
pub struct HeldCheck {
    index: HeldIndex,
    tenant: TenantId,
    user: UserId,
    held: check::Held,
}

impl std::fmt::Debug for HeldCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldCheck")
            .field("tenant", &self.tenant)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The check index a [`HeldCheck`] reads, kept alive by it: an in-memory store's tenant, or
/// a [`SubjectCache`](crate::SubjectCache)'s.
#[derive(Clone)]
enum HeldIndex {
    Memory(Arc<TenantCell>),
    Cache(Arc<crate::subjects::CachedTenant>),
}

impl HeldCheck {
    /// A held check of a [`SubjectCache`](crate::SubjectCache)'s tenant.
    pub(crate) fn cached(
        cell: Arc<crate::subjects::CachedTenant>,
        tenant: TenantId,
        user: UserId,
        held: check::Held,
    ) -> Self {
        Self {
            index: HeldIndex::Cache(cell),
            tenant,
            user,
            held,
        }
    }

    /// The tenant whose user this is.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The user whose checks these are.
    #[must_use]
    pub fn user(&self) -> UserId {
        self.user
    }

    /// The check decided at once from memory, as [`Store::decide_now`] decides it (a user
    /// deleted since is [`Decision::unknown_user`]); `None` when it cannot answer here (the
    /// user's word moved as the tenant's table grew, or a writer kept interfering): ask by
    /// ids then ([`Store::decide_now`]), and take hold again for later checks.
    #[inline]
    #[must_use]
    pub fn decide_now(&self, request: Request) -> Option<Decision> {
        let index = match &self.index {
            HeldIndex::Memory(cell) => &cell.index,
            HeldIndex::Cache(cell) => cell.index(),
        };
        index.decide_held(self.tenant, self.user, self.held, request)
    }
}

/// One tenant: its rows behind a lock, and the check index beside them, which every commit
/// updates before it returns ([current access (D6)](tenantry_core::Rule::CurrentAccess)).
#[derive(Debug)]
struct TenantCell {
    data: RwLock<TenantData>,
    index: TenantIndex,
}

#[derive(Debug)]
struct TenantData {
    state: TenantState,
    /// The users and their invitations, with every index over them (see [`Users`]).
    users: Users,
    templates: HashMap<TemplateId, RoleTemplate>,
    template_names: HashMap<String, TemplateId>,
    tombstones: HashMap<UserId, Tombstone>,
    audit: Vec<AuditRecord>,
    outbox: BTreeMap<MessageId, OutboxRecord>,
    /// The pending messages by when they are due, so a claim reads only what it claims.
    due: BTreeSet<(OffsetDateTime, MessageId)>,
    /// The pending messages by id, so listing pending mail reads only pending messages.
    pending: BTreeSet<MessageId>,
    /// The slot of each template in the check index (allocated on first use, never reused).
    template_slots: HashMap<TemplateId, u32>,
}

enum Undo {
    Tenant(Tenant),
    User(UserId, Option<User>),
    Template(TemplateId, Option<RoleTemplate>),
    Invitation(TokenHash, Option<Invitation>),
    Tombstone(UserId),
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn conflict(constraint: Constraint) -> StoreError {
    StoreError::Conflict { constraint }
}

impl TenantData {
    fn new(tenant: Tenant) -> Self {
        Self {
            users: Users::new(tenant.id),
            state: TenantState {
                tenant,
                counters: tenantry_core::Counters::default(),
            },
            templates: HashMap::new(),
            template_names: HashMap::new(),
            tombstones: HashMap::new(),
            audit: Vec::new(),
            outbox: BTreeMap::new(),
            due: BTreeSet::new(),
            pending: BTreeSet::new(),
            template_slots: HashMap::new(),
        }
    }

    /// The check-index slot of a template, allocated on first use; `None` when slots ran out.
    fn template_slot(&mut self, id: TemplateId) -> Option<u32> {
        if let Some(slot) = self.template_slots.get(&id) {
            return Some(*slot);
        }
        let slot = u32::try_from(self.template_slots.len()).ok()?;
        self.template_slots.insert(id, slot);
        Some(slot)
    }

    /// Stores the current rows of `users` and `templates` into the check index, all in one
    /// writer window, so a reader sees the whole change or none of it.
    fn reindex(
        &mut self,
        index: &TenantIndex,
        users: impl IntoIterator<Item = UserId>,
        templates: impl IntoIterator<Item = TemplateId>,
    ) {
        let templates: Vec<(Option<u32>, TemplateId, Option<tenantry_core::Permissions>)> =
            templates
                .into_iter()
                .map(|id| {
                    let perms = self.templates.get(&id).map(|t| t.permissions);
                    (self.template_slot(id), id, perms)
                })
                .collect();
        let users: Vec<(UserId, Option<u64>)> = users
            .into_iter()
            .map(|id| {
                let template = self.users.get(id).and_then(|u| u.template_id);
                let slot = template.and_then(|t| self.template_slot(t));
                (id, self.users.get(id).map(|u| TenantIndex::pack(u, slot)))
            })
            .collect();
        // A template a user references gets a slot before the user's word names it.
        let referenced: Vec<(u32, TemplateId, Option<tenantry_core::Permissions>)> = users
            .iter()
            .filter_map(|(id, _)| self.users.get(*id).and_then(|u| u.template_id))
            .filter_map(|t| {
                let slot = self.template_slots.get(&t).copied()?;
                Some((slot, t, self.templates.get(&t).map(|r| r.permissions)))
            })
            .collect();
        index.write(|ix| {
            let mut ok = true;
            for (slot, id, perms) in templates {
                ok &= slot.is_some_and(|s| ix.set_template(s, id, perms));
            }
            for (slot, id, perms) in referenced {
                ok &= ix.set_template(slot, id, perms);
            }
            for (id, word) in users {
                ok &= ix.set_user(id, word);
            }
            if !ok {
                ix.distrust();
            }
        });
    }

    /// Reindexes what a successful commit touched (the rows its undo log names).
    fn reindex_undo(&mut self, index: &TenantIndex, undo: &[Undo]) {
        let users: Vec<UserId> = undo
            .iter()
            .filter_map(|u| match u {
                Undo::User(id, _) => Some(*id),
                _ => None,
            })
            .collect();
        let templates: Vec<TemplateId> = undo
            .iter()
            .filter_map(|u| match u {
                Undo::Template(id, _) => Some(*id),
                _ => None,
            })
            .collect();
        if !users.is_empty() || !templates.is_empty() {
            self.reindex(index, users, templates);
        }
    }

    /// Replaces (or removes, with `None`) the user `id`, keeping every index in step.
    /// Returns the previous row.
    fn set_user(&mut self, id: UserId, new: Option<User>) -> Result<Option<User>, StoreError> {
        self.users.set(id, new)
    }

    fn set_template(
        &mut self,
        id: TemplateId,
        new: Option<RoleTemplate>,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        if let Some(t) = &new
            && let Some(other) = self.template_names.get(t.name.key())
            && *other != id
        {
            return Err(conflict(Constraint::TemplateName));
        }
        let old = self.templates.remove(&id);
        if let Some(o) = &old {
            self.template_names.remove(o.name.key());
        }
        if let Some(t) = new {
            self.template_names.insert(t.name.key().to_owned(), id);
            self.templates.insert(id, t);
        }
        Ok(old)
    }

    fn set_invitation(&mut self, hash: TokenHash, new: Option<Invitation>) -> Option<Invitation> {
        self.users.set_invitation(hash, new)
    }

    fn apply(&mut self, w: &Write, undo: &mut Vec<Undo>) -> Result<(), StoreError> {
        let tenant = self.state.tenant.id;
        match w {
            Write::InsertTenant(_) => {}
            Write::UpdateTenant(t) => {
                if t.id != tenant {
                    return Err(conflict(Constraint::MissingRow));
                }
                undo.push(Undo::Tenant(std::mem::replace(
                    &mut self.state.tenant,
                    t.clone(),
                )));
            }
            Write::InsertUser(u) => {
                if u.tenant_id != tenant {
                    return Err(conflict(Constraint::MissingRow));
                }
                if self.users.contains(u.id) || self.tombstones.contains_key(&u.id) {
                    return Err(conflict(Constraint::UserId));
                }
                let old = self.set_user(u.id, Some(u.clone()))?;
                undo.push(Undo::User(u.id, old));
            }
            Write::UpdateUser(u) => {
                if u.tenant_id != tenant || !self.users.contains(u.id) {
                    return Err(conflict(Constraint::MissingRow));
                }
                let old = self.set_user(u.id, Some(u.clone()))?;
                undo.push(Undo::User(u.id, old));
            }
            Write::DeleteUser(t) => {
                if !self.users.contains(t.user_id) {
                    return Err(conflict(Constraint::MissingRow));
                }
                let old = self.set_user(t.user_id, None)?;
                undo.push(Undo::User(t.user_id, old));
                self.tombstones.insert(t.user_id, t.clone());
                undo.push(Undo::Tombstone(t.user_id));
            }
            Write::InsertTemplate(t) => {
                if t.tenant_id != tenant {
                    return Err(conflict(Constraint::MissingRow));
                }
                if self.templates.contains_key(&t.id) {
                    return Err(conflict(Constraint::TemplateId));
                }
                let old = self.set_template(t.id, Some(t.clone()))?;
                undo.push(Undo::Template(t.id, old));
            }
            Write::UpdateTemplate(t) => {
                if t.tenant_id != tenant || !self.templates.contains_key(&t.id) {
                    return Err(conflict(Constraint::MissingRow));
                }
                let old = self.set_template(t.id, Some(t.clone()))?;
                undo.push(Undo::Template(t.id, old));
            }
            Write::DeleteTemplate(id) => {
                if !self.templates.contains_key(id) {
                    return Err(conflict(Constraint::MissingRow));
                }
                if self.users.on_template(*id).next().is_some() {
                    return Err(conflict(Constraint::TemplateReferenced));
                }
                let old = self.set_template(*id, None)?;
                undo.push(Undo::Template(*id, old));
            }
            Write::MoveTemplateUsers { from, to } => {
                if let Some(to) = to
                    && !self.templates.contains_key(to)
                {
                    return Err(conflict(Constraint::MissingRow));
                }
                let ids: Vec<UserId> = self.users.on_template(*from).collect();
                for id in ids {
                    if let Some(mut u) = self.users.get(id).cloned() {
                        u.template_id = *to;
                        let old = self.set_user(id, Some(u))?;
                        undo.push(Undo::User(id, old));
                    }
                }
            }
            Write::InsertInvitation(inv) => {
                if inv.tenant_id != tenant || !self.users.contains(inv.user_id) {
                    return Err(conflict(Constraint::MissingRow));
                }
                if self.users.has_invitation(&inv.token_hash) {
                    return Err(conflict(Constraint::TokenHash));
                }
                let old = self.set_invitation(inv.token_hash, Some(inv.clone()));
                undo.push(Undo::Invitation(inv.token_hash, old));
            }
            Write::RevokeInvitations(user) => {
                for inv in self.users.invitations_of(*user) {
                    let h = inv.token_hash;
                    if inv.state == InvitationState::Pending {
                        let old = self.set_invitation(
                            h,
                            Some(Invitation {
                                state: InvitationState::Revoked,
                                ..inv
                            }),
                        );
                        undo.push(Undo::Invitation(h, old));
                    }
                }
            }
            Write::UseInvitation(h) => {
                let Some(inv) = self.users.invitation(h) else {
                    return Err(conflict(Constraint::MissingRow));
                };
                let old = self.set_invitation(
                    *h,
                    Some(Invitation {
                        state: InvitationState::Used,
                        ..inv
                    }),
                );
                undo.push(Undo::Invitation(*h, old));
            }
            Write::FailAcceptAttempt {
                token_hash,
                failed_attempts,
                revoke,
            } => {
                let Some(inv) = self
                    .users
                    .invitation(token_hash)
                    .filter(|i| i.state == InvitationState::Pending)
                else {
                    return Err(conflict(Constraint::MissingRow));
                };
                let state = if *revoke {
                    InvitationState::Revoked
                } else {
                    inv.state
                };
                let old = self.set_invitation(
                    *token_hash,
                    Some(Invitation {
                        state,
                        failed_attempts: *failed_attempts,
                        ..inv
                    }),
                );
                undo.push(Undo::Invitation(*token_hash, old));
            }
            // `Write` is non-exhaustive for other crates; this crate knows every variant,
            // but refuse anything unknown rather than ignore it.
            #[allow(unreachable_patterns)]
            _ => return Err(conflict(Constraint::MissingRow)),
        }
        Ok(())
    }

    fn rollback(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Tenant(t) => self.state.tenant = t,
                Undo::User(id, old) => {
                    // Restoring a previous consistent row cannot conflict.
                    let _ = self.set_user(id, old);
                }
                Undo::Template(id, old) => {
                    let _ = self.set_template(id, old);
                }
                Undo::Invitation(h, old) => {
                    self.set_invitation(h, old);
                }
                Undo::Tombstone(id) => {
                    self.tombstones.remove(&id);
                }
            }
        }
    }

    fn append(&mut self, event: AuditEvent) -> u64 {
        let seq = u64::try_from(self.audit.len())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        self.audit.push(AuditRecord { seq, event });
        seq
    }

    fn page(&self, query: &UserQuery) -> Page<User> {
        let limit = usize::try_from(query.effective_limit()).unwrap_or(500);
        let after = query.after.as_ref().filter(|c| c.sort() == query.sort);
        let mut items = Vec::with_capacity(limit.min(64));
        let mut more = false;
        self.users.walk(query.sort, after, query.descending, |u| {
            if query.matches(u) {
                if items.len() == limit {
                    more = true;
                    return false;
                }
                items.push(u.clone());
            }
            true
        });
        let next = if more {
            items.last().map(|u| query.cursor_of(u))
        } else {
            None
        };
        Page { items, next }
    }
}

impl InMemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&self, tenant: TenantId) -> Option<Arc<TenantCell>> {
        match self.shared.directory.get(tenant) {
            Some(Entry::Known(cell)) => Some(Arc::clone(cell)),
            Some(Entry::Unknown) => None,
            None => read(&self.shared.tenants).get(&tenant).cloned(),
        }
    }

    fn with<T>(&self, tenant: TenantId, f: impl FnOnce(&TenantData) -> T) -> Option<T> {
        self.get(tenant).map(|t| f(&read(&t.data)))
    }

    fn with_mut<T>(&self, tenant: TenantId, f: impl FnOnce(&mut TenantData) -> T) -> Option<T> {
        self.get(tenant).map(|t| f(&mut write(&t.data)))
    }

    /// The facts of a user read under the tenant's lock: what the check index must agree with.
    fn subject_locked(&self, tenant: TenantId, id: UserId) -> Option<Subject> {
        self.with(tenant, |d| {
            d.users.get(id).map(|u| {
                let template = u.template_id.and_then(|t| d.templates.get(&t));
                Subject::of(u, template)
            })
        })
        .flatten()
    }

    fn queue(data: &mut TenantData, outbox: &[Message], now: OffsetDateTime) {
        for m in outbox {
            if let Some(old) = data.outbox.get(&m.id) {
                data.due.remove(&(old.next_attempt_at, m.id));
            }
            data.due.insert((now, m.id));
            data.pending.insert(m.id);
            data.outbox.insert(
                m.id,
                OutboxRecord {
                    message: m.clone(),
                    state: DeliveryState::Pending,
                    attempts: 0,
                    next_attempt_at: now,
                    last_error: None,
                    created_at: now,
                },
            );
        }
    }

    /// Brings the people index in step with the users a successful commit changed (its undo
    /// log holds their previous rows), before the commit returns: a membership read after
    /// it sees the change.
    fn index_people(&self, data: &TenantData, undo: &[Undo]) {
        let tenant = data.state.tenant.id;
        let mut people = write(&self.shared.people);
        for u in undo {
            if let Undo::User(id, old) = u {
                people.update(tenant, old.as_ref(), data.users.get(*id));
            }
        }
    }

    fn commit_new_tenant(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError> {
        let Some(Write::InsertTenant(tenant)) = change.writes.first() else {
            return Err(conflict(Constraint::MissingRow));
        };
        if tenant.id != change.tenant_id || change.expected_version != 0 {
            return Err(conflict(Constraint::MissingRow));
        }
        let mut tenants = write(&self.shared.tenants);
        if tenants.contains_key(&tenant.id) {
            return Err(conflict(Constraint::TenantId));
        }
        let mut data = TenantData::new(tenant.clone());
        let mut undo = Vec::new();
        for w in change.writes.iter().skip(1) {
            data.apply(w, &mut undo)?;
        }
        data.state.counters = change.counters;
        for e in &change.events {
            data.append(e.clone());
        }
        Self::queue(&mut data, outbox, tenant.created_at);
        self.index_people(&data, &undo);
        let index = TenantIndex::default();
        let users: Vec<UserId> = data.users.ids().collect();
        let templates: Vec<TemplateId> = data.templates.keys().copied().collect();
        data.reindex(&index, users, templates);
        let cell = Arc::new(TenantCell {
            data: RwLock::new(data),
            index,
        });
        // Should the directory fail to hold it, the directory stops answering (every
        // lookup then takes the locked path).
        self.shared.directory.insert(tenant.id, Arc::clone(&cell));
        tenants.insert(tenant.id, cell);
        Ok(())
    }
}

#[async_trait]
impl Store for InMemoryStore {
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError> {
        Ok(self.with(tenant, |d| d.state.clone()))
    }

    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError> {
        Ok(self.with(tenant, |d| d.users.get(id).cloned()).flatten())
    }

    async fn subject(&self, tenant: TenantId, id: UserId) -> Result<Option<Subject>, StoreError> {
        if let Some(answer) = self.subject_now(tenant, id) {
            return answer;
        }
        Ok(self.subject_locked(tenant, id))
    }

    /// Answered from the check index without a lock or an allocation; `None` only while
    /// writers keep the tenant's index busy (then [`Store::subject`] takes the lock).
    #[inline]
    fn subject_now(
        &self,
        tenant: TenantId,
        id: UserId,
    ) -> Option<Result<Option<Subject>, StoreError>> {
        let cell = match self.shared.directory.get(tenant)? {
            Entry::Known(cell) => cell,
            Entry::Unknown => return Some(Ok(None)),
        };
        Some(Ok(match cell.index.subject(tenant, id)? {
            Found::Subject(s) => Some(s),
            Found::Unknown => None,
        }))
    }

    /// Decided from the check index where [`InMemoryStore::subject_now`] reads it, without
    /// the subject leaving the registers; the same answers as the default (D6).
    #[inline]
    fn decide_now(
        &self,
        tenant: TenantId,
        id: UserId,
        request: Request,
    ) -> Option<Result<Decision, StoreError>> {
        let cell = match self.shared.directory.get(tenant)? {
            Entry::Known(cell) => cell,
            Entry::Unknown => return Some(Ok(Decision::unknown_user())),
        };
        Some(Ok(cell.index.decide(tenant, id, request)?))
    }

    fn hold_now(&self, tenant: TenantId, id: UserId) -> Option<HeldCheck> {
        let cell = match self.shared.directory.get(tenant)? {
            Entry::Known(cell) => Arc::clone(cell),
            Entry::Unknown => return None,
        };
        let held = cell.index.locate(id)?;
        Some(HeldCheck {
            index: HeldIndex::Memory(cell),
            tenant,
            user: id,
            held,
        })
    }

    async fn user_by_email(&self, tenant: TenantId, key: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .with(tenant, |d| d.users.by_email(key).cloned())
            .flatten())
    }

    async fn template(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        Ok(self
            .with(tenant, |d| d.templates.get(&id).cloned())
            .flatten())
    }

    async fn template_by_name(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        Ok(self
            .with(tenant, |d| {
                d.template_names
                    .get(key)
                    .and_then(|id| d.templates.get(id))
                    .cloned()
            })
            .flatten())
    }

    async fn templates(&self, tenant: TenantId) -> Result<Vec<RoleTemplate>, StoreError> {
        let mut all = self
            .with(tenant, |d| {
                d.templates.values().cloned().collect::<Vec<_>>()
            })
            .unwrap_or_default();
        all.sort_by(|a, b| a.name.key().cmp(b.name.key()).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    async fn count_template_users(
        &self,
        tenant: TenantId,
        template: TemplateId,
    ) -> Result<u64, StoreError> {
        Ok(self
            .with(tenant, |d| d.users.on_template(template).count())
            .map_or(0, |n| u64::try_from(n).unwrap_or(u64::MAX)))
    }

    async fn invitation(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError> {
        Ok(self.with(tenant, |d| d.users.invitation(hash)).flatten())
    }

    async fn invitations_of(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<Invitation>, StoreError> {
        Ok(self
            .with(tenant, |d| d.users.invitations_of(user))
            .unwrap_or_default())
    }

    async fn list_users(
        &self,
        tenant: TenantId,
        query: &UserQuery,
    ) -> Result<Page<User>, StoreError> {
        Ok(self.with(tenant, |d| d.page(query)).unwrap_or(Page {
            items: Vec::new(),
            next: None,
        }))
    }

    async fn tombstone(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Tombstone>, StoreError> {
        Ok(self
            .with(tenant, |d| d.tombstones.get(&user).cloned())
            .flatten())
    }

    async fn audit(
        &self,
        tenant: TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(self
            .with(tenant, |d| {
                let start = usize::try_from(after).unwrap_or(usize::MAX);
                d.audit
                    .get(start..)
                    .unwrap_or_default()
                    .iter()
                    .take(usize::try_from(limit).unwrap_or(usize::MAX))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn commit(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError> {
        if matches!(change.writes.first(), Some(Write::InsertTenant(_))) {
            return self.commit_new_tenant(change, outbox);
        }
        let Some(tenant) = self.get(change.tenant_id) else {
            return Err(StoreError::NotFound);
        };
        let mut data = write(&tenant.data);
        if data.state.counters.version != change.expected_version {
            return Err(StoreError::VersionMismatch {
                expected: change.expected_version,
            });
        }
        let mut undo = Vec::new();
        for w in &change.writes {
            if let Err(e) = data.apply(w, &mut undo) {
                data.rollback(undo);
                return Err(e);
            }
        }
        data.reindex_undo(&tenant.index, &undo);
        self.index_people(&data, &undo);
        data.state.counters = change.counters;
        let now = change
            .events
            .first()
            .map_or(OffsetDateTime::UNIX_EPOCH, |e| e.at);
        for e in &change.events {
            data.append(e.clone());
        }
        Self::queue(&mut data, outbox, now);
        Ok(())
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        self.with_mut(event.tenant_id, |d| d.append(event.clone()))
            .ok_or(StoreError::NotFound)
    }

    /// Reads every tenant's state and sorts: a scan, which is what an in-memory listing
    /// for operators can afford (the SQL stores read their `(name, id)` order).
    async fn tenants(
        &self,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<TenantState>, StoreError> {
        let cells: Vec<Arc<TenantCell>> = read(&self.shared.tenants).values().cloned().collect();
        let mut states: Vec<TenantState> = cells
            .iter()
            .map(|c| read(&c.data).state.clone())
            .filter(|s| {
                after
                    .is_none_or(|a| (s.tenant.name.as_str(), s.tenant.id) > (a.name.as_str(), a.id))
            })
            .collect();
        states.sort_by(|a, b| (&a.tenant.name, a.tenant.id).cmp(&(&b.tenant.name, b.tenant.id)));
        states.truncate(
            usize::try_from(limit.clamp(1, crate::MAX_PAGE_SIZE + 1)).unwrap_or(usize::MAX),
        );
        Ok(states)
    }

    async fn user_by_identity(
        &self,
        tenant: TenantId,
        identity: &IdentityId,
    ) -> Result<Option<User>, StoreError> {
        Ok(self
            .with(tenant, |d| d.users.by_identity(identity).cloned())
            .flatten())
    }

    /// Looks up the person's tenants in the people index, then reads that person's row in
    /// each: never a scan of tenants or users.
    async fn memberships(
        &self,
        person: &Person,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<Membership>, StoreError> {
        // The people lock is let go before the tenants lock is taken (commits take them in
        // the other order).
        let found = read(&self.shared.people).tenants_of(person);
        let tenants = found.unwrap_or_else(|| read(&self.shared.tenants).keys().copied().collect());
        let mut out: Vec<Membership> = tenants
            .into_iter()
            .filter_map(|t| {
                self.with(t, |d| {
                    let user = match person {
                        Person::Email(e) => d.users.by_email(e.key()),
                        Person::Identity(i) => d.users.by_identity(i),
                    }?;
                    Some(Membership::of(&d.state.tenant, user))
                })
                .flatten()
            })
            .filter(|m| {
                after
                    .is_none_or(|a| (m.tenant_name.as_str(), m.tenant_id) > (a.name.as_str(), a.id))
            })
            .collect();
        out.sort_by(|a, b| (&a.tenant_name, a.tenant_id).cmp(&(&b.tenant_name, b.tenant_id)));
        out.truncate(
            usize::try_from(limit.clamp(1, crate::MAX_PAGE_SIZE + 1)).unwrap_or(usize::MAX),
        );
        Ok(out)
    }

    /// Under the tenant's lock: the status check, the last login and the audit record in
    /// one step, the version and counters untouched (D27). The check index holds no last
    /// login, so it needs no update.
    async fn record_sign_in(
        &self,
        tenant: TenantId,
        user: UserId,
        at: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<SignInOutcome, StoreError> {
        let outcome = self.with_mut(tenant, |d| {
            let Some(current) = d.users.get(user) else {
                return Ok(SignInOutcome::NotFound);
            };
            if current.status != Status::Active {
                return Ok(SignInOutcome::NotActive(current.status));
            }
            let last_login = Some(current.last_login.map_or(at, |l| l.max(at)));
            let updated = User {
                last_login,
                ..current.clone()
            };
            d.set_user(user, Some(updated.clone()))?;
            d.append(event.clone());
            Ok(SignInOutcome::Recorded(updated))
        });
        outcome.unwrap_or(Ok(SignInOutcome::NotFound))
    }

    async fn outbox(
        &self,
        tenant: TenantId,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        Ok(self
            .with(tenant, |d| {
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                if pending_only {
                    // Only pending messages are read, newest first.
                    d.pending
                        .iter()
                        .rev()
                        .filter_map(|id| d.outbox.get(id))
                        .take(limit)
                        .cloned()
                        .collect()
                } else {
                    d.outbox.values().rev().take(limit).cloned().collect()
                }
            })
            .unwrap_or_default())
    }

    async fn outbox_message(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        Ok(self.with(tenant, |d| d.outbox.get(&id).cloned()).flatten())
    }

    async fn claim_due_mail(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        Ok(self
            .with_mut(tenant, |d| {
                // Only the due entries are read: the index holds pending messages by when
                // they are due, so delivered ones are never walked past.
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                let due: Vec<(OffsetDateTime, MessageId)> = d
                    .due
                    .iter()
                    .take_while(|(at, _)| *at <= now)
                    .take(limit)
                    .copied()
                    .collect();
                let mut claimed = Vec::with_capacity(due.len());
                for key in due {
                    d.due.remove(&key);
                    if let Some(r) = d.outbox.get_mut(&key.1)
                        && r.state == DeliveryState::Pending
                        && r.next_attempt_at == key.0
                    {
                        r.next_attempt_at = lease_until;
                        d.due.insert((lease_until, key.1));
                        claimed.push(r.clone());
                    }
                }
                claimed
            })
            .unwrap_or_default())
    }

    async fn claim_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        Ok(self
            .with_mut(tenant, |d| {
                let r = d.outbox.get_mut(&id)?;
                if r.state == DeliveryState::Pending && r.next_attempt_at <= now {
                    d.due.remove(&(r.next_attempt_at, id));
                    d.due.insert((lease_until, id));
                    r.next_attempt_at = lease_until;
                    Some(r.clone())
                } else {
                    None
                }
            })
            .flatten())
    }

    async fn record_delivery(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        self.with_mut(tenant, |d| {
            let Some(r) = d.outbox.get_mut(&id) else {
                return Err(StoreError::NotFound);
            };
            // A result arriving after the message left `pending` (a late dispatcher whose
            // lease ran out) changes nothing: sent stays sent, failed stays failed.
            if r.state != DeliveryState::Pending {
                return Ok(());
            }
            r.attempts = r.attempts.saturating_add(1);
            d.due.remove(&(r.next_attempt_at, id));
            if !matches!(update, DeliveryUpdate::Retry { .. }) {
                d.pending.remove(&id);
            }
            match update {
                DeliveryUpdate::Sent { at } => {
                    r.state = DeliveryState::Sent { at: *at };
                    // D26: the bodies hold the live link; their memory goes too.
                    r.message.text = String::new();
                    r.message.html = String::new();
                }
                DeliveryUpdate::Retry { reason, retry_at } => {
                    r.state = DeliveryState::Pending;
                    r.next_attempt_at = *retry_at;
                    r.last_error = Some(reason.clone());
                    d.due.insert((*retry_at, id));
                }
                DeliveryUpdate::Failed { reason, at } => {
                    r.state = DeliveryState::Failed {
                        reason: reason.clone(),
                        at: *at,
                    };
                    r.last_error = Some(reason.clone());
                    // D26: a message that will not be sent keeps no live link.
                    r.message.text = String::new();
                    r.message.html = String::new();
                }
            }
            Ok(())
        })
        .unwrap_or(Err(StoreError::NotFound))
    }

    async fn tenants_with_due_mail(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        let all: Vec<(TenantId, Arc<TenantCell>)> = read(&self.shared.tenants)
            .iter()
            .map(|(k, v)| (*k, Arc::clone(v)))
            .collect();
        Ok(all
            .into_iter()
            .filter(|(_, d)| read(&d.data).due.first().is_some_and(|(at, _)| *at <= now))
            .map(|(id, _)| id)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect())
    }
}

#[cfg(test)]
mod tests;
