//! A process registry: keys mapped to `(process, value)` entries, with
//! unique or duplicate keys, indexed both by key and by process.
//!
//! Processes are opaque 64-bit words. The host tells the registry when a
//! process exits ([`Registry::process_down`]): its entries are hidden at once
//! (one atomic store, so lookups never return a dead process afterwards) and
//! physically removed by [`Registry::cleanup`], which the host may run on a
//! background thread for processes with many entries.

use crate::set::{hash_key, shrink_sparse, Padded};
use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;

const SHARDS: usize = 64;

/// One registered process.
#[derive(Debug)]
pub struct Proc {
    pid: u64,
    alive: AtomicBool,
    /// Keys this process registered, once per registration.
    keys: Mutex<Vec<Arc<[u8]>>>,
}

impl Proc {
    /// The process word.
    pub fn pid(&self) -> u64 {
        self.pid
    }

    /// False once the process has exited.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Number of registrations still recorded for this process.
    pub fn registrations(&self) -> usize {
        self.keys.lock().len()
    }
}

struct Reg {
    proc: Arc<Proc>,
    value: Box<[u8]>,
}

struct Slot {
    key: Arc<[u8]>,
    /// Registration order; may hold entries of dead processes until cleanup.
    entries: Vec<Reg>,
    /// Entries of dead processes still in `entries`.
    dead: usize,
}

impl Slot {
    fn compact(&mut self) {
        self.entries.retain(|r| r.proc.is_alive());
        self.dead = 0;
    }
}

/// Process records of one shard, found by pid.
type ProcShard = Mutex<HashTable<Arc<Proc>>>;

#[inline]
fn pid_hash(pid: u64) -> u64 {
    // splitmix64 finaliser: pid words differ in few, low bits.
    let mut z = pid.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Why a registration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The unique key is held by this live process.
    Taken(u64),
}

/// A registry.
pub struct Registry {
    unique: bool,
    keys: Box<[Padded<RwLock<HashTable<Slot>>>]>,
    procs: Box<[Padded<ProcShard>]>,
    live: AtomicIsize,
}

/// A registry entry as returned by lookups: `(pid, encoded value)`.
pub type Found = (u64, Vec<u8>);

impl Registry {
    /// An empty registry with unique or duplicate keys.
    pub fn new(unique: bool) -> Self {
        Registry {
            unique,
            keys: (0..SHARDS)
                .map(|_| Padded(RwLock::new(HashTable::new())))
                .collect(),
            procs: (0..SHARDS)
                .map(|_| Padded(Mutex::new(HashTable::new())))
                .collect(),
            live: AtomicIsize::new(0),
        }
    }

    /// True for a unique-key registry.
    pub fn is_unique(&self) -> bool {
        self.unique
    }

    fn key_shard(&self, hash: u64) -> &RwLock<HashTable<Slot>> {
        &self.keys[((hash >> 32) as usize) & (SHARDS - 1)].0
    }

    fn proc_shard(&self, pid: u64) -> &ProcShard {
        &self.procs[(pid_hash(pid) >> 32) as usize & (SHARDS - 1)].0
    }

    /// The live record of `pid`, if it has registrations.
    pub fn proc(&self, pid: u64) -> Option<Arc<Proc>> {
        self.proc_shard(pid)
            .lock()
            .find(pid_hash(pid), |p| p.pid == pid)
            .cloned()
    }

