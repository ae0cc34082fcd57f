//! A stored object: one allocation, owned by the table.
//!
//! Entries are plain boxes rather than reference-counted: readers decode
//! them under the shard's read lock, so no handle outlives the lock, and a
//! writer holding the write lock may change counters in place with no
//! atomic operation (an `Arc` would cost a compare-and-swap per update and
//! an atomic decrement per replaced entry). Traversal copies entries out.
//!
//! Layout: `[u32 key_off][u32 key_len | APPENDED][object bytes][canonical key]`.
//! The key normally is a slice of the object itself (the element at the
//! table's key position). When the host's key equality is coarser than
//! byte-identity of the faithful encoding (for example `0.0 =:= -0.0` on
//! OTP 25), the host appends a canonical key encoding after the object and
//! the header points at it, so the object is still returned exactly as it was
//! inserted while hashing and comparison use the canonical key.

use std::ops::Range;

const HEADER: usize = 8;
const APPENDED: u32 = 1 << 31;

/// A stored object with its key (cloning copies the bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry(Box<[u8]>);

/// Builds an [`Entry`]: the host writes the object into [`EntryBuf::out`].
pub struct EntryBuf {
    /// The buffer; the object must be appended after the reserved header.
    pub out: Vec<u8>,
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
        EntryBuf { out }
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
        self.out[0..4].copy_from_slice(&off.to_le_bytes());
        self.out[4..8].copy_from_slice(&len.to_le_bytes());
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

    /// A stored entry with these bytes.
    pub fn to_entry(&self) -> Entry {
        Entry(Box::from(self.0))
    }
}

/// The key's offset and its length word (with the [`APPENDED`] flag), read
/// as one word (byte by byte, each index was bounds-checked on its own).
#[inline(always)]
fn header_of(b: &[u8]) -> (usize, u32) {
    let h = b
        .first_chunk::<HEADER>()
        .map_or(0, |h| u64::from_le_bytes(*h));
    (h as u32 as usize, (h >> 32) as u32)
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

    /// The key bytes used for hashing and equality.
    #[inline]
    pub fn key(&self) -> &[u8] {
        key_of(&self.0)
    }

    /// Becomes a copy of `image` in place, without allocating, when both
    /// have the same size; returns whether it did.
    #[inline]
    pub fn assign(&mut self, image: &EntryImage) -> bool {
        if self.0.len() != image.0.len() {
            return false;
        }
        self.0.copy_from_slice(image.0);
        true
    }

    /// The encoded object, exactly as inserted.
    #[inline]
    pub fn object(&self) -> &[u8] {
        let (off, len) = self.header();
        if len & APPENDED != 0 {
            &self.0[HEADER..off]
        } else {
            &self.0[HEADER..]
        }
    }

    /// The object bytes for in-place modification (the caller holds the
    /// entry exclusively). The key element must not change. Always `Some`.
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

    /// Bytes of heap this entry occupies: the allocation, rounded up to the
    /// allocator's 16-byte granule.
    #[inline]
    pub fn heap_bytes(&self) -> usize {
        self.0.len().next_multiple_of(16)
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
        assert!(e.assign(&img));
        assert_eq!(e.object(), b"XYKEYZW");
        let mut b = EntryBuf::new();
        b.out.extend_from_slice(b"KEY");
        assert!(!e.assign(&b.seal(s..s + 3, None)));
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
