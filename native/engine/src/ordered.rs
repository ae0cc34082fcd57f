//! An `ordered_set` table: entries kept in Erlang term order of their keys
//! (see [`crate::order`]), at most one per key, keys equal when `==` (so
//! `1` and `1.0` are the same key).
//!
//! The keys are kept in parts by key range (one, unless `write_concurrency`
//! lets contention split them), each a reader-writer lock over two B-trees;
//! a point operation locks one part, a walk one part at a time (each for
//! one bounded step), and list inserts, `take_all`, `slot`, `len` and the
//! memory count lock every part.
//!
//! Keys equal (`==`) to a small integer (an `INT`, or an integral float
//! within i64) live in a second tree keyed by that integer, a B+ tree of
//! our own (`ordered/tree.rs`): no key copy, searches by integer compares over
//! wide nodes, and leaves linked in order; ordered walks merge the two
//! trees. Every other tree key carries a [`SortPrefix`] next to its bytes:
//! most comparisons are decided by three integer compares without reading
//! the key bytes (or calling the host for atoms).
//!
//! Walks rely on each part's version, bumped by every change and published
//! by each writer before it unlocks. A `next/2` (or `prev/2`) walk over
//! integer keys (no other key in the part) keeps its place in the integer
//! tree per thread: when the key given is the one found at that place, the
//! answer is the entry beside it, without a search; and `next/2` copies the
//! (9-byte) keys of the next 32 entries, then serves them without the lock
//! while the version is unchanged ([`OrderedTable::read_next_key`]). Other
//! `next/2` walks copy the keys of the next 64 entries (at most 4 KB, into
//! one per-thread buffer) and serve them the same way; so such a walk
//! searches the tree once per 64 steps instead of once per step.

#[cfg(test)]
mod concurrent_tests;
mod tree;

use crate::entry::Entry;
use crate::format::tag;
use crate::order::{compare, SortPrefix};
use crate::set::{Change, Slot, CHUNK_BYTES};
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::borrow::Borrow;
use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::{btree_map, BTreeMap};
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use tree::{Pos, Tree};

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

/// The encoding of a small integer key.
fn int_bytes(v: i64) -> [u8; 9] {
    let mut b = [tag::INT; 9];
    b[1..].copy_from_slice(&v.to_le_bytes());
    b
}

/// Orders the small integer `v` against a key of the general tree.
fn cmp_int(v: i64, k: &OrdKey) -> Ordering {
    let b = int_bytes(v);
    let p = Probe {
        prefix: SortPrefix::of(&b),
        bytes: &b,
    };
    cmp_keys(&p, k)
}

/// A key to look up: a key equal (`==`) to a small integer (see
/// [`SortPrefix::integer`]), found in the integer tree by its value, or
/// any other key, found in the general tree.
enum Search<'a> {
    Int(i64),
    Key(Probe<'a>),
}

/// What [`OrderedTable::insert_from`] inserts: an entry, or the key of
/// one still to be made.
trait Source {
    fn key(&self) -> &[u8];
    fn entry(self) -> Entry;
}

impl Source for Entry {
    #[inline]
    fn key(&self) -> &[u8] {
        Entry::key(self)
    }
    #[inline]
    fn entry(self) -> Entry {
        self
    }
}

/// A key and the function making its entry.
struct Made<'k, F>(&'k [u8], F);

impl<F: FnOnce() -> Entry> Source for Made<'_, F> {
    #[inline]
    fn key(&self) -> &[u8] {
        self.0
    }
    #[inline]
    fn entry(self) -> Entry {
        let e = (self.1)();
        debug_assert_eq!(e.key(), self.0, "an entry made for another key");
        e
    }
}

#[inline]
fn probe(key: &[u8]) -> Search<'_> {
    // A small integer (the most common ordered key) needs no prefix.
    if let Some(v) = small_int_key(key) {
        return Search::Int(v);
    }
    let prefix = SortPrefix::of(key);
    match prefix.integer() {
        Some(v) => Search::Int(v),
        None => Search::Key(Probe { prefix, bytes: key }),
    }
}

type Map = BTreeMap<OrdKey, Entry>;
type IntMap = Tree<i64>;

/// Where the integer keys fall around a key that is not equal to any.
enum Split {
    /// Every integer is greater.
    AllAbove,
    /// Every integer is smaller.
    AllBelow,
    /// The integers up to this one are smaller, those after it greater.
    After(i64),
}

impl Search<'_> {
    /// Where the integer keys fall around a probe of the general tree.
    fn split(p: &Probe, ints: &IntMap) -> Split {
        if p.prefix.words[0] != 0 {
            // Numbers are the first class; a number that is no integer in
            // i64 lies below i64 (flag 0) or above its floor (flag 2).
            return match p.prefix.number() {
                None => Split::AllBelow,
                Some((_, 0)) => Split::AllAbove,
                Some((floor, _)) => Split::After(floor),
            };
        }
        // No prefix (no number at the top of a key has none): by compares.
        if cmp_keys(&int_probe(&int_bytes(i64::MAX)), p) == Ordering::Less {
            return Split::AllBelow;
        }
        if cmp_keys(&int_probe(&int_bytes(i64::MIN)), p) == Ordering::Greater {
            return Split::AllAbove;
        }
        match ints
            .iter()
            .map(|(v, _)| *v)
            .find(|&v| cmp_keys(&int_probe(&int_bytes(v)), p) == Ordering::Greater)
        {
            Some(v) => match v.checked_sub(1) {
                Some(f) => Split::After(f),
                None => Split::AllAbove,
            },
            None => Split::AllBelow,
        }
    }

    /// The entries of both trees with greater keys, in order.
    fn after<'m>(&self, g: &'m Inner) -> Merged<'m> {
        let (ints, others) = match self {
            Search::Int(v) => {
                let b = int_bytes(*v);
                let p = int_probe(&b);
                let lower: Bound<&dyn AsKey> = Bound::Excluded(&p);
                (
                    g.ints.iter_from(g.ints.lower_bound(|k| k.cmp(v), true)),
                    g.map.range::<dyn AsKey, _>((lower, Bound::Unbounded)),
                )
            }
            Search::Key(p) => {
                let lower: Bound<&dyn AsKey> = Bound::Excluded(p);
                let others = g.map.range::<dyn AsKey, _>((lower, Bound::Unbounded));
                let ints = match Self::split(p, &g.ints) {
                    Split::AllAbove => g.ints.iter(),
                    Split::AllBelow => g.ints.iter_from(None),
                    Split::After(f) => g.ints.iter_from(g.ints.lower_bound(|k| k.cmp(&f), true)),
                };
                (ints, others)
            }
        };
        Merged {
            ints: ints.peekable(),
            others: others.peekable(),
        }
    }

    /// The entry with the greatest key smaller than this one.
    fn before<'m>(&self, g: &'m Inner) -> Option<&'m Entry> {
        let (int, other) = match self {
            Search::Int(v) => {
                let b = int_bytes(*v);
                let p = int_probe(&b);
                let upper: Bound<&dyn AsKey> = Bound::Excluded(&p);
                (
                    g.ints
                        .upper_bound(|k| k.cmp(v), true)
                        .and_then(|p| g.ints.at(p)),
                    g.map
                        .range::<dyn AsKey, _>((Bound::Unbounded, upper))
                        .next_back(),
                )
            }
            Search::Key(p) => {
                let upper: Bound<&dyn AsKey> = Bound::Excluded(p);
                let other = g
                    .map
                    .range::<dyn AsKey, _>((Bound::Unbounded, upper))
                    .next_back();
                let int = match Self::split(p, &g.ints) {
                    Split::AllAbove => None,
                    Split::AllBelow => g.ints.last_pos().and_then(|p| g.ints.at(p)),
                    Split::After(f) => g
                        .ints
                        .upper_bound(|k| k.cmp(&f), false)
                        .and_then(|p| g.ints.at(p)),
                };
                (int, other)
            }
        };
        match (int, other) {
            (Some((v, ie)), Some((k, oe))) => Some(if cmp_int(*v, k) == Ordering::Greater {
                ie
            } else {
                oe
            }),
            (i, o) => i.map(|(_, e)| e).or(o.map(|(_, e)| e)),
        }
    }
}

/// The probe of a small integer's encoding.
fn int_probe(b: &[u8; 9]) -> Probe<'_> {
    Probe {
        prefix: SortPrefix::of(b),
        bytes: b,
    }
}

/// The entries of both trees, merged in key order.
struct Merged<'m> {
    ints: Peekable<tree::Iter<'m, i64>>,
    others: Peekable<btree_map::Range<'m, OrdKey, Entry>>,
}

impl<'m> Iterator for Merged<'m> {
    type Item = &'m Entry;

    #[inline]
    fn next(&mut self) -> Option<&'m Entry> {
        let int_first = match (self.ints.peek(), self.others.peek()) {
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
            (Some((v, _)), Some((k, _))) => cmp_int(**v, k) == Ordering::Less,
        };
        if int_first {
            self.ints.next().map(|(_, e)| e)
        } else {
            self.others.next().map(|(_, e)| e)
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Keys not equal to any small integer.
    map: Map,
    /// Keys equal (`==`) to a small integer, by its value (the entry holds
    /// the key's own bytes: `1` or `1.0`). They need no key copy, and they
    /// are searched by integer compares.
    ints: IntMap,
    /// Heap bytes of the entries and their key copies.
    heap: usize,
    /// Entries holding blobs (their heap bytes are counted by reading
    /// them; others' from their lengths alone, see [`Inner::split_off`]).
    blobs: usize,
    /// Bumped by every change of the trees or of an entry in them.
    version: u64,
    /// Set when a split moved the entries into two new parts: this part
    /// is no longer in the table's route (an operation that finds it so
    /// starts again from the current route).
    dead: bool,
    /// Lock contention seen by writers (see [`Inner::note_write`]).
    contention: i32,
}

impl Inner {
    fn key_bytes(k: &[u8]) -> usize {
        k.len().next_multiple_of(16)
    }

    fn get(&self, key: &[u8]) -> Option<&Entry> {
        match probe(key) {
            Search::Int(v) => self.ints.get(|k| k.cmp(&v)),
            Search::Key(p) => self.map.get(&p as &dyn AsKey),
        }
    }

    fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        match probe(key) {
            Search::Int(v) => self.ints.get_mut(|k| k.cmp(&v)),
            Search::Key(p) => self.map.get_mut(&p as &dyn AsKey),
        }
    }

