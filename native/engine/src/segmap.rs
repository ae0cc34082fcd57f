//! The map of one hash shard (set or bag): a hash table whose items never
//! move while the shard's table is *fixed* (`safe_fixtable/2`).
//!
//! A fixed table's traversal walks each shard bucket by bucket and must
//! meet every object that stays exactly once, as ETS guarantees. A hash
//! table that grows rehashes its items into new buckets, which would make a
//! walk in progress repeat some objects and miss others. So while fixed, a
//! full shard does not grow: new keys go to an *overflow* table instead
//! (another, twice as big, when that one is full), and a walk visits the
//! main table's buckets, then each overflow table's. Replacing or removing
//! an item moves no other item. Once the table is unfixed, the overflow
//! tables are merged back into the main one (see [`SegMap::tidy`]) by the
//! unfixing caller (on a dirty scheduler) or a few items per write of the
//! shard: nothing does it behind the table's users' backs, so an unfixed
//! walk of a table nobody writes meets every object once.
//!
//! Bucket indexes are global: the main table's buckets come first, then
//! each overflow table's, in the order they were added.

use hashbrown::HashTable;
use std::sync::atomic::{AtomicU64, Ordering};

/// A hash table plus the overflow tables of a fixation (see the module
/// documentation).
pub(crate) struct SegMap<T> {
    main: HashTable<T>,
    /// Tables for the new keys of a fixed, full shard; empty otherwise
    /// (until the shard is unfixed and merged).
    extra: Vec<HashTable<T>>,
    /// When each overflow table was made (a number from [`OVERFLOW_SEQ`]):
    /// `slot/2` numbers them in that order across shards.
    seqs: Vec<u64>,
    /// Where [`SegMap::tidy`] goes on draining the last overflow table.
    drain_at: usize,
    /// Housekeeping is due: overflow tables to merge, or a main table left
    /// sparse by removals while fixed.
    untidy: bool,
}

impl<T> Default for SegMap<T> {
    fn default() -> Self {
        SegMap {
            main: HashTable::new(),
            extra: Vec::new(),
            seqs: Vec::new(),
            drain_at: 0,
            untidy: false,
        }
    }
}

/// Numbers overflow tables in the order they are made, table-wide.
static OVERFLOW_SEQ: AtomicU64 = AtomicU64::new(0);

/// The smallest overflow table.
const MIN_EXTRA: usize = 16;

