//! `bag` and `duplicate_bag` tables: many objects per key, kept per key in
//! insertion order. A bag stores an object only once (an identical object,
//! `=:=`, is not added again); a duplicate bag stores every copy.
//!
//! Sharded like [`crate::set::SetTable`]: keys hash to one of
//! [`SHARDS`](crate::set::SHARDS) locked hash tables whose items are per-key buckets.
//!
//! A bucket holds its key and all its objects in one contiguous buffer (see
//! [`Bucket`]), not one allocation per object: adding an object appends to
//! it, comparing a new object with the key's objects (bag identity) and
//! reading them all back scan adjacent memory, and removing a key frees one
//! allocation. Objects leave the table as [`Entry`]s only when copied out
//! for traversal.

use crate::entry::{Entry, EntryBuf, EntryImage};
use crate::fixation::{self, Fixable, Graves, Released};
use crate::format::{read_item, Item};
use crate::order::identical;
use crate::segmap::SegMap;
use crate::set::{
    chain_stats, hash_key, read_from, shard_index, slot_in, ChainStats, Counted, Key, ShardWrite,
    Sharded, Slot, CHUNK_BYTES,
};
use parking_lot::RwLock;

/// `key_at` of an object whose key is not a slice of it (its entry had an
/// appended canonical key): the object's key is the bucket's key.
const APPENDED: u32 = u32::MAX;
/// Bytes of a bucket's header: object count and key length.
const HEAD: usize = 8;
/// Bytes of an object's header: its length and `key_at`.
const OBJ_HEAD: usize = 8;
/// Buckets whose buffers traversal reads ahead (see `snapshot_part`).
const LOOKAHEAD: usize = 16;

#[inline(always)]
fn u32_at(b: &[u8], at: usize) -> u32 {
    // One bounds check and one load (not one per byte).
    let w: [u8; 4] = b[at..at + 4].try_into().expect("four bytes");
    u32::from_le_bytes(w)
}

#[inline]
fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Where `e`'s key starts inside its object, or [`APPENDED`].
#[inline]
fn key_at(e: &Entry) -> u32 {
    e.key_offset().map_or(APPENDED, |o| o as u32)
}

/// True when the encoded value holds a float or a value in external term
/// format anywhere (or cannot be read: then the caller falls back to the
/// full comparison). Only these can make two objects of different bytes
/// identical (`0.0 =:= -0.0`; equal funs made by different processes).
fn has_float(obj: &[u8]) -> bool {
    use crate::format::tag;
    let mut pos = 0;
    while let Some(&t) = obj.get(pos) {
        // The usual items by their tags alone (words, tuple headers of one
        // byte); anything else through `read_item`.
        match t {
            tag::INT | tag::WORD | tag::PID if pos + 9 <= obj.len() => pos += 9,
            tag::NIL => pos += 1,
            tag::TUPLE if obj.get(pos + 1).is_some_and(|&n| n < 0x80) => pos += 2,
            tag::FLOAT | tag::EXT => return true,
            _ => match read_item(obj, &mut pos) {
                Ok(Item::Float(_) | Item::Ext(_)) | Err(_) => return true,
                Ok(_) => {}
            },
        }
    }
    false
}

/// True when `a` and `b` (objects of one key) have the same bytes:
/// compared from their last word first, as objects of one key often
/// begin alike (with the key) and differ towards their end.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    match (a.last_chunk::<8>(), b.last_chunk::<8>()) {
        (Some(x), Some(y)) if x != y => false,
        _ => a == b,
    }
}

/// The objects of one key, in insertion order (never empty in a table),
/// in one buffer:
/// `[u32 count][u32 key_len][key]` then, per object,
/// `[u32 len][u32 key_at][object bytes]` (`key_at`: where the key starts
/// inside the object, or `APPENDED`). The key is the objects' common
/// canonical key. The key's hash is kept so that growing the hash table
/// does not rehash keys.
pub struct Bucket {
    hash: u64,
    buf: Vec<u8>,
    /// Where the newest object (its header) starts in `buf`: a walk gives
    /// the key as that object spells it, as ETS does (`0.0` and `-0.0`, or
    /// equal funs made by different processes, are one key).
    newest: usize,
}

impl Bucket {
    fn new(hash: u64, key: &[u8], obj: &[u8], key_at: u32) -> Self {
        let mut buf = Vec::with_capacity(HEAD + key.len() + OBJ_HEAD + obj.len());
        buf.extend_from_slice(&1u32.to_le_bytes());
        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        buf.extend_from_slice(key);
        Self::put(&mut buf, obj, key_at);
        let newest = HEAD + key.len();
        Bucket { hash, buf, newest }
    }

    #[inline]
    fn put(buf: &mut Vec<u8>, obj: &[u8], key_at: u32) {
        buf.extend_from_slice(&(obj.len() as u32).to_le_bytes());
        buf.extend_from_slice(&key_at.to_le_bytes());
        buf.extend_from_slice(obj);
    }

