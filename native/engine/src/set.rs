//! A concurrent hash table of [`Entry`]s with set semantics: at most one
//! entry per key, keys compared as canonical bytes.
//!
//! The table is split into [`SHARDS`] independently locked shards so that
//! readers and writers on different keys rarely meet. Every operation on one
//! key takes one shard lock for a bounded, short time; operations on many
//! keys lock the shards they need in ascending order (no deadlock), and
//! whole-table work (clearing, snapshots) is done shard by shard so no lock
//! is held for long.

use crate::entry::{Entry, EntryImage};
use crate::fixation::{self, Fixable, Graves, Released};
use crate::segmap::SegMap;
use hashbrown::HashTable;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Number of shards of a table (a power of two).
pub const SHARDS: usize = 64;

/// Fixed seed so that hashes are stable for the life of the process.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Hashes canonical key bytes.
///
/// Nine-byte keys (a tag and an 8-byte word: atoms, small integers) hash
/// as [`hash_word`] of their parts, so a host holding such a key in
/// registers can hash it without reading it back from memory.
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    if let Ok(b) = <&[u8; 9]>::try_from(key) {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[1..]);
        return hash_word(b[0], u64::from_le_bytes(w));
    }
    foldhash::fast::FixedState::with_seed(SEED).hash_one(key)
}

/// The hash of the nine-byte key `[tag, word as 8 little-endian bytes]`.
#[inline]
pub fn hash_word(tag: u8, word: u64) -> u64 {
    foldhash::fast::FixedState::with_seed(SEED).hash_one((tag, word))
}

/// A key to look up: canonical bytes (or, for nine-byte keys, their parts)
/// and their hash.
#[derive(Clone, Copy, Debug)]
pub struct Key<'a> {
    repr: KeyRepr<'a>,
    hash: u64,
}

#[derive(Clone, Copy, Debug)]
enum KeyRepr<'a> {
    Bytes(&'a [u8]),
    /// `[tag, word as 8 little-endian bytes]`, kept in registers.
    Word(u8, u64),
}

impl<'a> Key<'a> {
    /// Hashes `bytes` (a canonical key encoding).
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Self {
        Key {
            repr: KeyRepr::Bytes(bytes),
            hash: hash_key(bytes),
        }
    }

    /// The nine-byte key `[tag, word as 8 little-endian bytes]` (an atom or
    /// a small integer), given by its parts: same hash and matches as
    /// [`Key::new`] of those bytes, but nothing is read back from memory.
    #[inline]
    pub fn word(tag: u8, word: u64) -> Key<'static> {
        Key {
            repr: KeyRepr::Word(tag, word),
            hash: hash_word(tag, word),
        }
    }

    /// The key's hash.
    #[inline]
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// True when `stored` (an entry's key bytes) is this key.
    #[inline]
    pub fn matches(&self, stored: &[u8]) -> bool {
        match self.repr {
            KeyRepr::Bytes(b) => stored == b,
            KeyRepr::Word(t, w) => match <&[u8; 9]>::try_from(stored) {
                Ok(s) => {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(&s[1..]);
                    s[0] == t && u64::from_le_bytes(word) == w
                }
                Err(_) => false,
            },
        }
    }
}

/// What an [`SetTable::update`] closure decides to do with the entry.
pub enum Change {
    /// Leave the table as it is.
    Keep,
    /// Store this entry under the key (insert or replace).
    Put(Entry),
    /// Remove the entry under the key.
    Remove,
}

/// A value alone on its cache line(s).
#[repr(align(64))]
pub(crate) struct Padded<T>(pub(crate) T);

#[derive(Default)]
struct Shard {
    map: SegMap<Entry>,
    /// Heap bytes held by the entries of this shard.
    heap: usize,
    /// While the table is fixed: where removed keys were (see
    /// [`crate::fixation`]).
    graves: Option<Box<Graves<Entry>>>,
}

impl Shard {
    #[inline]
    fn find(&self, key: &Key) -> Option<&Entry> {
        self.map.find(key.hash, |e| key.matches(e.key()))
    }

    fn put(&mut self, entry: Entry) -> Option<Entry> {
        let hash = hash_key(entry.key());
        self.put_hashed(hash, entry)
    }

    fn put_hashed(&mut self, hash: u64, entry: Entry) -> Option<Entry> {
        self.heap += entry.heap_bytes();
        let fixed = self.graves.is_some();
        let old = self.map.upsert(
            hash,
            entry,
            |e, new| e.key() == new.key(),
            |e| hash_key(e.key()),
            fixed,
        );
        if let Some(old) = &old {
            self.heap -= old.heap_bytes();
        }
        old
    }

    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let (e, at) = self.map.remove(key.hash, |e| key.matches(e.key()))?;
        self.heap -= e.heap_bytes();
        match &mut self.graves {
            // Fixed: remember the place, keep the layout.
            Some(g) => g.bury(key.hash, e.key(), at),
            None => self.map.shrink_sparse(|e| hash_key(e.key())),
        }
        Some(e)
    }

    fn bytes(&self) -> usize {
        // Slots (a fat pointer each) plus one control byte per bucket.
        self.heap + self.map.allocated_buckets() * (std::mem::size_of::<Entry>() + 1)
    }
}

/// The occupied buckets of `map` from bucket index `from` on, in index
/// order: the traversal order of a shard.
pub(crate) fn buckets_from<T>(map: &SegMap<T>, from: usize) -> impl Iterator<Item = &T> {
    (from..map.num_buckets()).filter_map(|i| map.get_bucket(i))
}