    /// Registers `pid` under `key` with `value`. For a unique key held by
    /// another process, `is_alive(holder)` decides whether the holder is
    /// really alive (a dead holder's key is reclaimed). Returns true when
    /// `pid` had no registrations before (the host should monitor it).
    pub fn register(
        &self,
        pid: u64,
        key: &[u8],
        value: &[u8],
        is_alive: impl FnOnce(u64) -> bool,
    ) -> Result<bool, RegisterError> {
        let hash = hash_key(key);
        let (proc, new) = {
            let mut procs = self.proc_shard(pid).lock();
            match procs.find(pid_hash(pid), |p| p.pid == pid) {
                Some(p) => (p.clone(), false),
                None => {
                    let p = Arc::new(Proc {
                        pid,
                        alive: AtomicBool::new(true),
                        keys: Mutex::new(Vec::with_capacity(1)),
                    });
                    procs.insert_unique(pid_hash(pid), p.clone(), |p| pid_hash(p.pid));
                    (p, true)
                }
            }
        };
        let mut shard = self.key_shard(hash).write();
        let key_arc = match shard.find_mut(hash, |s| &*s.key == key) {
            Some(slot) => {
                if self.unique {
                    if let Some(holder) = slot.entries.iter().find(|r| r.proc.is_alive()) {
                        let holder_pid = holder.proc.pid;
                        if holder_pid == pid || is_alive(holder_pid) {
                            drop(shard);
                            self.forget_if_empty(&proc, new);
                            return Err(RegisterError::Taken(holder_pid));
                        }
                        // Dead but not yet reported: reclaim the key now.
                        self.hide(&slot.entries[0].proc);
                    }
                    slot.entries.clear();
                    slot.dead = 0;
                }
                slot.entries.push(Reg {
                    proc: proc.clone(),
                    value: value.into(),
                });
                slot.key.clone()
            }
            None => {
                let key_arc: Arc<[u8]> = Arc::from(key);
                shard.insert_unique(
                    hash,
                    Slot {
                        key: key_arc.clone(),
                        entries: vec![Reg {
                            proc: proc.clone(),
                            value: value.into(),
                        }],
                        dead: 0,
                    },
                    |s| hash_key(&s.key),
                );
                key_arc
            }
        };
        proc.keys.lock().push(key_arc);
        drop(shard);
        self.live.fetch_add(1, Ordering::AcqRel);
        Ok(new)
    }

    /// Drops the process record of `proc`.
    fn forget(&self, proc: &Arc<Proc>) {
        let mut shard = self.proc_shard(proc.pid).lock();
        if let Ok(e) = shard.find_entry(pid_hash(proc.pid), |p| Arc::ptr_eq(p, proc)) {
            e.remove();
            shrink_sparse(&mut shard, |p| pid_hash(p.pid));
        }
    }

    /// Undoes the creation of a process record that ended up unused.
    fn forget_if_empty(&self, proc: &Arc<Proc>, created: bool) {
        if created && proc.keys.lock().is_empty() {
            self.forget(proc);
        }
    }

    /// Marks a process dead (its entries disappear from every lookup) and
    /// detaches its record; the entries stay until [`Registry::cleanup`].
    fn hide(&self, proc: &Arc<Proc>) -> bool {
        if !proc.alive.swap(false, Ordering::AcqRel) {
            return false;
        }
        let n = proc.keys.lock().len();
        self.live.fetch_sub(n as isize, Ordering::AcqRel);
        self.forget(proc);
        true
    }

    /// Reports that `pid` exited. Its entries vanish from lookups now; the
    /// returned record must be passed to [`Registry::cleanup`] (possibly on
    /// another thread) to free them.
    pub fn process_down(&self, pid: u64) -> Option<Arc<Proc>> {
        let proc = self.proc(pid)?;
        self.hide(&proc);
        Some(proc)
    }