    /// Appends an object.
    fn push(&mut self, obj: &[u8], key_at: u32) {
        self.newest = self.buf.len();
        Self::put(&mut self.buf, obj, key_at);
        let n = u32_at(&self.buf, 0) + 1;
        set_u32(&mut self.buf, 0, n);
    }

    #[inline]
    fn key(&self) -> &[u8] {
        let len = u32_at(&self.buf, 4) as usize;
        &self.buf[HEAD..HEAD + len]
    }

    /// Number of objects.
    #[inline]
    pub fn len(&self) -> usize {
        u32_at(&self.buf, 0) as usize
    }

    /// Always false for a bucket in a table.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn first_object(&self) -> usize {
        HEAD + u32_at(&self.buf, 4) as usize
    }

    /// The newest object's bytes (a bucket in a table is never empty).
    #[inline]
    pub fn newest(&self) -> &[u8] {
        let pos = self.newest;
        let len = u32_at(&self.buf, pos) as usize;
        &self.buf[pos + OBJ_HEAD..pos + OBJ_HEAD + len]
    }

    /// The objects' bytes, in insertion order.
    #[inline]
    pub fn objects(&self) -> Objects<'_> {
        Objects {
            buf: &self.buf[self.first_object()..],
            left: self.len(),
        }
    }

    /// Heap bytes of the buffer (rounded up to the allocator's granule).
    fn heap_bytes(&self) -> usize {
        self.buf.capacity().next_multiple_of(16)
    }

    /// True when an object identical to `obj` is in the bucket.
    fn contains(&self, obj: &[u8], zero_eq: bool) -> bool {
        // Identical objects have equal lengths, and differ in bytes only
        // when they hold floats or external-format values (decided once,
        // when first needed).
        let mut floats = None;
        self.objects().any(|o| {
            o.len() == obj.len()
                && (same_bytes(o, obj)
                    || (*floats.get_or_insert_with(|| has_float(obj))
                        && identical(o, obj, zero_eq)))
        })
    }

    /// Removes the objects identical to `obj`; returns how many.
    fn remove_identical(&mut self, obj: &[u8], zero_eq: bool) -> usize {
        let n = self.len();
        let mut read = self.first_object();
        let mut write = read;
        let mut gone = 0;
        for _ in 0..n {
            let len = OBJ_HEAD + u32_at(&self.buf, read) as usize;
            let o = &self.buf[read + OBJ_HEAD..read + len];
            if o.len() == obj.len() && identical(o, obj, zero_eq) {
                gone += 1;
            } else {
                self.buf.copy_within(read..read + len, write);
                write += len;
            }
            read += len;
        }
        if gone > 0 {
            self.buf.truncate(write);
            set_u32(&mut self.buf, 0, (n - gone) as u32);
            // The newest object left: the last one (none left: unused).
            let mut pos = self.first_object();
            for _ in 1..n - gone {
                pos += OBJ_HEAD + u32_at(&self.buf, pos) as usize;
            }
            self.newest = pos;
            if self.buf.capacity() > 2 * self.buf.len() + 64 {
                self.buf.shrink_to_fit();
            }
        }
        gone
    }

    /// Copies each object out as an [`Entry`] (in insertion order),
    /// building them in the buffer `spare`.
    fn copy_entries(&self, out: &mut Vec<Entry>, spare: &mut Vec<u8>) {
        let key = self.key();
        for (obj, at) in self.raw() {
            let mut b = EntryBuf::with_buffer(std::mem::take(spare));
            let s = EntryBuf::object_start();
            b.out.extend_from_slice(obj);
            let (e, back) = if at == APPENDED {
                b.finish_keep(s..s, Some(key))
            } else {
                let k = s + at as usize;
                b.finish_keep(k..k + key.len(), None)
            };
            out.push(e);
            *spare = back;
        }
    }

    /// The objects with their `key_at`.
    fn raw(&self) -> impl Iterator<Item = (&[u8], u32)> {
        let buf = &self.buf[..];
        let mut pos = self.first_object();
        (0..self.len()).map(move |_| {
            let len = u32_at(buf, pos) as usize;
            let at = u32_at(buf, pos + 4);
            let o = &buf[pos + OBJ_HEAD..pos + OBJ_HEAD + len];
            pos += OBJ_HEAD + len;
            (o, at)
        })
    }
}

/// The objects of one key (bytes of each encoded object), in insertion
/// order.
#[derive(Clone)]
pub struct Objects<'a> {
    /// The remaining objects, each `[u32 len][u32 key_at][object bytes]`.
    buf: &'a [u8],
    left: usize,
}

impl<'a> Objects<'a> {
    /// No objects.
    pub fn empty() -> Self {
        Objects { buf: &[], left: 0 }
    }