/// Bytes of entries a traversal copies in one go at most (past the first
/// entry): copies of big objects stop early, so that a chunk of a walk
/// holds a lock and a scheduler for about a millisecond at most, whatever
/// the objects' sizes.
pub const CHUNK_BYTES: usize = 4 << 20;

/// Copies the entries of `map`'s occupied buckets from bucket `from` on
/// (each bucket's through `push`) until at least `max` are copied, or
/// [`CHUNK_BYTES`]. Returns them and the bucket to continue from, or
/// `None` when `map` is exhausted.
pub(crate) fn copy_buckets<T>(
    map: &SegMap<T>,
    from: usize,
    max: usize,
    push: impl Fn(&T, &mut Vec<Entry>),
) -> (Vec<Entry>, Option<usize>) {
    let mut out = Vec::with_capacity(max.min(map.len()));
    let mut bytes = 0;
    for i in from..map.num_buckets() {
        if out.len() >= max || bytes >= CHUNK_BYTES {
            return (out, Some(i));
        }
        if let Some(item) = map.get_bucket(i) {
            let before = out.len();
            push(item, &mut out);
            bytes += out[before..].iter().map(Entry::heap_bytes).sum::<usize>();
        }
    }
    (out, None)
}

/// Runs `f` on the first item at or after bucket `at` of shard `shard`
/// (whose read guard the caller may already hold), then in the following
/// shards; `None` past the last shard.
pub(crate) fn read_from<'t, S, T, R>(
    shards: &'t [Padded<RwLock<S>>],
    shard: usize,
    held: Option<(RwLockReadGuard<'t, S>, usize)>,
    map: impl Fn(&S) -> &SegMap<T>,
    f: impl FnOnce(Option<&T>) -> R,
) -> R {
    let mut held = held;
    for (i, s) in shards.iter().enumerate().skip(shard) {
        let (g, from) = match held.take() {
            Some((g, at)) if i == shard => (g, at),
            _ => (s.0.read(), 0),
        };
        let found = buckets_from(map(&g), from).next();
        if found.is_some() {
            return f(found);
        }
    }
    f(None)
}

/// What `slot/2` finds at an index.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot<R> {
    /// The slot exists; what the caller made of its contents.
    At(R),
    /// The index is the number of slots: the end of a slot-by-slot walk.
    End,
    /// The index is past the end (ETS raises `badarg`).
    Beyond,
}

/// Slot `i` of a hash table, as ETS's `slot/2` numbers them: the buckets of
/// every shard, shard after shard (an empty bucket is an empty slot). `f`
/// gets the bucket's item, under the shard's read lock. The numbering
/// changes when a shard grows or shrinks, as ETS's does.
pub(crate) fn slot_in<S, T, R>(
    shards: &[Padded<RwLock<S>>],
    map: impl Fn(&S) -> &SegMap<T>,
    mut i: usize,
    f: impl FnOnce(Option<&T>) -> R,
) -> Slot<R> {
    // The main tables shard after shard, then the overflow tables of a
    // fixed table (see `segmap`) in the order they were made: a fixed
    // table's main tables keep their size and new overflow tables come
    // last, so the numbering of a fixed table only grows at the end.
    for s in shards {
        let g = s.0.read();
        let m = map(&g);
        if i < m.main_buckets() {
            return Slot::At(f(m.main_bucket(i)));
        }
        i -= m.main_buckets();
    }
    let mut overflow: Vec<(u64, usize, usize)> = Vec::new();
    for (k, s) in shards.iter().enumerate() {
        let g = s.0.read();
        overflow.extend(map(&g).overflow().map(|(seq, n)| (seq, k, n)));
    }
    overflow.sort_unstable();
    for (seq, k, n) in overflow {
        if i < n {
            let g = shards[k].0.read();
            return Slot::At(f(map(&g).overflow_bucket(seq, i)));
        }
        i -= n;
    }
    if i == 0 {
        Slot::End
    } else {
        Slot::Beyond
    }
}

/// How a hash table's objects spread over its buckets (slots): what ETS's
/// `info(tab, :stats)` reports of its hash chains. A bucket here holds one
/// key (a set's object, or a bag key's objects): its "chain" is that.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ChainStats {
    /// Buckets of all shards (the slots of `slot/2`).
    pub buckets: usize,
    /// Objects.
    pub objects: usize,
    /// Sum of the squared chain lengths.
    pub squares: u64,
    /// Shortest chain.
    pub min: usize,
    /// Longest chain.
    pub max: usize,
    /// Removed keys remembered while the table is fixed.
    pub kept: usize,
    /// Locks (shards).
    pub locks: usize,
}

impl ChainStats {
    /// Mean chain length.
    pub fn mean(&self) -> f64 {
        if self.buckets == 0 {
            0.0
        } else {
            self.objects as f64 / self.buckets as f64
        }
    }

    /// Standard deviation of the chain lengths.
    pub fn std_dev(&self) -> f64 {
        if self.buckets == 0 {
            return 0.0;
        }
        let mean = self.mean();
        (self.squares as f64 / self.buckets as f64 - mean * mean)
            .max(0.0)
            .sqrt()
    }

    /// The standard deviation a uniform random spread would give.
    pub fn expected_std_dev(&self) -> f64 {
        if self.buckets == 0 {
            return 0.0;
        }
        (self.mean() * (1.0 - 1.0 / self.buckets as f64)).sqrt()
    }
}