    /// Physically removes a dead process's entries.
    pub fn cleanup(&self, proc: &Arc<Proc>) {
        let keys = std::mem::take(&mut *proc.keys.lock());
        // Count registrations per key (a process may hold a key many times).
        let mut counts: HashMap<&[u8], usize> = HashMap::new();
        for k in &keys {
            *counts.entry(&**k).or_default() += 1;
        }
        for (key, n) in counts {
            let hash = hash_key(key);
            let mut shard = self.key_shard(hash).write();
            let Ok(mut slot) = shard.find_entry(hash, |s| &*s.key == key) else {
                continue;
            };
            let s = slot.get_mut();
            if self.unique || s.entries.len() <= 8 {
                s.entries.retain(|r| !Arc::ptr_eq(&r.proc, proc));
                s.dead = s.entries.iter().filter(|r| !r.proc.is_alive()).count();
            } else {
                // Amortised: remove dead entries in bulk once they are half.
                s.dead += n;
                if s.dead * 2 >= s.entries.len() {
                    s.compact();
                }
            }
            if s.entries.is_empty() {
                slot.remove();
                shrink_sparse(&mut shard, |s| hash_key(&s.key));
            }
        }
    }

    /// Removes `pid`'s entries under `key` whose value satisfies `pred`.
    /// Returns the number removed.
    pub fn unregister(&self, pid: u64, key: &[u8], mut pred: impl FnMut(&[u8]) -> bool) -> usize {
        let Some(proc) = self.proc(pid) else {
            return 0;
        };
        let hash = hash_key(key);
        let mut shard = self.key_shard(hash).write();
        let Ok(mut slot) = shard.find_entry(hash, |s| &*s.key == key) else {
            return 0;
        };
        let s = slot.get_mut();
        let before = s.entries.len();
        s.entries
            .retain(|r| !(Arc::ptr_eq(&r.proc, &proc) && pred(&r.value)));
        let removed = before - s.entries.len();
        if s.entries.is_empty() {
            slot.remove();
            shrink_sparse(&mut shard, |s| hash_key(&s.key));
        }
        drop(shard);
        if removed > 0 {
            let mut keys = proc.keys.lock();
            let mut left = removed;
            keys.retain(|k| {
                if left > 0 && &**k == key {
                    left -= 1;
                    false
                } else {
                    true
                }
            });
            if keys.capacity() > 16 && keys.len() * 4 < keys.capacity() {
                let n = keys.len() * 2;
                keys.shrink_to(n);
            }
            drop(keys);
            // The process record stays (even when empty) until the process
            // exits, so that the host monitors each process only once.
            self.live.fetch_sub(removed as isize, Ordering::AcqRel);
        }
        removed
    }

    /// Live entries under `key`, in registration order.
    pub fn lookup(&self, key: &[u8]) -> Vec<Found> {
        self.read_key(key, |r| Some((r.pid, r.value.to_vec())))
    }

    /// Runs `f` over the live entries under `key` while the key is locked.
    pub fn read_key<T>(&self, key: &[u8], mut f: impl FnMut(&RegView) -> Option<T>) -> Vec<T> {
        let hash = hash_key(key);
        let shard = self.key_shard(hash).read();
        match shard.find(hash, |s| &*s.key == key) {
            None => Vec::new(),
            Some(s) => s
                .entries
                .iter()
                .filter(|r| r.proc.is_alive())
                .filter_map(|r| {
                    f(&RegView {
                        pid: r.proc.pid,
                        value: &r.value,
                    })
                })
                .collect(),
        }
    }

    /// The live process holding a unique key, with its value.
    pub fn whereis(&self, key: &[u8]) -> Option<Found> {
        self.lookup(key).into_iter().next()
    }

    /// Replaces the value of `pid`'s entry under a unique `key`; returns the
    /// old value, or `None` when `pid` does not hold the key.
    pub fn update_value(&self, pid: u64, key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
        let hash = hash_key(key);
        let mut shard = self.key_shard(hash).write();
        let slot = shard.find_mut(hash, |s| &*s.key == key)?;
        let reg = slot
            .entries
            .iter_mut()
            .find(|r| r.proc.pid == pid && r.proc.is_alive())?;
        Some(std::mem::replace(&mut reg.value, value.into()).into_vec())
    }

    /// Keys registered by a live `pid`, once per registration.
    pub fn keys_of(&self, pid: u64) -> Vec<Arc<[u8]>> {
        match self.proc(pid) {
            Some(p) if p.is_alive() => p.keys.lock().clone(),
            _ => Vec::new(),
        }
    }

