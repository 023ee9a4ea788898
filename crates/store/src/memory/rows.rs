//! Compact containers for a tenant's rows, addressed by a dense slot number (a `u32`):
//! a slab of rows in chunks (no spare capacity beyond the last chunk, no keys), a hash
//! table of slot numbers (8 bytes a bucket: the slot and 32 bits of its hash, whatever the
//! key's size), and an ordered index of slot numbers in short sorted runs (4 bytes an
//! entry), whose order is the rows' own keys, read through a comparison the caller gives.

/// Rows per chunk of a [`Slab`] (the last chunk grows by doubling up to this).
const CHUNK: usize = 1024;
/// Slots per run of a [`Sorted`] index (a power of two, so runs grow by doubling to it).
const RUN: usize = 128;
/// The slot number of an empty bucket; never handed out.
const EMPTY: u32 = u32::MAX;

/// Rows by slot number, in chunks of [`CHUNK`]; freed slots are reused.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    chunks: Vec<Vec<Option<T>>>,
    free: Vec<u32>,
    /// Slots handed out so far (freed ones included).
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    #[inline]
    pub(crate) fn get(&self, slot: u32) -> Option<&T> {
        let i = usize::try_from(slot).ok()?;
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        let i = usize::try_from(slot).ok()?;
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)?.as_mut()
    }

    /// Stores `value` in a free slot; `None` (and `value` back) when slots ran out.
    pub(crate) fn insert(&mut self, value: T) -> Result<u32, T> {
        if let Some(slot) = self.free.pop() {
            match self.cell(slot) {
                Some(cell) => {
                    *cell = Some(value);
                    return Ok(slot);
                }
                None => return Err(value),
            }
        }
        let Ok(slot) = u32::try_from(self.len) else {
            return Err(value);
        };
        if slot == EMPTY {
            return Err(value);
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::new());
        }
        let Some(chunk) = self.chunks.last_mut() else {
            return Err(value);
        };
        if chunk.len() == chunk.capacity() {
            // Doubling up to a whole chunk, then no spare room at all.
            let want = (chunk.capacity() * 2).clamp(8, CHUNK);
            chunk.reserve_exact(want - chunk.len());
        }
        chunk.push(Some(value));
        self.len += 1;
        Ok(slot)
    }

    fn cell(&mut self, slot: u32) -> Option<&mut Option<T>> {
        let i = usize::try_from(slot).ok()?;
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    /// Takes the row out of `slot`, which becomes free.
    pub(crate) fn remove(&mut self, slot: u32) -> Option<T> {
        let value = self.cell(slot)?.take();
        if value.is_some() {
            self.free.push(slot);
        }
        value
    }

    /// Every row with its slot, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> + '_ {
        self.chunks
            .iter()
            .flatten()
            .zip(0u32..)
            .filter_map(|(v, slot)| v.as_ref().map(|v| (slot, v)))
    }
}

