//! Out-of-line binaries ("blobs") shared by reference count.
//!
//! A large binary stored as a top-level, non-key element of an object is
//! kept outside the entry, in a block the host allocates and
//! reference-counts (the NIF shares it with the VM through a resource
//! object, so that a lookup returns the same bytes as a resource binary
//! without copying them). Tables that store [`Entry`](crate::entry::Entry)
//! values (set, ordered_set) may hold blobs; bags copy object bytes into
//! buckets of their own and must never be given entries with blobs. The entry holds only a [`tag::BLOB`](crate::format::tag::BLOB)
//! value: the tag and an opaque 8-byte handle.
//!
//! # Ownership rules
//!
//! - An [`Entry`](crate::entry::Entry) owns one reference to every blob in
//!   its object. Making an entry from bytes (`EntryImage::to_entry`,
//!   `Entry::assign`, `Clone`) keeps each blob; dropping an entry (or
//!   overwriting it with `assign`) releases each. Entries whose header
//!   does not carry the blob flag pay nothing.
//! - Blobs only appear as *top-level elements* of an object's tuple, never
//!   in its key element (keys are hashed and compared as bytes), never
//!   nested in a container. [`for_each`] therefore only walks the tuple's
//!   elements. Object bytes holding blobs are not canonical (equal binaries
//!   in two blobs have different handles): objects are compared through
//!   [`format::read_item`], which reads a blob as its bytes, or decoded.
//! - Plain byte buffers own nothing: bytes copied out of an entry are only
//!   valid (and may only be read, or turned into a new entry) while that
//!   entry, or another owner of the same blobs, is alive. The host's encoder
//!   holds the creation reference of each new blob until the entry made from
//!   its buffer has kept its own.
//! - The host registers its implementation once ([`install`]); keep and
//!   release may be called from any thread (the background worker drops
//!   whole tables).

use crate::format::{self, tag, Item};
use std::sync::OnceLock;

/// Reference counting and data access for blob handles, provided by the
/// host.
#[allow(unsafe_code)]
pub trait BlobHost: Send + Sync {
    /// Adds a reference to the blob `h` (which is alive).
    fn keep(&self, h: u64);
    /// Drops a reference to the blob `h`; the last one frees it.
    fn release(&self, h: u64);
    /// The bytes of the blob `h`.
    ///
    /// # Safety
    ///
    /// The caller guarantees that `h` is a live handle and that some owner
    /// keeps it alive for `'a`.
    unsafe fn data<'a>(&self, h: u64) -> &'a [u8];
    /// Bytes of memory the live blob `h` occupies (its data and the host's
    /// bookkeeping), for memory accounting.
    fn footprint(&self, h: u64) -> usize;
}

static HOST: OnceLock<&'static dyn BlobHost> = OnceLock::new();

/// Registers the host's blob implementation; `false` if one was already
/// registered (the first one stays).
pub fn install(host: &'static dyn BlobHost) -> bool {
    HOST.set(host).is_ok()
}

/// The registered host, if any.
#[inline]
pub fn host() -> Option<&'static dyn BlobHost> {
    HOST.get().copied()
}

/// The bytes of blob `h`, read from stored bytes (see the module's
/// ownership rules: the bytes that hold the handle are only read while an
/// owner of the blob is alive, which the `'a` borrow of those bytes
/// stands for).
#[inline]
#[allow(unsafe_code)]
pub(crate) fn data<'a>(h: u64) -> Result<&'a [u8], format::FormatError> {
    let host = host().ok_or(format::FormatError::Corrupt)?;
    // SAFETY: a BLOB value is only ever written by a host that registered
    // itself (so `host` is the one that made `h`), and stored bytes holding
    // it are read only while an entry owning a reference to `h` is alive
    // (the module's ownership rules), which outlives the borrow `'a`.
    Ok(unsafe { host.data(h) })
}

