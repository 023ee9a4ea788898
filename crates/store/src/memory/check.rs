//! The check index: what an authorization reads, laid out to be read without a lock
//! ([current access (D6)](tenantry_core::Rule::CurrentAccess)).
//!
//! Per tenant, a table maps each user id to one packed word (status, role, CRM flag, direct
//! grants and a template slot), and a slot array holds each template's id and current
//! permissions, so a template edit is one store into one slot whatever the number of users
//! referencing it. A directory maps tenant ids to their index, the index itself in its entry.
//!
//! Readers take no lock and write no shared memory: every word is an atomic, and each tenant
//! has a sequence counter in the manner of a seqlock. A writer, which
//! holds the tenant's write lock, makes the counter odd, stores, and makes it even again; a
//! reader reads the counter, the words, and the counter again, and keeps what it read only
//! if the counter was even and unchanged. A reader that keeps meeting a writer gives up and
//! the caller takes the locked path, so the answer is never stale and never torn. The
//! directory needs no counter: its keys are only ever added, each value before its key (see
//! [`Directory::get`]).
//!
//! Tables grow by building a larger generation beside the old one; old generations are kept
//! (readers may be inside them), which costs at most as much again as the current one.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

use tenantry_core::{
    Decision, Permissions, Request, Role, Status, Subject, TemplateId, TenantId, User, UserId,
};
use uuid::Uuid;

/// How often a reader retries past a writer before it gives up.
const SPINS: u32 = 64;
/// Slots of the first table generation.
const MIN_SLOTS: usize = 16;
/// Table generations (each twice the one before) and slot-array chunks.
const GENERATIONS: usize = 40;

/// A sequence counter: odd while a writer is storing.
#[derive(Debug, Default)]
pub(crate) struct Seq(AtomicU64);