/// A multiplicative mix of two words (ids built from a clock and a constant tail spread
/// as well as random ones).
#[inline]
pub(crate) fn mix(hi: u64, lo: u64) -> u64 {
    let h = (hi ^ lo.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h ^ (h >> 31)).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// An open-addressing hash table of slot numbers (linear probing, deletion by backward
/// shift, so no tombstones). Each bucket keeps 32 bits of its key's hash beside the slot,
/// so growing never reads the rows, and a probe reads a row only when those bits match.
/// The caller hashes the key and says, given a slot, whether its row holds the key.
#[derive(Debug, Default)]
pub(crate) struct SlotMap {
    buckets: Vec<(u32, u32)>,
    len: usize,
}

impl SlotMap {
    #[inline]
    fn fold(hash: u64) -> u32 {
        // The high half of a multiplicative hash is its best-mixed part.
        u32::try_from(hash >> 32).unwrap_or(0)
    }

    #[inline]
    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// The bucket holding a slot for which `eq` holds, among those of `hash`.
    fn position(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<usize> {
        let h = Self::fold(hash);
        let mask = self.mask();
        let mut i = usize::try_from(h).ok()? & mask;
        for _ in 0..self.buckets.len() {
            let (bh, slot) = *self.buckets.get(i)?;
            if slot == EMPTY {
                return None;
            }
            if bh == h && eq(slot) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// The slot of the key hashed to `hash` (`eq` tells whether a slot's row holds it).
    #[inline]
    pub(crate) fn find(&self, hash: u64, eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let i = self.position(hash, eq)?;
        self.buckets.get(i).map(|b| b.1)
    }

    fn place(buckets: &mut [(u32, u32)], h: u32, slot: u32) {
        let mask = buckets.len().wrapping_sub(1);
        let Ok(start) = usize::try_from(h) else {
            return;
        };
        let mut i = start & mask;
        for _ in 0..buckets.len() {
            if let Some(b) = buckets.get_mut(i)
                && b.1 == EMPTY
            {
                *b = (h, slot);
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `slot` under `hash` (the caller has checked the key is not there yet).
    pub(crate) fn insert(&mut self, hash: u64, slot: u32) {
        // Load at most 7/8.
        if (self.len + 1) * 8 > self.buckets.len() * 7 {
            let size = (self.buckets.len() * 2).max(8);
            let old = std::mem::replace(&mut self.buckets, vec![(0, EMPTY); size]);
            for (h, s) in old {
                if s != EMPTY {
                    Self::place(&mut self.buckets, h, s);
                }
            }
        }
        Self::place(&mut self.buckets, Self::fold(hash), slot);
        self.len += 1;
    }

    /// Removes the slot of the key hashed to `hash`; returns it.
    pub(crate) fn remove(&mut self, hash: u64, eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut hole = self.position(hash, eq)?;
        let removed = self.buckets.get(hole).map(|b| b.1)?;
        let mask = self.mask();
        let mut j = (hole + 1) & mask;
        // Backward shift: move up each later entry of the run that may sit in the hole.
        for _ in 0..self.buckets.len() {
            let Some(&(h, slot)) = self.buckets.get(j) else {
                break;
            };
            if slot == EMPTY {
                break;
            }
            let ideal = usize::try_from(h).unwrap_or(0) & mask;
            if (j.wrapping_sub(ideal) & mask) >= (j.wrapping_sub(hole) & mask) {
                if let Some(b) = self.buckets.get_mut(hole) {
                    *b = (h, slot);
                }
                hole = j;
            }
            j = (j + 1) & mask;
        }
        if let Some(b) = self.buckets.get_mut(hole) {
            *b = (0, EMPTY);
        }
        self.len -= 1;
        Some(removed)
    }
}

/// Slot numbers in the order of their rows' keys, kept in sorted runs of at most [`RUN`]
/// (a run that fills up in the middle is split in two; one that fills up at the end is
/// followed by a new run, so keys arriving in order fill every run). Beside each run is a
/// fence: a copy of a key at least that of its last slot and below every key of the next
/// run, so a search finds its run without reading rows, and reads rows (through the
/// caller's `before`) only inside the run. `before` says, for a slot, whether its row's key
/// sorts before the probe; `fence_before` the same of a fence (both true for a prefix).
#[derive(Debug)]
pub(crate) struct Sorted<K> {
    runs: Vec<Run<K>>,
}

#[derive(Debug)]
struct Run<K> {
    fence: K,
    slots: Vec<u32>,
}

impl<K> Default for Sorted<K> {
    fn default() -> Self {
        Self { runs: Vec::new() }
    }
}

/// A place in a [`Sorted`] index: run and offset (`(runs, 0)` is the end).
pub(crate) type At = (usize, usize);

impl<K: Ord> Sorted<K> {
    /// The place of the first slot for which `before` is false.
    pub(crate) fn seek(
        &self,
        mut fence_before: impl FnMut(&K) -> bool,
        mut before: impl FnMut(u32) -> bool,
    ) -> At {
        let r = self.runs.partition_point(|run| fence_before(&run.fence));
        let i = self
            .runs
            .get(r)
            .map_or(0, |run| run.slots.partition_point(|s| before(*s)));
        (r, i)
    }

    /// The end (past every slot).
    pub(crate) fn end(&self) -> At {
        (self.runs.len(), 0)
    }

    /// Inserts `slot`, whose row's key is `key`, where `before` puts it; `key_of` gives
    /// the key of an indexed slot (to fence a run split in two).
    pub(crate) fn insert(
        &mut self,
        slot: u32,
        key: K,
        before: impl FnMut(u32) -> bool,
        key_of: impl Fn(u32) -> Option<K>,
    ) {
        // Keys mostly arrive in order (creation times, new sign-ins): one comparison then.
        let at = if self.runs.last().is_none_or(|run| run.fence < key) {
            self.end()
        } else {
            self.seek(|f| *f < key, before)
        };
        self.insert_at(at, slot, key, key_of);
    }

    /// Inserts `slot` (key `key`) at `at`, a place [`Sorted::seek`] returned for that key
    /// with nothing changed since.
    pub(crate) fn insert_at(
        &mut self,
        (mut r, mut i): At,
        slot: u32,
        key: K,
        key_of: impl Fn(u32) -> Option<K>,
    ) {
        if r >= self.runs.len() {
            // Past every fence: the key is the greatest, and the last run's new fence.
            match self.runs.last_mut() {
                Some(run) if run.slots.len() < RUN => {
                    run.slots.push(slot);
                    run.fence = key;
                }
                _ => self.runs.push(Run {
                    fence: key,
                    slots: vec![slot],
                }),
            }
            return;
        }
        let fence = self
            .runs
            .get(r)
            .filter(|run| run.slots.len() >= RUN)
            .and_then(|run| run.slots.get(RUN / 2 - 1))
            .and_then(|s| key_of(*s));
        // A full run splits (without its left half's fence, it just grows).
        if let Some(fence) = fence
            && let Some(run) = self.runs.get_mut(r)
        {
            let mut right = Vec::with_capacity(RUN);
            right.extend(run.slots.drain(RUN / 2..));
            let right_fence = std::mem::replace(&mut run.fence, fence);
            self.runs.insert(
                r + 1,
                Run {
                    fence: right_fence,
                    slots: right,
                },
            );
            // A key past the left half's last goes to the right half (the left's new
            // fence is that last key).
            if i >= RUN / 2 {
                r += 1;
                i -= RUN / 2;
            }
        }
        if let Some(run) = self.runs.get_mut(r) {
            run.slots.insert(i.min(run.slots.len()), slot);
            // A seek on part of the key (an email index looked up by address) may stop at
            // a run whose fence equals the key there but sorts below the whole key: the
            // fence rises to it (it stays below the next run, which comes after the key).
            if run.fence < key {
                run.fence = key;
            }
        }
    }

    /// Removes `slot`, found where `fence_before` and `before` put it; returns whether it
    /// was there. A fence stays as it was (still above the run, below the next one).
    pub(crate) fn remove(
        &mut self,
        slot: u32,
        fence_before: impl FnMut(&K) -> bool,
        before: impl FnMut(u32) -> bool,
    ) -> bool {
        let (r, i) = self.seek(fence_before, before);
        let Some(run) = self.runs.get_mut(r) else {
            return false;
        };
        if run.slots.get(i) != Some(&slot) {
            return false;
        }
        run.slots.remove(i);
        if run.slots.is_empty() {
            self.runs.remove(r);
        } else if run.slots.len() < RUN / 8 && run.slots.capacity() >= RUN {
            run.slots.shrink_to(RUN / 4);
        }
        true
    }

    /// The slots from `at` on, in order.
    pub(crate) fn from(&self, (r, i): At) -> impl Iterator<Item = u32> + '_ {
        let first = self
            .runs
            .get(r)
            .and_then(|run| run.slots.get(i..))
            .unwrap_or_default();
        let rest = self.runs.get(r + 1..).unwrap_or_default();
        first
            .iter()
            .chain(rest.iter().flat_map(|run| run.slots.iter()))
            .copied()
    }

    /// The slots before `at`, last first.
    pub(crate) fn before(&self, (r, i): At) -> impl Iterator<Item = u32> + '_ {
        let first = self
            .runs
            .get(r)
            .and_then(|run| run.slots.get(..i))
            .unwrap_or_default();
        let rest = self.runs.get(..r.min(self.runs.len())).unwrap_or_default();
        first
            .iter()
            .rev()
            .chain(rest.iter().rev().flat_map(|run| run.slots.iter().rev()))
            .copied()
    }
}