impl<T> SegMap<T> {
    /// The item `eq` accepts among those hashing to `hash`.
    #[inline(always)]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&T> {
        match self.main.find(hash, &mut eq) {
            Some(t) => Some(t),
            None if self.extra.is_empty() => None,
            None => self.extra.iter().find_map(|m| m.find(hash, &mut eq)),
        }
    }

    /// Like [`SegMap::find`], mutably (the item must keep its key).
    #[inline]
    pub(crate) fn find_mut(&mut self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        if self.extra.is_empty() {
            return self.main.find_mut(hash, eq);
        }
        if let Some(at) = self.find_bucket_index(hash, &mut eq) {
            return self.bucket_mut(at);
        }
        None
    }

    /// The global bucket index of the item `eq` accepts.
    pub(crate) fn find_bucket_index(
        &self,
        hash: u64,
        mut eq: impl FnMut(&T) -> bool,
    ) -> Option<usize> {
        let mut base = 0;
        for m in self.tables() {
            if let Some(i) = m.find_bucket_index(hash, &mut eq) {
                return Some(base + i);
            }
            base += m.num_buckets();
        }
        None
    }

    /// Removes the item `eq` accepts; returns it with the global bucket
    /// index it occupied.
    #[inline]
    pub(crate) fn remove(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&T) -> bool,
    ) -> Option<(T, usize)> {
        match self.main.find_entry(hash, &mut eq) {
            Ok(o) => {
                let at = o.bucket_index();
                Some((o.remove().0, at))
            }
            Err(_) if self.extra.is_empty() => None,
            Err(_) => {
                let at = self.find_bucket_index(hash, eq)?;
                self.remove_at(at).map(|t| (t, at))
            }
        }
    }

    /// Removes the item in global bucket `at`, if any.
    pub(crate) fn remove_at(&mut self, at: usize) -> Option<T> {
        let (m, i) = self.locate_mut(at)?;
        m.get_bucket_entry(i).ok().map(|o| o.remove().0)
    }

    /// Inserts `value` under `hash` (whose key is known to be absent).
    /// While `fixed`, no item moves: a full main table sends the value to
    /// an overflow table instead of growing.
    #[inline]
    pub(crate) fn insert_new(
        &mut self,
        hash: u64,
        value: T,
        hasher: impl Fn(&T) -> u64,
        fixed: bool,
    ) -> &mut T {
        // `len < capacity` leaves room: `insert_unique` then neither grows
        // nor rehashes in place.
        if !fixed || self.main.len() < self.main.capacity() {
            return self.main.insert_unique(hash, value, hasher).into_mut();
        }
        self.insert_overflow(hash, value, hasher)
    }

    #[cold]
    fn insert_overflow(&mut self, hash: u64, value: T, hasher: impl Fn(&T) -> u64) -> &mut T {
        self.untidy = true;
        let room = |m: &HashTable<T>| m.len() < m.capacity();
        if !self.extra.last().is_some_and(room) {
            let size = (self.main.capacity() + self.extra_len()).max(MIN_EXTRA);
            self.extra.push(HashTable::with_capacity(size));
            self.seqs.push(OVERFLOW_SEQ.fetch_add(1, Ordering::Relaxed));
        }
        let m = self.extra.last_mut().expect("an overflow table");
        m.insert_unique(hash, value, hasher).into_mut()
    }

    /// The main table, when items may go there by any means (the shard
    /// is not fixed and has no overflow table): the fast path of writers.
    #[inline]
    pub(crate) fn plain_mut(&mut self, fixed: bool) -> Option<&mut HashTable<T>> {
        (!fixed && self.extra.is_empty()).then_some(&mut self.main)
    }

    /// Inserts `value` or replaces the item it is the `same` as (returned).
    #[inline]
    pub(crate) fn upsert(
        &mut self,
        hash: u64,
        value: T,
        mut same: impl FnMut(&T, &T) -> bool,
        hasher: impl Fn(&T) -> u64,
        fixed: bool,
    ) -> Option<T> {
        if let Some(main) = self.plain_mut(fixed) {
            return match main.entry(hash, |x| same(x, &value), hasher) {
                hashbrown::hash_table::Entry::Occupied(mut o) => {
                    Some(std::mem::replace(o.get_mut(), value))
                }
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(value);
                    None
                }
            };
        }
        if let Some(slot) = self.find_mut(hash, |x| same(x, &value)) {
            return Some(std::mem::replace(slot, value));
        }
        self.insert_new(hash, value, hasher, fixed);
        None
    }

    /// The item in global bucket `i` (`None` for an empty bucket or past
    /// the end).
    #[inline]
    pub(crate) fn get_bucket(&self, i: usize) -> Option<&T> {
        if i < self.main.num_buckets() {
            return self.main.get_bucket(i);
        }
        let (m, j) = self.locate(i)?;
        m.get_bucket(j)
    }

    /// The item in global bucket `i`, mutably (it must keep its key).
    pub(crate) fn bucket_mut(&mut self, i: usize) -> Option<&mut T> {
        let (m, j) = self.locate_mut(i)?;
        m.get_bucket_mut(j)
    }

    /// The table holding global bucket `i`, and its index there.
    fn locate(&self, mut i: usize) -> Option<(&HashTable<T>, usize)> {
        for m in self.tables() {
            if i < m.num_buckets() {
                return Some((m, i));
            }
            i -= m.num_buckets();
        }
        None
    }

    fn locate_mut(&mut self, mut i: usize) -> Option<(&mut HashTable<T>, usize)> {
        for m in std::iter::once(&mut self.main).chain(self.extra.iter_mut()) {
            if i < m.num_buckets() {
                return Some((m, i));
            }
            i -= m.num_buckets();
        }
        None
    }

    fn tables(&self) -> impl Iterator<Item = &HashTable<T>> {
        std::iter::once(&self.main).chain(self.extra.iter())
    }

    fn extra_len(&self) -> usize {
        self.extra.iter().map(HashTable::len).sum()
    }

    /// Buckets allocated (an empty table has none), for memory accounting.
    pub(crate) fn allocated_buckets(&self) -> usize {
        self.tables()
            .filter(|m| m.capacity() > 0)
            .map(HashTable::num_buckets)
            .sum()
    }

    /// Buckets of the main table.
    pub(crate) fn main_buckets(&self) -> usize {
        self.main.num_buckets()
    }

    /// The item in bucket `i` of the main table.
    pub(crate) fn main_bucket(&self, i: usize) -> Option<&T> {
        self.main.get_bucket(i)
    }

    /// The overflow tables: when each was made, and its buckets.
    pub(crate) fn overflow(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.seqs
            .iter()
            .copied()
            .zip(self.extra.iter().map(HashTable::num_buckets))
    }

    /// The item in bucket `i` of the overflow table made as `seq`.
    pub(crate) fn overflow_bucket(&self, seq: u64, i: usize) -> Option<&T> {
        let at = self.seqs.iter().position(|&s| s == seq)?;
        self.extra[at].get_bucket(i)
    }

    /// Number of buckets, overflow tables included (global indexes run up
    /// to this).
    #[inline]
    pub(crate) fn num_buckets(&self) -> usize {
        self.main.num_buckets() + self.extra.iter().map(HashTable::num_buckets).sum::<usize>()
    }

    /// Number of items.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.main.len() + self.extra_len()
    }

    /// True when there are no items.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every item, in bucket order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.tables().flat_map(HashTable::iter)
    }

    /// Gives memory back once removals left the main table sparse (see
    /// [`crate::set::shrink_sparse`]); only when no overflow table exists
    /// (a fixed shard never shrinks: its callers check).
    #[inline]
    pub(crate) fn shrink_sparse(&mut self, hash: impl Fn(&T) -> u64) {
        if self.extra.is_empty() {
            crate::set::shrink_sparse(&mut self.main, hash);
        }
    }

    /// True while housekeeping is due (see [`SegMap::tidy`]).
    pub(crate) fn is_untidy(&self) -> bool {
        self.untidy
    }

    /// Notes that housekeeping is due (the shard was just unfixed: removals
    /// may have left it sparse).
    pub(crate) fn mark_untidy(&mut self) {
        self.untidy = true;
    }

    /// Housekeeping of an unfixed shard (the caller holds its write lock):
    /// moves up to about `budget` overflow items into the main table, then
    /// gives memory back if the main table is sparse (see
    /// [`crate::set::shrink_sparse`]; at most what one removal may cost).
    /// `unfixing` (the unfix itself, 64 shards in one call) moves items only
    /// into room the main table has and shrinks only tables of at most
    /// `budget` items: what needs a growth or a bigger rehash is left to
    /// the shard's next writes.
    #[inline]
    pub(crate) fn tidy(&mut self, hash: impl Fn(&T) -> u64, budget: usize, unfixing: bool) {
        if self.untidy {
            self.tidy_some(hash, budget, unfixing);
        }
    }

    #[cold]
    fn tidy_some(&mut self, hash: impl Fn(&T) -> u64, mut budget: usize, unfixing: bool) {
        let SegMap {
            main,
            extra,
            seqs,
            drain_at,
            untidy,
        } = self;
        'drain: while budget > 0 {
            let Some(m) = extra.last_mut() else { break };
            if m.is_empty() {
                extra.pop();
                seqs.pop();
                *drain_at = 0;
                continue;
            }
            if *drain_at >= m.num_buckets() {
                // Items added behind the cursor by a later fixation.
                *drain_at = 0;
            }
            while budget > 0 && *drain_at < m.num_buckets() {
                if unfixing && main.len() >= main.capacity() {
                    // A move would grow the main table: the writers will.
                    break 'drain;
                }
                budget -= 1;
                if let Ok(o) = m.get_bucket_entry(*drain_at) {
                    let t = o.remove().0;
                    main.insert_unique(hash(&t), t, &hash);
                }
                *drain_at += 1;
            }
        }
        if extra.is_empty() {
            if !crate::set::shrinkable(main) {
                *untidy = false;
            } else if !unfixing || main.len() <= budget {
                crate::set::shrink_sparse(main, hash);
                *untidy = false;
            }
        }
    }
}

