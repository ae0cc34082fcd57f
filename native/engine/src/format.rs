//! The byte format in which NativeStore keeps terms.
//!
//! A stored object is a sequence of tagged values. The engine never needs to
//! know what an "atom" or a "pid" is: those are opaque 8-byte words chosen by
//! the host (the NIF crate stores the VM's own immediate term words, which are
//! valid for the life of the VM). Everything the engine does with a value —
//! finding a tuple element, reading or writing an integer counter, hashing and
//! comparing keys — works on these bytes alone.
//!
//! ```text
//! WORD  8 bytes (opaque immediate: atom)    INT    8 bytes i64 little endian
//! FLOAT 8 bytes f64 little endian           BINARY varint len, bytes
//! TUPLE varint arity, elements              LIST   varint len, u32 bytes, elements, tail
//! NIL                                       MAP    varint size, u32 bytes, key/value pairs
//! PID   8 bytes (opaque immediate: pid)     EXT    varint len, external term format
//! BIGINT varint n, sign, n magnitude bytes (integers outside i64)
//! BLOB  8 bytes (opaque host handle of an out-of-line binary, see blob.rs)
//! ```
//!
//! The encoding of a term is canonical: two terms that the host considers
//! identical encode to the same bytes, so keys are hashed and compared as
//! plain byte strings. (Except for `BLOB` values, which only stored
//! objects hold outside their key: see [`crate::blob`].)
//!
//! List and map headers also carry the byte length of their contents
//! (`u32` little endian after the count, [`LIST_LEN_UNKNOWN`] when that
//! does not fit), so [`skip`] steps over a list or a map in one jump:
//! updating a counter that follows a long list or a map in a tuple does
//! not walk it. Write these headers with [`begin_list`] and [`end_list`]
//! (or [`put_list`]), [`begin_map`] and [`end_map`].

/// Value tags. Each encoded value starts with one of these bytes.
pub mod tag {
    /// An opaque immediate word chosen by the host (atoms).
    pub const WORD: u8 = 1;
    /// A signed 64-bit integer, 8 bytes little endian.
    pub const INT: u8 = 2;
    /// A 64-bit float, little endian.
    pub const FLOAT: u8 = 3;
    /// A byte-aligned binary.
    pub const BINARY: u8 = 4;
    /// A tuple: arity, then the elements.
    pub const TUPLE: u8 = 5;
    /// A non-empty list: length, byte length of what follows the header
    /// (`u32`), elements, then the tail value.
    pub const LIST: u8 = 6;
    /// The empty list.
    pub const NIL: u8 = 7;
    /// A map: size, then key/value pairs in the host's iteration order.
    pub const MAP: u8 = 8;
    /// An opaque immediate word for a local process identifier.
    pub const PID: u8 = 9;
    /// Any other value, in the host's external term format.
    pub const EXT: u8 = 10;
    /// An integer outside i64: varint byte count, sign byte (0 or 1), then
    /// the magnitude, little endian, without high zero bytes.
    pub const BIGINT: u8 = 11;
    /// A binary kept out of line (see [`crate::blob`]): an opaque 8-byte
    /// host handle. Read back as [`super::Item::Binary`] with the blob's
    /// bytes, so that comparisons and matching see its contents.
    pub const BLOB: u8 = 12;
}

/// Errors found while reading encoded values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// The bytes end before the value does, or a tag is unknown.
    Corrupt,
}

/// Appends `v` as an unsigned LEB128 varint.
#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint at `*pos`, advancing it.
#[inline]
pub fn get_uvarint(buf: &[u8], pos: &mut usize) -> Result<u64, FormatError> {
    let mut result = 0u64;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(FormatError::Corrupt)?;
        *pos += 1;
        if shift >= 64 {
            return Err(FormatError::Corrupt);
        }
        result |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(result);
        }
        shift += 7;
    }
}

/// Appends an encoded integer value (tag included). Integers have a fixed
/// width so that counters can be updated in place.
#[inline]
pub fn put_int(out: &mut Vec<u8>, v: i64) {
    put_word(out, tag::INT, v as u64);
}

