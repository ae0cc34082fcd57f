//! An `ordered_set` table: entries kept in Erlang term order of their keys
//! (see [`crate::order`]), at most one per key, keys equal when `==` (so
//! `1` and `1.0` are the same key).
//!
//! One reader-writer lock guards a B-tree; every operation holds it for one
//! bounded step (a point operation, or one chunk of a walk).
//!
//! Each tree key carries a [`SortPrefix`] next to its bytes: most
//! comparisons are decided by three integer compares without reading the
//! key bytes (or calling the host for atoms). A `next/2` walk is served from
//! a per-thread cache of the entries that follow the key returned last,
//! valid while the table's version (bumped by every change, published by
//! each writer before it unlocks) is unchanged; so a walk searches the tree
//! once per 32 steps (at most 4 KB of copies) instead of once per step.

use crate::entry::Entry;
use crate::order::{compare, SortPrefix};
use crate::set::Change;
use parking_lot::{RwLock, RwLockWriteGuard};
use std::borrow::Borrow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// Something that can be ordered as a key: stored keys and probes.
trait AsKey {
    fn prefix(&self) -> &SortPrefix;
    fn bytes(&self) -> &[u8];
}

/// A stored key: its sort prefix (most comparisons end there, without
/// reading the bytes) and a copy of the entry's key bytes.
struct OrdKey {
    prefix: SortPrefix,
    bytes: Box<[u8]>,
}

/// A key to look up, borrowed, with its sort prefix.
struct Probe<'a> {
    prefix: SortPrefix,
    bytes: &'a [u8],
}

impl AsKey for OrdKey {
    #[inline]
    fn prefix(&self) -> &SortPrefix {
        &self.prefix
    }
    #[inline]
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsKey for Probe<'_> {
    #[inline]
    fn prefix(&self) -> &SortPrefix {
        &self.prefix
    }
    #[inline]
    fn bytes(&self) -> &[u8] {
        self.bytes
    }
}

impl<'a> Borrow<dyn AsKey + 'a> for OrdKey {
    fn borrow(&self) -> &(dyn AsKey + 'a) {
        self
    }
}

#[inline]
fn cmp_keys(a: &(impl AsKey + ?Sized), b: &(impl AsKey + ?Sized)) -> Ordering {
    SortPrefix::cmp_keys(a.prefix(), a.bytes(), b.prefix(), b.bytes())
}

impl PartialEq for dyn AsKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        cmp_keys(self, other) == Ordering::Equal
    }
}
impl Eq for dyn AsKey + '_ {}
impl PartialOrd for dyn AsKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for dyn AsKey + '_ {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_keys(self, other)
    }
}

impl PartialEq for OrdKey {
    fn eq(&self, other: &Self) -> bool {
        cmp_keys(self, other) == Ordering::Equal
    }
}
impl Eq for OrdKey {}
impl PartialOrd for OrdKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdKey {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_keys(self, other)
    }
}

fn probe(key: &[u8]) -> Probe<'_> {
    Probe {
        prefix: SortPrefix::of(key),
        bytes: key,
    }
}

#[derive(Default)]
struct Inner {
    map: BTreeMap<OrdKey, Entry>,
    /// Heap bytes of the entries and their key copies.
    heap: usize,
    /// Bumped by every change of the tree or of an entry in it.
    version: u64,
}

impl Inner {
    fn key_bytes(k: &[u8]) -> usize {
        k.len().next_multiple_of(16)
    }

    fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(&probe(key) as &dyn AsKey)
    }

    fn put(&mut self, entry: Entry) -> Option<Entry> {
        let prefix = SortPrefix::of(entry.key());
        self.put_with(prefix, entry)
    }

    /// [`Inner::put`] with the key's prefix already computed.
    fn put_with(&mut self, prefix: SortPrefix, entry: Entry) -> Option<Entry> {
        use std::collections::btree_map::Entry as Slot;
        let key = OrdKey {
            prefix,
            bytes: entry.key().into(),
        };
        self.version += 1;
        match self.map.entry(key) {
            Slot::Vacant(v) => {
                self.heap += entry.heap_bytes() + Self::key_bytes(entry.key());
                v.insert(entry);
                None
            }
            Slot::Occupied(mut o) if o.key().bytes[..] == *entry.key() => {
                self.heap += entry.heap_bytes();
                let old = std::mem::replace(o.get_mut(), entry);
                self.heap -= old.heap_bytes();
                Some(old)
            }
            Slot::Occupied(o) => {
                // An equal key (`==`) with other bytes (1.0 replacing 1):
                // the stored key becomes the new object's own.
                let (k, old) = o.remove_entry();
                self.heap -= old.heap_bytes() + Self::key_bytes(&k.bytes);
                self.insert_fresh(prefix, entry);
                Some(old)
            }
        }
    }

    /// Inserts an entry whose key is absent (`prefix` is its key's).
    fn insert_fresh(&mut self, prefix: SortPrefix, entry: Entry) {
        self.version += 1;
        self.heap += entry.heap_bytes() + Self::key_bytes(entry.key());
        let key = OrdKey {
            prefix,
            bytes: entry.key().into(),
        };
        self.map.insert(key, entry);
    }

    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let (k, e) = self.map.remove_entry(&probe(key) as &dyn AsKey)?;
        self.version += 1;
        self.heap -= e.heap_bytes() + Self::key_bytes(&k.bytes);
        Some(e)
    }
}

/// The contents of a table taken out by [`OrderedTable::take_all`];
/// dropping it frees every entry.
pub struct OrderedContents(#[allow(dead_code)] BTreeMap<OrdKey, Entry>);

impl OrderedContents {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Entries that follow a key, copied from one version of one table's tree:
/// a walk with `next/2` finds the following entry here without a tree
/// search. One per thread (no lock to take); valid while the table's id and
/// version match.
#[derive(Default)]
struct WalkCache {
    /// The table the entries were copied from.
    table: u64,
    /// The tree's version when the entries were copied.
    version: u64,
    /// Consecutive entries of the tree, in key order.
    entries: Vec<Entry>,
    /// The position of the entry returned last.
    at: usize,
}

/// Entries a walk cache copies at a time.
const WALK_AHEAD: usize = 32;
/// Bytes of entries a walk cache copies at most at a time.
const WALK_BYTES: usize = 4096;

thread_local! {
    static WALK: RefCell<WalkCache> = RefCell::default();
}

/// Ids of tables (for walk caches), never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An ordered table with set semantics under `==`.
pub struct OrderedTable {
    inner: RwLock<Inner>,
    id: u64,
    /// The tree's version, published by each writer before it unlocks:
    /// walk caches are checked against it without taking the lock.
    version: AtomicU64,
}

/// A write lock on a table that publishes the tree's version on release.
struct WriteGuard<'a> {
    g: RwLockWriteGuard<'a, Inner>,
    published: &'a AtomicU64,
}

impl std::ops::Deref for WriteGuard<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.g
    }
}

impl std::ops::DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.g
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // Before the lock is released (the guard field drops after this).
        self.published
            .store(self.g.version, AtomicOrdering::Release);
    }
}

impl Default for OrderedTable {
    fn default() -> Self {
        Self {
            inner: RwLock::default(),
            id: NEXT_ID.fetch_add(1, AtomicOrdering::Relaxed),
            version: AtomicU64::new(0),
        }
    }
}