/// Calls `f` with the handle of every blob among the top-level elements of
/// the encoded object `obj` (a tuple). Stops at corrupt bytes.
#[inline]
pub fn for_each(obj: &[u8], mut f: impl FnMut(u64)) {
    let mut pos = 0;
    let Ok(Item::Tuple(n)) = format::read_item(obj, &mut pos) else {
        return;
    };
    for _ in 0..n {
        if obj.get(pos) == Some(&tag::BLOB) {
            match format::word_at(obj, pos + 1) {
                Ok(h) => f(h),
                Err(_) => return,
            }
            pos += 9;
        } else {
            match format::skip(obj, pos) {
                Ok(p) => pos = p,
                Err(_) => return,
            }
        }
    }
}

/// True when the encoded object `obj` holds at least one blob.
pub fn any(obj: &[u8]) -> bool {
    let mut found = false;
    for_each(obj, |_| found = true);
    found
}

/// Bytes of memory the blobs of `obj` occupy (see [`BlobHost::footprint`]).
#[inline(never)]
pub fn footprint(obj: &[u8]) -> usize {
    let mut n = 0;
    if let Some(host) = host() {
        for_each(obj, |h| n += host.footprint(h));
    }
    n
}

/// Keeps every blob of `obj` (see [`for_each`]); returns their
/// [`footprint`].
#[inline(never)]
pub fn keep_all(obj: &[u8]) -> usize {
    let mut n = 0;
    if let Some(host) = host() {
        for_each(obj, |h| {
            host.keep(h);
            n += host.footprint(h);
        });
    }
    n
}

/// Releases every blob of `obj` (see [`for_each`]); returns the
/// [`footprint`] they had.
#[inline(never)]
pub fn release_all(obj: &[u8]) -> usize {
    let mut n = 0;
    if let Some(host) = host() {
        for_each(obj, |h| {
            n += host.footprint(h);
            host.release(h);
        });
    }
    n
}

/// A host made of `Arc`s, for the engine's own tests and for hosts without
/// a VM: a handle is a pointer from `Arc::into_raw`, and every blob counts
/// itself in a [`Live`] counter while it exists.
pub mod arc_host {
    #![allow(unsafe_code)]
    use super::BlobHost;
    use std::sync::atomic::{AtomicIsize, Ordering};
    use std::sync::Arc;

    /// Counts blobs that exist (made and not yet freed) and the references
    /// held to them.
    #[derive(Debug, Default)]
    pub struct Live(AtomicIsize, AtomicIsize);

    impl Live {
        /// Blobs alive now.
        pub fn get(&self) -> isize {
            self.0.load(Ordering::SeqCst)
        }

        /// References held now (made + kept - released).
        pub fn refs(&self) -> isize {
            self.1.load(Ordering::SeqCst)
        }
    }

    struct Blob {
        bytes: Box<[u8]>,
        live: Arc<Live>,
    }

    impl Drop for Blob {
        fn drop(&mut self) {
            self.live.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The `Arc` host.
    pub struct ArcHost;

    /// The registered `ArcHost` (registers it on first use; `false` when
    /// another host was registered first).
    pub fn install() -> bool {
        static HOST: ArcHost = ArcHost;
        super::install(&HOST) || super::host().is_some_and(|h| std::ptr::addr_eq(h, &HOST))
    }

    /// A new blob holding `bytes`, with one reference (the caller's),
    /// counted in `live`.
    pub fn make(bytes: &[u8], live: &Arc<Live>) -> u64 {
        live.0.fetch_add(1, Ordering::SeqCst);
        live.1.fetch_add(1, Ordering::SeqCst);
        let b = Arc::new(Blob {
            bytes: bytes.into(),
            live: live.clone(),
        });
        Arc::into_raw(b) as u64
    }

    impl BlobHost for ArcHost {
        fn keep(&self, h: u64) {
            // SAFETY: `h` came from `Arc::into_raw` in `make` and is alive
            // (the caller holds a reference), so its count is at least 1.
            unsafe {
                (&*(h as *const Blob)).live.1.fetch_add(1, Ordering::SeqCst);
                Arc::increment_strong_count(h as *const Blob)
            }
        }

        fn release(&self, h: u64) {
            // SAFETY: as in `keep`; the caller gives up one reference it
            // holds, so the count does not go below zero (the blob is read
            // before the reference is given up).
            unsafe {
                (&*(h as *const Blob)).live.1.fetch_sub(1, Ordering::SeqCst);
                Arc::decrement_strong_count(h as *const Blob)
            }
        }

        unsafe fn data<'a>(&self, h: u64) -> &'a [u8] {
            // SAFETY: the caller guarantees `h` is alive for `'a`, so the
            // `Blob` (and its bytes, never changed) outlive the borrow.
            unsafe { &(*(h as *const Blob)).bytes }
        }

        fn footprint(&self, h: u64) -> usize {
            // SAFETY: the caller holds a reference to `h` (an entry).
            let len = unsafe { self.data(h) }.len();
            std::mem::size_of::<Blob>() + 16 + len
        }
    }
}

#[cfg(test)]
mod tests {
    use super::arc_host::{self, Live};
    use crate::entry::{Entry, EntryBuf};
    use crate::format::{self, put_header, put_int, tag, Item};
    use crate::set::{Change, Key, SetTable};
    use crate::tuple_ops::{self, CounterOp};
    use std::sync::Arc;

