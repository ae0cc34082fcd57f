//! `Map.merge/2` on encoded maps, without decoding them.
//!
//! An encoded map lists its pairs in the host's iteration order. For the
//! BEAM's small ("flat") maps of at most [`FLAT_LIMIT`] keys that order is
//! the term order of the keys (exact: `1` before `1.0`), so two such
//! encodings merge like two sorted lists, and the result lists its pairs in
//! exactly the order in which the host would encode the merged map: equal
//! maps keep equal bytes (which `delete_object/2` and `replace/4` rely on
//! for their fast byte comparison).
//!
//! The byte-level merge handles the common keys only: integers (`INT`),
//! atoms (`WORD`, ordered by a host-supplied comparison) and binaries. Any
//! other key, a map over the flat limit, or a merged map that would exceed
//! it (the host then switches to a hash-ordered map) yields `None`, and the
//! caller merges through the host instead.

use crate::format::{self, Item};
use std::cmp::Ordering;

/// The largest map whose iteration order is the term order of its keys.
pub const FLAT_LIMIT: usize = 32;

/// A key the merge can order on its own.
#[derive(Clone, Copy)]
enum SimpleKey<'a> {
    Int(i64),
    Word(u64),
    Binary(&'a [u8]),
}

impl SimpleKey<'_> {
    /// Term order: numbers < atoms < bitstrings.
    fn rank(&self) -> u8 {
        match self {
            SimpleKey::Int(_) => 0,
            SimpleKey::Word(_) => 1,
            SimpleKey::Binary(_) => 2,
        }
    }
}

fn cmp_keys(a: &SimpleKey, b: &SimpleKey, words: &impl Fn(u64, u64) -> Ordering) -> Ordering {
    match (a, b) {
        (SimpleKey::Int(x), SimpleKey::Int(y)) => x.cmp(y),
        (SimpleKey::Word(x), SimpleKey::Word(y)) => {
            if x == y {
                Ordering::Equal
            } else {
                words(*x, *y)
            }
        }
        (SimpleKey::Binary(x), SimpleKey::Binary(y)) => x.cmp(y),
        _ => a.rank().cmp(&b.rank()),
    }
}

/// One pair of an encoded map: its key and the bytes of key and value.
#[derive(Clone, Copy)]
struct Pair<'a> {
    key: SimpleKey<'a>,
    bytes: &'a [u8],
}

/// The pairs of the flat map encoded in `map` (which must hold exactly one
/// value), checked to be in strictly ascending key order; `None` when the
/// map is not a flat map of simple keys.
fn pairs<'a, 'o>(
    map: &'a [u8],
    words: &impl Fn(u64, u64) -> Ordering,
    out: &'o mut [Pair<'a>; FLAT_LIMIT],
) -> Option<&'o [Pair<'a>]> {
    let mut pos = 0;
    let n = match format::read_item(map, &mut pos).ok()? {
        Item::Map(n) if n <= FLAT_LIMIT => n,
        _ => return None,
    };
    for i in 0..n {
        let start = pos;
        let key = match format::read_item(map, &mut pos).ok()? {
            Item::Int(i) => SimpleKey::Int(i),
            Item::Word(w) => SimpleKey::Word(w),
            Item::Binary(b) => SimpleKey::Binary(b),
            _ => return None,
        };
        let end = format::skip(map, pos).ok()?;
        if let Some(prev) = out[..i].last() {
            if cmp_keys(&prev.key, &key, words) != Ordering::Less {
                return None;
            }
        }
        out[i] = Pair {
            key,
            bytes: &map[start..end],
        };
        pos = end;
    }
    (pos == map.len()).then_some(&out[..n])
}