    /// The next object, and whether it holds the key's canonical bytes
    /// (those the key is looked up by) at byte `at` of it (false when it
    /// spells its key otherwise, e.g. `-0.0` for `0.0`, or elsewhere).
    #[inline]
    pub fn next_key_at(&mut self, at: usize) -> Option<(&'a [u8], bool)> {
        if self.left == 0 {
            return None;
        }
        let head = self.buf.get(..OBJ_HEAD)?;
        let len = u32_at(head, 0) as usize;
        let key_at = u32_at(head, 4);
        let Some(obj) = self.buf.get(OBJ_HEAD..OBJ_HEAD + len) else {
            self.left = 0;
            return None;
        };
        self.left -= 1;
        self.buf = &self.buf[OBJ_HEAD + len..];
        Some((obj, key_at as usize == at && key_at != APPENDED))
    }
}

impl<'a> Iterator for Objects<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let head = self.buf.get(..OBJ_HEAD)?;
        let len = u32_at(head, 0) as usize;
        let Some(obj) = self.buf.get(OBJ_HEAD..OBJ_HEAD + len) else {
            self.left = 0;
            return None;
        };
        self.left -= 1;
        self.buf = &self.buf[OBJ_HEAD + len..];
        Some(obj)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Objects<'_> {}

/// An object to add: its canonical key, its bytes, and where the key
/// starts inside them (or [`APPENDED`]).
struct Obj<'a> {
    key: &'a [u8],
    bytes: &'a [u8],
    key_at: u32,
}

#[derive(Default)]
struct Shard {
    map: SegMap<Bucket>,
    /// Heap bytes of the bucket buffers.
    heap: usize,
    /// Number of objects.
    count: usize,
    /// While the table is fixed: where removed keys were (see
    /// [`crate::fixation`]).
    graves: Option<Box<Graves<Bucket>>>,
}

impl Fixable for Shard {
    type Item = Bucket;
    fn graves(&mut self) -> &mut Option<Box<Graves<Bucket>>> {
        &mut self.graves
    }
    fn map(&mut self) -> &mut SegMap<Bucket> {
        &mut self.map
    }
}

impl Counted for Shard {
    fn count(&self) -> usize {
        self.count
    }
    fn bytes(&self) -> usize {
        Shard::bytes(self)
    }
    #[inline]
    fn tidy(&mut self, budget: usize, unfixing: bool) {
        if self.graves.is_none() {
            self.map.tidy(|b| b.hash, budget, unfixing);
        }
    }
}

impl Shard {
    #[inline(always)]
    fn find(&self, key: &Key) -> Option<&Bucket> {
        self.map.find(key.hash(), |b| key.matches(b.key()))
    }

    /// Adds `entry`, whose key hashes to `hash` (bag: unless an identical
    /// object is there).
    #[inline]
    fn add(&mut self, hash: u64, entry: &Entry, duplicate: bool, zero_eq: bool) {
        let obj = Obj {
            key: entry.key(),
            bytes: entry.object(),
            key_at: key_at(entry),
        };
        self.add_obj(hash, &obj, duplicate, zero_eq)
    }

    /// Adds the object `o`, whose key hashes to `hash` (bag: unless an
    /// identical object is there).
    #[inline]
    fn add_obj(&mut self, hash: u64, o: &Obj, duplicate: bool, zero_eq: bool) {
        let (key, obj, at) = (o.key, o.bytes, o.key_at);
        let fixed = self.graves.is_some();
        let found = match self.map.plain_mut(fixed) {
            // One probe: find the key's bucket or where a new one goes.
            Some(main) => match main.entry(hash, |b| b.key() == key, |b| b.hash) {
                hashbrown::hash_table::Entry::Occupied(o) => Some(o.into_mut()),
                hashbrown::hash_table::Entry::Vacant(v) => {
                    let b = Bucket::new(hash, key, obj, at);
                    self.heap += b.heap_bytes();
                    v.insert(b);
                    None
                }
            },
            None => match self.map.find_mut(hash, |b| b.key() == key) {
                Some(b) => Some(b),
                None => {
                    let b = Bucket::new(hash, key, obj, at);
                    self.heap += b.heap_bytes();
                    self.map.insert_new(hash, b, |b| b.hash, fixed);
                    None
                }
            },
        };
        if let Some(b) = found {
            if !duplicate && b.contains(obj, zero_eq) {
                return;
            }
            let before = b.heap_bytes();
            b.push(obj, at);
            self.heap = self.heap + b.heap_bytes() - before;
        }
        self.count += 1;
    }

    fn forget(&mut self, b: &Bucket) {
        self.count -= b.len();
        self.heap -= b.heap_bytes();
    }

    fn remove(&mut self, key: &Key) -> Option<Bucket> {
        let (b, at) = self.map.remove(key.hash(), |b| key.matches(b.key()))?;
        self.forget(&b);
        self.removed(&b, at);
        Some(b)
    }

    /// After the bucket `b` (all objects of its key) left slot `at`:
    /// remember the place if the table is fixed, else give memory back if
    /// the map got sparse.
    fn removed(&mut self, b: &Bucket, at: usize) {
        match &mut self.graves {
            Some(g) => g.bury(b.hash, b.key(), at),
            None => self.map.shrink_sparse(|b| b.hash),
        }
    }