impl OrderedTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self) -> WriteGuard<'_> {
        WriteGuard {
            g: self.inner.write(),
            published: &self.version,
        }
    }

    /// Runs `f` on the entry under `key` (or `None`) while it is read-locked.
    pub fn read<R>(&self, key: &[u8], f: impl FnOnce(Option<&Entry>) -> R) -> R {
        // The probe's prefix is computed before the lock is taken.
        let p = probe(key);
        f(self.inner.read().map.get(&p as &dyn AsKey))
    }

    /// A copy of the entry under `key`.
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.read(key, |e| e.cloned())
    }

    /// True when an entry exists under `key`.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.read(key, |e| e.is_some())
    }

    /// Inserts or replaces (key included); returns the replaced entry.
    pub fn insert(&self, entry: Entry) -> Option<Entry> {
        let prefix = SortPrefix::of(entry.key());
        self.write().put_with(prefix, entry)
    }

    /// Inserts only if the key is absent; returns whether it inserted.
    pub fn insert_new(&self, entry: Entry) -> bool {
        let mut g = self.write();
        if g.get(entry.key()).is_some() {
            return false;
        }
        g.put(entry);
        true
    }

    /// Inserts all entries atomically (for equal keys the last one wins);
    /// returns the replaced entries.
    pub fn insert_all(&self, entries: Vec<Entry>) -> Vec<Entry> {
        let mut g = self.write();
        entries.into_iter().filter_map(|e| g.put(e)).collect()
    }

    /// Inserts all entries atomically if none of their keys is present;
    /// otherwise inserts nothing. Returns whether it inserted.
    pub fn insert_new_all(&self, entries: Vec<Entry>) -> bool {
        let mut g = self.write();
        if entries.iter().any(|e| g.get(e.key()).is_some()) {
            return false;
        }
        for e in entries {
            g.put(e);
        }
        true
    }

    /// Removes and returns the entry under `key`.
    pub fn remove(&self, key: &[u8]) -> Option<Entry> {
        self.write().remove(key)
    }

    /// Atomic read-modify-write of the entry under `key` (see
    /// [`crate::set::SetTable::update_mut`]). A `Put` entry must have a key
    /// equal (`==`) to `key`.
    pub fn update_mut<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&mut Entry>) -> (Change, R),
    ) -> R {
        let mut g = self.write();
        // `f` may change the entry in place.
        g.version += 1;
        let (change, r) = f(g.map.get_mut(&probe(key) as &dyn AsKey));
        match change {
            Change::Keep => {}
            Change::Put(e) => {
                debug_assert_eq!(compare(e.key(), key), Ordering::Equal);
                g.put(e);
            }
            Change::Remove => {
                g.remove(key);
            }
        }
        r
    }

    /// Takes every entry out of the table.
    pub fn take_all(&self) -> OrderedContents {
        let mut g = self.write();
        g.heap = 0;
        g.version += 1;
        OrderedContents(std::mem::take(&mut g.map))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.inner.read().map.len()
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory held by the table: the tree's nodes (estimated from
    /// their slots, with B-tree nodes about 2/3 full), key copies and entries.
    pub fn memory_bytes(&self) -> usize {
        let g = self.inner.read();
        let slot = std::mem::size_of::<OrdKey>() + std::mem::size_of::<Entry>();
        std::mem::size_of::<Self>() + g.map.len() * slot * 3 / 2 + g.heap
    }

    /// Runs `f` on the entry with the smallest key.
    pub fn read_first<R>(&self, f: impl FnOnce(Option<&Entry>) -> R) -> R {
        f(self.inner.read().map.values().next())
    }

    /// Runs `f` on the entry with the greatest key.
    pub fn read_last<R>(&self, f: impl FnOnce(Option<&Entry>) -> R) -> R {
        f(self.inner.read().map.values().next_back())
    }

    /// Runs `f` on the entry with the smallest key greater than `key`
    /// (which need not be in the table).
    pub fn read_next<R>(&self, key: &[u8], f: impl FnOnce(Option<&Entry>) -> R) -> R {
        // A walk in progress over an unchanged tree: no lock needed. (A
        // writer publishes its version before it unlocks, so a version
        // still equal to the cache's means no change is visible yet: the
        // cached copies are the tree's entries at this point in time.)
        let f = match WALK.with(|cell| {
            let Ok(mut w) = cell.try_borrow_mut() else {
                return Err(f);
            };
            let hit = w.table == self.id
                && w.version == self.version.load(AtomicOrdering::Acquire)
                && w.entries.get(w.at).is_some_and(|e| e.key() == key)
                && w.at + 1 < w.entries.len();
            if !hit {
                return Err(f);
            }
            w.at += 1;
            Ok(f(w.entries.get(w.at)))
        }) {
            Ok(r) => return r,
            Err(f) => f,
        };
        let g = self.inner.read();
        // A walk in progress (the key is the one returned last, and the
        // tree has not changed since): the next entry is in the cache.
        let cached = WALK.with(|cell| {
            let Ok(mut w) = cell.try_borrow_mut() else {
                return Err(f);
            };
            let hit = w.table == self.id
                && w.version == g.version
                && w.entries.get(w.at).is_some_and(|e| e.key() == key)
                && w.at + 1 < w.entries.len();
            if hit {
                w.at += 1;
                return Ok(f(w.entries.get(w.at)));
            }
            let p = probe(key);
            let lower: Bound<&dyn AsKey> = Bound::Excluded(&p);
            let mut range = g.map.range::<dyn AsKey, _>((lower, Bound::Unbounded));
            let Some((_, first)) = range.next() else {
                return Ok(f(None));
            };
            // Copy what follows while it is small (copies of big objects
            // would cost more than the searches they save).
            w.entries.clear();
            let mut budget = WALK_BYTES;
            for e in std::iter::once(first)
                .chain(range.map(|(_, e)| e))
                .take(WALK_AHEAD)
            {
                budget = match budget.checked_sub(e.heap_bytes()) {
                    Some(b) => b,
                    None => break,
                };
                w.entries.push(e.clone());
            }
            w.table = self.id;
            w.version = g.version;
            w.at = 0;
            Ok(f(Some(first)))
        });
        let f = match cached {
            Ok(r) => return r,
            Err(f) => f,
        };
        let p = probe(key);
        let lower: Bound<&dyn AsKey> = Bound::Excluded(&p);
        f(g.map
            .range::<dyn AsKey, _>((lower, Bound::Unbounded))
            .next()
            .map(|(_, e)| e))
    }

    /// Runs `f` on the entry with the greatest key smaller than `key`.
    pub fn read_prev<R>(&self, key: &[u8], f: impl FnOnce(Option<&Entry>) -> R) -> R {
        let g = self.inner.read();
        let p = probe(key);
        let upper: Bound<&dyn AsKey> = Bound::Excluded(&p);
        f(g.map
            .range::<dyn AsKey, _>((Bound::Unbounded, upper))
            .next_back()
            .map(|(_, e)| e))
    }

    /// Up to `max` entries, in key order, whose keys are greater than
    /// `after` (all keys when `None`); copies, taken under one read lock.
    pub fn chunk_after(&self, after: Option<&[u8]>, max: usize) -> Vec<Entry> {
        let g = self.inner.read();
        let p = after.map(probe);
        let lower: Bound<&dyn AsKey> = match &p {
            Some(p) => Bound::Excluded(p),
            None => Bound::Unbounded,
        };
        g.map
            .range::<dyn AsKey, _>((lower, Bound::Unbounded))
            .take(max)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryBuf;
    use crate::format::{get_integer, put_float, put_header, put_int, tag};

    fn obj(k: f64, is_float: bool, v: i64) -> Entry {
        let mut b = EntryBuf::new();
        put_header(&mut b.out, tag::TUPLE, 2);
        let ks = b.out.len();
        if is_float {
            put_float(&mut b.out, k);
        } else {
            put_int(&mut b.out, k as i64);
        }
        let ke = b.out.len();
        put_int(&mut b.out, v);
        b.finish(ks..ke, None)
    }
    fn ik(k: i64) -> Vec<u8> {
        let mut o = Vec::new();
        put_int(&mut o, k);
        o
    }
    fn fk(k: f64) -> Vec<u8> {
        let mut o = Vec::new();
        put_float(&mut o, k);
        o
    }

    #[test]
    fn keys_equal_by_value_and_replaced() {
        let t = OrderedTable::new();
        assert!(t.insert(obj(1.0, false, 10)).is_none());
        let mem = t.memory_bytes();
        assert!(t.insert(obj(1.0, true, 11)).is_some());
        assert_eq!(t.memory_bytes(), mem);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&ik(1)).unwrap(), obj(1.0, true, 11));
        // The stored key is now the float.
        t.read_first(|e| assert_eq!(e.unwrap().key(), &fk(1.0)[..]));
        assert!(!t.insert_new(obj(1.0, false, 12)));
        assert!(t.remove(&ik(1)).is_some());
        assert!(t.is_empty());
        assert_eq!(t.memory_bytes(), std::mem::size_of::<OrderedTable>());
    }

    #[test]
    fn order_and_neighbours() {
        let t = OrderedTable::new();
        for k in [5, 1, 3, 9, 7] {
            t.insert(obj(k as f64, false, k));
        }
        t.insert(obj(4.5, true, 0));
        let keys: Vec<Vec<u8>> = t
            .chunk_after(None, 100)
            .iter()
            .map(|e| e.key().to_vec())
            .collect();
        assert_eq!(keys, vec![ik(1), ik(3), fk(4.5), ik(5), ik(7), ik(9)]);
        t.read_next(&fk(4.0), |e| assert_eq!(e.unwrap().key(), &fk(4.5)[..]));
        t.read_next(&ik(9), |e| assert!(e.is_none()));
        t.read_prev(&ik(5), |e| assert_eq!(e.unwrap().key(), &fk(4.5)[..]));
        t.read_prev(&ik(1), |e| assert!(e.is_none()));
        t.read_last(|e| assert_eq!(e.unwrap().key(), &ik(9)[..]));
        let rest = t.chunk_after(Some(&ik(3)), 2);
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[1].key(), &ik(5)[..]);
        assert!(t.insert_new_all(vec![obj(2.0, false, 0), obj(6.0, false, 0)]));
        assert!(!t.insert_new_all(vec![obj(8.0, false, 0), obj(6.0, true, 0)]));
        assert_eq!(t.len(), 8);
        t.update_mut(&fk(2.0), |e| {
            assert!(e.is_some());
            (Change::Remove, ())
        });
        assert_eq!(t.take_all().len(), 7);
        assert!(t.is_empty());
    }

    #[test]
    fn walks_see_every_change() {
        let t = OrderedTable::new();
        let u = OrderedTable::new();
        for k in (0..200).step_by(2) {
            t.insert(obj(k as f64, false, k));
            u.insert(obj(k as f64, false, -k));
        }
        let next = |t: &OrderedTable, k: i64| t.read_next(&ik(k), |e| e.map(|e| e.key().to_vec()));
        assert_eq!(next(&t, 0), Some(ik(2)));
        assert_eq!(next(&t, 2), Some(ik(4)));
        // Another table with the same keys: its own entries.
        u.read_next(&ik(4), |e| assert_eq!(e.unwrap(), &obj(6.0, false, -6)));
        assert_eq!(next(&t, 4), Some(ik(6)));
        // A key inserted, then removed, in the middle of a walk.
        t.insert(obj(7.0, false, 7));
        assert_eq!(next(&t, 6), Some(ik(7)));
        t.remove(&ik(8));
        assert_eq!(next(&t, 7), Some(ik(10)));
        // An entry changed in place.
        assert_eq!(next(&t, 10), Some(ik(12)));
        t.update_mut(&ik(14), |e| {
            *e.unwrap() = obj(14.0, false, 99);
            (Change::Keep, ())
        });
        t.read_next(&ik(12), |e| assert_eq!(e.unwrap(), &obj(14.0, false, 99)));
        // A whole walk, past the cache's window.
        let mut k = -1;
        let mut n = 0;
        while let Some(key) = next(&t, k) {
            k = get_integer(&key, 0).unwrap() as i64;
            n += 1;
        }
        assert_eq!(n, t.len());
        assert_eq!(k, 198);
        t.take_all();
        assert_eq!(next(&t, 0), None);
    }
}