/// [`ChainStats`] of hash shards: `chain` gives a bucket item's object
/// count, `kept` a shard's remembered removals. Visits every bucket, one
/// shard read-locked at a time.
pub(crate) fn chain_stats<S, T>(
    shards: &[Padded<RwLock<S>>],
    map: impl Fn(&S) -> &SegMap<T>,
    chain: impl Fn(&T) -> usize,
    kept: impl Fn(&S) -> usize,
) -> ChainStats {
    let mut st = ChainStats {
        min: usize::MAX,
        locks: shards.len(),
        ..ChainStats::default()
    };
    for s in shards {
        let g = s.0.read();
        let m = map(&g);
        for i in 0..m.num_buckets() {
            let n = m.get_bucket(i).map_or(0, &chain);
            st.buckets += 1;
            st.objects += n;
            st.squares += (n as u64) * (n as u64);
            st.min = st.min.min(n);
            st.max = st.max.max(n);
        }
        st.kept += kept(&g);
    }
    if st.buckets == 0 {
        st.min = 0;
    }
    st
}

/// The contents of a table taken out by [`SetTable::take_all`]; dropping it
/// frees every entry (do that off the caller's scheduler for big tables).
pub struct Contents(Vec<SegMap<Entry>>);

impl Contents {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.iter().map(|m| m.len()).sum()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a shard reports to its [`ShardStats`].
pub(crate) trait Counted {
    /// Number of objects.
    fn count(&self) -> usize;
    /// Bytes of memory held.
    fn bytes(&self) -> usize;
    /// Housekeeping due since the table was unfixed, about `budget` items
    /// (see `SegMap::tidy`; `unfixing`: at the unfix itself, which does
    /// only what needs no table growth or big rehash).
    fn tidy(&mut self, budget: usize, unfixing: bool);
}

/// Items a shard's housekeeping moves or rehashes as a write releases its
/// lock (see `SegMap::tidy`): a few microseconds.
pub(crate) const TIDY: usize = 32;

/// The same as a table is unfixed, per shard (moves into main tables
/// with room, shrinks of small ones): about a millisecond for the whole
/// table at most.
const UNFIX_TIDY: usize = 256;

/// A shard's object count and memory as of its last write, readable
/// without its lock (so that `info(tab, :size)` does not lock every shard).
#[derive(Default)]
pub(crate) struct ShardStats {
    count: AtomicUsize,
    bytes: AtomicUsize,
}

/// Largest shard (in buckets) shrunk after removals. A shrink visits every
/// bucket and rehashes the remaining items (a set reads each entry back),
/// under the shard's lock: bigger shards are left as they are so that no
/// removal holds a scheduler for long (a table that held millions of
/// objects keeps its slots until `delete_all_objects/1` or `delete/1`).
const SHRINK_MAX: usize = 1 << 15;

/// Gives memory back once removals left `map` at most 1/8 full: moves the
/// remaining items into a table for twice their number. `hash` gives an
/// item's hash. Traversals, which visit every bucket, speed up with it.
#[inline]
pub(crate) fn shrink_sparse<T>(map: &mut HashTable<T>, hash: impl Fn(&T) -> u64) {
    if shrinkable(map) {
        map.shrink_to(map.len() * 2, hash);
    }
}

/// True when [`shrink_sparse`] would shrink `map`. Its capacity is counted
/// from its buckets (hashbrown's `capacity()` shrinks as removals leave
/// tombstones, which would hide a sparse table).
#[inline]
pub(crate) fn shrinkable<T>(map: &HashTable<T>) -> bool {
    let cap = map.num_buckets() / 8 * 7;
    cap > 64 && map.len() * 8 < cap && cap <= SHRINK_MAX
}

/// The shard of a key's hash. hashbrown uses the low bits for the bucket
/// and the top 7 for its control bytes: the shard comes from bits in
/// between.
#[inline]
pub(crate) fn shard_index(hash: u64) -> usize {
    ((hash >> 32) as usize) & (SHARDS - 1)
}

/// The [`SHARDS`] locked shards of a hash table (set or bag) with their
/// [`ShardStats`]. Derefs to the shards (read them with `.0.read()`); write
/// them only through [`Sharded::write`], which keeps the stats current.
pub(crate) struct Sharded<S> {
    shards: Box<[Padded<RwLock<S>>]>,
    /// One per shard, each on its own cache line (apart from the shard's
    /// lock, which readers take: these lines are only written by writers).
    stats: Box<[Padded<ShardStats>]>,
}

impl<S: Counted + Default> Sharded<S> {
    /// Empty shards.
    pub(crate) fn new() -> Self {
        Sharded {
            shards: (0..SHARDS)
                .map(|_| Padded(RwLock::new(S::default())))
                .collect(),
            stats: (0..SHARDS).map(|_| Padded(ShardStats::default())).collect(),
        }
    }
}

impl<S: Counted> Sharded<S> {
    /// Write-locks shard `i` (its stats are published on release).
    #[inline]
    pub(crate) fn write(&self, i: usize) -> ShardWrite<'_, S> {
        ShardWrite {
            guard: crate::lock::write(&self.shards[i].0),
            stats: &self.stats[i].0,
            tidy: true,
        }
    }

    /// `f` of every shard, write-locked one after the other.
    /// (Their housekeeping is left to `f` and to the shards' next writes:
    /// 64 shards' worth of it would not be short.)
    pub(crate) fn each_mut<T>(&self, mut f: impl FnMut(&mut S) -> T) -> Vec<T> {
        (0..self.shards.len())
            .map(|i| {
                let mut w = self.write(i);
                w.tidy = false;
                f(&mut w)
            })
            .collect()
    }