    /// Number of live entries.
    pub fn count(&self) -> usize {
        self.live.load(Ordering::Acquire).max(0) as usize
    }

    /// Every live entry as `(key, pid, value)`, shard by shard.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], u64, &[u8])) {
        for shard in self.keys.iter() {
            let shard = shard.0.read();
            for s in shard.iter() {
                for r in s.entries.iter().filter(|r| r.proc.is_alive()) {
                    f(&s.key, r.proc.pid, &r.value);
                }
            }
        }
    }

    /// Bytes of memory the registry holds, counted by walking it: key and
    /// process tables (slots and control bytes), keys, entry vectors, values
    /// and process records, each allocation rounded to the allocator's
    /// 16-byte granule. Costs O(entries): for statistics, not hot paths.
    pub fn memory_bytes(&self) -> usize {
        fn alloc(n: usize) -> usize {
            if n == 0 {
                0
            } else {
                n.next_multiple_of(16)
            }
        }
        fn table(capacity: usize, slot: usize) -> usize {
            if capacity == 0 {
                0
            } else {
                let buckets = (capacity * 8 / 7).next_power_of_two();
                buckets * (slot + 1)
            }
        }
        let mut total = std::mem::size_of::<Self>()
            + self.keys.len() * std::mem::size_of::<Padded<RwLock<HashTable<Slot>>>>()
            + self.procs.len() * std::mem::size_of::<Padded<ProcShard>>();
        for shard in self.keys.iter() {
            let shard = shard.0.read();
            total += table(shard.capacity(), std::mem::size_of::<Slot>());
            for s in shard.iter() {
                total += alloc(16 + s.key.len());
                total += alloc(s.entries.capacity() * std::mem::size_of::<Reg>());
                total += s
                    .entries
                    .iter()
                    .map(|r| alloc(r.value.len()))
                    .sum::<usize>();
            }
        }
        for shard in self.procs.iter() {
            let shard = shard.0.lock();
            total += table(shard.capacity(), std::mem::size_of::<Arc<Proc>>());
            for p in shard.iter() {
                total += alloc(16 + std::mem::size_of::<Proc>());
                total += alloc(p.keys.lock().capacity() * std::mem::size_of::<Arc<[u8]>>());
            }
        }
        total
    }

    /// Every process record (for the host to drop monitors, etc.).
    pub fn pids(&self) -> Vec<u64> {
        self.procs
            .iter()
            .flat_map(|s| s.0.lock().iter().map(|p| p.pid).collect::<Vec<_>>())
            .collect()
    }
}

