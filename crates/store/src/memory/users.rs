//! A tenant's users and their invitations, with every index over them, kept compact.
//!
//! Each user is one row in a [`Slab`], found by a dense slot number; the row holds the
//! user's invitations too (oldest first, in a boxed slice of the exact length, without the
//! tenant and user ids they share with it). The id and token lookups are [`SlotMap`]s (8
//! bytes a bucket whatever the key), and the sorted indexes behind the listings hold slot
//! numbers (4 bytes an entry) ordered by the rows' own keys, so no key is stored twice.
//! A row outlives its user while it still holds invitations (a deleted user's invitations
//! stay readable by token, as before).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use tenantry_core::{
    IdentityId, Invitation, InvitationKind, InvitationState, TemplateId, TenantId, TokenHash, User,
    UserId,
};
use time::OffsetDateTime;

use super::rows::{At, Slab, SlotMap, Sorted, mix};
use crate::{Constraint, Cursor, SortBy, StoreError};

/// An invitation without the tenant and user ids its row already holds.
#[derive(Debug, Clone, Copy)]
struct Inv {
    token_hash: TokenHash,
    created_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    failed_attempts: u32,
    kind: InvitationKind,
    state: InvitationState,
}

impl Inv {
    fn of(i: &Invitation) -> Self {
        Self {
            token_hash: i.token_hash,
            created_at: i.created_at,
            expires_at: i.expires_at,
            failed_attempts: i.failed_attempts,
            kind: i.kind,
            state: i.state,
        }
    }

    fn full(&self, tenant_id: TenantId, user_id: UserId) -> Invitation {
        Invitation {
            token_hash: self.token_hash,
            tenant_id,
            user_id,
            kind: self.kind,
            state: self.state,
            created_at: self.created_at,
            expires_at: self.expires_at,
            failed_attempts: self.failed_attempts,
        }
    }
}

#[derive(Debug)]
struct Row {
    held: Held,
    invitations: Box<[Inv]>,
}

/// A row's user, or only its id once the user is deleted while invitations remain (the
/// id is then needed to find the row; a live user's id is in the user).
#[derive(Debug)]
enum Held {
    User(User),
    Gone(UserId),
}

impl Row {
    #[inline]
    fn id(&self) -> UserId {
        match &self.held {
            Held::User(u) => u.id,
            Held::Gone(id) => *id,
        }
    }

    #[inline]
    fn user(&self) -> Option<&User> {
        match &self.held {
            Held::User(u) => Some(u),
            Held::Gone(_) => None,
        }
    }

    /// Takes the user out, leaving its id.
    fn take(&mut self) -> Option<User> {
        let id = self.id();
        match std::mem::replace(&mut self.held, Held::Gone(id)) {
            Held::User(u) => Some(u),
            Held::Gone(_) => None,
        }
    }
}

/// The key of a last sign-in in the login index.
fn login_key(at: Option<OffsetDateTime>) -> i128 {
    at.map_or(i128::MIN, OffsetDateTime::unix_timestamp_nanos)
}

fn id_hash(id: UserId) -> u64 {
    let (hi, lo) = id.as_uuid().as_u64_pair();
    mix(hi, lo)
}

fn token_hash(t: &TokenHash) -> u64 {
    let word = |n: usize| {
        t.0.get(n..n + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes)
    };
    mix(word(0) ^ word(16), word(8) ^ word(24))
}

fn conflict(constraint: Constraint) -> StoreError {
    StoreError::Conflict { constraint }
}

/// One tenant's users, invitations and their indexes.
#[derive(Debug)]
pub(crate) struct Users {
    tenant: TenantId,
    rows: Slab<Row>,
    by_id: SlotMap,
    by_token: SlotMap,
    /// By email key (unique), then id.
    email: Sorted<(Arc<str>, UserId)>,
    /// By creation time in nanoseconds, then id.
    created: Sorted<(i128, UserId)>,
    /// By last sign-in in nanoseconds (`i128::MIN` for never: it sorts first, as `None`
    /// does), then id.
    login: Sorted<(i128, UserId)>,
    /// The users on a template, by template, then id.
    template: Sorted<(Option<TemplateId>, UserId)>,
    /// The users holding an identity id ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)); most hold none.
    identity: HashMap<IdentityId, UserId>,
}

