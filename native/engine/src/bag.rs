//! `bag` and `duplicate_bag` tables: many objects per key, kept per key in
//! insertion order. A bag stores an object only once (an identical object,
//! `=:=`, is not added again); a duplicate bag stores every copy.
//!
//! Sharded like [`crate::set::SetTable`]: keys hash to one of
//! [`SHARDS`] locked hash tables whose items are per-key buckets.

use crate::entry::Entry;
use crate::order::identical;
use crate::set::{buckets_from, copy_buckets, hash_key, read_from, Key, Padded, SHARDS};
use hashbrown::HashTable;
use parking_lot::{RwLock, RwLockWriteGuard};

/// The objects of one key, in insertion order (never empty in a table).
pub struct Bucket(Vec<Entry>);

impl Bucket {
    fn key(&self) -> &[u8] {
        self.0[0].key()
    }

    /// The objects, in insertion order.
    pub fn objects(&self) -> &[Entry] {
        &self.0
    }
}

#[derive(Default)]
struct Shard {
    map: HashTable<Bucket>,
    /// Heap bytes of the entries and bucket vectors.
    heap: usize,
    /// Number of objects.
    count: usize,
}

const ENTRY: usize = std::mem::size_of::<Entry>();

impl Shard {
    fn find(&self, key: &Key) -> Option<&Bucket> {
        self.map.find(key.hash(), |b| key.matches(b.key()))
    }

    /// Adds `entry` (bag: unless an identical object is there).
    fn add(&mut self, entry: Entry, duplicate: bool, zero_eq: bool) {
        let hash = hash_key(entry.key());
        match self
            .map
            .entry(hash, |b| b.key() == entry.key(), |b| hash_key(b.key()))
        {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                let b = &mut o.get_mut().0;
                if !duplicate
                    && b.iter()
                        .any(|e| identical(e.object(), entry.object(), zero_eq))
                {
                    return;
                }
                let cap = b.capacity();
                self.heap += entry.heap_bytes();
                b.push(entry);
                self.heap += (b.capacity() - cap) * ENTRY;
                self.count += 1;
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                self.heap += entry.heap_bytes() + ENTRY;
                self.count += 1;
                v.insert(Bucket(vec![entry]));
            }
        }
    }

    fn forget(&mut self, b: &Bucket) {
        self.count -= b.0.len();
        self.heap -= b.0.iter().map(Entry::heap_bytes).sum::<usize>() + b.0.capacity() * ENTRY;
    }

    fn remove(&mut self, key: &Key) -> Vec<Entry> {
        match self.map.find_entry(key.hash(), |b| key.matches(b.key())) {
            Ok(o) => {
                let (b, _) = o.remove();
                self.forget(&b);
                b.0
            }
            Err(_) => Vec::new(),
        }
    }

    fn bytes(&self) -> usize {
        let buckets = if self.map.capacity() == 0 {
            0
        } else {
            (self.map.capacity() * 8 / 7).next_power_of_two()
        };
        self.heap + buckets * (std::mem::size_of::<Bucket>() + 1)
    }
}

/// The contents of a table taken out by [`BagTable::take_all`]; dropping
/// it frees every entry.
pub struct BagContents(Vec<HashTable<Bucket>>);

impl BagContents {
    /// Number of objects.
    pub fn len(&self) -> usize {
        self.0
            .iter()
            .flat_map(|m| m.iter())
            .map(|b| b.0.len())
            .sum()
    }

    /// True when there are no objects.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|m| m.is_empty())
    }
}

/// A sharded concurrent bag or duplicate bag.
pub struct BagTable {
    shards: Box<[Padded<RwLock<Shard>>]>,
    duplicate: bool,
    zero_eq: bool,
}

impl BagTable {
    /// An empty table: a duplicate bag when `duplicate`. `zero_eq` says
    /// whether `0.0 =:= -0.0` on the host (then such objects are identical).
    pub fn new(duplicate: bool, zero_eq: bool) -> Self {
        BagTable {
            shards: (0..SHARDS)
                .map(|_| Padded(RwLock::new(Shard::default())))
                .collect(),
            duplicate,
            zero_eq,
        }
    }