    /// Counts an entry coming in (`key`: bytes of its key's copy).
    #[inline]
    fn count_in(&mut self, e: &Entry, key: usize) {
        self.heap += e.heap_bytes() + key;
        self.blobs += usize::from(e.has_blobs());
    }

    /// Counts an entry going out (`key`: bytes of its key's copy).
    #[inline]
    fn count_out(&mut self, e: &Entry, key: usize) {
        self.heap -= e.heap_bytes() + key;
        self.blobs -= usize::from(e.has_blobs());
    }

    fn put(&mut self, entry: Entry) -> Option<Entry> {
        let prefix = SortPrefix::of(entry.key());
        self.put_with(prefix, entry)
    }

    /// [`Inner::put`] of an entry whose key is equal (`==`) to the small
    /// integer `v`.
    #[inline]
    fn put_int(&mut self, v: i64, entry: Entry) -> Option<Entry> {
        self.version += 1;
        // The entry holds its key: `1.0` replacing `1` needs no more.
        self.count_in(&entry, 0);
        let (_, old) = self.ints.insert(v, entry, |a, b| a.cmp(b))?;
        self.count_out(&old, 0);
        Some(old)
    }

    /// [`Inner::put`] with the key's prefix already computed.
    fn put_with(&mut self, prefix: SortPrefix, entry: Entry) -> Option<Entry> {
        use std::collections::btree_map::Entry as Slot;
        if let Some(v) = prefix.integer() {
            return self.put_int(v, entry);
        }
        self.version += 1;
        let key = OrdKey {
            prefix,
            bytes: entry.key().into(),
        };
        match self.map.entry(key) {
            Slot::Vacant(v) => {
                self.heap += entry.heap_bytes() + Self::key_bytes(entry.key());
                self.blobs += usize::from(entry.has_blobs());
                v.insert(entry);
                None
            }
            Slot::Occupied(mut o) if o.key().bytes[..] == *entry.key() => {
                let (new_heap, new_blob) = (entry.heap_bytes(), entry.has_blobs());
                let old = std::mem::replace(o.get_mut(), entry);
                self.heap += new_heap;
                self.blobs += usize::from(new_blob);
                self.count_out(&old, 0);
                Some(old)
            }
            Slot::Occupied(o) => {
                // An equal key (`==`) with other bytes ({1.0} replacing
                // {1}): the stored key becomes the new object's own.
                let (k, old) = o.remove_entry();
                self.count_out(&old, Self::key_bytes(&k.bytes));
                self.count_in(&entry, Self::key_bytes(entry.key()));
                let key = OrdKey {
                    prefix,
                    bytes: entry.key().into(),
                };
                self.map.insert(key, entry);
                Some(old)
            }
        }
    }

    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let e = match probe(key) {
            Search::Int(v) => {
                let (_, e) = self.ints.remove(|k| k.cmp(&v))?;
                self.count_out(&e, 0);
                e
            }
            Search::Key(p) => {
                let (k, e) = self.map.remove_entry(&p as &dyn AsKey)?;
                self.count_out(&e, Self::key_bytes(&k.bytes));
                e
            }
        };
        self.version += 1;
        Some(e)
    }

    fn len(&self) -> usize {
        self.ints.len() + self.map.len()
    }

    /// The entry with the smallest key.
    fn first(&self) -> Option<&Entry> {
        let int = self.ints.first_pos().and_then(|p| self.ints.at(p));
        match (int, self.map.first_key_value()) {
            (Some((v, ie)), Some((k, oe))) => Some(if cmp_int(*v, k) == Ordering::Less {
                ie
            } else {
                oe
            }),
            (i, o) => i.map(|(_, e)| e).or(o.map(|(_, e)| e)),
        }
    }

    /// The entry with the greatest key.
    fn last(&self) -> Option<&Entry> {
        let int = self.ints.last_pos().and_then(|p| self.ints.at(p));
        match (int, self.map.last_key_value()) {
            (Some((v, ie)), Some((k, oe))) => Some(if cmp_int(*v, k) == Ordering::Greater {
                ie
            } else {
                oe
            }),
            (i, o) => i.map(|(_, e)| e).or(o.map(|(_, e)| e)),
        }
    }

    /// Every entry, in key order.
    fn iter(&self) -> Merged<'_> {
        Merged {
            ints: self.ints.iter().peekable(),
            others: self.map.range::<OrdKey, _>(..).peekable(),
        }
    }

    /// Records a write that found the lock `contended` (or not), as ETS's
    /// contention-adapting trees do: +250 for a contended write, -1 for
    /// another. True when the part should be split (then the count starts
    /// again).
    fn note_write(&mut self, contended: bool) -> bool {
        self.contention = if contended {
            self.contention + 250
        } else {
            (self.contention - 1).max(-1000)
        };
        if self.contention > SPLIT_CONTENTION {
            self.contention = 0;
            return true;
        }
        false
    }

    /// The key at index `k` (0: the smallest) of both trees merged, or a
    /// smaller one when the objects before it reach `budget` bytes (from
    /// their lengths): O(k) (the integer tree alone, without a budget:
    /// O(k / leaf size)).
    fn key_from_start(&self, k: usize, budget: usize) -> Option<OrdKey> {
        if self.map.is_empty() && budget == usize::MAX {
            let b = int_bytes(*self.ints.key_at(k)?);
            return Some(OrdKey {
                prefix: SortPrefix::of(&b),
                bytes: b.into(),
            });
        }
        let mut entries = self.iter();
        let mut bytes = 0usize;
        for _ in 0..k {
            bytes += entries.next()?.own_bytes();
            if bytes >= budget {
                break;
            }
        }
        let key = entries.next()?.key();
        Some(OrdKey {
            prefix: SortPrefix::of(key),
            bytes: key.into(),
        })
    }

    /// Whether a split of this part caused by writes of the key `hot`
    /// should move its smallest keys (see [`Inner::split_off`]): a part too
    /// big to split at its middle gives up the end nearer `hot` (estimated
    /// from the integer tree's root for a part of integer keys only; for
    /// others, `hot` among the keys that would move).
    fn peel_front(&self, hot: &Search) -> bool {
        let k = self.split_max();
        if self.len() < 2 * k {
            return false;
        }
        if self.map.is_empty() {
            return match hot {
                Search::Int(v) => self.ints.rank_fraction(|x| x.cmp(v)) < 0.5,
                Search::Key(_) => false,
            };
        }
        let b;
        let hot: &[u8] = match hot {
            Search::Int(v) => {
                b = int_bytes(*v);
                &b
            }
            Search::Key(p) => p.bytes,
        };
        self.iter()
            .nth(k)
            .is_some_and(|e| compare(hot, e.key()) == Ordering::Less)
    }

    /// The key `k` places from the end (1: the greatest) of both trees
    /// merged, or a greater one when the objects passed reach `budget`
    /// bytes (from their lengths: no entry is read): O(k) (the integer tree
    /// alone, without a budget: O(k / leaf size)).
    fn key_from_end(&self, k: usize, budget: usize) -> Option<OrdKey> {
        let int_key = |v: i64| {
            let b = int_bytes(v);
            OrdKey {
                prefix: SortPrefix::of(&b),
                bytes: b.into(),
            }
        };
        if self.map.is_empty() && budget == usize::MAX {
            return self.ints.key_from_end(k).map(|v| int_key(*v));
        }
        let ints = std::iter::successors(self.ints.last_pos(), |&p| self.ints.before(p));
        let mut ints = ints.map_while(|p| self.ints.at(p)).peekable();
        let mut others = self.map.iter().rev().peekable();
        let mut bytes = 0usize;
        for _ in 1..k {
            let int_greater = match (ints.peek(), others.peek()) {
                (Some((v, _)), Some((o, _))) => cmp_int(**v, o) == Ordering::Greater,
                (i, _) => i.is_some(),
            };
            let e = if int_greater {
                ints.next()?.1
            } else {
                others.next()?.1
            };
            bytes += e.own_bytes();
            if bytes >= budget {
                break;
            }
        }
        match (ints.peek(), others.peek()) {
            (Some((v, _)), Some((o, _))) if cmp_int(**v, o) != Ordering::Greater => Some(OrdKey {
                prefix: o.prefix,
                bytes: o.bytes.clone(),
            }),
            (Some((v, _)), _) => Some(int_key(**v)),
            (None, Some((o, _))) => Some(OrdKey {
                prefix: o.prefix,
                bytes: o.bytes.clone(),
            }),
            (None, None) => None,
        }
    }

    /// Entries a split may walk: fewer when entries hold blobs (counting
    /// their memory reads each of them).
    fn split_max(&self) -> usize {
        if self.blobs == 0 {
            SPLIT_MAX
        } else {
            SPLIT_MAX_BLOBS
        }
    }

    /// Moves the entries from a key on (`front`: before a key) into a new
    /// `Inner`, and returns it with that key (`None` with fewer than two
    /// entries): the middle key of a small part, else the key that leaves
    /// at most [`SPLIT_MAX`] entries to move (of a bigger part, the
    /// greatest keys go, or the smallest); only they are walked: the
    /// integer tree moves its leaves, the general tree splits along one
    /// path and counts the moved side.
    fn split_off(&mut self, front: bool) -> Option<(OrdKey, Inner)> {
        let n = self.len();
        if n < 2 {
            return None;
        }
        // (Counting the memory of entries holding blobs walks their
        // objects: a bound on the objects' bytes too.)
        let budget = if self.blobs == 0 {
            usize::MAX
        } else {
            SPLIT_MAX_BLOB_BYTES
        };
        let k = (n / 2).min(self.split_max());
        let (low, ints, map) = if front {
            let low = self.key_from_start(k, budget)?;
            let ints = self
                .ints
                .split_off_front(|v| cmp_int(*v, &low) == Ordering::Less);
            let upper = self.map.split_off(&low as &dyn AsKey);
            (low, ints, std::mem::replace(&mut self.map, upper))
        } else {
            let low = self.key_from_end(k, budget)?;
            let ints = self.ints.split_off(|v| cmp_int(*v, &low) != Ordering::Less);
            let map = self.map.split_off(&low as &dyn AsKey);
            (low, ints, map)
        };
        // The moved entries' memory: from their lengths alone unless some
        // entry holds blobs (reading every moved entry would cost a cache
        // miss each, under the part's lock).
        let own = |e: &Entry| {
            if self.blobs == 0 {
                (e.own_bytes(), 0)
            } else {
                (e.heap_bytes(), usize::from(e.has_blobs()))
            }
        };
        let (mut heap, mut blobs) = (0, 0);
        for (h, b) in ints.iter().map(|(_, e)| own(e)) {
            heap += h;
            blobs += b;
        }
        for (k, e) in map.iter() {
            let (h, b) = own(e);
            heap += h + Self::key_bytes(&k.bytes);
            blobs += b;
        }
        self.heap -= heap;
        self.blobs -= blobs;
        self.version += 1;
        let moved = Inner {
            map,
            ints,
            heap,
            blobs,
            ..Inner::default()
        };
        Some((low, moved))
    }
}

