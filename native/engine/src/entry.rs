//! A stored object: one allocation, owned by the table.
//!
//! Entries are plain boxes rather than reference-counted: readers decode
//! them under the shard's read lock, so no handle outlives the lock, and a
//! writer holding the write lock may change counters in place with no
//! atomic operation (an `Arc` would cost a compare-and-swap per update and
//! an atomic decrement per replaced entry). Traversal copies entries out.
//!
//! Layout: `[u32 key_off | BLOBS][u32 key_len | APPENDED][object bytes][canonical key]`.
//! The key normally is a slice of the object itself (the element at the
//! table's key position). When the host's key equality is coarser than
//! byte-identity of the faithful encoding (for example `0.0 =:= -0.0` on
//! OTP 25), the host appends a canonical key encoding after the object and
//! the header points at it, so the object is still returned exactly as it was
//! inserted while hashing and comparison use the canonical key.
//!
//! `BLOBS` (the top bit of the key offset: entries are smaller than 2 GiB)
//! marks an entry whose object may hold out-of-line binaries (see
//! [`crate::blob`]): such an entry owns one reference to each of them,
//! taken when it is made ([`EntryImage::to_entry`], [`Entry::assign`],
//! `Clone`) and given back when it is dropped or overwritten. Entries
//! without the flag never look for blobs.

use crate::blob;
use std::ops::Range;

const HEADER: usize = 8;
const APPENDED: u32 = 1 << 31;
const BLOBS: u32 = 1 << 31;

/// A stored object with its key (cloning copies the bytes and keeps the
/// object's blobs).
#[derive(Debug, PartialEq, Eq)]
pub struct Entry(Box<[u8]>);

impl Clone for Entry {
    fn clone(&self) -> Self {
        let e = Entry(self.0.clone());
        if e.has_blobs() {
            blob::keep_all(e.object());
        }
        e
    }
}

impl Drop for Entry {
    #[inline]
    fn drop(&mut self) {
        if self.has_blobs() {
            self.release_blobs();
        }
    }
}

impl Entry {
    #[cold]
    #[inline(never)]
    fn release_blobs(&self) {
        blob::release_all(self.object());
    }
}

/// Builds an [`Entry`]: the host writes the object into [`EntryBuf::out`].
pub struct EntryBuf {
    /// The buffer; the object must be appended after the reserved header.
    pub out: Vec<u8>,
    /// The object may hold blobs (see [`EntryBuf::mark_blobs`]).
    blobs: bool,
}

impl Default for EntryBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl EntryBuf {
    /// A buffer with the header reserved.
    pub fn new() -> Self {
        Self::with_buffer(Vec::with_capacity(64))
    }

    /// Reuses `out` (cleared) as the buffer.
    pub fn with_buffer(mut out: Vec<u8>) -> Self {
        out.clear();
        out.extend_from_slice(&[0u8; HEADER]);
        EntryBuf { out, blobs: false }
    }

    /// Records that the object written into the buffer may hold blob
    /// values: the writer wrote one, or copied bytes of an entry for which
    /// [`Entry::has_blobs`] is true. Marking a buffer without blobs only
    /// costs a walk of the object when it is stored; *not* marking one that
    /// holds blobs would let the new entry free what it does not own.
    #[inline]
    pub fn mark_blobs(&mut self) {
        self.blobs = true;
    }

    /// The offset at which the object starts in `out`.
    pub const fn object_start() -> usize {
        HEADER
    }

    /// Finishes the entry. `key` is the key's range inside `out` (absolute
    /// offsets); `canonical_key`, if given, replaces it for hashing/equality.
    pub fn finish(self, key: Range<usize>, canonical_key: Option<&[u8]>) -> Entry {
        self.finish_keep(key, canonical_key).0
    }

    /// Like [`EntryBuf::finish`], but hands the buffer back for reuse.
    pub fn finish_keep(
        mut self,
        key: Range<usize>,
        canonical_key: Option<&[u8]>,
    ) -> (Entry, Vec<u8>) {
        let entry = self.seal(key, canonical_key).to_entry();
        (entry, self.out)
    }

    /// Completes the entry in the buffer without allocating it: the image
    /// can be stored by copying it into a replaced entry of the same size
    /// (see [`Entry::assign`]) or into a new allocation.
    pub fn seal(&mut self, key: Range<usize>, canonical_key: Option<&[u8]>) -> EntryImage<'_> {
        let (off, len) = match canonical_key {
            None => (key.start as u32, key.len() as u32),
            Some(c) => {
                let start = self.out.len();
                self.out.extend_from_slice(c);
                (start as u32, c.len() as u32 | APPENDED)
            }
        };
        debug_assert!(
            self.blobs || !blob::any(&self.out[HEADER..]),
            "a buffer holding blobs must be marked"
        );
        let off = if self.blobs { off | BLOBS } else { off };
        // One 8-byte write: the header is read back as one word, which a
        // processor can take from one pending write but not from two.
        let header = u64::from(off) | u64::from(len) << 32;
        self.out[0..8].copy_from_slice(&header.to_le_bytes());
        EntryImage(&self.out)
    }

    /// The buffer, for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.out
    }
}