    fn key(k: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_int(&mut out, k);
        out
    }

    /// `{k, blob(b) for b in blobs..., n}` as the NIF builds it: the
    /// encoder holds each blob's creation reference until the entry (or
    /// the assigned image) has kept its own. `store` receives the image.
    fn with_object<R>(
        k: i64,
        blobs: &[&[u8]],
        n: i64,
        live: &Arc<Live>,
        store: impl FnOnce(&crate::entry::EntryImage) -> R,
    ) -> R {
        assert!(arc_host::install());
        let mut b = EntryBuf::new();
        put_header(&mut b.out, tag::TUPLE, blobs.len() + 2);
        let ks = b.out.len();
        put_int(&mut b.out, k);
        let ke = b.out.len();
        let made: Vec<u64> = blobs.iter().map(|x| arc_host::make(x, live)).collect();
        for &h in &made {
            format::put_blob(&mut b.out, h);
        }
        put_int(&mut b.out, n);
        if !made.is_empty() {
            b.mark_blobs();
        }
        let r = store(&b.seal(ks..ke, None));
        for h in made {
            super::host().unwrap().release(h);
        }
        r
    }

    fn object(k: i64, blobs: &[&[u8]], n: i64, live: &Arc<Live>) -> Entry {
        with_object(k, blobs, n, live, |img| img.to_entry())
    }

    /// Rebuilds an entry from bytes derived from `old` (as the NIF's
    /// `rekey` does after update_counter / update_element).
    fn rekey(obj: &[u8], old: &Entry) -> Entry {
        let mut b = EntryBuf::new();
        b.out.extend_from_slice(obj);
        if old.has_blobs() {
            b.mark_blobs();
        }
        let r = format::tuple_elements(obj).unwrap()[0].clone();
        let s = EntryBuf::object_start();
        b.finish(s + r.start..s + r.end, None)
    }

    fn binaries(e: &Entry) -> Vec<Vec<u8>> {
        let obj = e.object();
        format::tuple_elements(obj)
            .unwrap()
            .into_iter()
            .filter_map(|r| match format::read_item(obj, &mut r.start.clone()) {
                Ok(Item::Binary(b)) => Some(b.to_vec()),
                _ => None,
            })
            .collect()
    }

    const A: &[u8] = &[0xAB; 1000];
    const B: &[u8] = &[0xCD; 1000];
    const C: &[u8] = &[0xEF; 100];

    #[test]
    fn entries_own_their_blobs() {
        let live = Arc::new(Live::default());
        let e = object(1, &[A, C], 7, &live);
        assert!(e.has_blobs());
        assert_eq!((live.get(), live.refs()), (2, 2));
        assert_eq!(binaries(&e), vec![A.to_vec(), C.to_vec()]);
        let c = e.clone();
        assert_eq!((live.get(), live.refs()), (2, 4));
        drop(e);
        assert_eq!(binaries(&c), vec![A.to_vec(), C.to_vec()]);
        drop(c);
        assert_eq!((live.get(), live.refs()), (0, 0));
        // An entry without blobs pays nothing and holds nothing.
        let plain = object(2, &[], 0, &live);
        assert!(!plain.has_blobs());
        assert_eq!(live.refs(), 0);
    }