/// The contents of a table taken out by [`OrderedTable::take_all`];
/// dropping it frees every entry.
pub struct OrderedContents(Vec<(Map, IntMap)>);

impl OrderedContents {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.iter().map(|(m, i)| m.len() + i.len()).sum()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|(m, i)| m.is_empty() && i.is_empty())
    }
}

/// The keys that follow a key in a part holding other keys than integers,
/// copied from one version of the part (a walk with `next/2` needs only
/// keys: these are served without the lock while the part's version is
/// unchanged). One per thread; the keys are those of their objects' key
/// elements, back to back in one buffer (no allocation per key).
#[derive(Default)]
struct KeyRun {
    /// The part the keys were copied from.
    part: u64,
    /// The part's version when the keys were copied.
    version: u64,
    /// The keys' bytes, back to back.
    bytes: Vec<u8>,
    /// Where each key ends in `bytes`.
    ends: Vec<u32>,
    /// The index of the key returned last.
    at: usize,
}

impl KeyRun {
    fn key(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        self.bytes.get(start..end)
    }
}

/// Keys a [`KeyRun`] copies at most at a time.
const RUN_AHEAD: usize = 64;
/// Bytes of keys a [`KeyRun`] copies at most at a time.
const RUN_BYTES: usize = 4096;

/// Where this thread's last `first`/`last`/`next`/`prev` in a part of
/// integer keys only ended: a place in its integer tree.
#[derive(Clone, Copy)]
struct IntWalk {
    /// The part (ids are never reused; 0 is none).
    part: u64,
    pos: Pos,
}

/// The keys that follow a place in a part of integer keys only, copied
/// from one version of its tree (a walk with `next/2` over such a part
/// needs only keys: these are served without the lock while the part's
/// version is unchanged).
struct IntKeys {
    /// The part the keys were copied from.
    part: u64,
    /// The part's version when the keys were copied.
    version: u64,
    /// Key elements (as in the objects) of consecutive entries.
    keys: [[u8; 9]; KEYS_AHEAD],
    /// Keys copied.
    len: usize,
    /// The position of the key returned last.
    at: usize,
}

/// Keys an [`IntKeys`] copies at a time.
const KEYS_AHEAD: usize = 32;

/// What follows a key (see [`OrderedTable::read_next_key`]).
pub enum Next<'a> {
    /// No greater key.
    End,
    /// The entry with the next key.
    Entry(&'a Entry),
    /// The next key, as the key element of its object is encoded.
    Key(&'a [u8]),
}

/// The value of a key encoded as a small integer (`INT`: a tag and a
/// little-endian word); `None` for other keys (integral floats included).
#[inline]
fn small_int_key(key: &[u8]) -> Option<i64> {
    match <&[u8; 9]>::try_from(key) {
        Ok(b) if b[0] == tag::INT => Some(i64::from_le_bytes([
            b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8],
        ])),
        _ => None,
    }
}

/// The key element of an integer-tree entry as its object holds it (the
/// key is 9 bytes, and not a canonical form appended to the object).
fn int_key_element(e: &Entry) -> Option<[u8; 9]> {
    let k = e.key();
    if !e.object().as_ptr_range().contains(&k.as_ptr()) {
        return None;
    }
    k.try_into().ok()
}

thread_local! {
    static KEY_RUN: RefCell<KeyRun> = RefCell::default();
    static INT_KEYS: RefCell<IntKeys> = const {
        RefCell::new(IntKeys {
            part: 0,
            version: 0,
            keys: [[0; 9]; KEYS_AHEAD],
            len: 0,
            at: 0,
        })
    };
    static INT_WALK: Cell<IntWalk> = const {
        Cell::new(IntWalk {
            part: 0,
            pos: Pos { leaf: u32::MAX, slot: 0 },
        })
    };
}

/// Ids of parts (for walk caches), never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A part's contention count above which it is split.
const SPLIT_CONTENTION: i32 = 1000;
/// Parts a table is split into at most.
const MAX_PARTS: usize = 64;
/// Entries a split walks at most, holding the part's write lock: a part of
/// up to twice this many is split at its middle key; a bigger one gives up
/// this many of its greatest keys (further contention splits it again).
const SPLIT_MAX: usize = 1 << 14;
/// [`SPLIT_MAX`] for a part whose entries hold blobs: the moved entries'
/// memory is then counted by reading each of them (a cache miss each, and
/// the blob lengths), ~50 µs per thousand 1 KB values.
const SPLIT_MAX_BLOBS: usize = 1 << 12;
/// Object bytes a split of a part holding blobs moves at most (counting a
/// moved entry's blobs walks its top-level elements: {int, blob, a
/// 2,000-integer tuple} objects took 8.5 ms for 4,096 entries without it,
/// 0.5 ms with it).
const SPLIT_MAX_BLOB_BYTES: usize = 4 << 20;

/// One key range of a table: its trees under their own lock.
struct Part {
    inner: RwLock<Inner>,
    /// For walk caches (never reused).
    id: u64,
    /// The trees' version, published by each writer before it unlocks:
    /// walk caches are checked against it without taking the lock.
    version: AtomicU64,
}

impl Part {
    fn new(inner: Inner) -> Arc<Self> {
        Arc::new(Part {
            version: AtomicU64::new(inner.version),
            inner: RwLock::new(inner),
            id: NEXT_ID.fetch_add(1, AtomicOrdering::Relaxed),
        })
    }

    /// Write-locks the part; also says whether the lock was busy.
    #[inline]
    fn write(&self) -> (WriteGuard<'_>, bool) {
        let (g, contended) = match self.inner.try_write() {
            Some(g) => (g, false),
            None => (self.inner.write(), true),
        };
        let g = WriteGuard {
            g,
            published: &self.version,
        };
        (g, contended)
    }
}

/// How a table's keys are divided into parts: `parts[i]` holds the keys
/// from `lows[i - 1]` (included) to `lows[i]` (excluded).
struct Route {
    /// (Shared by the routes that have them.)
    lows: Vec<Arc<OrdKey>>,
    /// The lows as integers, when they all are small integers (then
    /// integer keys are routed by integer compares).
    int_lows: Option<Vec<i64>>,
    parts: Vec<Arc<Part>>,
}

impl Route {
    fn new(lows: Vec<Arc<OrdKey>>, parts: Vec<Arc<Part>>) -> Self {
        let int_lows = lows.iter().map(|l| l.prefix.integer()).collect();
        Route {
            lows,
            int_lows,
            parts,
        }
    }

    /// The index of the part for the key searched.
    #[inline]
    fn index(&self, s: &Search) -> usize {
        match s {
            Search::Int(v) => match &self.int_lows {
                Some(lows) => lows.partition_point(|low| v >= low),
                None => self
                    .lows
                    .partition_point(|low| cmp_int(*v, low) != Ordering::Less),
            },
            Search::Key(p) => self
                .lows
                .partition_point(|low| cmp_keys(p, &**low) != Ordering::Less),
        }
    }

    /// The index of the part for `key`.
    #[inline]
    fn index_of(&self, key: &[u8]) -> usize {
        if self.lows.is_empty() {
            return 0;
        }
        self.index(&probe(key))
    }
}

/// An ordered table with set semantics under `==`.
///
/// Its keys are divided into parts by key range (one at first), each with
/// its own lock. With `write_concurrency`, a part whose writers keep
/// finding its lock busy is split in two (see [`Inner::split_off`]), as
/// ETS's contention-adapting trees do (parts are not joined again). Point
/// operations lock one part; walks lock one part at a time; operations on
/// many keys at once (`insert/2` of a list, `take_all`, `slot`) lock every
/// part.
pub struct OrderedTable {
    /// The current route: one of `routes`.
    route: AtomicPtr<Route>,
    /// Every route the table has had (the current one last): routes are
    /// only freed with the table, so a route loaded by any operation stays
    /// valid. Also serializes splits. (Boxed: `route` points into a box,
    /// which does not move when the vector grows.)
    #[allow(clippy::vec_box)]
    routes: Mutex<Vec<Box<Route>>>,
    /// Whether contention splits parts (`write_concurrency`).
    adaptive: bool,
}

/// A write lock on a part that publishes its version on release.
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