    /// Objects in all shards, as of each shard's last write (no lock).
    pub(crate) fn count(&self) -> usize {
        self.stats
            .iter()
            .map(|s| s.0.count.load(Ordering::Relaxed))
            .sum()
    }

    /// Bytes held: the shards and their stats, and what each shard held at
    /// its last write (no lock).
    pub(crate) fn bytes(&self) -> usize {
        self.shards.len()
            * (std::mem::size_of::<Padded<RwLock<S>>>() + std::mem::size_of::<Padded<ShardStats>>())
            + self
                .stats
                .iter()
                .map(|s| s.0.bytes.load(Ordering::Relaxed))
                .sum::<usize>()
    }
}

impl<S: Counted + Fixable> Sharded<S> {
    /// Fixes or unfixes every shard (see [`crate::fixation`]); unfixing
    /// returns what the shards kept.
    pub(crate) fn set_fixed(&self, fixed: bool) -> Released {
        let mut kept = Vec::new();
        let mut untidy = false;
        self.each_mut(|s| {
            fixation::set_fixed(s, fixed, &mut kept);
            if !fixed {
                s.tidy(UNFIX_TIDY, true);
                untidy |= s.map().is_untidy();
            }
        });
        Released { kept, untidy }
    }

    /// All the housekeeping due since the table was unfixed, shard by
    /// shard (moves, growths, shrinks: call it off the schedulers).
    pub(crate) fn tidy_all(&self) {
        self.each_mut(|s| s.tidy(usize::MAX, false));
    }
}

impl<S> std::ops::Deref for Sharded<S> {
    type Target = [Padded<RwLock<S>>];
    #[inline]
    fn deref(&self) -> &Self::Target {
        &self.shards
    }
}

/// A shard's write guard; publishes the shard's [`ShardStats`] on release.
pub(crate) struct ShardWrite<'t, S: Counted> {
    guard: RwLockWriteGuard<'t, S>,
    stats: &'t ShardStats,
    /// Whether the release does the shard's due housekeeping.
    tidy: bool,
}

impl<S: Counted> std::ops::Deref for ShardWrite<'_, S> {
    type Target = S;
    #[inline]
    fn deref(&self) -> &S {
        &self.guard
    }
}

impl<S: Counted> std::ops::DerefMut for ShardWrite<'_, S> {
    #[inline]
    fn deref_mut(&mut self) -> &mut S {
        &mut self.guard
    }
}

impl<S: Counted> Drop for ShardWrite<'_, S> {
    #[inline]
    fn drop(&mut self) {
        // Plain stores under the lock: the next writer of this shard
        // overwrites them, readers of the stats see some recent state.
        // Unchanged values (a counter updated in place) are not stored, so
        // a hot key's writers on several cores do not pass this line back
        // and forth.
        if self.tidy {
            self.guard.tidy(TIDY, false);
        }
        let (count, bytes) = (self.guard.count(), self.guard.bytes());
        if self.stats.count.load(Ordering::Relaxed) != count {
            self.stats.count.store(count, Ordering::Relaxed);
        }
        if self.stats.bytes.load(Ordering::Relaxed) != bytes {
            self.stats.bytes.store(bytes, Ordering::Relaxed);
        }
    }
}

impl Fixable for Shard {
    type Item = Entry;
    fn graves(&mut self) -> &mut Option<Box<Graves<Entry>>> {
        &mut self.graves
    }
    fn map(&mut self) -> &mut SegMap<Entry> {
        &mut self.map
    }
}

impl Counted for Shard {
    fn count(&self) -> usize {
        self.map.len()
    }
    fn bytes(&self) -> usize {
        Shard::bytes(self)
    }
    #[inline]
    fn tidy(&mut self, budget: usize, unfixing: bool) {
        if self.graves.is_none() {
            self.map.tidy(|e| hash_key(e.key()), budget, unfixing);
        }
    }
}

/// A sharded concurrent table with set semantics.
pub struct SetTable {
    shards: Sharded<Shard>,
}

impl Default for SetTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SetTable {
    /// An empty table.
    pub fn new() -> Self {
        SetTable {
            shards: Sharded::new(),
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[shard_index(hash)].0
    }

    /// Write-locks shard `i`.
    #[inline]
    fn write_shard(&self, i: usize) -> ShardWrite<'_, Shard> {
        self.shards.write(i)
    }