/// A borrowed live entry.
pub struct RegView<'a> {
    /// The process word.
    pub pid: u64,
    /// The encoded value.
    pub value: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(_: u64) -> bool {
        true
    }

    #[test]
    fn unique_keys() {
        let r = Registry::new(true);
        assert_eq!(r.register(1, b"k", b"v1", alive), Ok(true));
        assert_eq!(
            r.register(2, b"k", b"v2", alive),
            Err(RegisterError::Taken(1))
        );
        assert_eq!(
            r.register(1, b"k", b"v3", alive),
            Err(RegisterError::Taken(1))
        );
        assert_eq!(r.lookup(b"k"), vec![(1, b"v1".to_vec())]);
        assert_eq!(r.count(), 1);
        assert_eq!(r.update_value(1, b"k", b"v9"), Some(b"v1".to_vec()));
        assert_eq!(r.update_value(2, b"k", b"v9"), None);
        assert_eq!(r.unregister(1, b"k", |_| true), 1);
        assert_eq!(r.count(), 0);
        assert!(r.lookup(b"k").is_empty());
        // The record stays until the process exits: it is monitored once.
        assert_eq!(r.register(1, b"k", b"v1", alive), Ok(false));
        assert!(r.process_down(1).is_some());
        assert!(r.proc(1).is_none());
    }

    #[test]
    fn memory_grows_with_registrations_and_shrinks_after_cleanup() {
        let r = Registry::new(true);
        let empty = r.memory_bytes();
        for pid in 0..1000u64 {
            r.register(pid, &pid.to_le_bytes(), b"value", alive)
                .unwrap();
        }
        let full = r.memory_bytes();
        assert!(full > empty + 1000 * 64, "{empty} {full}");
        for pid in 0..1000u64 {
            let p = r.process_down(pid).unwrap();
            r.cleanup(&p);
        }
        assert!(r.memory_bytes() < full);
    }

    #[test]
    fn unregistering_gives_memory_back() {
        let r = Registry::new(true);
        let empty = r.memory_bytes();
        for k in 0..5_000u64 {
            r.register(7, &k.to_le_bytes(), b"value", alive).unwrap();
        }
        let full = r.memory_bytes();
        for k in 0..5_000u64 {
            assert_eq!(r.unregister(7, &k.to_le_bytes(), |_| true), 1);
        }
        assert_eq!(r.count(), 0);
        let after = r.memory_bytes();
        assert!(after * 5 < full, "{empty} {full} {after}");
    }

    #[test]
    fn dead_holder_is_reclaimed() {
        let r = Registry::new(true);
        r.register(1, b"k", b"a", alive).unwrap();
        assert_eq!(r.register(2, b"k", b"b", |_| false), Ok(true));
        assert_eq!(r.lookup(b"k"), vec![(2, b"b".to_vec())]);
        assert_eq!(r.count(), 1);
    }

    #[test]
    fn duplicates_keep_registration_order() {
        let r = Registry::new(false);
        for pid in [5u64, 3, 9, 3] {
            r.register(pid, b"topic", &[pid as u8], alive).unwrap();
        }
        let pids: Vec<u64> = r.lookup(b"topic").into_iter().map(|(p, _)| p).collect();
        assert_eq!(pids, vec![5, 3, 9, 3]);
        assert_eq!(r.keys_of(3).len(), 2);
        assert_eq!(r.unregister(3, b"topic", |v| v == [3]), 2);
        let pids: Vec<u64> = r.lookup(b"topic").into_iter().map(|(p, _)| p).collect();
        assert_eq!(pids, vec![5, 9]);
    }

    #[test]
    fn down_hides_then_cleanup_frees() {
        let r = Registry::new(false);
        for pid in 0..100u64 {
            r.register(pid, b"topic", b"", alive).unwrap();
            r.register(pid, format!("own{pid}").as_bytes(), b"", alive)
                .unwrap();
        }
        assert_eq!(r.count(), 200);
        let downs: Vec<_> = (0..50u64).map(|pid| r.process_down(pid).unwrap()).collect();
        assert_eq!(r.count(), 100);
        assert_eq!(r.lookup(b"topic").len(), 50);
        assert!(r.lookup(b"own3").is_empty());
        assert!(r.keys_of(3).is_empty());
        for d in &downs {
            r.cleanup(d);
        }
        assert_eq!(r.lookup(b"topic").len(), 50);
        let mut total = 0;
        r.for_each(|_, _, _| total += 1);
        assert_eq!(total, 100);
        assert!(r.process_down(3).is_none());
    }

    #[test]
    fn concurrent_register_and_down() {
        let r = Arc::new(Registry::new(false));
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let r = r.clone();
                s.spawn(move || {
                    for i in 0..2000u64 {
                        let pid = t * 1_000_000 + i;
                        r.register(pid, b"shared", b"", alive).unwrap();
                        if i % 2 == 0 {
                            let p = r.process_down(pid).unwrap();
                            r.cleanup(&p);
                        }
                    }
                });
            }
        });
        assert_eq!(r.count(), 4000);
        assert_eq!(r.lookup(b"shared").len(), 4000);
    }
}