/// The complete bytes of an entry, not yet stored (see [`EntryBuf::seal`]).
#[derive(Clone, Copy, Debug)]
pub struct EntryImage<'a>(&'a [u8]);

impl EntryImage<'_> {
    /// The key bytes used for hashing and equality.
    #[inline]
    pub fn key(&self) -> &[u8] {
        key_of(self.0)
    }

    /// A stored entry with these bytes (it keeps the object's blobs).
    pub fn to_entry(&self) -> Entry {
        let e = Entry(Box::from(self.0));
        if e.has_blobs() {
            blob::keep_all(e.object());
        }
        e
    }

    /// True when the image's object may hold blobs.
    #[inline]
    pub fn has_blobs(&self) -> bool {
        has_blobs(self.0)
    }

    /// The encoded object.
    #[inline]
    pub fn object(&self) -> &[u8] {
        object_of(self.0)
    }

    /// Where the key starts inside the object, or `None` when the image
    /// carries an appended canonical key (see [`Entry::key_offset`]).
    #[inline]
    pub fn key_offset(&self) -> Option<usize> {
        key_offset_of(self.0)
    }
}

#[inline]
fn key_offset_of(b: &[u8]) -> Option<usize> {
    let (off, len) = header_of(b);
    (len & APPENDED == 0).then(|| off - HEADER)
}

#[inline]
fn has_blobs(b: &[u8]) -> bool {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & BLOBS != 0
}

#[inline]
fn object_of(b: &[u8]) -> &[u8] {
    let off = (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & !BLOBS) as usize;
    let len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    if len & APPENDED != 0 {
        &b[HEADER..off]
    } else {
        &b[HEADER..]
    }
}

/// The key's offset and its length word (with the [`APPENDED`] flag), read
/// as one word (byte by byte, each index was bounds-checked on its own).
#[inline(always)]
fn header_of(b: &[u8]) -> (usize, u32) {
    let h = b
        .first_chunk::<HEADER>()
        .map_or(0, |h| u64::from_le_bytes(*h));
    ((h as u32 & !BLOBS) as usize, (h >> 32) as u32)
}

#[inline]
fn key_of(b: &[u8]) -> &[u8] {
    let (off, len) = header_of(b);
    &b[off..off + (len & !APPENDED) as usize]
}

impl Entry {
    #[inline(always)]
    fn header(&self) -> (usize, u32) {
        header_of(&self.0)
    }

    /// True when the object may hold blobs (the entry then owns one
    /// reference to each; copies of its bytes into a new entry must be
    /// marked with [`EntryBuf::mark_blobs`]).
    #[inline]
    pub fn has_blobs(&self) -> bool {
        has_blobs(&self.0)
    }

    /// The key bytes used for hashing and equality.
    #[inline]
    pub fn key(&self) -> &[u8] {
        key_of(&self.0)
    }

    /// Becomes a copy of `image` in place, without allocating, when both
    /// have the same size; returns whether it did, with the entry's
    /// [`Entry::heap_bytes`] before and after (they differ when the two
    /// hold blobs of different sizes).
    #[inline]
    pub fn assign(&mut self, image: &EntryImage) -> Option<(usize, usize)> {
        if self.0.len() != image.0.len() {
            return None;
        }
        let own = self.0.len().next_multiple_of(16);
        let (before, after) = if (image.0[3] | self.0[3]) & (BLOBS >> 24) as u8 != 0 {
            self.swap_blobs(image)
        } else {
            (0, 0)
        };
        self.0.copy_from_slice(image.0);
        Some((own + before, own + after))
    }

    /// The blob references of [`Entry::assign`]: keeps the image's, then
    /// releases this entry's (the image may have been copied from this very
    /// entry: the same blobs); returns the footprints of this entry's blobs
    /// and of the image's.
    #[cold]
    #[inline(never)]
    fn swap_blobs(&self, image: &EntryImage) -> (usize, usize) {
        let after = if image.has_blobs() {
            blob::keep_all(object_of(image.0))
        } else {
            0
        };
        let before = if self.has_blobs() {
            blob::release_all(self.object())
        } else {
            0
        };
        (before, after)
    }