impl<T> IntoIterator for SegMap<T> {
    type Item = T;
    type IntoIter = std::iter::Flatten<
        std::iter::Chain<std::iter::Once<HashTable<T>>, std::vec::IntoIter<HashTable<T>>>,
    >;
    fn into_iter(self) -> Self::IntoIter {
        std::iter::once(self.main).chain(self.extra).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &u64) -> u64 {
        k.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn walk(m: &SegMap<u64>) -> Vec<u64> {
        (0..m.num_buckets())
            .filter_map(|i| m.get_bucket(i))
            .copied()
            .collect()
    }

    #[test]
    fn a_fixed_map_keeps_its_items_in_place_while_it_fills() {
        let mut m = SegMap::default();
        for k in 0..100u64 {
            m.upsert(h(&k), k, |x, y| x == y, h, false);
        }
        let before = walk(&m);
        // Fixed: thousands of new keys, and no item that was there moves.
        for k in 100..5000u64 {
            m.upsert(h(&k), k, |x, y| x == y, h, true);
            let now = walk(&m);
            let kept: Vec<u64> = now.iter().copied().filter(|x| *x < 100).collect();
            if k % 500 == 0 {
                assert_eq!(kept, before);
            }
        }
        assert_eq!(m.len(), 5000);
        let mut all = walk(&m);
        let kept: Vec<u64> = all.iter().copied().filter(|x| *x < 100).collect();
        assert_eq!(kept, before);
        all.sort_unstable();
        assert_eq!(all, (0..5000).collect::<Vec<_>>());
        assert!(!m.extra.is_empty());
        // Every key is found, replaced and removed wherever it lives.
        for k in 0..5000u64 {
            assert_eq!(m.find(h(&k), |x| *x == k), Some(&k));
            assert_eq!(m.upsert(h(&k), k, |x, y| x == y, h, true), Some(k));
            let at = m.find_bucket_index(h(&k), |x| *x == k).unwrap();
            assert_eq!(m.get_bucket(at), Some(&k));
        }
        for k in (0..5000u64).step_by(3) {
            let (v, at) = m.remove(h(&k), |x| *x == k).unwrap();
            assert_eq!(v, k);
            assert_eq!(m.get_bucket(at), None);
        }
        let left: Vec<u64> = (0..5000).filter(|k| k % 3 != 0).collect();
        // Unfixed: a few items per write move back into the main table.
        let mut writes = 0;
        while !m.extra.is_empty() {
            m.tidy(h, 32, false);
            writes += 1;
            let mut all = walk(&m);
            all.sort_unstable();
            assert_eq!(all, left);
        }
        assert!(writes > 10);
        assert!(m.main.len() == left.len());
        let mut all = walk(&m);
        all.sort_unstable();
        assert_eq!(all, left);
        for k in left {
            assert_eq!(m.find(h(&k), |x| *x == k), Some(&k));
        }
    }
}
