//! What a hash shard (set or bag) remembers while its table is *fixed*
//! (ETS's `safe_fixtable/2`): where the keys removed since the fixation
//! were, so that a traversal can go on from a key it just deleted.
//!
//! A fixed ETS hash table keeps deleted objects in place (hidden) until it
//! is unfixed, so that `next/2` from a deleted key continues where that key
//! was. A fixed shard here removes objects as usual but records each
//! removed key with its bucket index, keeps the maps that
//! `delete_all_objects/1` takes out (instead of freeing them), and does not
//! shrink: positions stay meaningful until the table is unfixed. Nor does
//! it grow: new keys that do not fit go to overflow tables walked after it
//! (see [`crate::segmap`]), so a traversal meets every object that stays
//! exactly once, as in ETS.

use crate::segmap::SegMap;
use crate::set::Key;
use hashbrown::HashTable;

/// A removed key and the bucket it occupied.
struct Grave {
    hash: u64,
    key: Box<[u8]>,
    bucket: usize,
}

/// The keys removed from one shard since its table was fixed.
pub struct Graves<T> {
    removed: HashTable<Grave>,
    /// Maps taken out whole (by `delete_all_objects/1`) while fixed: their
    /// keys are findable, their layout is that of the shard before.
    cleared: Vec<SegMap<T>>,
}

impl<T> Default for Graves<T> {
    fn default() -> Self {
        Graves {
            removed: HashTable::new(),
            cleared: Vec::new(),
        }
    }
}

impl<T> Graves<T> {
    /// Records that the key `key` (hashing to `hash`) left bucket `bucket`.
    /// A key removed twice (re-inserted meanwhile) keeps its latest place.
    pub(crate) fn bury(&mut self, hash: u64, key: &[u8], bucket: usize) {
        match self.removed.entry(hash, |g| &*g.key == key, |g| g.hash) {
            hashbrown::hash_table::Entry::Occupied(mut o) => o.get_mut().bucket = bucket,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(Grave {
                    hash,
                    key: key.into(),
                    bucket,
                });
            }
        }
    }

    /// Keeps a map taken out of the shard (its keys stay findable).
    pub(crate) fn keep_cleared(&mut self, map: SegMap<T>) {
        if !map.is_empty() {
            self.cleared.push(map);
        }
    }

    /// The bucket `key` occupied when it was removed, if it was removed
    /// while the table was fixed; `key_of` gives a stored item's key bytes.
    pub(crate) fn place(&self, key: &Key, key_of: impl Fn(&T) -> &[u8]) -> Option<usize> {
        if let Some(g) = self.removed.find(key.hash(), |g| key.matches(&g.key)) {
            return Some(g.bucket);
        }
        self.cleared
            .iter()
            .find_map(|m| m.find_bucket_index(key.hash(), |t| key.matches(key_of(t))))
    }

    /// Number of removed keys remembered (tests).
    pub fn len(&self) -> usize {
        self.removed.len() + self.cleared.iter().map(SegMap::len).sum::<usize>()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a fixable shard gives access to.
pub(crate) trait Fixable {
    /// The items of the shard's map.
    type Item: Send + Sync + 'static;
    /// The shard's graves: `Some` while the table is fixed.
    fn graves(&mut self) -> &mut Option<Box<Graves<Self::Item>>>;
    /// The shard's map.
    fn map(&mut self) -> &mut SegMap<Self::Item>;
}

/// Takes the shard's map out (`delete_all_objects/1`): a fixed shard keeps
/// it among its graves and gives an empty map instead.
pub(crate) fn take_map<S: Fixable>(s: &mut S) -> SegMap<S::Item> {
    let map = std::mem::take(s.map());
    match s.graves() {
        Some(g) => {
            g.keep_cleared(map);
            SegMap::default()
        }
        None => map,
    }
}

/// Fixes (`true`) or unfixes one shard; an unfixed shard's graves go to
/// `kept`, to be dropped.
pub(crate) fn set_fixed<S: Fixable>(s: &mut S, fixed: bool, kept: &mut Vec<Box<dyn Send + Sync>>) {
    if fixed {
        s.graves().get_or_insert_with(Default::default);
    } else if let Some(g) = s.graves().take() {
        // Removals may have left it sparse (see `SegMap::tidy`).
        s.map().mark_untidy();
        if !g.is_empty() {
            kept.push(g);
        }
    }
}

/// The graves of every shard of a table that was just unfixed: dropping
/// them frees what the fixation kept (do that off the caller's scheduler
/// when there may be many).
#[derive(Default)]
pub struct Released {
    pub(crate) kept: Vec<Box<dyn Send + Sync>>,
    /// Some shard's housekeeping was left to its next writes (see
    /// `SegMap::tidy`).
    pub(crate) untidy: bool,
}

impl Released {
    /// True when nothing was kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// True when some shard still has housekeeping due: the unfixing
    /// caller may do it at once, off the schedulers (`tidy_all`), rather
    /// than leave it to the shards' next writes.
    pub fn untidy(&self) -> bool {
        self.untidy
    }
}