/// Appends to `out` the encoding of `Map.merge(old, new)`, where `old` and
/// `new` are each exactly one encoded map; `words` orders two atom words
/// as the host does. Returns `None` (with `out` unspecified past its
/// original length) when the byte-level merge does not apply: see the
/// module documentation.
pub fn merge(
    old: &[u8],
    new: &[u8],
    words: impl Fn(u64, u64) -> Ordering,
    out: &mut Vec<u8>,
) -> Option<()> {
    let none = Pair {
        key: SimpleKey::Int(0),
        bytes: &[],
    };
    let (mut a, mut b) = ([none; FLAT_LIMIT], [none; FLAT_LIMIT]);
    let a = pairs(old, &words, &mut a)?;
    let b = pairs(new, &words, &mut b)?;
    // Count first: the header precedes the pairs.
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match cmp_keys(&a[i].key, &b[j].key, &words) {
            Ordering::Less => i += 1,
            Ordering::Greater => j += 1,
            Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
        n += 1;
    }
    n += (a.len() - i) + (b.len() - j);
    if n > FLAT_LIMIT {
        return None;
    }
    let mark = format::begin_map(out, n);
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match cmp_keys(&a[i].key, &b[j].key, &words) {
            Ordering::Less => {
                out.extend_from_slice(a[i].bytes);
                i += 1;
            }
            Ordering::Greater => {
                out.extend_from_slice(b[j].bytes);
                j += 1;
            }
            Ordering::Equal => {
                out.extend_from_slice(b[j].bytes);
                i += 1;
                j += 1;
            }
        }
    }
    for p in &a[i..] {
        out.extend_from_slice(p.bytes);
    }
    for p in &b[j..] {
        out.extend_from_slice(p.bytes);
    }
    format::end_map(out, mark);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tag;

    fn words(a: u64, b: u64) -> Ordering {
        a.cmp(&b)
    }

    fn map(pairs: &[(&str, i64)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mark = format::begin_map(&mut out, pairs.len());
        for (k, v) in pairs {
            format::put_bytes(&mut out, tag::BINARY, k.as_bytes());
            format::put_int(&mut out, *v);
        }
        format::end_map(&mut out, mark);
        out
    }

    #[test]
    fn merges_sorted_binary_keys() {
        let old = map(&[("a", 1), ("c", 3), ("name", 0)]);
        let new = map(&[("b", 2), ("c", 30), ("z", 9)]);
        let mut out = Vec::new();
        merge(&old, &new, words, &mut out).unwrap();
        assert_eq!(
            out,
            map(&[("a", 1), ("b", 2), ("c", 30), ("name", 0), ("z", 9)])
        );
    }

    #[test]
    fn empty_sides() {
        let e = map(&[]);
        let m = map(&[("x", 1)]);
        let mut out = Vec::new();
        merge(&e, &m, words, &mut out).unwrap();
        assert_eq!(out, m);
        out.clear();
        merge(&m, &e, words, &mut out).unwrap();
        assert_eq!(out, m);
    }

    #[test]
    fn mixed_kinds_in_term_order() {
        let mut old = Vec::new();
        format::put_header(&mut old, tag::MAP, 2);
        format::put_int(&mut old, 5);
        format::put_int(&mut old, 0);
        format::put_bytes(&mut old, tag::BINARY, b"k");
        format::put_int(&mut old, 0);
        let mut new = Vec::new();
        format::put_header(&mut new, tag::MAP, 1);
        format::put_word(&mut new, tag::WORD, 7);
        format::put_int(&mut new, 1);
        let mut out = Vec::new();
        merge(&old, &new, words, &mut out).unwrap();
        let mut expect = Vec::new();
        let mark = format::begin_map(&mut expect, 3);
        format::put_int(&mut expect, 5);
        format::put_int(&mut expect, 0);
        format::put_word(&mut expect, tag::WORD, 7);
        format::put_int(&mut expect, 1);
        format::put_bytes(&mut expect, tag::BINARY, b"k");
        format::put_int(&mut expect, 0);
        format::end_map(&mut expect, mark);
        assert_eq!(out, expect);
        // The merged map's recorded length lets skip step over it at once.
        assert_eq!(format::skip(&out, 0), Ok(out.len()));
    }

    #[test]
    fn declines_what_it_cannot_order() {
        let mut out = Vec::new();
        // A float key.
        let mut f = Vec::new();
        format::put_header(&mut f, tag::MAP, 1);
        format::put_float(&mut f, 1.0);
        format::put_int(&mut f, 1);
        assert!(merge(&f, &map(&[("a", 1)]), words, &mut out).is_none());
        // Unsorted input (not a flat map's order).
        let bad = map(&[("b", 1), ("a", 2)]);
        assert!(merge(&bad, &map(&[("c", 1)]), words, &mut out).is_none());
        // A result over the flat limit.
        let names: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
        let big: Vec<(&str, i64)> = names.iter().map(|s| (s.as_str(), 0)).collect();
        let other: Vec<String> = (0..20).map(|i| format!("z{i:02}")).collect();
        let big2: Vec<(&str, i64)> = other.iter().map(|s| (s.as_str(), 0)).collect();
        assert!(merge(&map(&big), &map(&big2), words, &mut out).is_none());
        // Corrupt bytes.
        assert!(merge(&[tag::MAP, 1], &map(&[]), words, &mut out).is_none());
    }
}