    /// The encoded object, exactly as inserted.
    #[inline]
    pub fn object(&self) -> &[u8] {
        object_of(&self.0)
    }

    /// Where the key starts inside [`Entry::object`], or `None` when the
    /// entry carries an appended canonical key.
    #[inline]
    pub fn key_offset(&self) -> Option<usize> {
        key_offset_of(&self.0)
    }

    /// The object bytes for in-place modification (the caller holds the
    /// entry exclusively). The key element must not change, and neither
    /// may a blob value (its tag and handle), nor may one be written: only
    /// scalar values are rewritten in place. Always `Some`.
    #[inline]
    pub fn object_mut(&mut self) -> Option<&mut [u8]> {
        let (off, len) = self.header();
        let bytes = &mut self.0[..];
        if len & APPENDED != 0 {
            Some(&mut bytes[HEADER..off])
        } else {
            Some(&mut bytes[HEADER..])
        }
    }

    /// This entry with the bytes of its blobs written inline (as binaries),
    /// for stores that copy object bytes into buffers of their own (bags);
    /// an entry without blobs is returned as it is. `None` for corrupt
    /// bytes (not stored).
    #[inline]
    pub fn into_inline(self) -> Option<Entry> {
        if !self.has_blobs() {
            return Some(self);
        }
        self.inline_blobs()
    }

    #[cold]
    #[inline(never)]
    fn inline_blobs(&self) -> Option<Entry> {
        use crate::format::{self, tag, Item};
        let (off, len) = self.header();
        let appended = len & APPENDED != 0;
        let obj = self.object();
        let mut pos = 0;
        let Ok(Item::Tuple(n)) = format::read_item(obj, &mut pos) else {
            return None;
        };
        let mut b = EntryBuf::new();
        let base = EntryBuf::object_start();
        b.out.extend_from_slice(&obj[..pos]);
        let mut key = base..base;
        for _ in 0..n {
            let end = format::skip(obj, pos).ok()?;
            let at = b.out.len();
            match format::blob_at(obj, pos) {
                Some(h) => format::put_bytes(&mut b.out, tag::BINARY, blob::data(h).ok()?),
                None => b.out.extend_from_slice(&obj[pos..end]),
            }
            if !appended && base + pos == off {
                key = at..at + len as usize;
            }
            pos = end;
        }
        b.out.extend_from_slice(&obj[pos..]);
        let canonical = appended.then(|| self.key());
        Some(b.finish(key, canonical))
    }

    /// Bytes of this entry's own allocation, rounded up to the allocator's
    /// 16-byte granule (read from its length: the entry is not touched).
    #[inline]
    pub fn own_bytes(&self) -> usize {
        self.0.len().next_multiple_of(16)
    }

    /// Bytes of heap this entry occupies: the allocation, rounded up to the
    /// allocator's 16-byte granule, and the blobs it holds.
    #[inline]
    pub fn heap_bytes(&self) -> usize {
        let own = self.own_bytes();
        if self.has_blobs() {
            own + blob::footprint(self.object())
        } else {
            own
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_inside_object() {
        let mut b = EntryBuf::new();
        b.out.extend_from_slice(b"ABKEYCD");
        let s = EntryBuf::object_start();
        let e = b.finish(s + 2..s + 5, None);
        assert_eq!(e.key(), b"KEY");
        assert_eq!(e.object(), b"ABKEYCD");
    }

    #[test]
    fn images_assign_in_place_only_at_equal_size() {
        let mut b = EntryBuf::new();
        b.out.extend_from_slice(b"ABKEYCD");
        let s = EntryBuf::object_start();
        let mut e = b.seal(s + 2..s + 5, None).to_entry();
        let mut b = EntryBuf::new();
        b.out.extend_from_slice(b"XYKEYZW");
        let img = b.seal(s + 2..s + 5, None);
        assert_eq!(img.key(), b"KEY");
        assert!(e.assign(&img).is_some());
        assert_eq!(e.object(), b"XYKEYZW");
        let mut b = EntryBuf::new();
        b.out.extend_from_slice(b"KEY");
        assert!(e.assign(&b.seal(s..s + 3, None)).is_none());
        assert_eq!(e.object(), b"XYKEYZW");
    }

    #[test]
    fn appended_canonical_key() {
        let mut b = EntryBuf::new();
        b.out.extend_from_slice(b"ABKEYCD");
        let s = EntryBuf::object_start();
        let e = b.finish(s + 2..s + 5, Some(b"CANON"));
        assert_eq!(e.key(), b"CANON");
        assert_eq!(e.object(), b"ABKEYCD");
    }
}