    /// True for a duplicate bag.
    pub fn is_duplicate(&self) -> bool {
        self.duplicate
    }

    fn shard_of(hash: u64) -> usize {
        ((hash >> 32) as usize) & (SHARDS - 1)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[Self::shard_of(hash)].0
    }

    /// Runs `f` on the objects under `key` (empty when none), read-locked.
    pub fn read<R>(&self, key: &Key, f: impl FnOnce(&[Entry]) -> R) -> R {
        let g = self.shard(key.hash()).read();
        f(g.find(key).map_or(&[][..], |b| b.objects()))
    }

    /// True when some object has `key`.
    pub fn contains(&self, key: &Key) -> bool {
        self.shard(key.hash()).read().find(key).is_some()
    }

    /// Adds one object.
    pub fn insert(&self, entry: Entry) {
        let hash = hash_key(entry.key());
        self.shard(hash)
            .write()
            .add(entry, self.duplicate, self.zero_eq);
    }

    fn lock_for(&self, entries: &[Entry]) -> Vec<(usize, RwLockWriteGuard<'_, Shard>)> {
        let mut ids: Vec<usize> = entries
            .iter()
            .map(|e| Self::shard_of(hash_key(e.key())))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|i| (i, self.shards[i].0.write()))
            .collect()
    }

    fn guard<'g, 't>(
        guards: &'g mut [(usize, RwLockWriteGuard<'t, Shard>)],
        entry: &Entry,
    ) -> &'g mut Shard {
        let id = Self::shard_of(hash_key(entry.key()));
        let at = guards
            .binary_search_by_key(&id, |(i, _)| *i)
            .expect("every entry's shard is locked");
        &mut guards[at].1
    }

    /// Objects of one multi-object insert in the order ETS adds them: a
    /// duplicate bag in list order, a bag from the end of the list (so
    /// `[{a, 1}, {a, 2}]` reads back as `[{a, 2}, {a, 1}]`, as on OTP 25).
    fn in_insert_order(&self, mut entries: Vec<Entry>) -> Vec<Entry> {
        if !self.duplicate {
            entries.reverse();
        }
        entries
    }

    /// Adds all objects atomically, in ETS's order (see above).
    pub fn insert_all(&self, entries: Vec<Entry>) {
        let mut guards = self.lock_for(&entries);
        for e in self.in_insert_order(entries) {
            Self::guard(&mut guards, &e).add(e, self.duplicate, self.zero_eq);
        }
    }

    /// Adds all objects atomically if none of their keys is present;
    /// otherwise adds nothing. Returns whether it added.
    pub fn insert_new_all(&self, entries: Vec<Entry>) -> bool {
        let mut guards = self.lock_for(&entries);
        for e in &entries {
            if Self::guard(&mut guards, e)
                .find(&Key::new(e.key()))
                .is_some()
            {
                return false;
            }
        }
        for e in self.in_insert_order(entries) {
            Self::guard(&mut guards, &e).add(e, self.duplicate, self.zero_eq);
        }
        true
    }

    /// Removes and returns every object under `key`, in insertion order.
    pub fn remove(&self, key: &Key) -> Vec<Entry> {
        self.shard(key.hash()).write().remove(key)
    }

    /// Removes every object identical to `obj` (same key); returns them.
    pub fn remove_object(&self, obj: &Entry) -> Vec<Entry> {
        let key = Key::new(obj.key());
        let mut g = self.shard(key.hash()).write();
        let zero_eq = self.zero_eq;
        let Ok(mut o) = g.map.find_entry(key.hash(), |b| key.matches(b.key())) else {
            return Vec::new();
        };
        let b = &mut o.get_mut().0;
        let old_cap = b.capacity();
        let (gone, kept): (Vec<Entry>, Vec<Entry>) = std::mem::take(b)
            .into_iter()
            .partition(|e| identical(e.object(), obj.object(), zero_eq));
        let freed: usize = gone.iter().map(Entry::heap_bytes).sum();
        let new_cap = kept.capacity();
        if kept.is_empty() {
            o.remove();
            g.heap -= freed + old_cap * ENTRY;
        } else {
            *b = kept;
            g.heap = g.heap + new_cap * ENTRY - freed - old_cap * ENTRY;
        }
        g.count -= gone.len();
        gone
    }

    /// Takes every object out of the table, shard by shard.
    pub fn take_all(&self) -> BagContents {
        BagContents(
            self.shards
                .iter()
                .map(|s| {
                    let mut s = s.0.write();
                    s.heap = 0;
                    s.count = 0;
                    std::mem::take(&mut s.map)
                })
                .collect(),
        )
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().count).sum()
    }

    /// True when the table has no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory held by the table.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.shards.len() * std::mem::size_of::<Padded<RwLock<Shard>>>()
            + self
                .shards
                .iter()
                .map(|s| s.0.read().bytes())
                .sum::<usize>()
    }

    /// Number of shards (for shard-by-shard traversal).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// A copy of one shard's objects, key by key in traversal order, each
    /// key's objects in insertion order.
    pub fn snapshot_shard(&self, shard: usize) -> Vec<Entry> {
        let s = self.shards[shard].0.read();
        let mut out = Vec::with_capacity(s.count);
        for b in buckets_from(&s.map, 0) {
            out.extend(b.0.iter().cloned());
        }
        out
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
        copy_buckets(&s.map, from, max, |b, out| out.extend(b.0.iter().cloned()))
    }

    /// Runs `f` on the first object of the first key in traversal order.
    pub fn read_first<R>(&self, f: impl FnOnce(Option<&Entry>) -> R) -> R {
        read_from(&self.shards, 0, None, |s| &s.map, |b| f(b.map(|b| &b.0[0])))
    }

    /// Runs `f` on the first object of the key after `key` in traversal
    /// order; `None` without calling `f` when `key` is not in the table.
    pub fn read_next<R>(&self, key: &Key, f: impl FnOnce(Option<&Entry>) -> R) -> Option<R> {
        let shard = Self::shard_of(key.hash());
        let g = self.shards[shard].0.read();
        let at = g
            .map
            .find_bucket_index(key.hash(), |b| key.matches(b.key()))?;
        Some(read_from(
            &self.shards,
            shard,
            Some((g, at + 1)),
            |s| &s.map,
            |b| f(b.map(|b| &b.0[0])),
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
    fn values(t: &BagTable, k: i64) -> Vec<Entry> {
        t.read(&Key::new(&key(k)), |es| es.to_vec())
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
            vec![pair(1, 2.0), pair(1, 1.0), pair(1, -0.0)]
        );
        assert_eq!(t.len(), 3);
        assert!(!t.insert_new_all(vec![pair(2, 0.0), pair(1, 5.0)]));
        assert!(t.insert_new_all(vec![pair(2, 0.0), pair(2, 1.0)]));
        assert_eq!(t.len(), 5);
        assert_eq!(t.remove_object(&pair(1, 2.0)).len(), 1);
        assert_eq!(t.remove(&Key::new(&key(1))).len(), 2);
        assert_eq!(t.remove_object(&pair(2, 0.0)).len(), 1);
        assert_eq!(t.remove_object(&pair(2, 1.0)).len(), 1);
        assert!(t.is_empty());
        assert!(!t.contains(&Key::new(&key(2))));
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
        assert_eq!(t.remove_object(&pair(1, 1.0)).len(), 3);
        assert_eq!(values(&t, 1), vec![pair(1, 2.0)]);
        assert_eq!(t.take_all().len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn first_next_visit_each_key_once() {
        let t = BagTable::new(true, true);
        for i in 0..500 {
            t.insert(pair(i, 0.0));
            t.insert(pair(i, 1.0));
        }
        let mut seen = Vec::new();
        let mut cur = t.read_first(|e| e.map(|e| e.key().to_vec()));
        while let Some(k) = cur {
            cur = t
                .read_next(&Key::new(&k), |e| e.map(|e| e.key().to_vec()))
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