    #[test]
    fn blob_values_read_as_their_bytes() {
        let live = Arc::new(Live::default());
        let e = object(1, &[A], 3, &live);
        let f = object(1, &[A], 3, &live);
        // Different handles, equal contents: term order says equal.
        assert_ne!(e.object(), f.object());
        assert_eq!(
            crate::order::compare(e.object(), f.object()),
            std::cmp::Ordering::Equal
        );
        let els = format::tuple_elements(e.object()).unwrap();
        assert_eq!(els.len(), 3);
        assert_eq!(format::skip(e.object(), 0), Ok(e.object().len()));
        assert!(e.heap_bytes() > A.len());
        drop((e, f));
        assert_eq!((live.get(), live.refs()), (0, 0));
    }

    #[test]
    fn set_operations_neither_leak_nor_double_release() {
        let live = Arc::new(Live::default());
        let t = SetTable::new();
        for k in 0..100 {
            drop(t.insert(object(k, &[A], k, &live)));
        }
        assert_eq!((live.get(), live.refs()), (100, 100));
        // Overwrite in place (same size) and with another size.
        for k in 0..50 {
            with_object(k, &[B], 0, &live, |img| drop(t.insert_image(img)));
        }
        for k in 50..60 {
            with_object(k, &[B, C], 0, &live, |img| drop(t.insert_image(img)));
        }
        for k in 60..70 {
            with_object(k, &[], 0, &live, |img| drop(t.insert_image(img)));
        }
        assert_eq!((live.get(), live.refs()), (100, 100));
        t.read(&Key::new(&key(3)), |e| {
            assert_eq!(binaries(e.unwrap()), vec![B.to_vec()])
        });
        // insert_new of an existing key drops the new entry.
        assert!(!t.insert_new(object(1, &[A], 0, &live)));
        assert_eq!((live.get(), live.refs()), (100, 100));
        // get (a copy) and take.
        let got = t.get(&Key::new(&key(55))).unwrap();
        assert_eq!(live.refs(), 102);
        drop(got);
        let taken = t.remove(&Key::new(&key(55))).unwrap();
        assert_eq!(binaries(&taken), vec![B.to_vec(), C.to_vec()]);
        drop(taken);
        assert_eq!((live.get(), live.refs()), (98, 98));
        drop(t.remove(&Key::new(&key(70))));
        assert_eq!((live.get(), live.refs()), (97, 97));
        // update_counter, in place and rebuilt.
        let mut small = [0i128; 8];
        let op = [CounterOp {
            pos: 3,
            incr: 5,
            threshold: None,
        }];
        t.update_mut(&Key::new(&key(80)), |e| {
            let e = e.unwrap();
            let r = tuple_ops::update_counter_in_place(e.object_mut().unwrap(), 1, &op, &mut small);
            assert_eq!(r, Ok(Some(())));
            (Change::Keep, ())
        });
        t.update(&Key::new(&key(81)), |e| {
            let e = e.unwrap();
            let (obj, r) = tuple_ops::update_counter(e.object(), 1, &op).unwrap();
            assert_eq!(r, vec![86]);
            (Change::Put(rekey(&obj, e)), ())
        });
        // A counter on a blob is an error, not a change.
        t.update(&Key::new(&key(82)), |e| {
            let bad = [CounterOp { pos: 2, ..op[0] }];
            assert!(tuple_ops::update_counter(e.unwrap().object(), 1, &bad).is_err());
            (Change::Keep, ())
        });
        assert_eq!((live.get(), live.refs()), (97, 97));
        // update_element: keep the blob (change the counter) or replace it.
        let mut seven = Vec::new();
        put_int(&mut seven, 7);
        for (k, pos) in [(83, 3), (84, 2)] {
            t.update(&Key::new(&key(k)), |e| {
                let e = e.unwrap();
                let obj = tuple_ops::update_element(e.object(), 1, &[(pos, &seven)]).unwrap();
                (Change::Put(rekey(&obj, e)), ())
            });
        }
        assert_eq!((live.get(), live.refs()), (96, 96));
        t.read(&Key::new(&key(83)), |e| {
            assert_eq!(binaries(e.unwrap()), vec![A.to_vec()])
        });
        // select_replace / replace: a new object with new blobs.
        t.update(&Key::new(&key(85)), |_| {
            (Change::Put(object(85, &[C, C], 1, &live)), ())
        });
        assert_eq!((live.get(), live.refs()), (97, 97));
        // A traversal copies entries (and their references) out.
        let snap: Vec<Entry> = (0..t.shard_count())
            .flat_map(|s| t.snapshot_shard(s))
            .collect();
        assert_eq!(snap.len(), 98);
        assert_eq!(live.refs(), 194);
        drop(snap);
        // A fixed table keeps removed keys' places; unfixing frees them.
        drop(t.set_fixed(true));
        for k in 0..10 {
            drop(t.remove(&Key::new(&key(k))));
        }
        drop(t.set_fixed(false));
        assert_eq!((live.get(), live.refs()), (87, 87));
        // delete_all_objects, then the table itself.
        drop(t.take_all());
        assert_eq!((live.get(), live.refs()), (0, 0));
        for k in 0..10 {
            drop(t.insert(object(k, &[A], k, &live)));
        }
        drop(t);
        assert_eq!((live.get(), live.refs()), (0, 0));
    }