    fn bytes(&self) -> usize {
        self.heap + self.map.allocated_buckets() * (std::mem::size_of::<Bucket>() + 1)
    }
}

/// The contents of a table taken out by [`BagTable::take_all`]; dropping
/// it frees every entry.
pub struct BagContents(Vec<SegMap<Bucket>>);

impl BagContents {
    /// Number of objects.
    pub fn len(&self) -> usize {
        self.0.iter().flat_map(|m| m.iter()).map(Bucket::len).sum()
    }

    /// True when there are no objects.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|m| m.is_empty())
    }

    /// Number of keys (each a bucket of its own): cheap, unlike
    /// [`BagContents::len`].
    pub fn keys(&self) -> usize {
        self.0.iter().map(|m| m.len()).sum()
    }
}

/// A sharded concurrent bag or duplicate bag.
pub struct BagTable {
    shards: Sharded<Shard>,
    duplicate: bool,
    zero_eq: bool,
}

impl BagTable {
    /// An empty table: a duplicate bag when `duplicate`. `zero_eq` says
    /// whether `0.0 =:= -0.0` on the host (then such objects are identical).
    pub fn new(duplicate: bool, zero_eq: bool) -> Self {
        BagTable {
            shards: Sharded::new(),
            duplicate,
            zero_eq,
        }
    }

    /// True for a duplicate bag.
    pub fn is_duplicate(&self) -> bool {
        self.duplicate
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[shard_index(hash)].0
    }