    /// Write-locks the shard of `hash`.
    #[inline]
    fn write(&self, hash: u64) -> ShardWrite<'_, Shard> {
        self.write_shard(shard_index(hash))
    }

    /// Runs `f` on the entry under `key` (or `None`) while it is read-locked.
    #[inline]
    pub fn read<R>(&self, key: &Key, f: impl FnOnce(Option<&Entry>) -> R) -> R {
        let shard = crate::lock::read(self.shard(key.hash));
        f(shard.find(key))
    }

    /// A copy of the entry under `key`.
    #[inline]
    pub fn get(&self, key: &Key) -> Option<Entry> {
        self.read(key, |e| e.cloned())
    }

    /// True when an entry exists under `key`.
    #[inline]
    pub fn contains(&self, key: &Key) -> bool {
        self.read(key, |e| e.is_some())
    }

    /// Inserts or replaces; returns the replaced entry.
    #[inline]
    pub fn insert(&self, entry: Entry) -> Option<Entry> {
        let hash = hash_key(entry.key());
        self.write(hash).put_hashed(hash, entry)
    }

    /// Inserts or replaces with the entry `image`; when an entry of the
    /// same size is replaced, its allocation is reused (as ETS does), so
    /// rewriting an object allocates and frees nothing. Returns the replaced
    /// entry otherwise (to be dropped after the lock is released).
    #[inline]
    pub fn insert_image(&self, image: &EntryImage) -> Option<Entry> {
        let key = image.key();
        let hash = hash_key(key);
        let mut shard = self.write(hash);
        let mut assigned = None;
        if let Some(e) = shard.map.find_mut(hash, |e| e.key() == key) {
            assigned = e.assign(image);
        }
        if let Some((before, after)) = assigned {
            // Entries of one size can hold blobs of different sizes: the
            // shard's byte count follows.
            if before != after {
                shard.heap = shard.heap + after - before;
            }
            return None;
        }
        shard.put_hashed(hash, image.to_entry())
    }

    /// Inserts only if the key is absent; returns whether it inserted.
    pub fn insert_new(&self, entry: Entry) -> bool {
        let key = Key::new(entry.key());
        let mut shard = self.write(key.hash);
        if shard.find(&key).is_some() {
            return false;
        }
        shard.put(entry);
        true
    }

    /// Locks, in ascending order, every shard that one of `entries` maps to.
    fn lock_for<'t>(&'t self, entries: &[Entry]) -> Vec<(usize, ShardWrite<'t, Shard>)> {
        let mut ids: Vec<usize> = entries
            .iter()
            .map(|e| shard_index(hash_key(e.key())))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().map(|i| (i, self.write_shard(i))).collect()
    }

    fn guard_for<'g, 't>(
        guards: &'g mut [(usize, ShardWrite<'t, Shard>)],
        entry: &Entry,
    ) -> &'g mut Shard {
        let id = shard_index(hash_key(entry.key()));
        let at = guards
            .binary_search_by_key(&id, |(i, _)| *i)
            .expect("every entry's shard is locked");
        &mut guards[at].1
    }

    /// Inserts all entries atomically: no reader sees some but not others.
    /// For equal keys the last one wins.
    pub fn insert_all(&self, entries: Vec<Entry>) -> Vec<Entry> {
        self.insert_all_if(entries, || true).unwrap_or_default()
    }

    /// [`SetTable::insert_all`] if `go()`, asked once every lock is held,
    /// says so (`None` and nothing inserted otherwise): a caller that may
    /// have been cancelled while it prepared the entries checks it there.
    pub fn insert_all_if(
        &self,
        entries: Vec<Entry>,
        go: impl FnOnce() -> bool,
    ) -> Option<Vec<Entry>> {
        let mut guards = self.lock_for(&entries);
        if !go() {
            return None;
        }
        let mut replaced = Vec::new();
        for e in entries {
            if let Some(old) = Self::guard_for(&mut guards, &e).put(e) {
                replaced.push(old);
            }
        }
        Some(replaced)
    }

    /// Inserts all entries atomically if none of their keys is present;
    /// otherwise inserts nothing. Returns whether it inserted.
    pub fn insert_new_all(&self, entries: Vec<Entry>) -> bool {
        self.insert_new_all_if(entries, || true)
    }

    /// [`SetTable::insert_new_all`] if `go()`, asked once every lock is
    /// held, says so (see [`SetTable::insert_all_if`]; false otherwise).
    pub fn insert_new_all_if(&self, entries: Vec<Entry>, go: impl FnOnce() -> bool) -> bool {
        let mut guards = self.lock_for(&entries);
        if !go() {
            return false;
        }
        for e in &entries {
            if Self::guard_for(&mut guards, e)
                .find(&Key::new(e.key()))
                .is_some()
            {
                return false;
            }
        }
        for e in entries {
            Self::guard_for(&mut guards, &e).put(e);
        }
        true
    }

    /// Removes and returns the entry under `key`.
    #[inline]
    pub fn remove(&self, key: &Key) -> Option<Entry> {
        self.write(key.hash).remove(key)
    }

    /// Atomic read-modify-write of the entry under `key`: `f` sees the
    /// current entry under the shard's write lock and says what to change.
    /// `f` must not touch this table.
    pub fn update<R>(&self, key: &Key, f: impl FnOnce(Option<&Entry>) -> (Change, R)) -> R {
        self.update_mut(key, |e| f(e.map(|e| &*e)))
    }

    /// Like [`SetTable::update`], but `f` may also modify the entry's object
    /// in place (see [`Entry::object_mut`]) without changing its key or size.
    pub fn update_mut<R>(&self, key: &Key, f: impl FnOnce(Option<&mut Entry>) -> (Change, R)) -> R {
        let mut shard = self.write(key.hash);
        let found = shard.map.find_mut(key.hash, |e| key.matches(e.key()));
        let (change, result) = f(found);
        match change {
            Change::Keep => {}
            Change::Put(e) => {
                debug_assert!(key.matches(e.key()));
                shard.put_hashed(key.hash, e);
            }
            Change::Remove => {
                shard.remove(key);
            }
        }
        result
    }

    /// Takes every entry out of the table, shard by shard. A fixed table
    /// keeps them (their keys stay places to continue a traversal from)
    /// until it is unfixed.
    pub fn take_all(&self) -> Contents {
        Contents(self.shards.each_mut(|s| {
            s.heap = 0;
            fixation::take_map(s)
        }))
    }

    /// Fixes the table (`safe_fixtable(tab, true)` of its first fixer) or
    /// unfixes it (when its last fixer let go). While fixed, removals keep
    /// the shards' layout and remember where removed keys were, so that
    /// [`SetTable::read_next`] continues from a removed key (see
    /// [`crate::fixation`]). Unfixing returns what was kept, to be dropped.
    pub fn set_fixed(&self, fixed: bool) -> Released {
        self.shards.set_fixed(fixed)
    }

    /// After [`SetTable::set_fixed`]`(false)` reported [`Released::untidy`]:
    /// does the housekeeping the shards left to their next writes. Visits
    /// every shard, may rehash them: call it off the schedulers.
    pub fn tidy_all(&self) {
        self.shards.tidy_all()
    }

    /// Number of entries (each shard's count as of its last write: no
    /// lock is taken).
    pub fn len(&self) -> usize {
        self.shards.count()
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory held by the table: its shards, their slots and the
    /// entries (each shard's as of its last write: no lock is taken).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.shards.bytes()
    }

    /// Number of shards (for shard-by-shard traversal).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// A consistent copy of one shard's entries, in traversal order (that
    /// of [`SetTable::read_first`] and [`SetTable::read_next`]); decoding
    /// can then proceed without holding any lock.
    pub fn snapshot_shard(&self, shard: usize) -> Vec<Entry> {
        let s = self.shards[shard].0.read();
        let mut out = Vec::with_capacity(s.map.len());
        out.extend(buckets_from(&s.map, 0).cloned());
        out
    }

    /// Runs `f` on the entry in slot `i` (`None` for an empty slot), as
    /// ETS's `slot/2`; see [`slot_in`].
    pub fn slot<R>(&self, i: usize, f: impl FnOnce(Option<&Entry>) -> R) -> Slot<R> {
        slot_in(&self.shards, |s| &s.map, i, f)
    }

    /// Runs `f` on the first entry in traversal order (shard by shard,
    /// bucket by bucket, like ETS's hash tables), or `None` when empty.
    pub fn read_first<R>(&self, f: impl FnOnce(Option<&Entry>) -> R) -> R {
        read_from(&self.shards, 0, None, |s| &s.map, f)
    }

    /// Runs `f` on the entry that follows the one under `key` in traversal
    /// order (`None` at the end); `None` without calling `f` when `key` is
    /// not in the table (ETS then raises `badarg`), unless the table is
    /// fixed and `key` was removed since: the walk then goes on from where
    /// it was.
    pub fn read_next<R>(&self, key: &Key, f: impl FnOnce(Option<&Entry>) -> R) -> Option<R> {
        let shard = shard_index(key.hash);
        let g = self.shards[shard].0.read();
        let at = match g.map.find_bucket_index(key.hash, |e| key.matches(e.key())) {
            Some(at) => at,
            None => g.graves.as_ref()?.place(key, |e| e.key())?,
        };
        Some(read_from(
            &self.shards,
            shard,
            Some((g, at + 1)),
            |s| &s.map,
            f,
        ))
    }

    /// Copies up to `max` entries of shard `shard` in traversal order,
    /// starting at bucket `from`. Returns them and the bucket to continue
    /// from, or `None` when the shard is exhausted. Bounded work per call;
    /// a shard resized between calls may yield an entry twice or miss one
    /// (like an unfixed ETS traversal).
    pub fn snapshot_part(
        &self,
        shard: usize,
        from: usize,
        max: usize,
    ) -> (Vec<Entry>, Option<usize>) {
        let s = self.shards[shard].0.read();
        copy_buckets(&s.map, from, max, |e, out| out.push(e.clone()))
    }

    /// How the entries spread over the buckets (see [`ChainStats`]).
    /// Visits every bucket: call it off the schedulers for big tables.
    pub fn chain_stats(&self) -> ChainStats {
        chain_stats(
            &self.shards,
            |s| &s.map,
            |_| 1,
            |s| s.graves.as_ref().map_or(0, |g| g.len()),
        )
    }

    /// Number of entries in one shard.
    pub fn shard_len(&self, shard: usize) -> usize {
        self.shards[shard].0.read().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryBuf;
    use crate::format::{put_header, put_int, tag};
    use std::sync::Arc;

    /// `{k, v}` with integer key and value.
    fn pair(k: i64, v: i64) -> Entry {
        let mut b = EntryBuf::new();
        put_header(&mut b.out, tag::TUPLE, 2);
        let ks = b.out.len();
        put_int(&mut b.out, k);
        let ke = b.out.len();
        put_int(&mut b.out, v);
        b.finish(ks..ke, None)
    }

    fn key(k: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_int(&mut out, k);
        out
    }

    #[test]
    fn insert_all_if_refused_inserts_nothing() {
        let t = SetTable::new();
        let es = || (0..100).map(|i| pair(i, i)).collect::<Vec<_>>();
        assert!(t.insert_all_if(es(), || false).is_none());
        assert!(!t.insert_new_all_if(es(), || false));
        assert_eq!(t.len(), 0);
        assert_eq!(t.insert_all_if(es(), || true).map(|v| v.len()), Some(0));
        assert!(!t.insert_new_all_if(es(), || true));
        assert_eq!(t.len(), 100);
    }

    #[test]
    fn chain_stats_count_buckets_objects_and_kept_keys() {
        let t = SetTable::new();
        let empty = t.chain_stats();
        assert_eq!(
            (empty.objects, empty.min, empty.max, empty.kept),
            (0, 0, 0, 0)
        );
        assert_eq!(empty.locks, SHARDS);
        assert_eq!(empty.mean(), 0.0);
        for k in 0..1000 {
            t.insert(pair(k, k));
        }
        let st = t.chain_stats();
        let slots = (0..)
            .take_while(|&i| t.slot(i, |_| ()) != Slot::End)
            .count();
        assert_eq!(st.buckets, slots);
        assert_eq!((st.objects, st.squares, st.min, st.max), (1000, 1000, 0, 1));
        let p = 1000.0 / slots as f64;
        assert!((st.std_dev() - (p - p * p).sqrt()).abs() < 1e-9);
        assert!((st.expected_std_dev() - (p * (1.0 - 1.0 / slots as f64)).sqrt()).abs() < 1e-9);
        t.set_fixed(true);
        t.remove(&Key::new(&key(5)));
        assert_eq!(t.chain_stats().kept, 1);
        t.set_fixed(false);
        assert_eq!(t.chain_stats().kept, 0);
    }

    #[test]
    fn a_fixed_walk_meets_every_staying_key_once_while_the_table_fills() {
        let t = SetTable::new();
        for k in 0..2_000 {
            t.insert(pair(k, k));
        }
        t.set_fixed(true);
        // Walk, deleting every third key met and inserting ten new keys per
        // step: the shards would grow many times over.
        let mut seen = Vec::new();
        let mut fresh = 1_000_000;
        let mut cur = t.read_first(|e| e.map(|e| e.key().to_vec()));
        while let Some(k) = cur {
            seen.push(k.clone());
            if seen.len() % 3 == 0 {
                t.remove(&Key::new(&k));
            }
            // (New keys are met too, or not, as in ETS: only the first
            // 2,000 steps insert, so that the walk ends.)
            if seen.len() <= 2_000 {
                for _ in 0..10 {
                    t.insert(pair(fresh, 0));
                    fresh += 1;
                }
            }
            cur = t
                .read_next(&Key::new(&k), |e| e.map(|e| e.key().to_vec()))
                .expect("a key met in a fixed walk is a place");
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "a key met twice");
        for k in 0..2_000 {
            assert!(unique.binary_search(&key(k)).is_ok(), "missed {k}");
        }
        let total = 2_000 + (fresh as usize - 1_000_000) - seen.len() / 3;
        assert_eq!(t.len(), total);
        // Unfixed: the overflow drains into the main tables as shards are
        // written, and every object is still there once.
        t.set_fixed(false);
        for k in 0..20_000 {
            t.insert(pair(k + 5_000_000, 0));
            t.remove(&Key::new(&key(k + 5_000_000)));
        }
        assert_eq!(t.len(), total);
        let mut all: Vec<Vec<u8>> = (0..t.shard_count())
            .flat_map(|s| t.snapshot_shard(s))
            .map(|e| e.key().to_vec())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), total);
        assert!(t
            .shards
            .iter()
            .all(|s| s.0.read().map.allocated_buckets() >= s.0.read().map.len()));
    }

    #[test]
    fn a_fixed_table_walks_on_from_removed_keys() {
        let t = SetTable::new();
        for k in 0..40_000 {
            t.insert(pair(k, k));
        }
        let mem = t.memory_bytes();
        assert!(t.set_fixed(true).is_empty());
        // Delete each key before stepping from it: every key is met once.
        let mut seen = Vec::new();
        let mut cur = t.read_first(|e| e.map(|e| e.key().to_vec()));
        while let Some(k) = cur {
            assert!(t.remove(&Key::new(&k)).is_some());
            cur = t
                .read_next(&Key::new(&k), |e| e.map(|e| e.key().to_vec()))
                .expect("a removed key of a fixed table is a place");
            seen.push(k);
        }
        assert_eq!(seen.len(), 40_000);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 40_000);
        assert!(t.is_empty());
        // No shrink while fixed; a key never present is still unknown.
        assert_eq!(t.memory_bytes(), mem - 40_000 * pair(0, 0).heap_bytes());
        assert!(t.read_next(&Key::new(&key(-5)), |_| ()).is_none());
        // Cleared by take_all while fixed: still places.
        for k in 0..100 {
            t.insert(pair(k, k));
        }
        assert_eq!(t.take_all().len(), 0);
        t.insert(pair(7, 7));
        // (Whether the walk then meets 7, inserted since, is open, as in ETS.)
        assert!(t.read_next(&Key::new(&key(3)), |_| ()).is_some());
        assert!(!t.set_fixed(false).is_empty());
        // Unfixed: the emptied shards shrink (as the unfix releases their
        // locks); removed keys are unknown again.
        assert!(t.memory_bytes() < mem / 8, "{} vs {mem}", t.memory_bytes());
        assert!(t.read_next(&Key::new(&key(3)), |_| ()).is_none());
        assert!(t.read_next(&Key::new(&key(7)), |_| ()).is_some());
    }

    #[test]
    fn removals_give_slots_back() {
        let t = SetTable::new();
        for k in 0..40_000 {
            t.insert(pair(k, k));
        }
        let full = t.memory_bytes();
        for k in 5..40_000 {
            assert!(t.remove(&Key::new(&key(k))).is_some());
        }
        assert_eq!(t.len(), 5);
        assert!(
            t.memory_bytes() * 20 < full,
            "{} of {}",
            t.memory_bytes(),
            full
        );
        for k in 0..5 {
            assert_eq!(t.get(&Key::new(&key(k))).unwrap(), pair(k, k));
        }
        let walked: usize = (0..t.shard_count())
            .map(|i| t.snapshot_shard(i).len())
            .sum();
        assert_eq!(walked, 5);
    }

    #[test]
    fn insert_lookup_replace_remove() {
        let t = SetTable::new();
        assert!(t.insert(pair(1, 10)).is_none());
        assert!(t.insert(pair(1, 11)).is_some());
        assert_eq!(t.len(), 1);
        let k = key(1);
        assert_eq!(t.get(&Key::new(&k)).unwrap(), pair(1, 11));
        assert!(!t.insert_new(pair(1, 12)));
        assert!(t.insert_new(pair(2, 20)));
        assert_eq!(t.remove(&Key::new(&k)).unwrap(), pair(1, 11));
        assert!(t.get(&Key::new(&k)).is_none());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn word_keys_hash_from_their_parts() {
        for (t, w) in [(2u8, 0u64), (1, 0xdead_beef), (2, u64::MAX)] {
            let mut b = [t; 9];
            b[1..].copy_from_slice(&w.to_le_bytes());
            assert_eq!(Key::new(&b).hash, Key::word(t, w).hash);
            assert!(Key::word(t, w).matches(&b) && Key::new(&b).matches(&b));
            assert!(!Key::word(t, w ^ 1).matches(&b) && !Key::word(t, w).matches(&b[..8]));
        }
    }

    #[test]
    fn images_replace_in_place_or_insert() {
        let t = SetTable::new();
        let image = |k: i64, v: i64| {
            let mut b = EntryBuf::new();
            put_header(&mut b.out, tag::TUPLE, 2);
            let ks = b.out.len();
            put_int(&mut b.out, k);
            let ke = b.out.len();
            put_int(&mut b.out, v);
            b.seal(ks..ke, None).to_entry()
        };
        let mut b = EntryBuf::new();
        put_header(&mut b.out, tag::TUPLE, 2);
        let ks = b.out.len();
        put_int(&mut b.out, 1);
        let ke = b.out.len();
        put_int(&mut b.out, 5);
        let mem = t.memory_bytes();
        assert!(t.insert_image(&b.seal(ks..ke, None)).is_none());
        assert!(t.memory_bytes() > mem);
        let mem = t.memory_bytes();
        t.insert(image(1, 6));
        let mut b = EntryBuf::new();
        put_header(&mut b.out, tag::TUPLE, 2);
        put_int(&mut b.out, 1);
        put_int(&mut b.out, 7);
        assert!(t.insert_image(&b.seal(ks..ke, None)).is_none());
        assert_eq!(t.memory_bytes(), mem);
        assert_eq!(t.get(&Key::new(&key(1))).unwrap(), image(1, 7));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn insert_new_all_is_all_or_nothing() {
        let t = SetTable::new();
        t.insert(pair(5, 0));
        assert!(!t.insert_new_all((0..10).map(|i| pair(i, i)).collect()));
        assert_eq!(t.len(), 1);
        assert!(t.insert_new_all((10..20).map(|i| pair(i, i)).collect()));
        assert_eq!(t.len(), 11);
    }

    #[test]
    fn update_is_atomic_under_contention() {
        let t = Arc::new(SetTable::new());
        t.insert(pair(7, 0));
        let k = key(7);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let t = t.clone();
                let k = k.clone();
                s.spawn(move || {
                    for _ in 0..10_000 {
                        t.update(&Key::new(&k), |e| {
                            let obj = e.unwrap().object();
                            let els = crate::format::tuple_elements(obj).unwrap();
                            let mut p = els[1].start;
                            let v = match crate::format::read_item(obj, &mut p).unwrap() {
                                crate::format::Item::Int(v) => v,
                                _ => unreachable!(),
                            };
                            (Change::Put(pair(7, v + 1)), ())
                        });
                    }
                });
            }
        });
        assert_eq!(t.get(&Key::new(&k)).unwrap(), pair(7, 40_000));
    }

    #[test]
    fn memory_is_counted_and_released() {
        let t = SetTable::new();
        let empty = t.memory_bytes();
        for i in 0..1000 {
            t.insert(pair(i, i));
        }
        assert!(t.memory_bytes() > empty + 1000 * 32);
        let c = t.take_all();
        assert_eq!(c.len(), 1000);
        assert_eq!(t.len(), 0);
        assert_eq!(t.memory_bytes(), empty);
    }

    #[test]
    fn first_next_walks_every_key_once_in_snapshot_order() {
        let t = SetTable::new();
        t.read_first(|e| assert!(e.is_none()));
        for i in 0..3000 {
            t.insert(pair(i, i));
        }
        let mut walked = Vec::new();
        let mut cur = t.read_first(|e| e.map(|e| e.key().to_vec()));
        while let Some(k) = cur {
            cur = t
                .read_next(&Key::new(&k), |e| e.map(|e| e.key().to_vec()))
                .expect("key in table");
            walked.push(k);
        }
        let snap: Vec<Vec<u8>> = (0..t.shard_count())
            .flat_map(|s| t.snapshot_shard(s))
            .map(|e| e.key().to_vec())
            .collect();
        assert_eq!(walked, snap);
        let mut sorted = walked.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 3000);
        assert!(t.read_next(&Key::new(&key(99_999)), |_| ()).is_none());
    }

    #[test]
    fn partial_snapshots_cover_every_entry() {
        let t = SetTable::new();
        for i in 0..5000 {
            t.insert(pair(i, i));
        }
        let mut total = 0;
        for shard in 0..t.shard_count() {
            let mut from = Some(0);
            while let Some(b) = from {
                let (part, next) = t.snapshot_part(shard, b, 7);
                assert!(part.len() <= 7);
                total += part.len();
                from = next;
            }
        }
        assert_eq!(total, 5000);
    }

    #[test]
    fn snapshots_cover_every_entry() {
        let t = SetTable::new();
        for i in 0..5000 {
            t.insert(pair(i, i));
        }
        let total: usize = (0..t.shard_count())
            .map(|s| t.snapshot_shard(s).len())
            .sum();
        assert_eq!(total, 5000);
    }
}