/// Overwrites the integer value at `pos` (which must hold an `INT`).
#[inline]
pub fn set_int_at(buf: &mut [u8], pos: usize, v: i64) -> Result<(), FormatError> {
    if buf.get(pos) != Some(&tag::INT) {
        return Err(FormatError::Corrupt);
    }
    buf.get_mut(pos + 1..pos + 9)
        .ok_or(FormatError::Corrupt)?
        .copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// Appends an encoded float value (tag included).
#[inline]
pub fn put_float(out: &mut Vec<u8>, v: f64) {
    out.push(tag::FLOAT);
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends an opaque word value with the given tag (`WORD` or `PID`).
#[inline]
pub fn put_word(out: &mut Vec<u8>, t: u8, w: u64) {
    // One append of 9 bytes: one capacity check where a push and an
    // extend made two.
    let mut b = [t; 9];
    b[1..].copy_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&b);
}

/// Appends a tag followed by a varint length and raw bytes (`BINARY`, `EXT`).
#[inline]
pub fn put_bytes(out: &mut Vec<u8>, t: u8, bytes: &[u8]) {
    out.push(t);
    put_uvarint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a blob value (tag included) for the host handle `h`. The
/// buffer does not own the blob: see [`crate::blob`].
#[inline]
pub fn put_blob(out: &mut Vec<u8>, h: u64) {
    out.push(tag::BLOB);
    out.extend_from_slice(&h.to_le_bytes());
}

/// The handle of the blob value at `pos`, if `pos` holds one.
#[inline]
pub fn blob_at(buf: &[u8], pos: usize) -> Option<u64> {
    if buf.get(pos) == Some(&tag::BLOB) {
        word_at(buf, pos + 1).ok()
    } else {
        None
    }
}

/// Appends any integer: `INT` when it fits in i64, otherwise `BIGINT`.
pub fn put_integer(out: &mut Vec<u8>, v: i128) {
    if let Ok(small) = i64::try_from(v) {
        return put_int(out, small);
    }
    let mag = v.unsigned_abs().to_le_bytes();
    let n = 16 - (v.unsigned_abs().leading_zeros() / 8) as usize;
    out.push(tag::BIGINT);
    put_uvarint(out, n as u64);
    out.push(u8::from(v < 0));
    out.extend_from_slice(&mag[..n]);
}

/// Reads an integer value (`INT`, or `BIGINT` up to 127 bits) at `pos`.
/// `None` when the value is not an integer or does not fit in i128.
pub fn get_integer(buf: &[u8], pos: usize) -> Option<i128> {
    let mut p = pos;
    match read_item(buf, &mut p).ok()? {
        Item::Int(v) => Some(v as i128),
        Item::BigInt(neg, mag) if mag.len() <= 16 => {
            let mut b = [0u8; 16];
            b[..mag.len()].copy_from_slice(mag);
            let m = u128::from_le_bytes(b);
            if neg {
                0i128.checked_sub_unsigned(m)
            } else {
                i128::try_from(m).ok()
            }
        }
        _ => None,
    }
}

/// Appends a container header (`TUPLE`, `MAP`) with its count. Lists
/// and maps carry their byte length too: see [`begin_list`] and
/// [`begin_map`]; a map header written here records the length as
/// unknown (such a map is skipped pair by pair), so encoders of terms use
/// [`begin_map`].
#[inline]
pub fn put_header(out: &mut Vec<u8>, t: u8, count: usize) {
    debug_assert!(t != tag::LIST, "list headers are written by begin_list");
    out.push(t);
    put_uvarint(out, count as u64);
    if t == tag::MAP {
        out.extend_from_slice(&LIST_LEN_UNKNOWN.to_le_bytes());
    }
}

/// Starts a map of `count` pairs: appends its header with a placeholder
/// byte length; append the pairs, then call [`end_map`].
#[inline]
pub fn begin_map(out: &mut Vec<u8>, count: usize) -> ListMark {
    begin_measured(out, tag::MAP, count)
}

/// Completes the header of the map begun at `mark` (everything appended
/// since is its pairs).
#[inline]
pub fn end_map(out: &mut [u8], mark: ListMark) {
    end_list(out, mark)
}

/// The byte length recorded for a list whose contents do not fit in `u32`
/// (such a list is skipped element by element).
pub const LIST_LEN_UNKNOWN: u32 = u32::MAX;

/// Where a list started in the output (see [`begin_list`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a list header is completed by end_list"]
pub struct ListMark {
    start: usize,
    varint: usize,
}

/// Starts a non-empty list of `count` elements: appends its header with a
/// placeholder byte length; append the elements and the tail, then call
/// [`end_list`].
#[inline]
pub fn begin_list(out: &mut Vec<u8>, count: usize) -> ListMark {
    begin_measured(out, tag::LIST, count)
}

/// A `LIST` or `MAP` header: the tag, the count, and a placeholder for the
/// byte length that [`end_list`] fills in.
#[inline]
fn begin_measured(out: &mut Vec<u8>, t: u8, count: usize) -> ListMark {
    let start = out.len();
    out.push(t);
    put_uvarint(out, count as u64);
    let varint = out.len() - start - 1;
    out.extend_from_slice(&[0; 4]);
    ListMark { start, varint }
}

/// Starts a non-empty list whose length is not known yet (it is given to
/// [`end_list_counted`] once the elements and the tail are written).
#[inline]
pub fn begin_list_uncounted(out: &mut Vec<u8>) -> ListMark {
    begin_list(out, 0)
}

/// Completes the header of the list begun at `mark` (everything appended
/// since is its elements and tail).
#[inline]
pub fn end_list(out: &mut [u8], mark: ListMark) {
    let body = mark.start + 1 + mark.varint + 4;
    let len = u32::try_from(out.len() - body)
        .ok()
        .filter(|&l| l != LIST_LEN_UNKNOWN)
        .unwrap_or(LIST_LEN_UNKNOWN);
    out[body - 4..body].copy_from_slice(&len.to_le_bytes());
}

/// Completes a list begun with [`begin_list_uncounted`], writing its
/// element count `count` (moving the contents when the count needs more
/// than one varint byte).
#[inline]
pub fn end_list_counted(out: &mut Vec<u8>, mark: ListMark, count: usize) {
    let mut v = [0u8; 10];
    let mut n = 0;
    let mut c = count as u64;
    while c >= 0x80 {
        v[n] = (c as u8) | 0x80;
        c >>= 7;
        n += 1;
    }
    v[n] = c as u8;
    n += 1;
    let at = mark.start + 1;
    if n > mark.varint {
        let extra = n - mark.varint;
        let old = out.len();
        out.resize(old + extra, 0);
        out.copy_within(at + mark.varint..old, at + n);
    }
    out[at..at + n].copy_from_slice(&v[..n]);
    end_list(
        out,
        ListMark {
            start: mark.start,
            varint: n,
        },
    );
}

/// Appends a list of already-encoded elements and tail (`[]` alone when
/// there are no elements).
pub fn put_list<'a>(
    out: &mut Vec<u8>,
    elements: impl ExactSizeIterator<Item = &'a [u8]>,
    tail: &[u8],
) {
    if elements.len() == 0 {
        out.extend_from_slice(tail);
        return;
    }
    let mark = begin_list(out, elements.len());
    for e in elements {
        out.extend_from_slice(e);
    }
    out.extend_from_slice(tail);
    end_list(out, mark);
}

#[inline(always)]
pub(crate) fn word_at(buf: &[u8], pos: usize) -> Result<u64, FormatError> {
    let b = buf.get(pos..pos + 8).ok_or(FormatError::Corrupt)?;
    Ok(u64::from_le_bytes(
        b.try_into().map_err(|_| FormatError::Corrupt)?,
    ))
}

/// A decoded view of one value: what the host needs to rebuild a term.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Item<'a> {
    /// An opaque word (atom).
    Word(u64),
    /// A pid word.
    Pid(u64),
    /// A small integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A binary's bytes.
    Binary(&'a [u8]),
    /// External term format bytes.
    Ext(&'a [u8]),
    /// The empty list.
    Nil,
    /// A tuple with this many elements follows.
    Tuple(usize),
    /// A list with this many elements, then a tail, follows.
    List(usize),
    /// A map with this many key/value pairs follows.
    Map(usize),
    /// An integer outside i64: negative?, little-endian magnitude.
    BigInt(bool, &'a [u8]),
}

/// Reads the head of the value at `*pos` and advances past the head only
/// (container elements follow it).
#[inline(always)]
pub fn read_item<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Item<'a>, FormatError> {
    let t = *buf.get(*pos).ok_or(FormatError::Corrupt)?;
    *pos += 1;
    Ok(match t {
        tag::WORD | tag::PID => {
            let w = word_at(buf, *pos)?;
            *pos += 8;
            if t == tag::WORD {
                Item::Word(w)
            } else {
                Item::Pid(w)
            }
        }
        tag::INT => {
            let w = word_at(buf, *pos)?;
            *pos += 8;
            Item::Int(w as i64)
        }
        tag::FLOAT => {
            let w = word_at(buf, *pos)?;
            *pos += 8;
            Item::Float(f64::from_bits(w))
        }
        tag::BINARY | tag::EXT => {
            let len = get_uvarint(buf, pos)? as usize;
            let end = pos.checked_add(len).ok_or(FormatError::Corrupt)?;
            let bytes = buf.get(*pos..end).ok_or(FormatError::Corrupt)?;
            *pos = end;
            if t == tag::BINARY {
                Item::Binary(bytes)
            } else {
                Item::Ext(bytes)
            }
        }
        tag::BLOB => {
            let h = word_at(buf, *pos)?;
            *pos += 8;
            Item::Binary(crate::blob::data(h)?)
        }
        tag::BIGINT => {
            let len = get_uvarint(buf, pos)? as usize;
            let sign = *buf.get(*pos).ok_or(FormatError::Corrupt)?;
            let end = (*pos + 1).checked_add(len).ok_or(FormatError::Corrupt)?;
            let mag = buf.get(*pos + 1..end).ok_or(FormatError::Corrupt)?;
            *pos = end;
            Item::BigInt(sign != 0, mag)
        }
        tag::NIL => Item::Nil,
        tag::TUPLE => Item::Tuple(get_uvarint(buf, pos)? as usize),
        tag::LIST => {
            let n = get_uvarint(buf, pos)? as usize;
            if *pos + 4 > buf.len() {
                return Err(FormatError::Corrupt);
            }
            *pos += 4;
            Item::List(n)
        }
        tag::MAP => {
            let n = get_uvarint(buf, pos)? as usize;
            if *pos + 4 > buf.len() {
                return Err(FormatError::Corrupt);
            }
            *pos += 4;
            Item::Map(n)
        }
        _ => return Err(FormatError::Corrupt),
    })
}

/// Returns the position just after the value that starts at `pos`.
#[inline]
pub fn skip(buf: &[u8], pos: usize) -> Result<usize, FormatError> {
    // Scalars (most values) without the container loop.
    match buf.get(pos) {
        Some(&(tag::WORD | tag::PID | tag::INT | tag::FLOAT | tag::BLOB))
            if pos + 9 <= buf.len() =>
        {
            return Ok(pos + 9)
        }
        Some(&tag::NIL) => return Ok(pos + 1),
        Some(&tag::BINARY) if buf.get(pos + 1).is_some_and(|&l| l < 0x80) => {
            let end = pos + 2 + buf[pos + 1] as usize;
            return if end <= buf.len() {
                Ok(end)
            } else {
                Err(FormatError::Corrupt)
            };
        }
        Some(&(tag::LIST | tag::MAP)) => {
            if let Some(end) = list_end(buf, pos)? {
                return Ok(end);
            }
        }
        _ => {}
    }
    skip_any(buf, pos)
}

/// The end of the list or map at `pos` (which holds a `LIST` or `MAP`
/// tag) from its recorded byte length, in one jump; `None` when the length
/// is unknown.
#[inline(always)]
fn list_end(buf: &[u8], pos: usize) -> Result<Option<usize>, FormatError> {
    let mut p = pos + 1;
    get_uvarint(buf, &mut p)?;
    let len = word4_at(buf, p)?;
    if len == LIST_LEN_UNKNOWN {
        return Ok(None);
    }
    let end = (p + 4)
        .checked_add(len as usize)
        .ok_or(FormatError::Corrupt)?;
    if end <= buf.len() {
        Ok(Some(end))
    } else {
        Err(FormatError::Corrupt)
    }
}

#[inline(always)]
fn word4_at(buf: &[u8], pos: usize) -> Result<u32, FormatError> {
    let b = buf.get(pos..pos + 4).ok_or(FormatError::Corrupt)?;
    Ok(u32::from_le_bytes(
        b.try_into().map_err(|_| FormatError::Corrupt)?,
    ))
}

fn skip_any(buf: &[u8], pos: usize) -> Result<usize, FormatError> {
    let mut pos = pos;
    // Number of values still to skip; containers add their children.
    let mut pending: usize = 1;
    while pending > 0 {
        pending -= 1;
        if matches!(buf.get(pos), Some(&(tag::LIST | tag::MAP))) {
            if let Some(end) = list_end(buf, pos)? {
                pos = end;
                continue;
            }
        }
        match read_item(buf, &mut pos)? {
            Item::Tuple(n) => pending = pending.checked_add(n).ok_or(FormatError::Corrupt)?,
            Item::List(n) => pending = pending.checked_add(n + 1).ok_or(FormatError::Corrupt)?,
            Item::Map(n) => {
                pending = pending
                    .checked_add(n.checked_mul(2).ok_or(FormatError::Corrupt)?)
                    .ok_or(FormatError::Corrupt)?
            }
            _ => {}
        }
    }
    Ok(pos)
}

/// The byte ranges of the elements of the tuple encoded in `buf`.
pub fn tuple_elements(buf: &[u8]) -> Result<Vec<std::ops::Range<usize>>, FormatError> {
    let mut pos = 0;
    let arity = match read_item(buf, &mut pos)? {
        Item::Tuple(n) => n,
        _ => return Err(FormatError::Corrupt),
    };
    let mut out = Vec::with_capacity(arity);
    for _ in 0..arity {
        let end = skip(buf, pos)?;
        out.push(pos..end);
        pos = end;
    }
    Ok(out)
}

/// The arity of the tuple encoded in `buf`.
pub fn tuple_arity(buf: &[u8]) -> Result<usize, FormatError> {
    let mut pos = 0;
    match read_item(buf, &mut pos)? {
        Item::Tuple(n) => Ok(n),
        _ => Err(FormatError::Corrupt),
    }
}

/// Builds a tuple encoding from already-encoded element slices.
pub fn build_tuple<'a>(elements: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    put_header(&mut out, tag::TUPLE, elements.len());
    for e in elements {
        out.extend_from_slice(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_uvarint(&mut out, v);
            let mut pos = 0;
            assert_eq!(get_uvarint(&out, &mut pos).unwrap(), v);
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn int_roundtrip_and_skip() {
        for v in [0i64, 1, -1, 63, -64, 1 << 40, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            put_int(&mut out, v);
            let mut pos = 0;
            assert_eq!(read_item(&out, &mut pos).unwrap(), Item::Int(v));
            assert_eq!(skip(&out, 0).unwrap(), out.len());
        }
    }

    #[test]
    fn integers_of_any_size_roundtrip() {
        for v in [
            0i128,
            -5,
            i64::MAX as i128 + 1,
            i64::MIN as i128 - 1,
            i128::MAX,
            i128::MIN + 1,
        ] {
            let mut out = Vec::new();
            put_integer(&mut out, v);
            assert_eq!(get_integer(&out, 0), Some(v), "{v}");
            assert_eq!(skip(&out, 0).unwrap(), out.len());
        }
    }

    #[test]
    fn nested_tuple_elements() {
        // {1, [a | b], %{x => <<"hi">>}, 2.5}
        let mut out = Vec::new();
        put_header(&mut out, tag::TUPLE, 4);
        put_int(&mut out, 1);
        let mark = begin_list(&mut out, 1);
        put_word(&mut out, tag::WORD, 11);
        put_word(&mut out, tag::WORD, 12);
        end_list(&mut out, mark);
        put_header(&mut out, tag::MAP, 1);
        put_word(&mut out, tag::WORD, 13);
        put_bytes(&mut out, tag::BINARY, b"hi");
        put_float(&mut out, 2.5);
        let els = tuple_elements(&out).unwrap();
        assert_eq!(els.len(), 4);
        assert_eq!(tuple_arity(&out).unwrap(), 4);
        let mut p = els[3].start;
        assert_eq!(read_item(&out, &mut p).unwrap(), Item::Float(2.5));
        assert_eq!(els[3].end, out.len());
        let rebuilt = build_tuple(els.iter().map(|r| &out[r.clone()]));
        assert_eq!(rebuilt, out);
    }

    /// `[0, 1, ..., n-1 | tail]` written element by element.
    fn int_list(n: usize, tail: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mark = begin_list(&mut out, n);
        for i in 0..n {
            put_int(&mut out, i as i64);
        }
        out.extend_from_slice(tail);
        end_list(&mut out, mark);
        out
    }

    /// Skips by walking every value (what `skip` did before lists recorded
    /// their byte length).
    fn walk(buf: &[u8], pos: usize) -> usize {
        let mut pos = pos;
        let mut pending = 1usize;
        while pending > 0 {
            pending -= 1;
            match read_item(buf, &mut pos).unwrap() {
                Item::Tuple(n) => pending += n,
                Item::List(n) => pending += n + 1,
                Item::Map(n) => pending += 2 * n,
                _ => {}
            }
        }
        pos
    }

    #[test]
    fn lists_record_their_byte_length() {
        for n in [1usize, 2, 127, 128, 300, 20_000] {
            let out = int_list(n, &[tag::NIL]);
            assert_eq!(skip(&out, 0).unwrap(), out.len(), "{n}");
            assert_eq!(walk(&out, 0), out.len(), "{n}");
            let mut p = 0;
            assert_eq!(read_item(&out, &mut p).unwrap(), Item::List(n));
            assert_eq!(read_item(&out, &mut p).unwrap(), Item::Int(0));
            // Counted at the end: the same bytes.
            let mut late = Vec::new();
            late.push(tag::NIL);
            let mark = begin_list_uncounted(&mut late);
            for i in 0..n {
                put_int(&mut late, i as i64);
            }
            late.push(tag::NIL);
            end_list_counted(&mut late, mark, n);
            assert_eq!(late[1..], out[..], "{n}");
            // From element slices: the same bytes.
            let els: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    let mut e = Vec::new();
                    put_int(&mut e, i as i64);
                    e
                })
                .collect();
            let mut built = Vec::new();
            put_list(&mut built, els.iter().map(|e| &e[..]), &[tag::NIL]);
            assert_eq!(built, out, "{n}");
        }
        let mut empty = Vec::new();
        put_list(&mut empty, std::iter::empty(), &[tag::NIL]);
        assert_eq!(empty, vec![tag::NIL]);
    }

    #[test]
    fn nested_lists_are_skipped_in_one_jump() {
        // {[0..50 | 7], %{[0..3] => [[0]]}, 1.5}
        let mut inner = Vec::new();
        let m = begin_list(&mut inner, 1);
        inner.extend_from_slice(&int_list(1, &[tag::NIL]));
        inner.push(tag::NIL);
        end_list(&mut inner, m);
        let mut out = Vec::new();
        put_header(&mut out, tag::TUPLE, 3);
        let mut tail = Vec::new();
        put_int(&mut tail, 7);
        out.extend_from_slice(&int_list(50, &tail));
        put_header(&mut out, tag::MAP, 1);
        out.extend_from_slice(&int_list(3, &[tag::NIL]));
        out.extend_from_slice(&inner);
        put_float(&mut out, 1.5);
        assert_eq!(skip(&out, 0).unwrap(), out.len());
        assert_eq!(walk(&out, 0), out.len());
        let els = tuple_elements(&out).unwrap();
        assert_eq!(els.len(), 3);
        let mut p = els[2].start;
        assert_eq!(read_item(&out, &mut p).unwrap(), Item::Float(1.5));
    }

    #[test]
    fn maps_record_their_length() {
        // {%{1 => [2], 3 => "x"}, 9}: skip jumps over the map; read_item
        // steps over its length.
        let mut out = Vec::new();
        put_header(&mut out, tag::TUPLE, 2);
        let m = begin_map(&mut out, 2);
        put_int(&mut out, 1);
        out.extend_from_slice(&int_list(1, &[tag::NIL]));
        put_int(&mut out, 3);
        put_bytes(&mut out, tag::BINARY, b"x");
        end_map(&mut out, m);
        put_int(&mut out, 9);
        let els = tuple_elements(&out).unwrap();
        assert_eq!(els.len(), 2);
        assert_eq!(walk(&out, els[0].start), els[0].end);
        let mut p = els[0].start;
        assert_eq!(read_item(&out, &mut p).unwrap(), Item::Map(2));
        assert_eq!(read_item(&out, &mut p).unwrap(), Item::Int(1));
        // The same map with its length unknown is walked to the same end.
        let mut unknown = out.clone();
        unknown[els[0].start + 2..els[0].start + 6]
            .copy_from_slice(&LIST_LEN_UNKNOWN.to_le_bytes());
        assert_eq!(skip(&unknown, els[0].start), Ok(els[0].end));
        // A length past the end is corrupt, not a panic.
        let mut bad = out.clone();
        bad[els[0].start + 2..els[0].start + 6].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(skip(&bad, els[0].start), Err(FormatError::Corrupt));
    }

    #[test]
    fn unknown_list_length_is_walked() {
        let mut out = int_list(5, &[tag::NIL]);
        // The header is [LIST, 5, len u32]: mark the length unknown.
        out[2..6].copy_from_slice(&LIST_LEN_UNKNOWN.to_le_bytes());
        assert_eq!(skip(&out, 0).unwrap(), out.len());
        let mut t = Vec::new();
        put_header(&mut t, tag::TUPLE, 2);
        t.extend_from_slice(&out);
        put_int(&mut t, 1);
        assert_eq!(skip(&t, 0).unwrap(), t.len());
    }

    #[test]
    fn truncated_scalars_inside_containers_are_corrupt() {
        let mut out = Vec::new();
        put_header(&mut out, tag::MAP, 1);
        put_word(&mut out, tag::WORD, 1);
        put_int(&mut out, 2);
        assert_eq!(skip(&out, 0), Ok(out.len()));
        for cut in 0..out.len() {
            assert_eq!(skip(&out[..cut], 0), Err(FormatError::Corrupt), "{cut}");
        }
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        // A list header without its length, or a length past the end.
        assert_eq!(skip(&[tag::LIST, 1, 9, 0], 0), Err(FormatError::Corrupt));
        assert_eq!(
            skip(&[tag::LIST, 1, 200, 0, 0, 0, tag::NIL], 0),
            Err(FormatError::Corrupt)
        );
        assert_eq!(
            read_item(&[tag::LIST, 1, 9, 0], &mut 0),
            Err(FormatError::Corrupt)
        );
        assert_eq!(skip(&[], 0), Err(FormatError::Corrupt));
        assert_eq!(
            skip(&[tag::TUPLE, 3, tag::NIL], 0),
            Err(FormatError::Corrupt)
        );
        assert_eq!(skip(&[99], 0), Err(FormatError::Corrupt));
        assert_eq!(skip(&[tag::BINARY, 200, 1], 0), Err(FormatError::Corrupt));
        assert_eq!(
            skip(
                &[
                    tag::MAP,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0x7f
                ],
                0
            ),
            Err(FormatError::Corrupt)
        );
    }
}