    /// Write-locks shard `i` (its stats are published on release).
    fn write_shard(&self, i: usize) -> ShardWrite<'_, Shard> {
        self.shards.write(i)
    }

    /// Write-locks the shard of `hash`.
    fn write(&self, hash: u64) -> ShardWrite<'_, Shard> {
        self.write_shard(shard_index(hash))
    }

    /// Runs `f` on the objects under `key` (none when the key is absent),
    /// read-locked.
    #[inline]
    pub fn read<R>(&self, key: &Key, f: impl FnOnce(Objects<'_>) -> R) -> R {
        let g = crate::lock::read(self.shard(key.hash()));
        let objects = match g.find(key) {
            Some(b) => b.objects(),
            None => Objects::empty(),
        };
        f(objects)
    }

    /// True when some object has `key`.
    pub fn contains(&self, key: &Key) -> bool {
        crate::lock::read(self.shard(key.hash()))
            .find(key)
            .is_some()
    }

    /// Adds one object. (Bags copy object bytes into their buckets: blobs
    /// are written inline, see [`Entry::into_inline`]; hosts do not give
    /// bags entries with blobs.)
    pub fn insert(&self, entry: Entry) {
        let Some(entry) = entry.into_inline() else {
            return;
        };
        let hash = hash_key(entry.key());
        self.write(hash)
            .add(hash, &entry, self.duplicate, self.zero_eq);
    }

    /// Adds the object of `image` (as [`BagTable::insert`], without making
    /// an entry first: its bytes are copied straight into the key's bucket).
    #[inline]
    pub fn insert_image(&self, image: &EntryImage) {
        if image.has_blobs() {
            return self.insert(image.to_entry());
        }
        let obj = Obj {
            key: image.key(),
            bytes: image.object(),
            key_at: image.key_offset().map_or(APPENDED, |o| o as u32),
        };
        let hash = hash_key(obj.key);
        self.write(hash)
            .add_obj(hash, &obj, self.duplicate, self.zero_eq);
    }

    /// Locks the shards of all `hashes` (in shard order).
    fn lock_for(&self, hashes: &[u64]) -> Vec<(usize, ShardWrite<'_, Shard>)> {
        let mut ids: Vec<usize> = hashes.iter().map(|&h| shard_index(h)).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().map(|i| (i, self.write_shard(i))).collect()
    }

    fn guard<'g, 't>(guards: &'g mut [(usize, ShardWrite<'t, Shard>)], hash: u64) -> &'g mut Shard {
        let id = shard_index(hash);
        let at = guards
            .binary_search_by_key(&id, |(i, _)| *i)
            .expect("every entry's shard is locked");
        &mut guards[at].1
    }

    /// Adds `entries` (with their key hashes) under the locks `guards` in
    /// ETS's order: a duplicate bag in list order, a bag from the end of
    /// the list (so `[{a, 1}, {a, 2}]` reads back as `[{a, 2}, {a, 1}]`, as
    /// on OTP 25).
    fn add_all(
        &self,
        guards: &mut [(usize, ShardWrite<'_, Shard>)],
        entries: &[Entry],
        hashes: &[u64],
    ) {
        let mut add = |i: usize| {
            Self::guard(guards, hashes[i]).add(hashes[i], &entries[i], self.duplicate, self.zero_eq)
        };
        if self.duplicate {
            (0..entries.len()).for_each(&mut add);
        } else {
            (0..entries.len()).rev().for_each(&mut add);
        }
    }

    /// `entries` with any blobs written inline (see [`BagTable::insert`]).
    fn inline(entries: Vec<Entry>) -> Vec<Entry> {
        if entries.iter().any(Entry::has_blobs) {
            entries.into_iter().filter_map(Entry::into_inline).collect()
        } else {
            entries
        }
    }

    fn hashes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| hash_key(e.key())).collect()
    }

    /// Adds all objects atomically, in ETS's order (see above).
    pub fn insert_all(&self, entries: Vec<Entry>) {
        self.insert_all_if(entries, || true);
    }

    /// [`BagTable::insert_all`] if `go()`, asked once every lock is held,
    /// says so (returns whether it inserted): a caller that may have been
    /// cancelled while it prepared the entries checks it there.
    pub fn insert_all_if(&self, entries: Vec<Entry>, go: impl FnOnce() -> bool) -> bool {
        let entries = Self::inline(entries);
        let hashes = Self::hashes(&entries);
        let mut guards = self.lock_for(&hashes);
        if !go() {
            return false;
        }
        self.add_all(&mut guards, &entries, &hashes);
        true
    }

    /// Adds all objects atomically if none of their keys is present;
    /// otherwise adds nothing. Returns whether it added.
    pub fn insert_new_all(&self, entries: Vec<Entry>) -> bool {
        self.insert_new_all_if(entries, || true)
    }

    /// [`BagTable::insert_new_all`] if `go()`, asked once every lock is
    /// held, says so (see [`BagTable::insert_all_if`]; false otherwise).
    pub fn insert_new_all_if(&self, entries: Vec<Entry>, go: impl FnOnce() -> bool) -> bool {
        let entries = Self::inline(entries);
        let hashes = Self::hashes(&entries);
        let mut guards = self.lock_for(&hashes);
        if !go() {
            return false;
        }
        for (e, &h) in entries.iter().zip(&hashes) {
            if Self::guard(&mut guards, h)
                .find(&Key::new(e.key()))
                .is_some()
            {
                return false;
            }
        }
        self.add_all(&mut guards, &entries, &hashes);
        true
    }

    /// Removes every object under `key`; returns them (in insertion order,
    /// see [`Bucket::objects`]), if any.
    pub fn remove(&self, key: &Key) -> Option<Bucket> {
        self.write(key.hash()).remove(key)
    }

    /// Removes every object identical to `obj` (same key); returns how many.
    pub fn remove_object(&self, obj: &Entry) -> usize {
        self.remove_matching(obj, self.zero_eq)
    }

    /// Atomically rewrites the objects of one key of a duplicate bag: when
    /// the key's objects start with exactly `expected` (their encodings, in
    /// order), those become `new` (same key, in that order) and the objects
    /// inserted after them meanwhile stay after them (inserts only append:
    /// a writer that keeps inserting under the key cannot starve the
    /// caller). In place: the key keeps its bucket, so a fixed traversal
    /// does not meet it again. Returns false, changing nothing, when the
    /// objects do not start with `expected` (the caller reads them again
    /// and retries). `new` must not be empty; entries must have the key
    /// `key`. (Blobs are written inline, as by [`BagTable::insert`].)
    pub fn swap_objects(&self, key: &Key, expected: Vec<Entry>, new: Vec<Entry>) -> bool {
        let (expected, new) = (Self::inline(expected), Self::inline(new));
        let Some((first, rest)) = new.split_first() else {
            return false;
        };
        let mut g = self.write(key.hash());
        let g = &mut *g;
        let Some(b) = g.map.find_mut(key.hash(), |b| key.matches(b.key())) else {
            return false;
        };
        let n = expected.len();
        let prefix = b.len() >= n && b.objects().zip(&expected).all(|(o, e)| o == e.object());
        if !prefix {
            return false;
        }
        let mut nb = Bucket::new(b.hash, b.key(), first.object(), key_at(first));
        for e in rest {
            nb.push(e.object(), key_at(e));
        }
        for (o, at) in b.raw().skip(n) {
            nb.push(o, at);
        }
        g.heap = g.heap + nb.heap_bytes() - b.heap_bytes();
        g.count = g.count + new.len() - n;
        *b = nb;
        true
    }

    /// Removes every object whose encoding is exactly `obj`'s: like
    /// [`BagTable::remove_object`], but `0.0` and `-0.0` differ even where
    /// the host holds them identical (`select_delete/2` removes the objects
    /// a match specification matched, and a `0.0` in one does not match
    /// `-0.0`).
    pub fn remove_object_exact(&self, obj: &Entry) -> usize {
        self.remove_matching(obj, false)
    }

    fn remove_matching(&self, obj: &Entry, zero_eq: bool) -> usize {
        let key = Key::new(obj.key());
        let mut g = self.write(key.hash());
        let Some(at) = g
            .map
            .find_bucket_index(key.hash(), |b| key.matches(b.key()))
        else {
            return 0;
        };
        let b = g.map.bucket_mut(at).expect("the bucket just found");
        let before = b.heap_bytes();
        let gone = b.remove_identical(obj.object(), zero_eq);
        let (after, emptied) = if b.is_empty() {
            (0, g.map.remove_at(at))
        } else {
            (b.heap_bytes(), None)
        };
        g.heap = g.heap + after - before;
        g.count -= gone;
        if let Some(b) = emptied {
            g.removed(&b, at);
        }
        gone
    }

    /// Takes every object out of the table, shard by shard. A fixed table
    /// keeps them (their keys stay places to continue a traversal from)
    /// until it is unfixed.
    pub fn take_all(&self) -> BagContents {
        BagContents(self.shards.each_mut(|s| {
            s.heap = 0;
            s.count = 0;
            fixation::take_map(s)
        }))
    }

    /// Fixes or unfixes the table, as [`crate::set::SetTable::set_fixed`].
    pub fn set_fixed(&self, fixed: bool) -> Released {
        self.shards.set_fixed(fixed)
    }

    /// As [`crate::set::SetTable::tidy_all`].
    pub fn tidy_all(&self) {
        self.shards.tidy_all()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.shards.count()
    }

    /// True when the table has no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory held by the table.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.shards.bytes()
    }

    /// Number of shards (for shard-by-shard traversal).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// A copy of one shard's objects, key by key in traversal order, each
    /// key's objects in insertion order.
    pub fn snapshot_shard(&self, shard: usize) -> Vec<Entry> {
        self.snapshot_part(shard, 0, usize::MAX).0
    }

    /// Copies the objects of shard `shard` from bucket `from` on, key by key,
    /// until at least `max` objects (whole keys only). Returns them and the
    /// bucket to continue from, or `None` when the shard is exhausted.
    pub fn snapshot_part(
        &self,
        shard: usize,
        from: usize,
        max: usize,
    ) -> (Vec<Entry>, Option<usize>) {
        let s = self.shards[shard].0.read();
        let map = &s.map;
        let mut out = Vec::with_capacity(max.min(s.count));
        let mut spare = Vec::new();
        let mut bytes = 0;
        let mut i = from;
        while i < map.num_buckets() {
            // Read the next buckets' buffers first, all together, so that
            // their cache misses overlap instead of coming one per key.
            let end = (i + LOOKAHEAD).min(map.num_buckets());
            let touched = (i..end)
                .filter_map(|j| map.get_bucket(j))
                .fold(0u8, |acc, b| acc ^ b.buf[0] ^ b.buf[b.buf.len() - 1]);
            std::hint::black_box(touched);
            for j in i..end {
                if out.len() >= max || bytes >= CHUNK_BYTES {
                    return (out, Some(j));
                }
                if let Some(b) = map.get_bucket(j) {
                    b.copy_entries(&mut out, &mut spare);
                    bytes += b.heap_bytes();
                }
            }
            i = end;
        }
        (out, None)
    }

    /// Runs `f` on the objects in slot `i` (none for an empty slot), as
    /// ETS's `slot/2`: one key's objects, in insertion order.
    pub fn slot<R>(&self, i: usize, f: impl FnOnce(Objects<'_>) -> R) -> Slot<R> {
        slot_in(
            &self.shards,
            |s| &s.map,
            i,
            |b| f(b.map_or_else(Objects::empty, Bucket::objects)),
        )
    }

    /// How the objects spread over the buckets (a bucket holds one key's
    /// objects; see [`crate::set::ChainStats`]). Visits every bucket: call
    /// it off the schedulers for big tables.
    pub fn chain_stats(&self) -> ChainStats {
        chain_stats(
            &self.shards,
            |s| &s.map,
            Bucket::len,
            |s| s.graves.as_ref().map_or(0, |g| g.len()),
        )
    }

    /// Runs `f` on the newest object of the first key in traversal order
    /// (whose key is that key as ETS's walks spell it).
    pub fn read_first<R>(&self, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        read_from(
            &self.shards,
            0,
            None,
            |s| &s.map,
            |b| f(b.map(Bucket::newest)),
        )
    }

    /// Runs `f` on the newest object of the key after `key` in traversal
    /// order; `None` without calling `f` when `key` is not in the table.
    pub fn read_next<R>(&self, key: &Key, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        let shard = shard_index(key.hash());
        let g = self.shards[shard].0.read();
        let at = match g
            .map
            .find_bucket_index(key.hash(), |b| key.matches(b.key()))
        {
            Some(at) => at,
            None => g.graves.as_ref()?.place(key, |b| b.key())?,
        };
        Some(read_from(
            &self.shards,
            shard,
            Some((g, at + 1)),
            |s| &s.map,
            |b| f(b.map(Bucket::newest)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryBuf;
    use crate::format::{put_float, put_header, put_int, tag};

    fn pair(k: i64, v: f64) -> Entry {
        let mut b = EntryBuf::new();
        put_header(&mut b.out, tag::TUPLE, 2);
        let ks = b.out.len();
        put_int(&mut b.out, k);
        let ke = b.out.len();
        put_float(&mut b.out, v);
        b.finish(ks..ke, None)
    }
    fn key(k: i64) -> Vec<u8> {
        let mut o = Vec::new();
        put_int(&mut o, k);
        o
    }
    fn values(t: &BagTable, k: i64) -> Vec<Vec<u8>> {
        t.read(&Key::new(&key(k)), |os| os.map(<[u8]>::to_vec).collect())
    }
    fn objects(es: &[Entry]) -> Vec<Vec<u8>> {
        es.iter().map(|e| e.object().to_vec()).collect()
    }

    #[test]
    fn insert_all_if_refused_inserts_nothing() {
        let t = BagTable::new(true, true);
        let es = || (0..100).map(|i| pair(i, 0.5)).collect::<Vec<_>>();
        assert!(!t.insert_all_if(es(), || false));
        assert!(!t.insert_new_all_if(es(), || false));
        assert_eq!(t.len(), 0);
        assert!(t.insert_all_if(es(), || true));
        assert!(!t.insert_new_all_if(es(), || true));
        assert_eq!(t.len(), 100);
    }

    #[test]
    fn swap_objects_rewrites_a_key_only_if_unchanged() {
        let t = BagTable::new(true, true);
        let old = [pair(1, 1.0), pair(1, 2.0), pair(1, 1.0)];
        t.insert_all(old.to_vec());
        t.insert(pair(2, 0.0));
        let mem = t.memory_bytes();
        let k1 = key(1);
        let k = Key::new(&k1);
        let new = [pair(1, 10.0), pair(1, 20.0), pair(1, 30.0)];
        // Not what is stored (order, count): nothing changes.
        assert!(!t.swap_objects(
            &k,
            vec![pair(1, 2.0), pair(1, 1.0), pair(1, 1.0)],
            new.to_vec()
        ));
        assert!(!t.swap_objects(&k, old[1..].to_vec(), new.to_vec()));
        let k3 = key(3);
        assert!(!t.swap_objects(&Key::new(&k3), vec![], new.to_vec()));
        assert_eq!(values(&t, 1), objects(&old));
        // What is stored: rewritten in place, in order.
        assert!(t.swap_objects(&k, old.to_vec(), new.to_vec()));
        assert_eq!(values(&t, 1), objects(&new));
        assert_eq!(t.len(), 4);
        assert_eq!(t.memory_bytes(), mem);
        assert!(t.swap_objects(&k, new.to_vec(), vec![pair(1, 5.0)]));
        assert_eq!(t.len(), 2);
        assert_eq!(values(&t, 1), objects(&[pair(1, 5.0)]));
        // Objects inserted after those read stay, after the new ones.
        t.insert(pair(1, 6.0));
        t.insert(pair(1, 7.0));
        assert!(t.swap_objects(&k, vec![pair(1, 5.0)], vec![pair(1, 8.0), pair(1, 9.0)]));
        assert_eq!(
            values(&t, 1),
            objects(&[pair(1, 8.0), pair(1, 9.0), pair(1, 6.0), pair(1, 7.0)])
        );
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn bag_keeps_one_copy_in_insertion_order() {
        let t = BagTable::new(false, true);
        let empty = t.memory_bytes();
        t.insert_all(vec![pair(1, 2.0), pair(1, 1.0), pair(1, 2.0)]);
        t.insert(pair(1, -0.0));
        t.insert(pair(1, 0.0));
        assert_eq!(
            values(&t, 1),
            objects(&[pair(1, 2.0), pair(1, 1.0), pair(1, -0.0)])
        );
        assert_eq!(t.len(), 3);
        assert!(!t.insert_new_all(vec![pair(2, 0.0), pair(1, 5.0)]));
        assert!(t.insert_new_all(vec![pair(2, 0.0), pair(2, 1.0)]));
        assert_eq!(t.len(), 5);
        assert_eq!(t.remove_object(&pair(1, 2.0)), 1);
        assert_eq!(t.remove(&Key::new(&key(1))).map(|b| b.len()), Some(2));
        assert_eq!(t.remove_object(&pair(2, 0.0)), 1);
        assert_eq!(t.remove_object(&pair(2, 1.0)), 1);
        assert!(t.is_empty());
        assert!(!t.contains(&Key::new(&key(2))));
        assert!(t.shards.iter().all(|s| s.0.read().heap == 0));
        t.take_all();
        assert_eq!(t.memory_bytes(), empty);
    }

    /// `{k, v}` whose entry carries `canon` as an appended canonical key.
    fn pair_canon(k: f64, v: i64, canon: &[u8]) -> Entry {
        let mut b = EntryBuf::new();
        put_header(&mut b.out, tag::TUPLE, 2);
        put_float(&mut b.out, k);
        put_int(&mut b.out, v);
        let s = EntryBuf::object_start();
        b.finish(s..s, Some(canon))
    }

    #[test]
    fn objects_round_trip_through_the_bucket_buffer() {
        let t = BagTable::new(true, true);
        let empty = t.memory_bytes();
        let canon = key(0);
        // Two objects whose key is a slice of the object, then two with an
        // appended canonical key, all under one key, one removed between.
        let mut in_object = EntryBuf::new();
        put_header(&mut in_object.out, tag::TUPLE, 2);
        let ks = in_object.out.len();
        put_int(&mut in_object.out, 0);
        let ke = in_object.out.len();
        put_int(&mut in_object.out, 7);
        let a = in_object.finish(ks..ke, None);
        let all = vec![
            a.clone(),
            pair_canon(-0.0, 1, &canon),
            a.clone(),
            pair_canon(0.0, 2, &canon),
        ];
        for e in &all {
            t.insert(e.clone());
        }
        assert_eq!(values(&t, 0), objects(&all));
        // Only the objects holding the key's canonical bytes in place (at
        // byte 2: after the tuple header) say so.
        let key_first: Vec<bool> = t.read(&Key::new(&canon), |mut os| {
            std::iter::from_fn(|| os.next_key_at(2).map(|(_, k)| k)).collect()
        });
        assert_eq!(key_first, [true, false, true, false]);
        let at_3: Vec<bool> = t.read(&Key::new(&canon), |mut os| {
            std::iter::from_fn(|| os.next_key_at(3).map(|(_, k)| k)).collect()
        });
        assert_eq!(at_3, [false; 4]);
        let snap: Vec<Entry> = (0..t.shard_count())
            .flat_map(|s| t.snapshot_shard(s))
            .collect();
        assert_eq!(snap, all);
        assert!(t.memory_bytes() > empty);
        // delete_object removes every identical copy, keeping the order.
        assert_eq!(t.remove_object(&a), 2);
        assert_eq!(
            values(&t, 0),
            objects(&all[1..2])
                .into_iter()
                .chain(objects(&all[3..]))
                .collect::<Vec<_>>()
        );
        // 0.0 =:= -0.0 (zero_eq): both float objects are identical to either.
        assert_eq!(t.remove_object(&pair_canon(0.0, 1, &canon)), 1);
        assert_eq!(values(&t, 0), objects(&all[3..]));
        assert_eq!(t.remove(&Key::new(&canon)).map(|b| b.len()), Some(1));
        assert!(t.is_empty());
        assert!(t.shards.iter().all(|s| s.0.read().heap == 0));
        t.take_all();
        assert_eq!(t.memory_bytes(), empty);
    }

    #[test]
    fn duplicate_bag_keeps_every_copy() {
        let t = BagTable::new(true, true);
        t.insert_all(vec![pair(1, 1.0), pair(1, 2.0), pair(1, 1.0)]);
        t.insert(pair(1, 1.0));
        assert_eq!(t.len(), 4);
        assert_eq!(t.remove_object(&pair(1, 1.0)), 3);
        assert_eq!(values(&t, 1), objects(&[pair(1, 2.0)]));
        assert_eq!(t.take_all().len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_fixed_bag_walks_on_from_removed_keys() {
        let t = BagTable::new(true, true);
        for i in 0..5000 {
            t.insert(pair(i, 0.0));
            t.insert(pair(i, 1.0));
        }
        t.set_fixed(true);
        let mut seen = 0;
        let mut cur = t.read_first(|o| o.map(|o| o[2..11].to_vec()));
        while let Some(k) = cur {
            // Half the keys go by key, half object by object.
            if seen % 2 == 0 {
                assert!(t.remove(&Key::new(&k)).is_some());
            } else {
                let i = i64::from_le_bytes(k[1..].try_into().unwrap());
                for v in [0.0, 1.0] {
                    assert_eq!(t.remove_object(&pair(i, v)), 1);
                }
            }
            cur = t
                .read_next(&Key::new(&k), |o| o.map(|o| o[2..11].to_vec()))
                .expect("a removed key of a fixed bag is a place");
            seen += 1;
        }
        assert_eq!(seen, 5000);
        assert!(t.is_empty());
        assert!(!t.set_fixed(false).is_empty());
        assert!(t.read_next(&Key::new(&key(3)), |_| ()).is_none());
    }

    #[test]
    fn first_next_visit_each_key_once() {
        let t = BagTable::new(true, true);
        for i in 0..500 {
            t.insert(pair(i, 0.0));
            t.insert(pair(i, 1.0));
        }
        let mut seen = Vec::new();
        let mut cur = t.read_first(|o| o.map(|o| o[2..11].to_vec()));
        while let Some(k) = cur {
            cur = t
                .read_next(&Key::new(&k), |o| o.map(|o| o[2..11].to_vec()))
                .unwrap();
            seen.push(k);
        }
        assert_eq!(seen.len(), 500);
        let snap: Vec<Entry> = (0..t.shard_count())
            .flat_map(|s| t.snapshot_shard(s))
            .collect();
        assert_eq!(snap.len(), 1000);
        let mut keys: Vec<Vec<u8>> = snap.iter().map(|e| e.key().to_vec()).collect();
        keys.dedup();
        assert_eq!(keys, seen);
        assert!(t.read_next(&Key::new(&key(-1)), |_| ()).is_none());
    }
}