    #[test]
    fn memory_follows_blobs_of_other_sizes_in_same_size_entries() {
        let live = Arc::new(Live::default());
        let t = SetTable::new();
        // The key's slot, allocated by a first insert, stays.
        drop(t.insert(object(1, &[], 0, &live)));
        drop(t.remove(&Key::new(&key(1))));
        let empty = t.memory_bytes();
        drop(t.insert(object(1, &[C], 0, &live)));
        let small = t.memory_bytes();
        // Same entry size (a blob is a handle), a blob ten times larger.
        with_object(1, &[A], 0, &live, |img| drop(t.insert_image(img)));
        assert_eq!(t.memory_bytes() - small, A.len() - C.len());
        with_object(1, &[C], 0, &live, |img| drop(t.insert_image(img)));
        assert_eq!(t.memory_bytes(), small);
        drop(t.remove(&Key::new(&key(1))));
        assert_eq!(t.memory_bytes(), empty);
        assert_eq!((live.get(), live.refs()), (0, 0));
    }

    /// `{{:k, k}, blobs..., n}`: a tuple key (the ordered set's general
    /// tree rather than its integer tree).
    fn tuple_keyed(k: i64, blobs: &[&[u8]], live: &Arc<Live>) -> Entry {
        let mut b = EntryBuf::new();
        put_header(&mut b.out, tag::TUPLE, blobs.len() + 1);
        let ks = b.out.len();
        put_header(&mut b.out, tag::TUPLE, 1);
        put_int(&mut b.out, k);
        let ke = b.out.len();
        let made: Vec<u64> = blobs.iter().map(|x| arc_host::make(x, live)).collect();
        for &h in &made {
            format::put_blob(&mut b.out, h);
        }
        if !made.is_empty() {
            b.mark_blobs();
        }
        let e = b.finish(ks..ke, None);
        for h in made {
            super::host().unwrap().release(h);
        }
        e
    }