/// Publishes the versions of every part written under `gs` before any of
/// them is unlocked: a change of several parts (a list insert,
/// `take_all`) is then seen whole by the walk caches, which read the
/// versions without the locks (the guards' drops, in order, would let a
/// reader see a part's new contents beside another part's old version).
fn publish_all(gs: &[WriteGuard<'_>]) {
    for g in gs {
        g.published.store(g.g.version, AtomicOrdering::Release);
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
        Self::with_concurrency(false)
    }
}

/// Outcome of a step on one part of a walk: the answer, or `f` back to go
/// on in the neighbouring part.
type Step<R, F> = Result<R, F>;

impl OrderedTable {
    /// An empty table (one part, never split).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table; with `write_concurrency`, parts that writers
    /// contend for are split.
    pub fn with_concurrency(write_concurrency: bool) -> Self {
        // (The pointer is taken from the box in its place: moving a box
        // after taking a pointer to its contents would invalidate it.)
        let routes = vec![Box::new(Route::new(
            Vec::new(),
            vec![Part::new(Inner::default())],
        ))];
        let route: *const Route = &*routes[0];
        Self {
            route: AtomicPtr::new(route.cast_mut()),
            routes: Mutex::new(routes),
            adaptive: write_concurrency,
        }
    }

    /// The current route.
    #[inline]
    #[allow(unsafe_code)]
    fn route(&self) -> &Route {
        // SAFETY: `route` always points at a route boxed in `self.routes`,
        // which only frees its routes when the table is dropped (a box's
        // contents do not move when the vector grows), and a route is
        // never changed after it is published; the Acquire load pairs with
        // the Release store that published it.
        unsafe { &*self.route.load(AtomicOrdering::Acquire) }
    }

    /// The live part for `s`, read-locked.
    #[inline]
    fn read_part(&self, s: &Search) -> (&Part, RwLockReadGuard<'_, Inner>) {
        loop {
            let r = self.route();
            let part = &r.parts[if r.lows.is_empty() { 0 } else { r.index(s) }];
            let g = part.inner.read();
            if !g.dead {
                return (part, g);
            }
        }
    }

    /// The live part at `index(route)`, write-locked, and whether its lock
    /// was busy (`index` is called only when the table has several parts).
    #[inline]
    fn write_part(&self, index: impl Fn(&Route) -> usize) -> (&Part, WriteGuard<'_>, bool) {
        loop {
            let r = self.route();
            let part = &r.parts[if r.lows.is_empty() { 0 } else { index(r) }];
            let (g, contended) = part.write();
            if !g.dead {
                return (part, g, contended);
            }
        }
    }

    /// Counts a write to a part (of the key `hot`; see
    /// [`Inner::note_write`]); `Some(front)` when the part is to be split,
    /// `front` when it is to give up its smallest keys rather than its
    /// greatest (see [`Inner::peel_front`]).
    #[inline]
    fn split_due(&self, g: &mut Inner, contended: bool, hot: &Search) -> Option<bool> {
        let due = self.adaptive && g.note_write(contended) && self.route().parts.len() < MAX_PARTS;
        due.then(|| g.peel_front(hot))
    }

    /// Unlocks a part written to, and splits it when [`Self::split_due`]
    /// said so.
    #[inline]
    fn written(&self, part: &Part, g: WriteGuard<'_>, due: Option<bool>) {
        drop(g);
        if let Some(front) = due {
            self.split(part, front);
        }
    }

    /// Runs `f` on the live part for `s`, write-locked (see
    /// [`OrderedTable::written`]).
    #[inline]
    fn write_at<R>(&self, s: &Search, f: impl FnOnce(&mut Inner) -> R) -> R {
        let (part, mut g, contended) = self.write_part(|r| r.index(s));
        let out = f(&mut g);
        let due = self.split_due(&mut g, contended, s);
        self.written(part, g, due);
        out
    }

    /// Every part of the current route, write-locked in order.
    fn write_all(&self) -> Vec<WriteGuard<'_>> {
        loop {
            let gs: Vec<_> = self.route().parts.iter().map(|p| p.write().0).collect();
            // Every part is live only if no split happened since the route
            // was loaded (a split kills the part it splits).
            if gs.iter().all(|g| !g.dead) {
                return gs;
            }
        }
    }

    /// Every part of the current route, read-locked in order.
    fn read_all(&self) -> Vec<RwLockReadGuard<'_, Inner>> {
        loop {
            let gs: Vec<_> = self.route().parts.iter().map(|p| p.inner.read()).collect();
            if gs.iter().all(|g| !g.dead) {
                return gs;
            }
        }
    }

    /// Splits `part` in two (if it is still in the
    /// route, the table has fewer than [`MAX_PARTS`] parts, and the part
    /// holds at least two entries; see [`Inner::split_off`]).
    #[cold]
    #[inline(never)]
    fn split(&self, part: &Part, front: bool) {
        let mut routes = self.routes.lock();
        let r = self.route();
        if r.parts.len() >= MAX_PARTS {
            return;
        }
        let Some(i) = r.parts.iter().position(|p| std::ptr::eq(&**p, part)) else {
            return;
        };
        let (mut g, _) = part.write();
        if g.dead {
            return;
        }
        let Some((low, moved)) = g.split_off(front) else {
            return;
        };
        let kept = std::mem::take(&mut *g);
        let (lower, upper) = if front { (moved, kept) } else { (kept, moved) };
        g.dead = true;
        g.version = lower.version.max(upper.version) + 1;
        let mut lows = Vec::with_capacity(r.lows.len() + 1);
        lows.extend(r.lows[..i].iter().cloned());
        lows.push(Arc::new(low));
        lows.extend(r.lows[i..].iter().cloned());
        let mut parts = r.parts.clone();
        parts.splice(i..=i, [Part::new(lower), Part::new(upper)]);
        routes.push(Box::new(Route::new(lows, parts)));
        let next: *const Route = &*routes[routes.len() - 1];
        self.route.store(next.cast_mut(), AtomicOrdering::Release);
    }

    /// Splits every part of at least two entries, up to [`MAX_PARTS`] parts
    /// (whatever their contention; for tests of walks across parts).
    #[doc(hidden)]
    pub fn split_parts(&self) {
        let parts = self.route().parts.clone();
        // (Both ways: the odd parts give up their smallest keys.)
        for (i, p) in parts.iter().enumerate() {
            self.split(p, i % 2 == 1);
        }
    }

    /// The heap bytes and blob-holding entries the parts count (tests).
    #[cfg(test)]
    pub(crate) fn heap_and_blobs(&self) -> (usize, usize) {
        let gs = self.read_all();
        (
            gs.iter().map(|g| g.heap).sum(),
            gs.iter().map(|g| g.blobs).sum(),
        )
    }

    /// Number of parts (see [`OrderedTable`]).
    pub fn parts(&self) -> usize {
        self.route().parts.len()
    }

    /// Runs `f` on the entry under `key` (or `None`) while it is read-locked.
    pub fn read<R>(&self, key: &[u8], f: impl FnOnce(Option<&Entry>) -> R) -> R {
        // The probe's prefix is computed before the lock is taken.
        let p = probe(key);
        let (_, g) = self.read_part(&p);
        f(match p {
            Search::Int(v) => g.ints.get(|k| k.cmp(&v)),
            Search::Key(p) => g.map.get(&p as &dyn AsKey),
        })
    }

    /// [`OrderedTable::read`] of the key that is the small integer `v`.
    pub fn read_int<R>(&self, v: i64, f: impl FnOnce(Option<&Entry>) -> R) -> R {
        f(self.read_part(&Search::Int(v)).1.ints.get(|k| k.cmp(&v)))
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
        self.insert_from(entry)
    }

    /// [`OrderedTable::insert`] of the entry `make` builds (its key must
    /// be `key`), called with the part locked: the new entry's first
    /// writes then overlap the tree's (a lock's atomic waits for every
    /// write before it; the entry's fresh memory is rarely in the cache).
    /// 7-11 % faster than building it first when refilling an emptied
    /// table; for small entries only, as the lock is held while `make`
    /// runs.
    pub fn insert_with(&self, key: &[u8], make: impl FnOnce() -> Entry) -> Option<Entry> {
        self.insert_from(Made(key, make))
    }

    #[inline]
    fn insert_from(&self, src: impl Source) -> Option<Entry> {
        let s = probe(src.key());
        let (part, mut g, contended) = self.write_part(|r| r.index(&s));
        let due = self.split_due(&mut g, contended, &s);
        let old = match s {
            Search::Int(v) => g.put_int(v, src.entry()),
            Search::Key(p) => g.put_with(p.prefix, src.entry()),
        };
        self.written(part, g, due);
        old
    }

    /// Inserts only if the key is absent; returns whether it inserted.
    pub fn insert_new(&self, entry: Entry) -> bool {
        let (part, mut g, contended) = self.write_part(|r| r.index_of(entry.key()));
        let due = self.split_due(&mut g, contended, &probe(entry.key()));
        let new = g.get(entry.key()).is_none();
        if new {
            g.put(entry);
        }
        self.written(part, g, due);
        new
    }

    /// Inserts all entries atomically (for equal keys the last one wins);
    /// returns the replaced entries.
    pub fn insert_all(&self, entries: Vec<Entry>) -> Vec<Entry> {
        self.insert_all_if(entries, || true).unwrap_or_default()
    }

    /// [`OrderedTable::insert_all`] if `go()`, asked once every lock is
    /// held, says so (`None` and nothing inserted otherwise): a caller that
    /// may have been cancelled while it prepared the entries checks it there.
    pub fn insert_all_if(
        &self,
        entries: Vec<Entry>,
        go: impl FnOnce() -> bool,
    ) -> Option<Vec<Entry>> {
        let mut gs = self.write_all();
        if !go() {
            return None;
        }
        let r = self.route();
        let old = entries
            .into_iter()
            .filter_map(|e| gs[r.index_of(e.key())].put(e))
            .collect();
        publish_all(&gs);
        Some(old)
    }

    /// Inserts all entries atomically if none of their keys is present;
    /// otherwise inserts nothing. Returns whether it inserted.
    pub fn insert_new_all(&self, entries: Vec<Entry>) -> bool {
        self.insert_new_all_if(entries, || true)
    }

    /// [`OrderedTable::insert_new_all`] if `go()`, asked once every lock is
    /// held, says so (see [`OrderedTable::insert_all_if`]; false otherwise).
    pub fn insert_new_all_if(&self, entries: Vec<Entry>, go: impl FnOnce() -> bool) -> bool {
        let mut gs = self.write_all();
        if !go() {
            return false;
        }
        let r = self.route();
        if entries
            .iter()
            .any(|e| gs[r.index_of(e.key())].get(e.key()).is_some())
        {
            return false;
        }
        for e in entries {
            gs[r.index_of(e.key())].put(e);
        }
        publish_all(&gs);
        true
    }

    /// Removes and returns the entry under `key`.
    pub fn remove(&self, key: &[u8]) -> Option<Entry> {
        self.write_at(&probe(key), |g| g.remove(key))
    }

    /// Atomic read-modify-write of the entry under `key` (see
    /// [`crate::set::SetTable::update_mut`]). A `Put` entry must have a key
    /// equal (`==`) to `key`.
    pub fn update_mut<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&mut Entry>) -> (Change, R),
    ) -> R {
        self.write_at(&probe(key), |g| {
            // `f` may change the entry in place.
            g.version += 1;
            let (change, r) = f(g.get_mut(key));
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
        })
    }

    /// Takes every entry out of the table.
    pub fn take_all(&self) -> OrderedContents {
        let mut gs = self.write_all();
        let contents = gs
            .iter_mut()
            .map(|g| {
                g.heap = 0;
                g.blobs = 0;
                g.version += 1;
                (std::mem::take(&mut g.map), std::mem::take(&mut g.ints))
            })
            .collect();
        publish_all(&gs);
        OrderedContents(contents)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.read_all().iter().map(|g| g.len()).sum()
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory held by the table: its parts, the trees' nodes (the
    /// general one's estimated from its slots, with B-tree nodes about 2/3
    /// full), key copies, entries, and the parts' low keys (old routes and
    /// dead parts, small and bounded by 64 parts, are not counted).
    pub fn memory_bytes(&self) -> usize {
        let slot = std::mem::size_of::<OrdKey>() + std::mem::size_of::<Entry>();
        let parts: usize = self
            .read_all()
            .iter()
            .map(|g| {
                std::mem::size_of::<Part>()
                    + g.map.len() * slot * 3 / 2
                    + g.ints.node_bytes()
                    + g.heap
            })
            .sum();
        // The parts' low keys (each kept once, shared by the routes).
        let lows: usize = self
            .route()
            .lows
            .iter()
            .map(|l| 16 + std::mem::size_of::<OrdKey>() + Inner::key_bytes(&l.bytes))
            .sum();
        std::mem::size_of::<Self>() + parts + lows
    }

    /// Remembers `pos` (if any) as this thread's place in `part`'s integer
    /// tree and returns its entry.
    #[inline]
    fn int_settle<'g>(part: &Part, g: &'g Inner, pos: Option<Pos>) -> Option<&'g Entry> {
        let pos = pos?;
        INT_WALK.with(|c| c.set(IntWalk { part: part.id, pos }));
        g.ints.at(pos).map(|(_, e)| e)
    }

    /// This thread's place in `part`'s integer tree, if the entry there
    /// has the key bytes `key` and the part has no other keys (then what
    /// follows or precedes the place in the part follows or precedes
    /// `key`).
    #[inline]
    fn int_walk_at(part: &Part, g: &Inner, key: &[u8]) -> Option<Pos> {
        let w = INT_WALK.with(|c| c.get());
        let hit = w.part == part.id
            && g.map.is_empty()
            && g.ints.at(w.pos).is_some_and(|(_, e)| e.key() == key);
        hit.then_some(w.pos)
    }

    /// Copies the keys from `pos` on of `part` (integer keys only) for a
    /// walk (see [`IntKeys`]), and leaves this thread's place in the tree
    /// at the last one copied.
    fn copy_keys_ahead(part: &Part, g: &Inner, pos: Pos) {
        let mut last = pos;
        INT_KEYS.with(|c| {
            let Ok(mut c) = c.try_borrow_mut() else {
                return;
            };
            c.len = 0;
            c.at = 0;
            last = g.ints.visit_from(pos, |e| {
                let n = c.len;
                let (Some(slot), Some(k)) = (c.keys.get_mut(n), int_key_element(e)) else {
                    return false;
                };
                *slot = k;
                c.len += 1;
                true
            });
            c.part = part.id;
            c.version = g.version;
        });
        INT_WALK.with(|c| {
            c.set(IntWalk {
                part: part.id,
                pos: last,
            })
        });
    }

    /// Runs `f` on the first entry (`forward`) or the last one of the
    /// parts from `from` on (or before it, and `from` itself), or on `None`
    /// when they are empty; `Err(f)` when one of them is dead, or when a
    /// part of `passed` (parts found with nothing to give, and their
    /// versions) changed before the answer was found: the answer would
    /// then not have been the right one at any single instant.
    fn read_end<R, F: FnOnce(Option<&Entry>) -> R>(
        r: &Route,
        from: usize,
        forward: bool,
        passed: &mut Vec<(usize, u64)>,
        f: F,
    ) -> Step<R, F> {
        let unchanged = |passed: &Vec<(usize, u64)>| {
            passed
                .iter()
                .all(|&(j, v)| r.parts[j].version.load(AtomicOrdering::Acquire) == v)
        };
        let mut i = from;
        while let Some(part) = r.parts.get(i) {
            let at = i;
            i = if forward { i + 1 } else { i.wrapping_sub(1) };
            let g = part.inner.read();
            if g.dead {
                return Err(f);
            }
            if g.len() == 0 {
                passed.push((at, g.version));
                continue;
            }
            // (Checked while this part is locked: the passed parts were
            // empty beyond the key, and this part holds the answer, at
            // this instant.)
            if !unchanged(passed) {
                passed.clear();
                return Err(f);
            }
            if g.map.is_empty() {
                let pos = if forward {
                    g.ints.first_pos()
                } else {
                    g.ints.last_pos()
                };
                return Ok(f(Self::int_settle(part, &g, pos)));
            }
            return Ok(f(if forward { g.first() } else { g.last() }));
        }
        if !unchanged(passed) {
            passed.clear();
            return Err(f);
        }
        Ok(f(None))
    }

    /// Runs `f` on the entry with the smallest key.
    pub fn read_first<R>(&self, mut f: impl FnOnce(Option<&Entry>) -> R) -> R {
        loop {
            match Self::read_end(self.route(), 0, true, &mut Vec::new(), f) {
                Ok(r) => return r,
                Err(back) => f = back,
            }
        }
    }

    /// Runs `f` on the entry with the greatest key.
    pub fn read_last<R>(&self, mut f: impl FnOnce(Option<&Entry>) -> R) -> R {
        loop {
            let r = self.route();
            match Self::read_end(r, r.parts.len() - 1, false, &mut Vec::new(), f) {
                Ok(r) => return r,
                Err(back) => f = back,
            }
        }
    }

    /// A step of a walk over a part of integer keys only (see [`IntWalk`]):
    /// from the walk's place when `key` is found there, else by a search.
    /// `None` when the part has other keys; `Some(None)` when the part
    /// holds nothing beyond `key`.
    #[inline]
    fn int_step<'g>(
        part: &Part,
        g: &'g Inner,
        key: &[u8],
        forward: bool,
    ) -> Option<Option<&'g Entry>> {
        if !g.map.is_empty() {
            return None;
        }
        // Keys are copied ahead only for a walk that continues from its
        // place (first/1 or a searched next/2 just record the place, so a
        // `first` + `delete` queue or random `next` calls copy nothing).
        let (pos, walking) = match Self::int_walk_at(part, g, key) {
            Some(p) if forward => (g.ints.after(p), true),
            Some(p) => (g.ints.before(p), false),
            None => {
                let Search::Int(v) = probe(key) else {
                    return None;
                };
                let pos = if forward {
                    g.ints.lower_bound(|k| k.cmp(&v), true)
                } else {
                    g.ints.upper_bound(|k| k.cmp(&v), true)
                };
                (pos, false)
            }
        };
        if walking {
            if let Some(p) = pos {
                Self::copy_keys_ahead(part, g, p);
                return Some(g.ints.at(p).map(|(_, e)| e));
            }
        }
        Some(Self::int_settle(part, g, pos))
    }

    /// Runs `f` on what follows `key` (which need not be in the table):
    /// like [`OrderedTable::read_next`], but in a walk the next key may come
    /// alone, copied ahead, without the lock (see [`IntKeys`], [`KeyRun`]).
    pub fn read_next_key<R>(&self, key: &[u8], f: impl FnOnce(Next<'_>) -> R) -> R {
        // (A writer publishes its part's version before it unlocks, so a
        // version still equal to the copy's means no change is visible
        // yet: the copied keys are the part's keys at this point in time.)
        let r = self.route();
        let part = &r.parts[r.index_of(key)];
        let f = match INT_KEYS.with(|c| {
            let Ok(mut c) = c.try_borrow_mut() else {
                return Err(f);
            };
            let hit = c.part == part.id
                && c.version == part.version.load(AtomicOrdering::Acquire)
                && c.at + 1 < c.len
                && <&[u8; 9]>::try_from(key).is_ok_and(|k| c.keys[c.at] == *k);
            if !hit {
                return Err(f);
            }
            c.at += 1;
            Ok(f(Next::Key(&c.keys[c.at])))
        }) {
            Ok(r) => return r,
            Err(f) => f,
        };
        let f = match KEY_RUN.with(|c| {
            let Ok(mut c) = c.try_borrow_mut() else {
                return Err(f);
            };
            let hit = c.part == part.id
                && c.version == part.version.load(AtomicOrdering::Acquire)
                && c.at + 1 < c.ends.len()
                && c.key(c.at) == Some(key);
            if !hit {
                return Err(f);
            }
            c.at += 1;
            Ok(f(Next::Key(c.key(c.at).unwrap_or_default())))
        }) {
            Ok(r) => return r,
            Err(f) => f,
        };
        self.read_next(key, |e| f(e.map_or(Next::End, Next::Entry)))
    }

    /// Copies the keys of `entries` (which follow a key in `part`) into this
    /// thread's [`KeyRun`] for a walk, while they are their objects' key
    /// elements and small.
    fn copy_run<'e>(part: &Part, version: u64, entries: impl Iterator<Item = &'e Entry>) {
        KEY_RUN.with(|c| {
            let Ok(mut c) = c.try_borrow_mut() else {
                return;
            };
            let c = &mut *c;
            c.bytes.clear();
            c.ends.clear();
            c.at = 0;
            c.part = part.id;
            c.version = version;
            for e in entries.take(RUN_AHEAD) {
                let k = e.key();
                let in_place = e.object().as_ptr_range().contains(&k.as_ptr());
                if !in_place || c.bytes.len() + k.len() > RUN_BYTES {
                    break;
                }
                c.bytes.extend_from_slice(k);
                c.ends.push(c.bytes.len() as u32);
            }
        });
    }

    /// The entry of `part` (read-locked as `g`) after `key`, if any; a walk
    /// over a part of integer keys only keeps its place (see [`IntWalk`]),
    /// another copies the keys that follow (see [`KeyRun`]).
    fn next_in_part<'g>(part: &Part, g: &'g Inner, key: &[u8]) -> Option<&'g Entry> {
        if let Some(e) = Self::int_step(part, g, key, true) {
            return e;
        }
        let mut range = probe(key).after(g);
        let first = range.next()?;
        Self::copy_run(part, g.version, std::iter::once(first).chain(range));
        Some(first)
    }

    /// The entry of `part` (read-locked as `g`) before `key`, if any.
    fn prev_in_part<'g>(part: &Part, g: &'g Inner, key: &[u8]) -> Option<&'g Entry> {
        match Self::int_step(part, g, key, false) {
            Some(e) => e,
            None => probe(key).before(g),
        }
    }

    /// Runs `f` on the entry with the smallest key greater than `key`
    /// (which need not be in the table).
    pub fn read_next<R>(&self, key: &[u8], f: impl FnOnce(Option<&Entry>) -> R) -> R {
        self.read_beside(key, true, f)
    }

    /// Runs `f` on the entry with the greatest key smaller than `key`.
    pub fn read_prev<R>(&self, key: &[u8], f: impl FnOnce(Option<&Entry>) -> R) -> R {
        self.read_beside(key, false, f)
    }

    /// [`OrderedTable::read_next`] (`forward`) or
    /// [`OrderedTable::read_prev`]: in the part of `key`, else at the near
    /// end of the parts beyond it.
    fn read_beside<R>(
        &self,
        key: &[u8],
        forward: bool,
        mut f: impl FnOnce(Option<&Entry>) -> R,
    ) -> R {
        loop {
            let r = self.route();
            let i = r.index_of(key);
            let part = &r.parts[i];
            let g = part.inner.read();
            if g.dead {
                continue;
            }
            let e = if forward {
                Self::next_in_part(part, &g, key)
            } else {
                Self::prev_in_part(part, &g, key)
            };
            let beyond = if forward { i + 1 } else { i.wrapping_sub(1) };
            if e.is_some() || beyond >= r.parts.len() {
                return f(e);
            }
            let mut passed = vec![(i, g.version)];
            drop(g);
            // Every key of the parts beyond is beyond `key`.
            f = match Self::read_end(r, beyond, forward, &mut passed, f) {
                Ok(r) => return r,
                Err(f) => f,
            };
        }
    }

    /// Runs `f` on the object at position `i` in key order, as ETS's
    /// `slot/2` on an `ordered_set` (it walks `i` objects: linear time, as
    /// in ETS).
    pub fn slot<R>(&self, i: usize, f: impl FnOnce(&Entry) -> R) -> Slot<R> {
        let gs = self.read_all();
        let len: usize = gs.iter().map(|g| g.len()).sum();
        match gs.iter().flat_map(|g| g.iter()).nth(i) {
            Some(e) => Slot::At(f(e)),
            None if i == len => Slot::End,
            None => Slot::Beyond,
        }
    }

    /// Up to `max` entries (and about [`CHUNK_BYTES`]), in key order, whose
    /// keys are greater than `after` (all keys when `None`); copies, taken
    /// part by part under a read lock.
    pub fn chunk_after(&self, after: Option<&[u8]>, max: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        self.visit_after(after, max, |e| out.push(e.clone()));
        out
    }

    /// Runs `f`, part by part under a read lock, on the entries
    /// [`OrderedTable::chunk_after`] would copy, in order (so a caller can
    /// read them without copying them). Returns how many there were, their
    /// [`Entry::heap_bytes`], and the key of the last one.
    pub fn visit_after(
        &self,
        after: Option<&[u8]>,
        max: usize,
        f: impl FnMut(&Entry),
    ) -> (usize, usize, Option<Box<[u8]>>) {
        self.visit(after, max, true, f)
    }

    /// Up to `max` entries, in descending key order, whose keys are smaller
    /// than `before` (all keys when `None`); copies, taken part by part
    /// under a read lock (each step is a search: O(max log n)).
    pub fn chunk_before(&self, before: Option<&[u8]>, max: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        self.visit_before(before, max, |e| out.push(e.clone()));
        out
    }

    /// [`OrderedTable::visit_after`] of the entries
    /// [`OrderedTable::chunk_before`] would copy, in descending key order.
    pub fn visit_before(
        &self,
        before: Option<&[u8]>,
        max: usize,
        f: impl FnMut(&Entry),
    ) -> (usize, usize, Option<Box<[u8]>>) {
        self.visit(before, max, false, f)
    }

    /// [`OrderedTable::visit_after`] (`forward`) or
    /// [`OrderedTable::visit_before`]: part by part from the one holding
    /// `from`; when a part turns out dead, again from the last key visited.
    fn visit(
        &self,
        from: Option<&[u8]>,
        max: usize,
        forward: bool,
        mut f: impl FnMut(&Entry),
    ) -> (usize, usize, Option<Box<[u8]>>) {
        let mut seen = Visited {
            n: 0,
            bytes: 0,
            last: None,
        };
        'route: loop {
            let r = self.route();
            // (Taken out of `seen` while it is the cursor: put back when
            // nothing more is visited.)
            let resume = seen.last.take();
            let cursor = resume.as_deref().or(from);
            let mut i = match cursor {
                Some(k) => r.index_of(k),
                None if forward => 0,
                None => r.parts.len() - 1,
            };
            let mut cursor = cursor;
            loop {
                let g = r.parts[i].inner.read();
                if g.dead {
                    drop(g);
                    if seen.last.is_none() {
                        seen.last = resume;
                    }
                    continue 'route;
                }
                let done = if forward {
                    match cursor.map(probe) {
                        Some(p) => seen.visit(p.after(&g), max, &mut f),
                        None => seen.visit(g.iter(), max, &mut f),
                    }
                } else {
                    visit_down(&g, cursor, max, &mut seen, &mut f)
                };
                drop(g);
                // Every key of the parts beyond is beyond `cursor`.
                cursor = None;
                let next = if forward { i + 1 } else { i.wrapping_sub(1) };
                if done || next >= r.parts.len() {
                    return (seen.n, seen.bytes, seen.last.or(resume));
                }
                i = next;
            }
        }
    }
}