impl Seq {
    /// Runs `f` until it read a consistent state; `None` if writers kept interfering.
    #[inline(always)]
    pub(crate) fn read<T>(&self, mut f: impl FnMut() -> Option<T>) -> Option<T> {
        for _ in 0..SPINS {
            let before = self.0.load(Ordering::Acquire);
            if before & 1 == 0 {
                let out = f();
                fence(Ordering::Acquire);
                if self.0.load(Ordering::Relaxed) == before {
                    return out;
                }
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Runs the writer `f` with the counter odd. Writers are serialized by the caller.
    pub(crate) fn write<T>(&self, f: impl FnOnce() -> T) -> T {
        self.0.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        let out = f();
        self.0.fetch_add(1, Ordering::Release);
        out
    }
}

/// The id's 16 bytes as two words in the machine's own byte order (one load each, no byte
/// swap: the index only compares and hashes them); [`whole`] is the inverse.
#[inline]
fn halves(uuid: Uuid) -> (u64, u64) {
    let v = u128::from_ne_bytes(*uuid.as_bytes());
    // Truncation is the point: the two halves of the 128 bits.
    #[allow(clippy::cast_possible_truncation)]
    (v as u64, (v >> 64) as u64)
}

/// The id [`halves`] split.
#[inline]
fn whole(a: u64, b: u64) -> Uuid {
    Uuid::from_bytes((u128::from(a) | (u128::from(b) << 64)).to_ne_bytes())
}

/// A multiplicative mix of both halves: ids built from a clock and a constant tail (as tests
/// and benches build them) spread as well as random UUIDv7 tails.
#[inline]
fn hash(hi: u64, lo: u64) -> u64 {
    let h = (hi ^ lo.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h ^ (h >> 31)).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// A key of an [`IdTable`]: the id's two halves (both 0: an empty slot).
#[derive(Default)]
struct Key {
    hi: AtomicU64,
    lo: AtomicU64,
}

/// One slot of a [`Generation`]: its key and its word, which live in two parallel arrays.
#[derive(Clone, Copy)]
struct Slot<'a> {
    hi: &'a AtomicU64,
    lo: &'a AtomicU64,
    val: &'a AtomicU64,
}

/// One table of an [`IdTable`]: the keys, probed by a lookup, and their words beside them in
/// a parallel array of 8-byte words. A lookup reads its key's line and then its word's (the
/// load of the word starts before the key's comparison ends, as the probe is predicted to
/// hit); a held check ([`IdTable::get_at`]) reads the word alone, from an array a third of
/// the size of key-and-word slots (10,000 users: 128 KiB of words, against 384 KiB of
/// 24-byte slots), which stays in cache where the slots did not.
struct Generation {
    keys: Box<[Key]>,
    vals: Box<[AtomicU64]>,
    mask: usize,
}

impl Generation {
    fn new(len: usize) -> Self {
        Self {
            keys: (0..len).map(|_| Key::default()).collect(),
            vals: (0..len).map(|_| AtomicU64::new(0)).collect(),
            mask: len.saturating_sub(1),
        }
    }

    /// The slot at `i`.
    #[inline(always)]
    fn slot(&self, i: usize) -> Option<Slot<'_>> {
        let key = self.keys.get(i)?;
        Some(Slot {
            hi: &key.hi,
            lo: &key.lo,
            val: self.vals.get(i)?,
        })
    }

    /// The slot holding the key, or the empty slot where it would go.
    #[inline(always)]
    fn find(&self, hi: u64, lo: u64) -> Option<Slot<'_>> {
        self.slot(self.find_at(hash(hi, lo), hi, lo)?)
    }

    /// The place of the slot holding the key (its [`hash`] given), or of the empty slot
    /// where it would go.
    #[inline(always)]
    fn find_at(&self, h: u64, hi: u64, lo: u64) -> Option<usize> {
        // Truncation is the point: the low bits of the hash pick the slot.
        #[allow(clippy::cast_possible_truncation)]
        let mut i = (h as usize) & self.mask;
        for _ in 0..self.keys.len() {
            let slot = self.keys.get(i)?;
            // `lo` is stored last, with release, when a key is added: a reader that sees the
            // whole key also sees its word (what the directory's readers rely on).
            let (h, l) = (
                slot.hi.load(Ordering::Relaxed),
                slot.lo.load(Ordering::Acquire),
            );
            if (h == hi && l == lo) || (h == 0 && l == 0) {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
        None
    }
}

/// An open-addressing map from a 128-bit id (never the nil id) to a word; 0 means absent.
/// Deleted keys stay as tombstones until the next growth, so probe chains stay whole.
/// `current` comes first (`repr(C)`), so it shares a cache line with the owner's sequence
/// counter.
#[repr(C)]
pub(crate) struct IdTable {
    current: AtomicUsize,
    generations: [OnceLock<Generation>; GENERATIONS],
    /// Keys in the current generation, tombstones included (writer only).
    used: AtomicUsize,
    /// Keys with a nonzero word (writer only).
    live: AtomicUsize,
}

impl Default for IdTable {
    fn default() -> Self {
        Self {
            generations: std::array::from_fn(|_| OnceLock::new()),
            current: AtomicUsize::new(0),
            used: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
        }
    }
}

impl fmt::Debug for IdTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdTable")
            .field("live", &self.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl IdTable {
    #[inline]
    fn generation(&self) -> Option<&Generation> {
        self.generations
            .get(self.current.load(Ordering::Acquire))?
            .get()
    }

    /// The word of the key (0: absent); `None` only if the table is unreadable (a reader
    /// racing a writer, which the sequence check then refuses).
    #[cfg(test)]
    fn get(&self, hi: u64, lo: u64) -> Option<u64> {
        self.get_hashed(hash(hi, lo), hi, lo)
    }

    /// [`IdTable::get`] given the key's [`hash`] (a reader that may retry hashes once).
    #[inline(always)]
    fn get_hashed(&self, h: u64, hi: u64, lo: u64) -> Option<u64> {
        let Some(g) = self.generation() else {
            return Some(0);
        };
        let i = g.find_at(h, hi, lo)?;
        Some(g.vals.get(i)?.load(Ordering::Relaxed))
    }

    /// Where the key sits now: the current generation's number and the key's slot in it;
    /// `None` when the key has no word in the table (or the table is unreadable).
    fn locate(&self, hi: u64, lo: u64) -> Option<(usize, usize)> {
        let at = self.current.load(Ordering::Acquire);
        let g = self.generations.get(at)?.get()?;
        let i = g.find_at(hash(hi, lo), hi, lo)?;
        let slot = g.slot(i)?;
        (slot.hi.load(Ordering::Relaxed) == hi
            && slot.lo.load(Ordering::Relaxed) == lo
            && slot.val.load(Ordering::Relaxed) != 0)
            .then_some((at, i))
    }

    /// The word of the key at the place [`IdTable::locate`] gave, while that generation is
    /// still the current one; `None` once the table has grown.
    ///
    /// Only the word is read: a slot's key never changes once a reader can see it. A key is
    /// stored only into an empty slot of the current generation ([`IdTable::set`]) or into a
    /// generation no reader sees yet ([`IdTable::grow`]); a removed key stays as a tombstone
    /// and [`IdTable::clear`] keeps every key. So the slot `locate` found the key in holds
    /// that key for as long as its generation is current, and one load from the
    /// generation's dense array of words is the whole read.
    #[inline(always)]
    fn get_at(&self, at: usize, i: usize, hi: u64, lo: u64) -> Option<u64> {
        if self.current.load(Ordering::Acquire) != at {
            return None;
        }
        let g = self.generations.get(at)?.get()?;
        debug_assert!(
            g.slot(i)
                .is_some_and(|slot| slot.hi.load(Ordering::Relaxed) == hi
                    && slot.lo.load(Ordering::Relaxed) == lo),
            "a held slot holds its key while its generation is current"
        );
        let _ = (hi, lo);
        Some(g.vals.get(i)?.load(Ordering::Relaxed))
    }

    /// Sets the word of the key (0 removes it). Writer only, inside [`Seq::write`]. The nil
    /// key is never stored; returns whether the key was stored.
    pub(crate) fn set(&self, hi: u64, lo: u64, val: u64) -> bool {
        if hi == 0 && lo == 0 {
            return false;
        }
        if let Some(g) = self.generation()
            && let Some(slot) = g.find(hi, lo)
            && slot.hi.load(Ordering::Relaxed) == hi
            && slot.lo.load(Ordering::Relaxed) == lo
        {
            let old = slot.val.swap(val, Ordering::Relaxed);
            match (old == 0, val == 0) {
                (true, false) => self.live.fetch_add(1, Ordering::Relaxed),
                (false, true) => self.live.fetch_sub(1, Ordering::Relaxed),
                _ => 0,
            };
            return true;
        }
        if val == 0 {
            return true;
        }
        let used = self.used.load(Ordering::Relaxed) + 1;
        let fits = self
            .generation()
            .is_some_and(|g| used <= g.keys.len() / 4 * 3);
        if !fits && !self.grow() {
            return false;
        }
        let Some(slot) = self.generation().and_then(|g| g.find(hi, lo)) else {
            return false;
        };
        slot.val.store(val, Ordering::Relaxed);
        slot.hi.store(hi, Ordering::Relaxed);
        slot.lo.store(lo, Ordering::Release);
        self.used.fetch_add(1, Ordering::Relaxed);
        self.live.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Removes every key's word (writer only, inside [`Seq::write`]); the keys stay as
    /// tombstones until the next growth, as removed keys do.
    pub(crate) fn clear(&self) {
        if let Some(g) = self.generation() {
            for val in &g.vals {
                val.store(0, Ordering::Relaxed);
            }
        }
        self.live.store(0, Ordering::Relaxed);
    }

    /// Builds the next generation with the live keys of the current one.
    fn grow(&self) -> bool {
        let at = self.current.load(Ordering::Relaxed);
        let old = self.generations.get(at).and_then(OnceLock::get);
        let live = self.live.load(Ordering::Relaxed) + 1;
        // The first generation that holds the live keys at half load.
        let mut next = if old.is_some() { at + 1 } else { at };
        while MIN_SLOTS << next < live * 2 {
            next += 1;
        }
        let Some(cell) = self.generations.get(next) else {
            return false;
        };
        let fresh = Generation::new(MIN_SLOTS << next);
        let mut used = 0;
        if let Some(old) = old {
            for (s, val) in old.keys.iter().zip(&old.vals) {
                let val = val.load(Ordering::Relaxed);
                if val == 0 {
                    continue;
                }
                let (hi, lo) = (s.hi.load(Ordering::Relaxed), s.lo.load(Ordering::Relaxed));
                if let Some(slot) = fresh.find(hi, lo) {
                    slot.hi.store(hi, Ordering::Relaxed);
                    slot.lo.store(lo, Ordering::Relaxed);
                    slot.val.store(val, Ordering::Relaxed);
                    used += 1;
                }
            }
        }
        if cell.set(fresh).is_err() {
            return false;
        }
        self.used.store(used, Ordering::Relaxed);
        self.current.store(next, Ordering::Release);
        true
    }
}

/// An append-only array in chunks that never move: chunk `k` holds `MIN_SLOTS << k` items.
pub(crate) struct Chunks<T> {
    chunks: [OnceLock<Box<[T]>>; GENERATIONS],
}

impl<T> Default for Chunks<T> {
    fn default() -> Self {
        Self {
            chunks: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

impl<T: Default> Chunks<T> {
    #[inline]
    fn place(i: usize) -> (usize, usize) {
        let j = i / MIN_SLOTS + 1;
        let k = (usize::BITS - 1 - j.leading_zeros()) as usize;
        (k, i - MIN_SLOTS * ((1 << k) - 1))
    }

    /// The item at `i`, if its chunk exists.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        let (k, off) = Self::place(i);
        self.chunks.get(k)?.get()?.get(off)
    }

    /// The item at `i`, making its chunk if needed (writer only).
    pub(crate) fn get_or_make(&self, i: usize) -> Option<&T> {
        let (k, off) = Self::place(i);
        let chunk = self.chunks.get(k)?;
        chunk
            .get_or_init(|| (0..MIN_SLOTS << k).map(|_| T::default()).collect())
            .get(off)
    }
}

/// A template slot: the template's id and its permissions (bit 32 set while it exists).
#[derive(Default)]
pub(crate) struct TemplateSlot {
    hi: AtomicU64,
    lo: AtomicU64,
    perms: AtomicU64,
}

/// Template slots held in the index itself (one load away from its first line); the rest
/// are in chunks.
const INLINE_TEMPLATES: usize = 32;

const LIVE: u64 = 1 << 32;
/// In a template slot: the slot was retired (its template deleted, or its users moved), so
/// a user whose word still names it must be asked of the store.
const RETIRED: u64 = 1 << 33;
const ACTIVE: u64 = 1 << 33;
const SUSPENDED: u64 = 1 << 34;
const ADMIN: u64 = 1 << 35;
const CRM: u64 = 1 << 36;
const HAS_TEMPLATE: u64 = 1 << 37;
/// The user is known but its word could not hold it: ask the locked path.
const ASK: u64 = 1 << 38;
const SLOT_SHIFT: u32 = 40;
/// In [`TenantIndex::closed`]: a store into the index failed.
const BROKEN: u32 = 1 << 31;
const MAX_TEMPLATE_SLOTS: u32 = 1 << 24;

/// The check index of one tenant. Its writers hold the tenant's write lock.
///
/// A *complete* index ([`TenantIndex::default`], the in-memory store's) holds every user of
/// its tenant, so a user it lacks is unknown; a *partial* one ([`TenantIndex::partial`], a
/// cache's) holds some, so a user it lacks is asked of the store.
///
/// Laid out in order from the start of a cache line: what every reader reads first (the
/// counter, the closed word and the number of the table's current generation) is one line
/// (left to the compiler, the number sat some 1,200 bytes past the counter, a line of its
/// own; at 100 tenants a tenant's lines do not stay in cache between two of its checks).
#[derive(Default)]
#[repr(C, align(64))]
pub(crate) struct TenantIndex {
    seq: Seq,
    /// Nonzero while no read may be answered here: [`BROKEN`] once a store into the index
    /// failed (from then on every read takes the locked path), plus one per pause in force
    /// ([`TenantIndex::pause`]).
    closed: AtomicU32,
    /// A user the index lacks is asked of the store, not unknown.
    partial: bool,
    users: IdTable,
    inline: [TemplateSlot; INLINE_TEMPLATES],
    templates: Chunks<TemplateSlot>,
}

impl fmt::Debug for TenantIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantIndex")
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

/// Where a user's word sat in its tenant's table when a host took hold of the user's checks
/// ([`TenantIndex::locate`]): the table's generation and the slot. Valid while that
/// generation is the current one, during which the slot keeps the user's id (see
/// [`IdTable::get_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    at: u32,
    slot: u32,
}

/// What a reader found for a user.
pub(crate) enum Found {
    /// The facts of the user.
    Subject(Subject),
    /// No such user.
    Unknown,
}

impl TenantIndex {
    /// Runs the writer `f` with readers held off (they retry or take the locked path).
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Self) -> T) -> T {
        self.seq.write(|| f(self))
    }

    /// An empty index that holds only some of its tenant's users (see the type's docs).
    pub(crate) fn partial() -> Self {
        Self {
            partial: true,
            ..Self::default()
        }
    }

    /// Stops the index answering (writer only): a store into it failed.
    pub(crate) fn distrust(&self) {
        self.closed.fetch_or(BROKEN, Ordering::Relaxed);
    }

    /// Stops the index answering until the matching [`TenantIndex::resume`] (writer only,
    /// inside [`TenantIndex::write`], so no reader keeps an answer read across it).
    pub(crate) fn pause(&self) {
        // Pauses past 2^31 at once would reach the broken bit, which only closes it more.
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends one [`TenantIndex::pause`] (writer only, inside [`TenantIndex::write`]).
    pub(crate) fn resume(&self) {
        let _ = self
            .closed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c & !BROKEN != 0).then(|| c - 1)
            });
    }

    /// Removes every user's word (writer only, inside [`TenantIndex::write`]).
    pub(crate) fn clear_users(&self) {
        self.users.clear();
    }

    /// How many users have a word in the index.
    pub(crate) fn users_len(&self) -> usize {
        self.users.live.load(Ordering::Relaxed)
    }

    /// The packed word of a user, given the slot of its template (writer only).
    pub(crate) fn pack(user: &User, template_slot: Option<u32>) -> u64 {
        Self::pack_parts(
            user.role,
            user.status,
            user.crm_access,
            user.grants,
            user.template_id.is_some(),
            template_slot,
        )
    }

    /// The packed word of a subject, given the slot of its template (writer only).
    pub(crate) fn pack_subject(subject: &Subject, template_slot: Option<u32>) -> u64 {
        Self::pack_parts(
            subject.role,
            subject.status,
            subject.crm_access,
            subject.grants,
            subject.template.is_some(),
            template_slot,
        )
    }

    fn pack_parts(
        role: Role,
        status: Status,
        crm_access: bool,
        grants: Permissions,
        has_template: bool,
        template_slot: Option<u32>,
    ) -> u64 {
        let mut w = LIVE | u64::from(grants.bits());
        w |= match status {
            Status::Invited => 0,
            Status::Active => ACTIVE,
            Status::Suspended => SUSPENDED,
        };
        if role == Role::Admin {
            w |= ADMIN;
        }
        if crm_access {
            w |= CRM;
        }
        match (has_template, template_slot) {
            (false, _) => {}
            (true, Some(slot)) if slot < MAX_TEMPLATE_SLOTS => {
                w |= HAS_TEMPLATE | (u64::from(slot) << SLOT_SHIFT);
            }
            (true, _) => w |= ASK,
        }
        w
    }

    /// Whether a template slot can be named in a word (writer only).
    pub(crate) fn slot_fits(slot: u32) -> bool {
        slot < MAX_TEMPLATE_SLOTS
    }

    /// Stores a user's word (writer only, inside [`TenantIndex::write`]); `None` removes it.
    /// Returns whether the index holds the change (else the caller must stop trusting it).
    pub(crate) fn set_user(&self, id: UserId, word: Option<u64>) -> bool {
        let (hi, lo) = halves(id.as_uuid());
        // Readers never ask the index about the nil id.
        (hi == 0 && lo == 0) || self.users.set(hi, lo, word.unwrap_or(0))
    }

    /// The template slot `slot`, if it was ever made.
    #[inline(always)]
    fn template(&self, slot: usize) -> Option<&TemplateSlot> {
        match self.inline.get(slot) {
            Some(s) => Some(s),
            None => self.templates.get(slot.checked_sub(INLINE_TEMPLATES)?),
        }
    }

    /// Stores a template slot (writer only): its id and permissions, or gone with `None`.
    pub(crate) fn set_template(
        &self,
        slot: u32,
        id: TemplateId,
        perms: Option<Permissions>,
    ) -> bool {
        let Some(s) = usize::try_from(slot)
            .ok()
            .and_then(|i| match self.inline.get(i) {
                Some(s) => Some(s),
                None => self.templates.get_or_make(i.checked_sub(INLINE_TEMPLATES)?),
            })
        else {
            return false;
        };
        let (hi, lo) = halves(id.as_uuid());
        s.hi.store(hi, Ordering::Relaxed);
        s.lo.store(lo, Ordering::Relaxed);
        s.perms.store(
            perms.map_or(0, |p| LIVE | u64::from(p.bits())),
            Ordering::Relaxed,
        );
        true
    }

    /// Retires a template slot (writer only): a user whose word names it is asked of the
    /// store from now on. The slot is never used again.
    pub(crate) fn retire_template(&self, slot: u32) {
        if let Some(s) = usize::try_from(slot).ok().and_then(|i| self.template(i)) {
            s.perms.store(RETIRED, Ordering::Relaxed);
        }
    }

    /// A check decided on [`TenantIndex::subject`]'s answer, as
    /// [`tenantry_core::authorize_subject`] decides it; `None` when the caller should take
    /// the locked path. Built inline, so the subject never leaves the registers.
    #[inline]
    pub(crate) fn decide(
        &self,
        tenant: TenantId,
        user: UserId,
        request: Request,
    ) -> Option<Decision> {
        Some(match self.subject(tenant, user)? {
            Found::Subject(s) => tenantry_core::authorize_subject(&s, request),
            Found::Unknown => Decision::unknown_user(),
        })
    }

    /// The facts of a user, read without a lock; `None` when the caller should take the
    /// locked path. Always inlined, so [`TenantIndex::decide`] keeps the subject in registers.
    #[inline(always)]
    pub(crate) fn subject(&self, tenant: TenantId, user: UserId) -> Option<Found> {
        let (hi, lo) = halves(user.as_uuid());
        if hi == 0 && lo == 0 {
            return None;
        }
        let h = hash(hi, lo);
        self.read_subject(tenant, user, || self.users.get_hashed(h, hi, lo))
    }

    /// Where a user's word sits now (see [`Held`]); `None` when the index does not hold the
    /// user or cannot answer.
    pub(crate) fn locate(&self, user: UserId) -> Option<Held> {
        // The nil id needs no test of its own: it is never stored, so its probe ends at an
        // empty slot, which holds no word.
        let (hi, lo) = halves(user.as_uuid());
        let (at, slot) = self.seq.read(|| {
            if self.closed.load(Ordering::Relaxed) != 0 {
                return None;
            }
            self.users.locate(hi, lo)
        })?;
        Some(Held {
            at: u32::try_from(at).ok()?,
            slot: u32::try_from(slot).ok()?,
        })
    }

    /// A check decided at the place `held` names, as [`TenantIndex::decide`] decides it;
    /// `None` when the user's word has moved since (the table grew) or the caller should
    /// take the locked path.
    #[inline]
    pub(crate) fn decide_held(
        &self,
        tenant: TenantId,
        user: UserId,
        held: Held,
        request: Request,
    ) -> Option<Decision> {
        let (hi, lo) = halves(user.as_uuid());
        Some(
            match self.read_subject(tenant, user, || {
                self.users
                    .get_at(held.at as usize, held.slot as usize, hi, lo)
            })? {
                Found::Subject(s) => tenantry_core::authorize_subject(&s, request),
                Found::Unknown => Decision::unknown_user(),
            },
        )
    }

    /// The facts of a user whose word `word` reads (0: no such user), read without a lock
    /// inside the sequence check; `None` when the caller should take the locked path.
    #[inline(always)]
    fn read_subject(
        &self,
        tenant: TenantId,
        user: UserId,
        word: impl Fn() -> Option<u64>,
    ) -> Option<Found> {
        // The template slot's id never changes once set (slots are never reused), so only
        // its permissions are read inside the sequence check; the id is read after it.
        let (word, template, perms) = self.seq.read(|| {
            if self.closed.load(Ordering::Relaxed) != 0 {
                return None;
            }
            let word = word()?;
            if word & HAS_TEMPLATE == 0 {
                return Some((word, None, 0));
            }
            let slot = usize::try_from(word >> SLOT_SHIFT).ok()?;
            let s = self.template(slot)?;
            Some((word, Some(s), s.perms.load(Ordering::Relaxed)))
        })?;
        if word == 0 {
            return (!self.partial).then_some(Found::Unknown);
        }
        if word & ASK != 0 || perms & RETIRED != 0 {
            return None;
        }
        let status = if word & ACTIVE != 0 {
            Status::Active
        } else if word & SUSPENDED != 0 {
            Status::Suspended
        } else {
            Status::Invited
        };
        let template = match template {
            Some(s) if perms & LIVE != 0 => Some((
                TemplateId::from_uuid(whole(
                    s.hi.load(Ordering::Relaxed),
                    s.lo.load(Ordering::Relaxed),
                )),
                // The low 32 bits are the permission bits.
                #[allow(clippy::cast_possible_truncation)]
                Permissions::from_bits_retain(perms as u32),
            )),
            _ => None,
        };
        Some(Found::Subject(Subject {
            tenant_id: tenant,
            user_id: user,
            role: if word & ADMIN != 0 {
                Role::Admin
            } else {
                Role::User
            },
            status,
            crm_access: word & CRM != 0,
            #[allow(clippy::cast_possible_truncation)]
            grants: Permissions::from_bits_retain(word as u32),
            template,
        }))
    }
}

/// A directory entry: a tenant id and its value (set before the id is stored).
struct DirSlot<T> {
    hi: AtomicU64,
    lo: AtomicU64,
    value: OnceLock<T>,
}

/// Tenant ids to their value, read without a lock or a sequence counter. Tenants are never
/// removed. An entry holds the value itself, so a lookup is the current table, one entry,
/// and the value. Laid out as [`TenantIndex`] is: its flag and current generation in one
/// line.
#[repr(C, align(64))]
pub(crate) struct Directory<T> {
    /// Set when an insert failed: from then on every lookup takes the locked path.
    broken: AtomicBool,
    current: AtomicUsize,
    generations: [OnceLock<Box<[DirSlot<T>]>>; GENERATIONS],
    /// Tenants in the directory (writer only).
    len: AtomicUsize,
}

impl<T> Default for Directory<T> {
    fn default() -> Self {
        Self {
            broken: AtomicBool::new(false),
            current: AtomicUsize::new(0),
            generations: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
        }
    }
}

impl<T> fmt::Debug for Directory<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("tenants", &self.len.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What the directory says of a tenant.
pub(crate) enum Entry<'a, T> {
    /// Its value.
    Known(&'a T),
    /// No such tenant.
    Unknown,
}

/// The entry of the key in `slots` (`true`), or the empty entry where it would go (`false`).
#[inline(always)]
fn dir_find<T>(slots: &[DirSlot<T>], hi: u64, lo: u64) -> Option<(&DirSlot<T>, bool)> {
    let mask = slots.len().checked_sub(1)?;
    // Truncation is the point: the low bits of the hash pick the slot.
    #[allow(clippy::cast_possible_truncation)]
    let mut i = (hash(hi, lo) as usize) & mask;
    for _ in 0..slots.len() {
        let slot = slots.get(i)?;
        // `lo` is stored last, with release, when a key is added: a reader that sees the
        // whole key also sees its value.
        let (h, l) = (
            slot.hi.load(Ordering::Relaxed),
            slot.lo.load(Ordering::Acquire),
        );
        if h == hi && l == lo {
            return Some((slot, true));
        }
        if h == 0 && l == 0 {
            return Some((slot, false));
        }
        i = (i + 1) & mask;
    }
    None
}

impl<T: Clone> Directory<T> {
    /// The value of a tenant; `None` when the caller should take the locked path.
    ///
    /// Read without a sequence counter: tenants are never removed or moved, an entry's
    /// value is set before its key is stored and never changes, and a table is complete
    /// before it becomes the current one, so whatever a reader finds was true at the moment
    /// it read it (a tenant being added may be missed: it is not there yet).
    #[inline]
    pub(crate) fn get(&self, tenant: TenantId) -> Option<Entry<'_, T>> {
        let (hi, lo) = halves(tenant.as_uuid());
        if (hi == 0 && lo == 0) || self.broken.load(Ordering::Acquire) {
            return None;
        }
        let Some(slots) = self
            .generations
            .get(self.current.load(Ordering::Acquire))?
            .get()
        else {
            return Some(Entry::Unknown);
        };
        match dir_find(slots, hi, lo)? {
            (slot, true) => slot.value.get().map(Entry::Known),
            (_, false) => Some(Entry::Unknown),
        }
    }

    /// Adds a tenant (writer only: the caller holds the lock of the tenant map). Should it
    /// fail to hold it, the directory stops answering.
    pub(crate) fn insert(&self, tenant: TenantId, value: T) {
        if !self.try_insert(tenant, value) {
            self.broken.store(true, Ordering::Release);
        }
    }

    fn try_insert(&self, tenant: TenantId, value: T) -> bool {
        let (hi, lo) = halves(tenant.as_uuid());
        if hi == 0 && lo == 0 {
            // Never looked up here (see `get`); the locked path serves it.
            return true;
        }
        let len = self.len.load(Ordering::Relaxed) + 1;
        let at = self.current.load(Ordering::Relaxed);
        let old = self
            .generations
            .get(at)
            .and_then(OnceLock::get)
            .map(|b| &**b);
        if old.is_none_or(|s| len * 4 > s.len() * 3) && !self.grow(at, old, len) {
            return false;
        }
        let Some(slots) = self
            .generations
            .get(self.current.load(Ordering::Relaxed))
            .and_then(OnceLock::get)
        else {
            return false;
        };
        // Found already (`true`): the caller never inserts a tenant twice.
        let Some((slot, false)) = dir_find(slots, hi, lo) else {
            return false;
        };
        if slot.value.set(value).is_err() {
            return false;
        }
        slot.hi.store(hi, Ordering::Relaxed);
        slot.lo.store(lo, Ordering::Release);
        self.len.store(len, Ordering::Relaxed);
        true
    }

    /// Makes the next table, at most half full with `len` tenants, from the current one.
    fn grow(&self, at: usize, old: Option<&[DirSlot<T>]>, len: usize) -> bool {
        let mut next = if old.is_some() { at + 1 } else { at };
        while MIN_SLOTS << next < len * 2 {
            next += 1;
        }
        let Some(cell) = self.generations.get(next) else {
            return false;
        };
        let fresh: Box<[DirSlot<T>]> = (0..MIN_SLOTS << next)
            .map(|_| DirSlot {
                hi: AtomicU64::new(0),
                lo: AtomicU64::new(0),
                value: OnceLock::new(),
            })
            .collect();
        for s in old.into_iter().flatten() {
            let (hi, lo) = (s.hi.load(Ordering::Relaxed), s.lo.load(Ordering::Relaxed));
            let Some(v) = s.value.get() else { continue };
            if hi == 0 && lo == 0 {
                continue;
            }
            let Some((slot, false)) = dir_find(&fresh, hi, lo) else {
                return false;
            };
            if slot.value.set(v.clone()).is_err() {
                return false;
            }
            slot.hi.store(hi, Ordering::Relaxed);
            slot.lo.store(lo, Ordering::Relaxed);
        }
        if cell.set(fresh).is_err() {
            return false;
        }
        self.current.store(next, Ordering::Release);
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn the_table_keeps_every_key_through_growth_and_removal() {
        let t = IdTable::default();
        let keys: Vec<(u64, u64)> = (1..=5000u64).map(|i| (i << 20, i % 7)).collect();
        for (n, &(hi, lo)) in keys.iter().enumerate() {
            assert!(t.set(hi, lo, n as u64 + 1));
        }
        for (n, &(hi, lo)) in keys.iter().enumerate() {
            if n % 3 == 0 {
                assert!(t.set(hi, lo, 0));
            }
        }
        for (n, &(hi, lo)) in keys.iter().enumerate() {
            let want = if n % 3 == 0 { 0 } else { n as u64 + 1 };
            assert_eq!(t.get(hi, lo), Some(want), "key {n}");
        }
        assert_eq!(t.get(9, 9), Some(0));
        assert!(!t.set(0, 0, 1), "the nil key is never stored");
    }

    /// Keys that all have the same hash, so the same first slot: every lookup among them
    /// walks one probe chain that only the full id comparison settles.
    fn colliding(n: u64) -> Vec<(u64, u64)> {
        let c = 0x0123_4567_89AB_CDEF_u64;
        (1..=n).map(|d| (c ^ d.rotate_left(29), d)).collect()
    }

    #[test]
    fn d6_keys_with_one_hash_are_told_apart_by_the_full_id() {
        let keys = colliding(300);
        let h = hash(keys[0].0, keys[0].1);
        assert!(keys.iter().all(|&(hi, lo)| hash(hi, lo) == h));
        let t = IdTable::default();
        for (n, &(hi, lo)) in keys.iter().enumerate() {
            assert!(t.set(hi, lo, n as u64 + 1));
            // Every key so far still answers its own word, through each growth.
            for (m, &(hi, lo)) in keys.iter().enumerate().take(n + 1) {
                assert_eq!(t.get(hi, lo), Some(m as u64 + 1), "key {m} after {n}");
            }
        }
        // A key of the same hash that was never stored is absent, not a neighbour's word.
        let (hi, lo) = colliding(301)[300];
        assert_eq!(hash(hi, lo), h);
        assert_eq!(t.get(hi, lo), Some(0));
        // Removing one key of the chain leaves the others, before it and after it.
        assert!(t.set(keys[10].0, keys[10].1, 0));
        for (m, &(hi, lo)) in keys.iter().enumerate() {
            let want = if m == 10 { 0 } else { m as u64 + 1 };
            assert_eq!(t.get(hi, lo), Some(want), "key {m}");
        }
    }

    #[test]
    fn d6_a_removed_key_is_a_tombstone_until_growth_and_comes_back_in_its_entry() {
        let t = IdTable::default();
        let keys: Vec<(u64, u64)> = (1..=12u64).map(|i| (i, i << 40)).collect();
        for &(hi, lo) in &keys {
            assert!(t.set(hi, lo, 7));
        }
        // The first generation (16 slots) holds 12 entries: all are used.
        assert_eq!(t.current.load(Ordering::Relaxed), 0);
        assert_eq!(t.used.load(Ordering::Relaxed), 12);
        assert!(t.set(keys[3].0, keys[3].1, 0));
        assert_eq!(t.get(keys[3].0, keys[3].1), Some(0));
        assert_eq!(t.live.load(Ordering::Relaxed), 11);
        // Back in its old entry: no entry used, no growth.
        assert!(t.set(keys[3].0, keys[3].1, 9));
        assert_eq!(t.used.load(Ordering::Relaxed), 12);
        assert_eq!(t.current.load(Ordering::Relaxed), 0);
        assert_eq!(t.get(keys[3].0, keys[3].1), Some(9));
        // Removing twice, or removing an absent key, changes nothing.
        assert!(t.set(keys[4].0, keys[4].1, 0));
        assert!(t.set(keys[4].0, keys[4].1, 0));
        assert!(t.set(99, 99, 0));
        assert_eq!(t.live.load(Ordering::Relaxed), 11);
        assert_eq!(t.used.load(Ordering::Relaxed), 12);
        // A new key needs a 13th entry: the table grows and drops the tombstone.
        assert!(t.set(100, 100, 5));
        assert_eq!(t.current.load(Ordering::Relaxed), 1);
        assert_eq!(t.used.load(Ordering::Relaxed), 12);
        assert_eq!(t.live.load(Ordering::Relaxed), 12);
        assert_eq!(t.get(keys[4].0, keys[4].1), Some(0));
        assert_eq!(t.get(100, 100), Some(5));
        for (m, &(hi, lo)) in keys.iter().enumerate() {
            let want = match m {
                3 => 9,
                4 => 0,
                _ => 7,
            };
            assert_eq!(t.get(hi, lo), Some(want), "key {m}");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(usize, u64),
        Remove(usize),
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Against a `HashMap`, over keys of which half share one hash (one probe chain) and
        /// the others one half of the id (told apart by the other half), through growth,
        /// removal and keys coming back.
        #[test]
        fn d6_the_table_answers_as_a_map(ops in proptest::collection::vec(
            prop_oneof![
                3 => (0..64usize, 1..1000u64).prop_map(|(k, v)| Op::Set(k, v)),
                1 => (0..64usize).prop_map(Op::Remove),
            ],
            1..400,
        )) {
            let mut keys = colliding(32);
            keys.extend((1..=16u64).map(|i| (7, i << 7)));
            keys.extend((1..=16u64).map(|i| (i << 20, 7)));
            let t = IdTable::default();
            let mut model = std::collections::HashMap::new();
            for op in ops {
                match op {
                    Op::Set(k, v) => {
                        prop_assert!(t.set(keys[k].0, keys[k].1, v));
                        model.insert(k, v);
                    }
                    Op::Remove(k) => {
                        prop_assert!(t.set(keys[k].0, keys[k].1, 0));
                        model.remove(&k);
                    }
                }
                for (k, &(hi, lo)) in keys.iter().enumerate() {
                    prop_assert_eq!(t.get(hi, lo), Some(model.get(&k).copied().unwrap_or(0)));
                }
                prop_assert_eq!(t.live.load(Ordering::Relaxed), model.len());
            }
        }
    }

    #[test]
    fn d6_what_a_reader_reads_first_is_one_cache_line() {
        use std::mem::{align_of, offset_of};
        assert_eq!(align_of::<TenantIndex>(), 64);
        assert_eq!(align_of::<Directory<u64>>(), 64);
        let current = offset_of!(IdTable, current);
        assert!(offset_of!(TenantIndex, seq) < 64);
        assert!(offset_of!(TenantIndex, closed) < 64);
        assert!(offset_of!(TenantIndex, partial) < 64);
        assert!(offset_of!(TenantIndex, users) + current + 8 <= 64);
        assert!(offset_of!(Directory<u64>, broken) < 64);
        assert!(offset_of!(Directory<u64>, current) + 8 <= 64);
    }

    /// A tenant's index, before any user is stored, is what a `SubjectCache` keeps of a
    /// tenant for the store's life (its docs and `docs/architecture.md` say some 3 KB).
    #[test]
    fn an_empty_tenant_index_is_under_four_kilobytes() {
        let size = std::mem::size_of::<TenantIndex>();
        assert!((2048..4096).contains(&size), "{size} bytes");
    }

    #[test]
    fn d6_halves_and_whole_are_inverses() {
        for id in [
            Uuid::nil(),
            Uuid::max(),
            Uuid::from_u128(0x0123_4567_89AB_CDEF_FEDC_BA98_7654_3210),
            Uuid::from_u128(1),
            Uuid::from_u128(1 << 64),
        ] {
            let (a, b) = halves(id);
            assert_eq!(whole(a, b), id);
            assert_eq!(a == 0 && b == 0, id.is_nil());
        }
    }

    #[test]
    fn d15_the_directory_finds_every_tenant_through_growth_and_no_other() {
        let d: Directory<u64> = Directory::default();
        let id = |n: u64| TenantId::from_uuid(Uuid::from_u64_pair(n << 16, n ^ 0xABCD));
        for n in 1..=3000u64 {
            d.insert(id(n), n * 10);
            // Each one so far, every time a chunk or a table generation was added.
            if n.is_power_of_two() || n == 3000 {
                for m in 1..=n {
                    assert!(
                        matches!(d.get(id(m)), Some(Entry::Known(&v)) if v == m * 10),
                        "{m}"
                    );
                }
            }
        }
        assert!(matches!(d.get(id(3001)), Some(Entry::Unknown)));
        // Ids with one half zero are ids like any other (only the nil id is set aside).
        for (n, half) in [Uuid::from_u128(5), Uuid::from_u128(5 << 64)]
            .into_iter()
            .enumerate()
        {
            let (a, b) = halves(half);
            assert!((a == 0) != (b == 0), "one half zero");
            d.insert(TenantId::from_uuid(half), 7 + n as u64);
            assert!(
                matches!(d.get(TenantId::from_uuid(half)), Some(Entry::Known(&v)) if v == 7 + n as u64)
            );
        }
        assert!(
            d.get(TenantId::from_uuid(Uuid::nil())).is_none(),
            "nil: the locked path"
        );
        // A directory that failed to hold a tenant stops answering.
        d.broken.store(true, Ordering::Release);
        assert!(d.get(id(1)).is_none());
    }

    /// Tenants whose ids share one half (or have one half zero) sit in each other's probe
    /// chains: only the whole id finds an entry, and a half-zero id is not an empty entry.
    #[test]
    fn d15_the_directory_tells_ids_sharing_a_half_apart() {
        let d: Directory<u64> = Directory::default();
        let shapes: [fn(u64) -> (u64, u64); 4] =
            [|n| (0, n), |n| (n, 0), |n| (7, n), |n| (n + 7, 7)];
        let id = |(a, b): (u64, u64)| TenantId::from_uuid(whole(a, b));
        let mut want = Vec::new();
        for n in 1..=200u64 {
            for (k, shape) in shapes.iter().enumerate() {
                let v = n * 10 + k as u64;
                d.insert(id(shape(n)), v);
                want.push((shape(n), v));
            }
        }
        for &(key, v) in &want {
            assert!(
                matches!(d.get(id(key)), Some(Entry::Known(&got)) if got == v),
                "{key:?}"
            );
        }
        for shape in shapes {
            assert!(matches!(d.get(id(shape(201))), Some(Entry::Unknown)));
        }
    }

    /// The directory fills to three quarters before it grows, and grows to at most half.
    #[test]
    fn d15_the_directory_grows_past_three_quarters_to_half() {
        let d: Directory<u64> = Directory::default();
        let size = |d: &Directory<u64>| {
            d.generations[d.current.load(Ordering::Relaxed)]
                .get()
                .map_or(0, |g| g.len())
        };
        let id = |n: u64| TenantId::from_uuid(Uuid::from_u64_pair(n, n << 32));
        let mut sizes = Vec::new();
        for n in 1..=49u64 {
            d.insert(id(n), n);
            sizes.push(size(&d));
        }
        // 12 of 16 is three quarters: the 13th grows to 32; 24 of 32, then 64 at the 25th.
        assert_eq!(sizes[0], 16);
        assert_eq!(sizes[11], 16);
        assert_eq!(sizes[12], 32);
        assert_eq!(sizes[23], 32);
        assert_eq!(sizes[24], 64);
        assert_eq!(sizes[48], 128);
        for n in 1..=49u64 {
            assert!(matches!(d.get(id(n)), Some(Entry::Known(&v)) if v == n));
        }
    }

    #[test]
    fn chunks_place_every_index_once() {
        let c: Chunks<AtomicU64> = Chunks::default();
        for i in 0..2000 {
            c.get_or_make(i).unwrap().store(i as u64, Ordering::Relaxed);
        }
        for i in 0..2000 {
            assert_eq!(c.get(i).unwrap().load(Ordering::Relaxed), i as u64);
        }
        assert!(c.get(1_000_000).is_none());
    }
}