    #[test]
    fn ordered_set_operations_balance() {
        use crate::ordered::OrderedTable;
        let live = Arc::new(Live::default());
        let t = OrderedTable::new();
        let empty = t.memory_bytes();
        for k in 0..300 {
            drop(t.insert(object(k, &[A], k, &live)));
            drop(t.insert(tuple_keyed(k, &[C], &live)));
        }
        assert_eq!((live.get(), live.refs()), (600, 600));
        // Replace (other sizes), insert_new refused, remove, update.
        for k in 0..100 {
            drop(t.insert(object(k, &[B, C], 0, &live)));
        }
        assert!(!t.insert_new(object(1, &[A], 0, &live)));
        assert_eq!((live.get(), live.refs()), (700, 700));
        for k in 0..50 {
            drop(t.remove(&key(k)));
        }
        assert_eq!((live.get(), live.refs()), (600, 600));
        t.update_mut(&key(200), |e| {
            let e = e.unwrap();
            let mut seven = Vec::new();
            put_int(&mut seven, 7);
            let obj = tuple_ops::update_element(e.object(), 1, &[(2, &seven)]).unwrap();
            (Change::Put(rekey(&obj, e)), ())
        });
        assert_eq!((live.get(), live.refs()), (599, 599));
        // Splits into parts move the entries' counts with them.
        let counted = t.heap_and_blobs();
        assert_eq!(counted.1, 550);
        for _ in 0..3 {
            t.split_parts();
        }
        assert_eq!(t.parts(), 8);
        assert_eq!(t.heap_and_blobs(), counted);
        // Chunks copy entries (and references) out.
        let chunk = t.chunk_after(None, 1000);
        assert_eq!(chunk.len(), 550);
        assert_eq!(live.refs(), 1198);
        drop(chunk);
        let got = t.get(&key(250)).unwrap();
        assert_eq!(binaries(&got), vec![A.to_vec()]);
        drop(got);
        for k in 0..300 {
            drop(t.remove(&key(k)));
        }
        assert_eq!(t.heap_and_blobs().1, 300);
        drop(t.take_all());
        assert_eq!((live.get(), live.refs()), (0, 0));
        assert_eq!(t.heap_and_blobs(), (0, 0));
        assert!(t.memory_bytes() > empty, "the parts stay");
        for k in 0..10 {
            drop(t.insert(object(k, &[A], k, &live)));
        }
        drop(t);
        assert_eq!((live.get(), live.refs()), (0, 0));
    }

    #[test]
    fn bags_write_blobs_inline() {
        use crate::bag::BagTable;
        let live = Arc::new(Live::default());
        let t = BagTable::new(false, true);
        t.insert(object(1, &[A], 1, &live));
        t.insert_all(vec![object(1, &[C, B], 2, &live), object(2, &[], 3, &live)]);
        // The bag keeps no reference: the blobs are gone, their bytes stay.
        assert_eq!((live.get(), live.refs()), (0, 0));
        let mut p = Vec::new();
        put_int(&mut p, 1);
        t.read(&Key::new(&p), |os| {
            let objs: Vec<Vec<u8>> = os.map(|o| o.to_vec()).collect();
            assert_eq!(objs.len(), 2);
            for o in &objs {
                assert!(!super::any(o));
                let els = format::tuple_elements(o).unwrap();
                let bins: Vec<&[u8]> = els
                    .iter()
                    .filter_map(|r| match format::read_item(o, &mut r.start.clone()) {
                        Ok(Item::Binary(b)) => Some(b),
                        _ => None,
                    })
                    .collect();
                assert!(bins == vec![C, B] || bins == vec![A], "{bins:?}");
            }
        });
        // The inlined entry keeps its key.
        let e = object(5, &[A], 9, &live).into_inline().unwrap();
        assert!(!e.has_blobs());
        assert_eq!(e.key(), &key(5)[..]);
        assert_eq!(binaries(&e), vec![A.to_vec()]);
    }

    #[test]
    fn concurrent_writers_and_readers_balance() {
        let live = Arc::new(Live::default());
        let t = Arc::new(SetTable::new());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (t, live) = (t.clone(), live.clone());
                std::thread::spawn(move || {
                    for j in 0..2000i64 {
                        let k = j % 50;
                        match (i + j) % 4 {
                            0 => drop(t.insert(object(k, &[A], j, &live))),
                            1 => with_object(k, &[B], j, &live, |img| drop(t.insert_image(img))),
                            2 => drop(t.remove(&Key::new(&key(k)))),
                            _ => t.read(&Key::new(&key(k)), |e| {
                                if let Some(e) = e {
                                    let bs = binaries(e);
                                    assert!(bs == vec![A.to_vec()] || bs == vec![B.to_vec()]);
                                }
                            }),
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(live.get(), t.len() as isize);
        assert_eq!(live.refs(), t.len() as isize);
        drop(t);
        assert_eq!((live.get(), live.refs()), (0, 0));
    }
}