/// What a walk has visited so far (see [`OrderedTable::visit`]).
struct Visited {
    n: usize,
    /// Their [`Entry::heap_bytes`].
    bytes: usize,
    /// The key of the last one.
    last: Option<Box<[u8]>>,
}

impl Visited {
    /// Runs `f` on `entries` in turn, up to `max` entries visited in all
    /// and about [`CHUNK_BYTES`]; true when the walk is done (the limits
    /// reached), false when `entries` ran out first.
    fn visit<'e>(
        &mut self,
        entries: impl Iterator<Item = &'e Entry>,
        max: usize,
        f: &mut impl FnMut(&Entry),
    ) -> bool {
        let mut last = None;
        let mut entries = entries;
        let done = loop {
            if self.n >= max || self.bytes >= CHUNK_BYTES {
                break true;
            }
            let Some(e) = entries.next() else {
                break false;
            };
            self.bytes += e.heap_bytes();
            self.n += 1;
            f(e);
            last = Some(e);
        };
        if let Some(e) = last {
            self.last = Some(e.key().into());
        }
        done
    }
}

/// [`Visited::visit`] of the entries of a part below `before` (all when
/// `None`), in descending key order.
fn visit_down(
    g: &Inner,
    before: Option<&[u8]>,
    max: usize,
    seen: &mut Visited,
    f: &mut impl FnMut(&Entry),
) -> bool {
    if g.map.is_empty() {
        // Integer keys only: step through the tree's positions.
        let start = match before.map(probe) {
            None => Some(g.ints.last_pos()),
            Some(Search::Int(v)) => Some(g.ints.upper_bound(|k| k.cmp(&v), true)),
            Some(Search::Key(_)) => None,
        };
        if let Some(start) = start {
            let steps = std::iter::successors(start, |&p| g.ints.before(p));
            return seen.visit(steps.map_while(|p| g.ints.at(p).map(|(_, e)| e)), max, f);
        }
    }
    let first = match before {
        Some(k) => probe(k).before(g),
        None => g.last(),
    };
    seen.visit(
        std::iter::successors(first, |e| probe(e.key()).before(g)),
        max,
        f,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryBuf;
    use crate::format::{get_integer, put_float, put_header, put_int, tag};

    pub(super) fn obj(k: f64, is_float: bool, v: i64) -> Entry {
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
    pub(super) fn ik(k: i64) -> Vec<u8> {
        let mut o = Vec::new();
        put_int(&mut o, k);
        o
    }
    pub(super) fn fk(k: f64) -> Vec<u8> {
        let mut o = Vec::new();
        put_float(&mut o, k);
        o
    }

    #[test]
    fn insert_with_makes_the_entry_once_and_replaces_equal_keys() {
        let t = OrderedTable::new();
        let made = std::cell::Cell::new(0);
        // Small integer keys (the integer tree), a float equal to one of
        // them (`==`: the same key, stored as the new object's) and floats.
        for (k, is_float, v) in [
            (1.0, false, 1),
            (2.5, true, 2),
            (1.0, true, 3),
            (2.5, true, 4),
        ] {
            let e = obj(k, is_float, v);
            let key = e.key().to_vec();
            let old = t.insert_with(&key, || {
                made.set(made.get() + 1);
                e
            });
            assert_eq!(old.is_some(), v >= 3, "object {v}");
        }
        assert_eq!(made.get(), 4);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(&ik(1)).map(|e| e.key().to_vec()), Some(fk(1.0)));
        assert!(t.get(&fk(2.5)).is_some());
        // Tuple keys (the general tree): `{1.0}` replaces `{1}` and is
        // stored with its own bytes.
        let tuple_obj = |is_float: bool, v: i64| {
            let mut b = EntryBuf::new();
            put_header(&mut b.out, tag::TUPLE, 2);
            let ks = b.out.len();
            put_header(&mut b.out, tag::TUPLE, 1);
            if is_float {
                put_float(&mut b.out, 1.0);
            } else {
                put_int(&mut b.out, 1);
            }
            let ke = b.out.len();
            put_int(&mut b.out, v);
            b.finish(ks..ke, None)
        };
        let int_key = tuple_obj(false, 0).key().to_vec();
        for (is_float, v) in [(false, 5), (true, 6)] {
            let e = tuple_obj(is_float, v);
            let key = e.key().to_vec();
            let old = t.insert_with(&key, || e);
            assert_eq!(old.is_some(), v == 6, "object {v}");
        }
        assert_eq!(t.len(), 3);
        let stored = t.get(&int_key).expect("{1} == {1.0}");
        assert_eq!(stored.key(), tuple_obj(true, 0).key());
    }

    #[test]
    fn insert_all_if_refused_inserts_nothing() {
        let t = OrderedTable::new();
        let es = || {
            (0..100)
                .map(|i| obj(i as f64, false, i))
                .collect::<Vec<_>>()
        };
        assert!(t.insert_all_if(es(), || false).is_none());
        assert!(!t.insert_new_all_if(es(), || false));
        assert_eq!(t.len(), 0);
        assert_eq!(t.insert_all_if(es(), || true).map(|v| v.len()), Some(0));
        assert!(!t.insert_new_all_if(es(), || true));
        assert_eq!(t.len(), 100);
    }

    #[test]
    fn chunk_before_over_integer_keys_only() {
        let t = OrderedTable::new();
        for k in 1..=100 {
            t.insert(obj(k as f64, false, k));
        }
        let keys = |es: Vec<Entry>| es.iter().map(|e| e.key().to_vec()).collect::<Vec<_>>();
        assert_eq!(keys(t.chunk_before(None, 3)), vec![ik(100), ik(99), ik(98)]);
        assert_eq!(keys(t.chunk_before(Some(&ik(50)), 2)), vec![ik(49), ik(48)]);
        // 50.0 == 50: the same key; 50.5 is no integer (general search).
        assert_eq!(keys(t.chunk_before(Some(&fk(50.0)), 1)), vec![ik(49)]);
        assert_eq!(
            keys(t.chunk_before(Some(&fk(50.5)), 2)),
            vec![ik(50), ik(49)]
        );
        assert!(t.chunk_before(Some(&ik(1)), 5).is_empty());
        assert_eq!(t.chunk_before(Some(&ik(1000)), 500).len(), 100);
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
        assert_eq!(t.memory_bytes(), OrderedTable::new().memory_bytes());
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
        let back: Vec<Vec<u8>> = t
            .chunk_before(Some(&ik(7)), 3)
            .iter()
            .map(|e| e.key().to_vec())
            .collect();
        assert_eq!(back, vec![ik(5), fk(4.5), ik(3)]);
        assert_eq!(t.chunk_before(Some(&fk(0.5)), 3).len(), 0);
        assert_eq!(t.chunk_before(None, 2)[1].key(), &ik(7)[..]);
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

    /// An object `{key}` with an encoded key.
    pub(super) fn keyed(key: &[u8]) -> Entry {
        let mut b = EntryBuf::new();
        put_header(&mut b.out, tag::TUPLE, 1);
        let ks = b.out.len();
        b.out.extend_from_slice(key);
        let ke = b.out.len();
        b.finish(ks..ke, None)
    }

    #[test]
    fn integer_keys_interleave_with_others() {
        use crate::format::{put_bytes, put_integer, put_word};
        let mut common: Vec<Vec<u8>> = Vec::new();
        for v in [-3i64, 0, 1, 2, 7, 8, i64::MAX, i64::MIN, 1 << 40] {
            common.push(ik(v));
        }
        for w in [3u64, 9] {
            let mut o = Vec::new();
            put_word(&mut o, tag::WORD, w);
            common.push(o);
        }
        let mut o = Vec::new();
        put_bytes(&mut o, tag::BINARY, b"x");
        common.push(o);
        let mut o = Vec::new();
        put_header(&mut o, tag::TUPLE, 1);
        put_int(&mut o, 1);
        common.push(o);
        // A reference (external format): a key without a sort prefix.
        let mut o = Vec::new();
        put_bytes(&mut o, tag::EXT, &[131, 90, 0, 3]);
        common.push(o);
        // Floats and big integers apart (the test host cannot order them).
        let mut floats = common.clone();
        floats.retain(|k| *k != ik(8));
        for f in [-3.5, 0.5, 1.5, 2.25, 1e30, -1e30, 9.3e18, -9.3e18, 8.0] {
            floats.push(fk(f));
        }
        let mut bigs = common;
        for v in [1i128 << 70, -(1 << 70), (1 << 63) + 5, -(1 << 63) - 5] {
            let mut o = Vec::new();
            put_integer(&mut o, v);
            bigs.push(o);
        }
        check_mixed(&bigs, &[ik(3), ik(-100), ik(9)]);
        let probes = [fk(1.25), ik(3), fk(7.5), fk(-1e20), fk(1e20), ik(-100)];
        check_mixed(&floats, &probes);
        let t = OrderedTable::new();
        for k in &floats {
            t.insert(keyed(k));
        }
        // 8.0 == 8: the float key is found by the integer and replaced.
        assert!(t.get(&ik(8)).is_some());
        let mem = t.memory_bytes();
        let old = t.insert(keyed(&ik(8))).unwrap();
        assert_eq!(old.key(), &fk(8.0)[..]);
        assert_eq!(t.memory_bytes(), mem);
        assert!(t.remove(&fk(8.0)).is_some());
        assert!(!t.contains(&ik(8)));
        assert_eq!(t.take_all().len(), floats.len() - 1);
        assert_eq!(t.memory_bytes(), OrderedTable::new().memory_bytes());
    }

    fn check_mixed(keys: &[Vec<u8>], probes: &[Vec<u8>]) {
        // In one part, and divided into 2, 4, 8 and 16 parts (as far as
        // the keys go).
        for splits in 0..5 {
            check_mixed_parts(keys, probes, splits);
        }
    }

    fn check_mixed_parts(keys: &[Vec<u8>], probes: &[Vec<u8>], splits: usize) {
        let mut sorted = keys.to_vec();
        sorted.sort_by(|a, b| compare(a, b));
        let t = OrderedTable::new();
        for k in keys {
            assert!(t.insert(keyed(k)).is_none());
        }
        for _ in 0..splits {
            t.split_parts();
        }
        assert_eq!(t.parts(), (1 << splits).min(keys.len()));
        assert_eq!(t.len(), keys.len());
        for (i, k) in sorted.iter().enumerate() {
            let at = t.slot(i, |e| e.key().to_vec());
            assert!(matches!(at, Slot::At(ref got) if got == k));
        }
        assert!(matches!(t.slot(keys.len(), |_| ()), Slot::End));
        for max in [1, 2, 5] {
            // Chunked walks both ways, as select/3 continuations go.
            let walked = chunked_walk(&t, max, true);
            assert_eq!(walked, sorted);
            let walked = chunked_walk(&t, max, false);
            assert_eq!(walked, sorted);
        }
        let all: Vec<Vec<u8>> = t
            .chunk_after(None, 1000)
            .iter()
            .map(|e| e.key().to_vec())
            .collect();
        assert_eq!(all, sorted);
        t.read_first(|e| assert_eq!(e.unwrap().key(), &sorted[0][..]));
        t.read_last(|e| assert_eq!(e.unwrap().key(), &sorted[sorted.len() - 1][..]));
        for (i, k) in sorted.iter().enumerate() {
            t.read_next(k, |e| {
                assert_eq!(e.map(|e| e.key()), sorted.get(i + 1).map(|k| &k[..]))
            });
            t.read_prev(k, |e| {
                assert_eq!(e.map(|e| e.key()), i.checked_sub(1).map(|j| &sorted[j][..]))
            });
            let rest: Vec<Vec<u8>> = t
                .chunk_after(Some(k), 3)
                .iter()
                .map(|e| e.key().to_vec())
                .collect();
            assert_eq!(rest[..], sorted[i + 1..(i + 4).min(sorted.len())]);
            let back: Vec<Vec<u8>> = t
                .chunk_before(Some(k), 3)
                .iter()
                .map(|e| e.key().to_vec())
                .collect();
            let want: Vec<Vec<u8>> = sorted[i.saturating_sub(3)..i]
                .iter()
                .rev()
                .cloned()
                .collect();
            assert_eq!(back, want);
            assert!(t.contains(k));
        }
        let all_back: Vec<Vec<u8>> = t
            .chunk_before(None, 1000)
            .iter()
            .map(|e| e.key().to_vec())
            .collect();
        assert_eq!(all_back, sorted.iter().rev().cloned().collect::<Vec<_>>());
        // Probes absent from the table.
        for probe in probes {
            let want = sorted
                .iter()
                .find(|k| compare(k, probe) == Ordering::Greater);
            t.read_next(probe, |e| {
                assert_eq!(e.map(|e| e.key()), want.map(|k| &k[..]))
            });
            let want = sorted
                .iter()
                .rev()
                .find(|k| compare(k, probe) == Ordering::Less);
            t.read_prev(probe, |e| {
                assert_eq!(e.map(|e| e.key()), want.map(|k| &k[..]))
            });
        }
        // A whole walk.
        let mut walked = Vec::new();
        let mut k = t.read_first(|e| e.map(|e| e.key().to_vec()));
        while let Some(key) = k {
            k = t.read_next(&key, |e| e.map(|e| e.key().to_vec()));
            walked.push(key);
        }
        assert_eq!(walked, sorted);
    }

    /// The keys of a walk in chunks of `max` (as select/3 continuations
    /// go), up or down, in ascending order.
    fn chunked_walk(t: &OrderedTable, max: usize, up: bool) -> Vec<Vec<u8>> {
        let mut walked = Vec::new();
        let mut from: Option<Box<[u8]>> = None;
        loop {
            let mut push = |e: &Entry| walked.push(e.key().to_vec());
            let (n, _, last) = if up {
                t.visit_after(from.as_deref(), max, &mut push)
            } else {
                t.visit_before(from.as_deref(), max, &mut push)
            };
            assert!(n <= max);
            if n < max {
                break;
            }
            from = last;
        }
        if !up {
            walked.reverse();
        }
        walked
    }

    /// Keys an ordered walk visited, checked ascending.
    fn ascending(keys: &[Vec<u8>]) {
        for w in keys.windows(2) {
            assert_eq!(compare(&w[0], &w[1]), Ordering::Less);
        }
    }

    #[test]
    fn walks_across_parts_split_under_them() {
        // Keys 0, 2, 4, ... stay; writers insert and remove the others (odd
        // integers, and floats k + 0.5) while parts are split under walks
        // of every kind; every walk must be ascending and see every key
        // that stays.
        let t = OrderedTable::with_concurrency(true);
        let stable: Vec<Vec<u8>> = (0..2000).step_by(2).map(ik).collect();
        for k in &stable {
            t.insert(keyed(k));
        }
        let has_stable = |walked: &[Vec<u8>]| {
            let set: std::collections::HashSet<&Vec<u8>> = walked.iter().collect();
            stable.iter().all(|k| set.contains(k))
        };
        let present = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for w in 0..2u64 {
                let t = &t;
                let present = &present;
                s.spawn(move || {
                    let mut mine = std::collections::BTreeSet::new();
                    let mut x = w + 1;
                    for _ in 0..20_000 {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let v = ((x >> 33) % 1000) as i64 * 4 + 1 + 2 * w as i64;
                        let k = if x & 1 == 0 {
                            ik(v)
                        } else {
                            fk(v as f64 + 0.5)
                        };
                        if x & 2 == 0 {
                            t.insert(keyed(&k));
                            mine.insert(k);
                        } else {
                            t.remove(&k);
                            mine.remove(&k);
                        }
                    }
                    present.lock().unwrap().extend(mine);
                });
            }
            s.spawn(|| {
                for _ in 0..5 {
                    t.split_parts();
                    std::thread::yield_now();
                }
            });
            for round in 0..30 {
                let mut walked = Vec::new();
                let mut k = t.read_first(|e| e.map(|e| e.key().to_vec()));
                while let Some(key) = k {
                    k = t.read_next(&key, |e| e.map(|e| e.key().to_vec()));
                    walked.push(key);
                }
                ascending(&walked);
                assert!(has_stable(&walked));
                let mut walked = Vec::new();
                let mut k = t.read_last(|e| e.map(|e| e.key().to_vec()));
                while let Some(key) = k {
                    k = t.read_prev(&key, |e| e.map(|e| e.key().to_vec()));
                    walked.push(key);
                }
                walked.reverse();
                ascending(&walked);
                assert!(has_stable(&walked));
                let max = 1 + round % 9;
                let walked = chunked_walk(&t, max, true);
                ascending(&walked);
                assert!(has_stable(&walked));
                let walked = chunked_walk(&t, max, false);
                ascending(&walked);
                assert!(has_stable(&walked));
            }
        });
        assert!(t.parts() > 1);
        let present = present.into_inner().unwrap();
        assert_eq!(t.len(), stable.len() + present.len());
        for k in stable.iter().chain(&present) {
            assert!(t.contains(k));
        }
        let mut all: Vec<Vec<u8>> = Vec::new();
        t.visit_after(None, usize::MAX, |e| all.push(e.key().to_vec()));
        ascending(&all);
        assert_eq!(all.len(), t.len());
        assert_eq!(t.take_all().len(), all.len());
        assert!(t.is_empty());
    }

    /// Splits a one-part table of `n` (at least 3 x SPLIT_MAX) objects
    /// from its greatest keys, then its smallest: SPLIT_MAX move each time.
    fn peel_both_ends(t: &OrderedTable, n: usize) {
        let part = t.route().parts[0].clone();
        t.split(&part, false);
        let sizes: Vec<usize> = t.read_all().iter().map(|g| g.len()).collect();
        assert_eq!(sizes, vec![n - SPLIT_MAX, SPLIT_MAX]);
        let part = t.route().parts[0].clone();
        t.split(&part, true);
        let sizes: Vec<usize> = t.read_all().iter().map(|g| g.len()).collect();
        assert_eq!(sizes, vec![SPLIT_MAX, n - 2 * SPLIT_MAX, SPLIT_MAX]);
    }

    #[test]
    fn a_big_part_of_integer_keys_splits_by_peeling() {
        // A part far bigger than a split may move gives up its greatest
        // keys, at most SPLIT_MAX at a time; the table stays whole.
        let t = OrderedTable::with_concurrency(true);
        let n = 3 * SPLIT_MAX as i64 + 123;
        for v in 0..n {
            t.insert(keyed(&ik(v)));
        }
        peel_both_ends(&t, n as usize);
        assert_eq!(t.route().lows[0].bytes[..], ik(SPLIT_MAX as i64)[..]);
        for _ in 0..3 {
            t.split_parts();
        }
        assert!(t.read_all().iter().all(|g| g.len() <= n as usize / 2 + 1));
        assert_eq!(t.len(), n as usize);
        let all = chunked_walk(&t, 1000, true);
        assert_eq!(all, (0..n).map(ik).collect::<Vec<_>>());
        for v in [
            0,
            1,
            SPLIT_MAX as i64,
            n - SPLIT_MAX as i64 - 1,
            n - SPLIT_MAX as i64,
            n - 1,
        ] {
            assert!(t.contains(&ik(v)));
            t.read_next(&ik(v), |e| {
                assert_eq!(e.map(|e| e.key().to_vec()), (v + 1 < n).then(|| ik(v + 1)))
            });
        }
    }

    #[test]
    fn contention_on_the_smallest_keys_peels_them_off() {
        // Writers contending for keys 0..1000 of a 400,000-key part: the
        // splits give up the end nearer them, so a few splits put them in a
        // small part (giving up the greatest keys would take 24).
        let t = OrderedTable::with_concurrency(true);
        let n = 400_000i64;
        for v in 0..n {
            t.insert(keyed(&ik(v)));
        }
        for _ in 0..3 {
            let r = t.route();
            let i = r.index(&Search::Int(500));
            let part = r.parts[i].clone();
            let front = part.inner.read().peel_front(&Search::Int(500));
            t.split(&part, front);
        }
        let r = t.route();
        let hot = r.parts[r.index(&Search::Int(500))].inner.read().len();
        assert!(hot <= SPLIT_MAX, "the part of key 500 holds {hot} keys");
        assert_eq!(t.len(), n as usize);
        assert_eq!(
            chunked_walk(&t, 5000, true),
            (0..n).map(ik).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_big_part_of_other_keys_splits_by_peeling() {
        // Floats k + 0.5 and integers interleaved (both trees): the
        // SPLIT_MAX greatest keys of both go, in term order.
        let t = OrderedTable::with_concurrency(true);
        let n = 3 * SPLIT_MAX as i64 + 7;
        let key = |v: i64| {
            if v % 3 == 0 {
                ik(v)
            } else {
                fk(v as f64 + 0.5)
            }
        };
        for v in 0..n {
            t.insert(keyed(&key(v)));
        }
        let part = t.route().parts[0].clone();
        // Which end a split for a hot key gives up.
        let g = part.inner.read();
        assert!(g.peel_front(&probe(&key(1))) && g.peel_front(&probe(&key(SPLIT_MAX as i64 - 2))));
        assert!(
            !g.peel_front(&probe(&key(SPLIT_MAX as i64 + 5))) && !g.peel_front(&probe(&key(n - 1)))
        );
        drop(g);
        peel_both_ends(&t, n as usize);
        t.split_parts();
        t.split_parts();
        assert_eq!(t.len(), n as usize);
        let mut want: Vec<Vec<u8>> = (0..n).map(key).collect();
        want.sort_by(|a, b| compare(a, b));
        assert_eq!(chunked_walk(&t, 997, true), want);
        assert_eq!(chunked_walk(&t, 997, false), want);
        for k in &want {
            assert!(t.contains(k));
        }
    }

    #[test]
    fn contention_splits_parts() {
        // Writers that find the lock busy split the part they write
        // (write_concurrency); without it a table stays in one part.
        for adaptive in [true, false] {
            let t = OrderedTable::with_concurrency(adaptive);
            for v in 0..1000 {
                t.insert(keyed(&ik(v)));
            }
            // Writers that find the part's lock held (here by a reader):
            // 1000 uncontended writes took the count to its floor, -1000;
            // each contended one adds 250 (9 are needed; a writer thread
            // that starts late finds the lock free).
            for v in 0..40 {
                let hold = t.route().parts[0].inner.read();
                std::thread::scope(|s| {
                    let writer = s.spawn(|| t.insert(keyed(&ik(v))));
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    drop(hold);
                    assert!(writer.join().unwrap().is_some());
                });
                if t.parts() > 1 {
                    break;
                }
            }
            assert_eq!(t.parts() > 1, adaptive);
            assert_eq!(t.len(), 1000);
        }
    }

    #[test]
    fn key_runs_of_general_keys_see_every_change() {
        use crate::format::put_bytes;
        // Tuple keys {1, i} (and some 3 KB binary keys, too big to copy
        // many): a `next/2` walk served from copied keys sees what changed
        // since they were copied.
        let tk = |i: i64| {
            let mut o = Vec::new();
            put_header(&mut o, tag::TUPLE, 2);
            put_int(&mut o, 1);
            put_int(&mut o, i);
            o
        };
        let bk = |i: u8| {
            let mut o = Vec::new();
            put_bytes(&mut o, tag::BINARY, &[i; 3000]);
            o
        };
        for splits in 0..3 {
            let t = OrderedTable::with_concurrency(true);
            for i in (0..300).step_by(2) {
                t.insert(keyed(&tk(i)));
            }
            for i in 0..5 {
                t.insert(keyed(&bk(i)));
            }
            for _ in 0..splits {
                t.split_parts();
            }
            let next = |k: &[u8]| {
                t.read_next_key(k, |n| match n {
                    Next::End => None,
                    Next::Entry(e) => Some(e.key().to_vec()),
                    Next::Key(b) => Some(b.to_vec()),
                })
            };
            let mut want: Vec<Vec<u8>> =
                (0..300).step_by(2).map(tk).chain((0..5).map(bk)).collect();
            want.sort_by(|a, b| compare(a, b));
            let mut walked = vec![t.read_first(|e| e.unwrap().key().to_vec())];
            while let Some(k) = next(walked.last().unwrap()) {
                walked.push(k);
            }
            assert_eq!(walked, want);
            // Mid-walk: the next key is copied; a key inserted before it
            // and one removed after it are seen.
            assert_eq!(next(&tk(10)), Some(tk(12)));
            t.insert(keyed(&tk(13)));
            assert_eq!(next(&tk(12)), Some(tk(13)));
            assert_eq!(next(&tk(13)), Some(tk(14)));
            t.remove(&tk(16));
            assert_eq!(next(&tk(14)), Some(tk(18)));
            // Same-key rewrite (the version changes, the keys do not).
            t.insert(keyed(&tk(20)));
            assert_eq!(next(&tk(18)), Some(tk(20)));
            // A key not in the table: searched.
            assert_eq!(next(&tk(21)), Some(tk(22)));
            assert_eq!(next(&tk(298)), Some(bk(0)));
            assert_eq!(next(&bk(4)), None);
        }
    }

    #[test]
    fn key_walks_see_every_change() {
        let t = OrderedTable::new();
        for k in 0..100 {
            t.insert(obj(k as f64 * 2.0, k % 3 == 0, k));
        }
        let next = |k: &[u8]| {
            t.read_next_key(k, |n| match n {
                Next::End => None,
                Next::Entry(e) => Some(e.key().to_vec()),
                Next::Key(b) => Some(b.to_vec()),
            })
        };
        let first = t.read_first(|e| e.unwrap().key().to_vec());
        assert_eq!(first, fk(0.0));
        // A whole walk (past the copied keys), floats and integers.
        let mut k = first.clone();
        let mut n = 1;
        while let Some(key) = next(&k) {
            let v = match probe(&key) {
                Search::Int(v) => v,
                Search::Key(_) => panic!("not an integer key"),
            };
            assert_eq!(
                key,
                if (v / 2) % 3 == 0 {
                    fk(v as f64)
                } else {
                    ik(v)
                }
            );
            k = key;
            n += 1;
        }
        assert_eq!(n, 100);
        // Changes in the middle of a walk.
        assert_eq!(next(&first), Some(ik(2)));
        t.insert(obj(3.0, false, 0));
        assert_eq!(next(&ik(2)), Some(ik(3)));
        t.remove(&ik(4));
        assert_eq!(next(&ik(3)), Some(fk(6.0)));
        // Another key kind in the table: merged walks.
        t.insert(keyed(&{
            let mut o = Vec::new();
            put_float(&mut o, 6.5);
            o
        }));
        assert_eq!(next(&fk(6.0)), Some(fk(6.5)));
        assert_eq!(next(&fk(6.5)), Some(ik(8)));
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