/// Which sorted index.
#[derive(Clone, Copy)]
enum Index {
    Email,
    Created,
    Login,
    Template,
}

impl Users {
    pub(crate) fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            rows: Slab::default(),
            by_id: SlotMap::default(),
            by_token: SlotMap::default(),
            email: Sorted::default(),
            created: Sorted::default(),
            login: Sorted::default(),
            template: Sorted::default(),
            identity: HashMap::new(),
        }
    }

    fn user_at(&self, slot: u32) -> Option<&User> {
        self.rows.get(slot).and_then(Row::user)
    }

    fn slot(&self, id: UserId) -> Option<u32> {
        self.by_id.find(id_hash(id), |s| {
            self.rows.get(s).is_some_and(|r| r.id() == id)
        })
    }

    /// The user `id`.
    #[inline]
    pub(crate) fn get(&self, id: UserId) -> Option<&User> {
        self.slot(id).and_then(|s| self.user_at(s))
    }

    pub(crate) fn contains(&self, id: UserId) -> bool {
        self.get(id).is_some()
    }

    /// Every user's id, in no particular order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = UserId> + '_ {
        self.rows.iter().filter_map(|(_, r)| r.user().map(|u| u.id))
    }

    /// The user with this email key.
    pub(crate) fn by_email(&self, key: &str) -> Option<&User> {
        let at = self.email_place(key);
        self.email
            .from(at)
            .next()
            .and_then(|s| self.user_at(s))
            .filter(|u| u.email.key() == key)
    }

    /// The user holding this identity id.
    pub(crate) fn by_identity(&self, identity: &IdentityId) -> Option<&User> {
        self.identity.get(identity).and_then(|id| self.get(*id))
    }

    /// The order of `index` between a row and a probe row.
    fn cmp(index: Index, a: &User, b: &User) -> Ordering {
        match index {
            Index::Email => (a.email.key(), a.id).cmp(&(b.email.key(), b.id)),
            Index::Created => (a.created_at.unix_timestamp_nanos(), a.id)
                .cmp(&(b.created_at.unix_timestamp_nanos(), b.id)),
            Index::Login => (login_key(a.last_login), a.id).cmp(&(login_key(b.last_login), b.id)),
            Index::Template => (a.template_id, a.id).cmp(&(b.template_id, b.id)),
        }
    }

    /// Where the email key `key` is or would go.
    fn email_place(&self, key: &str) -> At {
        self.email.seek(
            |f| &*f.0 < key,
            |s| self.user_at(s).is_some_and(|u| u.email.key() < key),
        )
    }

    /// Adds (or removes) the slot of `user` (whose row is at `slot` now) to `index`.
    fn index(&mut self, index: Index, slot: u32, user: &User, add: bool) {
        let rows = &self.rows;
        match index {
            Index::Email => Self::index_in(&mut self.email, rows, index, slot, user, add, |u| {
                (u.email.shared_key(), u.id)
            }),
            Index::Created => {
                Self::index_in(&mut self.created, rows, index, slot, user, add, |u| {
                    (u.created_at.unix_timestamp_nanos(), u.id)
                })
            }
            Index::Login => Self::index_in(&mut self.login, rows, index, slot, user, add, |u| {
                (login_key(u.last_login), u.id)
            }),
            Index::Template => {
                Self::index_in(&mut self.template, rows, index, slot, user, add, |u| {
                    (u.template_id, u.id)
                });
            }
        }
    }

    /// [`Users::index`] in one index, whose fences are `key` of a row (ordered as
    /// [`Users::cmp`] orders rows).
    fn index_in<K: Ord>(
        sorted: &mut Sorted<K>,
        rows: &Slab<Row>,
        index: Index,
        slot: u32,
        user: &User,
        add: bool,
        key: impl Fn(&User) -> K,
    ) {
        let before = |s: u32| {
            rows.get(s)
                .and_then(Row::user)
                .is_some_and(|u| Self::cmp(index, u, user) == Ordering::Less)
        };
        let probe = key(user);
        if add {
            let key_of = |s: u32| rows.get(s).and_then(Row::user).map(&key);
            sorted.insert(slot, probe, before, key_of);
        } else {
            sorted.remove(slot, |f| *f < probe, before);
        }
    }

    /// The indexes whose key differs between `a` and `b` (all when either is absent).
    fn changed(a: Option<&User>, b: Option<&User>) -> [bool; 4] {
        match (a, b) {
            (Some(a), Some(b)) => [
                a.email.key() != b.email.key(),
                a.created_at != b.created_at,
                login_key(a.last_login) != login_key(b.last_login),
                a.template_id != b.template_id,
            ],
            _ => [true; 4],
        }
    }

    const INDEXES: [Index; 4] = [Index::Email, Index::Created, Index::Login, Index::Template];

    /// Adds or removes `user` (at `slot`) in the indexes marked in `which`.
    fn reindex(&mut self, which: [bool; 4], slot: u32, user: &User, add: bool) {
        for (index, on) in Self::INDEXES.into_iter().zip(which) {
            if on && (!matches!(index, Index::Template) || user.template_id.is_some()) {
                self.index(index, slot, user, add);
            }
        }
    }

    /// Replaces (or removes, with `None`) the user `id`, keeping every index in step;
    /// refuses an email key or identity id another user holds. Returns the previous row.
    pub(crate) fn set(
        &mut self,
        id: UserId,
        new: Option<User>,
    ) -> Result<Option<User>, StoreError> {
        if let Some(i) = new.as_ref().and_then(|u| u.identity.as_ref())
            && let Some(other) = self.identity.get(i)
            && *other != id
        {
            return Err(conflict(Constraint::UserIdentity));
        }
        let current = self.slot(id);
        let before = current.and_then(|s| self.user_at(s));
        // A new email key: refused if another user holds it; for a new row, the place the
        // search found is where the key goes (one search for both).
        let mut email_at = None;
        if let Some(u) = &new
            && before.is_none_or(|o| o.email.key() != u.email.key())
        {
            let key = u.email.key();
            let at = self.email_place(key);
            if self
                .email
                .from(at)
                .next()
                .and_then(|s| self.user_at(s))
                .is_some_and(|x| x.email.key() == key && x.id != id)
            {
                return Err(conflict(Constraint::UserEmail));
            }
            if before.is_none() {
                email_at = Some(at);
            }
        }
        let slot = match current {
            Some(s) => s,
            None if new.is_none() => return Ok(None),
            None => self.new_row(id)?,
        };
        // The old row leaves its slot first: a search meeting the slot then reads nothing
        // there, which sorts it where its own key would (neither before nor after itself).
        let old = self.rows.get_mut(slot).and_then(Row::take);
        let which = Self::changed(old.as_ref(), new.as_ref());
        if let Some(o) = &old {
            if let Some(i) = &o.identity {
                self.identity.remove(i);
            }
            self.reindex(which, slot, o, false);
        }
        match new {
            Some(u) => {
                let [email, created, login, template] = which;
                match email_at {
                    // Nothing moved in the email index since the search: the new row
                    // held no user, so no entry of it was removed.
                    Some(at) => {
                        let rows = &self.rows;
                        let key_of = |s: u32| {
                            rows.get(s)
                                .and_then(Row::user)
                                .map(|u| (u.email.shared_key(), u.id))
                        };
                        self.email
                            .insert_at(at, slot, (u.email.shared_key(), u.id), key_of);
                    }
                    None if email => self.index(Index::Email, slot, &u, true),
                    None => {}
                }
                self.reindex([false, created, login, template], slot, &u, true);
                if let Some(i) = &u.identity {
                    self.identity.insert(i.clone(), id);
                }
                if let Some(row) = self.rows.get_mut(slot) {
                    row.held = Held::User(u);
                }
            }
            None => self.release(slot),
        }
        Ok(old)
    }

    /// A new empty row for `id`.
    fn new_row(&mut self, id: UserId) -> Result<u32, StoreError> {
        let row = Row {
            held: Held::Gone(id),
            invitations: Box::default(),
        };
        let Ok(s) = self.rows.insert(row) else {
            return Err(StoreError::Backend {
                backend: "memory",
                source: "the tenant holds 2^32 - 1 rows of users, its limit".into(),
            });
        };
        self.by_id.insert(id_hash(id), s);
        Ok(s)
    }

    /// Frees the row at `slot` once it holds neither a user nor an invitation.
    fn release(&mut self, slot: u32) {
        let Some(row) = self.rows.get(slot) else {
            return;
        };
        if row.user().is_some() || !row.invitations.is_empty() {
            return;
        }
        let id = row.id();
        self.by_id.remove(id_hash(id), |s| s == slot);
        self.rows.remove(slot);
    }

    /// The users on `template`, in id order.
    pub(crate) fn on_template(&self, template: TemplateId) -> impl Iterator<Item = UserId> + '_ {
        let at = self.template.seek(
            |f| f.0 < Some(template),
            |s| {
                self.user_at(s)
                    .is_some_and(|u| u.template_id < Some(template))
            },
        );
        self.template
            .from(at)
            .map_while(move |s| self.user_at(s).filter(|u| u.template_id == Some(template)))
            .map(|u| u.id)
    }

    fn token_slot(&self, hash: &TokenHash) -> Option<u32> {
        self.by_token.find(token_hash(hash), |s| {
            self.rows
                .get(s)
                .is_some_and(|r| r.invitations.iter().any(|i| i.token_hash == *hash))
        })
    }

    /// The invitation with this token hash.
    pub(crate) fn invitation(&self, hash: &TokenHash) -> Option<Invitation> {
        let row = self.rows.get(self.token_slot(hash)?)?;
        row.invitations
            .iter()
            .find(|i| i.token_hash == *hash)
            .map(|i| i.full(self.tenant, row.id()))
    }

    pub(crate) fn has_invitation(&self, hash: &TokenHash) -> bool {
        self.token_slot(hash).is_some()
    }

    /// The invitations of `user`, oldest first.
    pub(crate) fn invitations_of(&self, user: UserId) -> Vec<Invitation> {
        self.slot(user)
            .and_then(|s| self.rows.get(s))
            .map(|r| {
                r.invitations
                    .iter()
                    .map(|i| i.full(self.tenant, r.id()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replaces (or removes, with `None`) the invitation with token hash `hash` (a new one
    /// goes last in its user's list). The user of a new invitation must have a row (the
    /// caller checks that the user exists). Returns the previous invitation.
    pub(crate) fn set_invitation(
        &mut self,
        hash: TokenHash,
        new: Option<Invitation>,
    ) -> Option<Invitation> {
        let old_slot = self.token_slot(&hash);
        let old = old_slot.and_then(|s| {
            let row = self.rows.get(s)?;
            let inv = row.invitations.iter().find(|i| i.token_hash == hash)?;
            Some((s, inv.full(self.tenant, row.id())))
        });
        // In place when its user stays the same (every change but insert and removal).
        if let (Some((s, _)), Some(n)) = (&old, &new)
            && let Some(row) = self.rows.get_mut(*s)
            && row.id() == n.user_id
        {
            if let Some(i) = row.invitations.iter_mut().find(|i| i.token_hash == hash) {
                *i = Inv::of(n);
            }
            return old.map(|(_, o)| o);
        }
        if let Some((s, _)) = &old {
            let s = *s;
            if let Some(row) = self.rows.get_mut(s) {
                row.invitations = row
                    .invitations
                    .iter()
                    .filter(|i| i.token_hash != hash)
                    .copied()
                    .collect();
            }
            self.by_token.remove(token_hash(&hash), |x| x == s);
            self.release(s);
        }
        if let Some(n) = &new
            && let Some(s) = self
                .slot(n.user_id)
                .or_else(|| self.new_row(n.user_id).ok())
            && let Some(row) = self.rows.get_mut(s)
        {
            row.invitations = row
                .invitations
                .iter()
                .copied()
                .chain([Inv::of(n)])
                .collect();
            self.by_token.insert(token_hash(&n.token_hash), s);
        }
        old.map(|(_, o)| o)
    }

    /// The users in `sort` order (reversed when `descending`), after the cursor `after`
    /// when given; `f` gets each and says whether to go on.
    pub(crate) fn walk(
        &self,
        sort: SortBy,
        after: Option<&Cursor>,
        descending: bool,
        f: impl FnMut(&User) -> bool,
    ) {
        match (sort, after) {
            (SortBy::Email, Some(Cursor::Email(k, id))) => {
                let probe = (k.as_str(), *id);
                let at = self.place(
                    &self.email,
                    descending,
                    |x| (&*x.0, x.1).cmp(&probe),
                    |u| (u.email.key(), u.id).cmp(&probe),
                );
                self.walk_in(&self.email, at, descending, f);
            }
            (SortBy::CreatedAt, Some(Cursor::CreatedAt(t, id))) => {
                let probe = (*t, *id);
                let at = self.place(
                    &self.created,
                    descending,
                    |x| x.cmp(&probe),
                    |u| (u.created_at.unix_timestamp_nanos(), u.id).cmp(&probe),
                );
                self.walk_in(&self.created, at, descending, f);
            }
            (SortBy::LastLogin, Some(Cursor::LastLogin(t, id))) => {
                let probe = (t.unwrap_or(i128::MIN), *id);
                let at = self.place(
                    &self.login,
                    descending,
                    |x| x.cmp(&probe),
                    |u| (login_key(u.last_login), u.id).cmp(&probe),
                );
                self.walk_in(&self.login, at, descending, f);
            }
            (SortBy::Email, _) => self.walk_in(&self.email, None, descending, f),
            (SortBy::CreatedAt, _) => self.walk_in(&self.created, None, descending, f),
            (SortBy::LastLogin, _) => self.walk_in(&self.login, None, descending, f),
        }
    }

    /// Walks `sorted` from `at` (ascending) or back from it (descending); from the start or
    /// the end without one.
    fn walk_in<K: Ord>(
        &self,
        sorted: &Sorted<K>,
        at: impl Into<Option<At>>,
        descending: bool,
        mut f: impl FnMut(&User) -> bool,
    ) {
        let mut go = |s: u32| self.user_at(s).is_none_or(&mut f);
        if descending {
            let at = at.into().unwrap_or_else(|| sorted.end());
            for s in sorted.before(at) {
                if !go(s) {
                    break;
                }
            }
        } else {
            for s in sorted.from(at.into().unwrap_or((0, 0))) {
                if !go(s) {
                    break;
                }
            }
        }
    }

    /// Where a walk after a cursor starts (`fence` orders a fence and `cmp` a row against
    /// the cursor): ascending, at the first row after it; descending, just past the last
    /// row before it.
    fn place<K: Ord>(
        &self,
        sorted: &Sorted<K>,
        descending: bool,
        fence: impl Fn(&K) -> Ordering,
        cmp: impl Fn(&User) -> Ordering,
    ) -> At {
        // Ascending skips the cursor's own row; descending stops before it.
        let before = |c: Ordering| c == Ordering::Less || (!descending && c == Ordering::Equal);
        sorted.seek(
            |f| before(fence(f)),
            |s| self.user_at(s).is_some_and(|u| before(cmp(u))),
        )
    }
}
