//! Erlang term order over encoded values (see [`crate::format`]).
//!
//! ```text
//! number < atom < reference < fun < port < pid < tuple < map < nil < list < bitstring
//! ```
//!
//! Integers and floats compare by value (`1 == 1.0`), exactly, as the VM
//! does; tuples by arity, then element by element; lists element by
//! element, then by their tails; binaries byte by byte.
//!
//! Atoms and pids are opaque words, and external-format values (references,
//! funs, ports, remote pids, bitstrings, deep terms) and maps need the VM to
//! be ordered: the host installs a [`Host`] with three callbacks, one for two
//! words of the same kind, one for two whole encoded values, and one giving
//! an atom's text. The second is called only when the native comparison
//! cannot decide (an `EXT` or a map meeting a value of its own class).
//!
//! [`SortPrefix`] digests a key into a short order-preserving byte string
//! (atoms by their text), so that tables can decide most comparisons with
//! integer compares and fall back to [`compare`] only on ties.

use crate::format::{read_item, skip, tag, FormatError, Item};
use std::cmp::Ordering;
use std::sync::OnceLock;

/// Callbacks of the host for what the bytes alone cannot order.
#[derive(Clone, Copy)]
pub struct Host {
    /// Orders two words of the same tag (two atoms, or two local pids).
    pub cmp_words: fn(u64, u64) -> Ordering,
    /// Orders two whole encoded values (each one complete value).
    pub cmp_values: fn(&[u8], &[u8]) -> Ordering,
    /// Writes the text of an atom word into the buffer, one byte per
    /// character, such that atoms are ordered as their texts (byte by byte,
    /// a prefix first); returns its length, or `None` when it cannot (then
    /// keys holding the atom are ordered without a [`SortPrefix`]).
    pub atom_text: fn(u64, &mut [u8; 256]) -> Option<usize>,
}

static HOST: OnceLock<Host> = OnceLock::new();

/// Installs the host callbacks (the first installation wins).
pub fn install(host: Host) {
    let _ = HOST.set(host);
}

fn host() -> Host {
    *HOST.get_or_init(|| Host {
        cmp_words: |a, b| a.cmp(&b),
        cmp_values: |a, b| a.cmp(b),
        atom_text: |w, buf| {
            buf[..8].copy_from_slice(&w.to_be_bytes());
            Some(8)
        },
    })
}

/// Term classes, in term order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Number,
    Atom,
    Reference,
    Fun,
    Port,
    Pid,
    Tuple,
    Map,
    Nil,
    List,
    Bitstring,
}

/// The class of an external-term-format value, from its first tag.
fn ext_class(b: &[u8]) -> Option<Class> {
    let t = match b {
        [131, t, ..] => *t,
        _ => return None,
    };
    Some(match t {
        97 | 98 | 110 | 111 | 70 | 99 => Class::Number,
        100 | 115 | 118 | 119 => Class::Atom,
        101 | 114 | 90 => Class::Reference,
        112 | 113 | 117 => Class::Fun,
        102 | 89 | 120 => Class::Port,
        103 | 88 => Class::Pid,
        104 | 105 => Class::Tuple,
        116 => Class::Map,
        106 => Class::Nil,
        107 | 108 => Class::List,
        109 | 77 => Class::Bitstring,
        _ => return None,
    })
}

fn class_of(item: &Item) -> Option<Class> {
    Some(match item {
        Item::Int(_) | Item::Float(_) | Item::BigInt(..) => Class::Number,
        Item::Word(_) => Class::Atom,
        Item::Pid(_) => Class::Pid,
        Item::Binary(_) => Class::Bitstring,
        Item::Tuple(_) => Class::Tuple,
        Item::Map(_) => Class::Map,
        Item::Nil => Class::Nil,
        Item::List(_) => Class::List,
        Item::Ext(b) => return ext_class(b),
    })
}

/// Orders a small integer against a float, exactly.
fn cmp_int_float(i: i64, f: f64) -> Ordering {
    // 2^63 as a float; every float at or beyond it is an integer outside i64.
    const LIM: f64 = 9_223_372_036_854_775_808.0;
    if f >= LIM {
        return Ordering::Less;
    }
    if f < -LIM {
        return Ordering::Greater;
    }
    let t = f.trunc();
    let ti = t as i64;
    match i.cmp(&ti) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - t)).unwrap_or(Ordering::Equal),
        o => o,
    }
}

/// Orders two integers outside i64 (sign, magnitude little endian).
fn cmp_big(an: bool, am: &[u8], bn: bool, bm: &[u8]) -> Ordering {
    let trim = |m: &[u8]| -> usize { m.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1) };
    let (am, bm) = (&am[..trim(am)], &bm[..trim(bm)]);
    let mag = am
        .len()
        .cmp(&bm.len())
        .then_with(|| am.iter().rev().cmp(bm.iter().rev()));
    match (an, bn) {
        (false, false) => mag,
        (true, true) => mag.reverse(),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

/// Orders two numbers; `None` when the host must decide (a big integer
/// against a float, or a number in external format).
fn cmp_numbers(a: &Item, b: &Item) -> Option<Ordering> {
    Some(match (a, b) {
        (Item::Int(x), Item::Int(y)) => x.cmp(y),
        (Item::Float(x), Item::Float(y)) => x.partial_cmp(y)?,
        (Item::Int(x), Item::Float(y)) => cmp_int_float(*x, *y),
        (Item::Float(x), Item::Int(y)) => cmp_int_float(*y, *x).reverse(),
        // A BIGINT is outside i64: its sign orders it against any INT.
        (Item::BigInt(n, _), Item::Int(_)) => {
            if *n {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (Item::Int(_), Item::BigInt(n, _)) => {
            if *n {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Item::BigInt(an, am), Item::BigInt(bn, bm)) => cmp_big(*an, am, *bn, bm),
        _ => return None,
    })
}

/// Compares the values at `pa` in `a` and `pb` in `b`, advancing both past
/// them; `Ok(None)` when the host must decide.
fn cmp_at(
    a: &[u8],
    pa: &mut usize,
    b: &[u8],
    pb: &mut usize,
    h: &Host,
) -> Result<Option<Ordering>, FormatError> {
    let start_a = *pa;
    let start_b = *pb;
    let ia = read_item(a, pa)?;
    let ib = read_item(b, pb)?;
    let (Some(ca), Some(cb)) = (class_of(&ia), class_of(&ib)) else {
        return Ok(None);
    };
    if ca != cb {
        return Ok(Some(ca.cmp(&cb)));
    }
    let ext = matches!(ia, Item::Ext(_)) || matches!(ib, Item::Ext(_));
    if ext {
        return Ok(None);
    }
    let o = match (ia, ib) {
        (Item::Word(x), Item::Word(y)) | (Item::Pid(x), Item::Pid(y)) => {
            if x == y {
                Ordering::Equal
            } else {
                (h.cmp_words)(x, y)
            }
        }
        (Item::Binary(x), Item::Binary(y)) => x.cmp(y),
        (Item::Nil, Item::Nil) => Ordering::Equal,
        (Item::Map(_), Item::Map(_)) => {
            *pa = skip(a, start_a)?;
            *pb = skip(b, start_b)?;
            return Ok(None);
        }
        (Item::Tuple(n), Item::Tuple(m)) => {
            if n != m {
                return Ok(Some(n.cmp(&m)));
            }
            for _ in 0..n {
                match cmp_at(a, pa, b, pb, h)? {
                    Some(Ordering::Equal) => {}
                    other => return Ok(other),
                }
            }
            Ordering::Equal
        }
        (Item::List(n), Item::List(m)) => {
            for _ in 0..n.min(m) {
                match cmp_at(a, pa, b, pb, h)? {
                    Some(Ordering::Equal) => {}
                    other => return Ok(other),
                }
            }
            if n == m {
                return cmp_at(a, pa, b, pb, h);
            }
            // One list goes on; the other's tail (a non-list) meets it.
            let (tail, pos, rev) = if n < m { (a, pa, false) } else { (b, pb, true) };
            let t = read_item(tail, pos)?;
            let o = match class_of(&t) {
                Some(Class::List) | None => return Ok(None),
                Some(c) => c.cmp(&Class::List),
            };
            if rev {
                o.reverse()
            } else {
                o
            }
        }
        (x, y) => match cmp_numbers(&x, &y) {
            Some(o) => o,
            None => return Ok(None),
        },
    };
    Ok(Some(o))
}

/// Orders two encoded values in Erlang term order (`==` is `Equal`).
pub fn compare(a: &[u8], b: &[u8]) -> Ordering {
    compare_with(a, b, &host())
}

/// [`compare`] with explicit host callbacks.
pub fn compare_with(a: &[u8], b: &[u8], h: &Host) -> Ordering {
    // Fast path: two small integers (the most common ordered keys).
    if let (Ok(x), Ok(y)) = (<&[u8; 9]>::try_from(a), <&[u8; 9]>::try_from(b)) {
        if x[0] == tag::INT && y[0] == tag::INT {
            let xi = i64::from_le_bytes(x[1..].try_into().expect("8 bytes"));
            let yi = i64::from_le_bytes(y[1..].try_into().expect("8 bytes"));
            return xi.cmp(&yi);
        }
    }
    if a == b {
        return Ordering::Equal;
    }
    let (mut pa, mut pb) = (0, 0);
    match cmp_at(a, &mut pa, b, &mut pb, h) {
        Ok(Some(o)) => o,
        _ => (h.cmp_values)(a, b),
    }
}

/// Words of a [`SortPrefix`].
pub const PREFIX_WORDS: usize = 3;

/// An order-preserving digest of a key: the first `8 * PREFIX_WORDS` bytes
/// of a byte string whose lexicographic order is the term order (classes,
/// tuple arities, number values, atom texts, binary bytes), zero-filled.
///
/// For any keys `a` and `b` with known prefixes: `a.words < b.words` implies
/// `a < b`, and equal keys have equal prefixes; when the words are equal and
/// one of the two is `complete` (its whole sort string fitted, losslessly),
/// the keys are equal. An unknown prefix (`words[0] == 0`) decides nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SortPrefix {
    /// Big-endian words of the sort string; `[0; N]` when unknown.
    pub words: [u64; PREFIX_WORDS],
    /// True when the sort string fitted and nothing in it was lossy.
    pub complete: bool,
}

impl SortPrefix {
    /// The prefix that decides nothing.
    pub const UNKNOWN: SortPrefix = SortPrefix {
        words: [0; PREFIX_WORDS],
        complete: false,
    };

    /// The prefix of an encoded key.
    #[inline]
    pub fn of(key: &[u8]) -> SortPrefix {
        // Fast path: a small integer (class, biased value, "exact").
        if let Ok(k) = <&[u8; 9]>::try_from(key) {
            if k[0] == tag::INT {
                let v = u64::from_le_bytes(k[1..].try_into().expect("8 bytes")) ^ (1 << 63);
                let mut words = [0u64; PREFIX_WORDS];
                words[0] = u64::from(class_byte(Class::Number)) << 56 | v >> 8;
                words[1] = (v & 0xff) << 56 | 1 << 48;
                return SortPrefix {
                    words,
                    complete: true,
                };
            }
        }
        sort_prefix_with(key, &host())
    }

    /// The integer every key with this prefix equals (`==`), when the
    /// prefix is complete and its sort string is an integral number in the
    /// range of i64 (a small integer, or an integral float such as `1.0`):
    /// such keys compare exactly as that small integer does.
    #[inline]
    pub fn integer(&self) -> Option<i64> {
        match self.number() {
            Some((v, 1)) if self.complete => Some(v),
            _ => None,
        }
    }

    /// For the prefix of a number: its floor (clamped to i64) and its flag,
    /// 0 (below i64), 1 (exactly that integer) or 2 (above it).
    #[inline]
    pub fn number(&self) -> Option<(i64, u8)> {
        if (self.words[0] >> 56) as u8 != class_byte(Class::Number) {
            return None;
        }
        let v = self.words[0] << 8 | self.words[1] >> 56;
        Some(((v ^ (1 << 63)) as i64, (self.words[1] >> 48) as u8))
    }

    /// Orders two keys by their prefixes, then (when undecided) by
    /// [`compare`] on their bytes.
    #[inline]
    pub fn cmp_keys(pa: &SortPrefix, a: &[u8], pb: &SortPrefix, b: &[u8]) -> Ordering {
        if pa.words[0] != 0 && pb.words[0] != 0 {
            match pa.words.cmp(&pb.words) {
                Ordering::Equal if pa.complete || pb.complete => return Ordering::Equal,
                Ordering::Equal => {}
                o => return o,
            }
        }
        compare(a, b)
    }
}

/// Builds a sort string, stopping when the buffer is full.
struct SortBuf {
    buf: [u8; 8 * PREFIX_WORDS],
    len: usize,
    /// Set when bytes were dropped or a value ended the string early.
    lossy: bool,
}

/// Why building a sort string stopped before the end of the key.
enum Stop {
    /// The buffer is full, or a value ends the string (a lossy number, a
    /// value whose order only the host knows): what was written stands.
    Done,
    /// The key cannot have a prefix.
    Unknown,
}

impl SortBuf {
    fn push(&mut self, b: u8) -> Result<(), Stop> {
        if self.len == self.buf.len() {
            self.lossy = true;
            return Err(Stop::Done);
        }
        self.buf[self.len] = b;
        self.len += 1;
        Ok(())
    }

    fn extend(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        bytes.iter().try_for_each(|&b| self.push(b))
    }

    /// Bytes then a terminator, escaped so that a prefix sorts first:
    /// `0` is written `0 255`, and the end `0 0`.
    fn text(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        for &b in bytes {
            self.push(b)?;
            if b == 0 {
                self.push(255)?;
            }
        }
        self.extend(&[0, 0])
    }

    /// Ends the string here (everything after this point is unknown).
    fn stop(&mut self) -> Result<(), Stop> {
        self.lossy = true;
        Err(Stop::Done)
    }
}

/// Sort-string bytes of each class (nonzero, in term order).
fn class_byte(c: Class) -> u8 {
    c as u8 + 1
}

/// The sort string of a number: its floor (clamped to i64, biased, big
/// endian) then 0 (below i64), 1 (exactly that integer) or 2 (above it).
fn number(sb: &mut SortBuf, item: &Item) -> Result<(), Stop> {
    let (floor, flag) = match *item {
        Item::Int(i) => (i, 1),
        Item::BigInt(neg, _) => {
            if neg {
                (i64::MIN, 0)
            } else {
                (i64::MAX, 2)
            }
        }
        Item::Float(f) => {
            const LIM: f64 = 9_223_372_036_854_775_808.0;
            let fl = f.floor();
            if fl >= LIM {
                (i64::MAX, 2)
            } else if fl < -LIM {
                (i64::MIN, 0)
            } else {
                (fl as i64, if fl == f { 1 } else { 2 })
            }
        }
        _ => return Err(Stop::Unknown),
    };
    sb.push(class_byte(Class::Number))?;
    sb.extend(&((floor as u64) ^ (1 << 63)).to_be_bytes())?;
    sb.push(flag)?;
    if flag != 1 {
        return sb.stop();
    }
    Ok(())
}

/// Appends the sort string of the value at `*pos`, advancing past it.
fn sort_value(key: &[u8], pos: &mut usize, sb: &mut SortBuf, h: &Host) -> Result<(), Stop> {
    let item = read_item(key, pos).map_err(|_| Stop::Unknown)?;
    let class = class_of(&item).ok_or(Stop::Unknown)?;
    match item {
        Item::Int(_) | Item::Float(_) | Item::BigInt(..) => number(sb, &item),
        Item::Word(w) => {
            let mut text = [0u8; 256];
            let n = (h.atom_text)(w, &mut text).ok_or(Stop::Unknown)?;
            sb.push(class_byte(class))?;
            sb.text(&text[..n.min(256)])
        }
        Item::Binary(b) => {
            sb.push(class_byte(class))?;
            sb.text(b)
        }
        Item::Nil => sb.push(class_byte(class)),
        Item::Tuple(n) => {
            sb.push(class_byte(class))?;
            if n >= 255 {
                sb.push(255)?;
                return sb.stop();
            }
            sb.push(n as u8)?;
            (0..n).try_for_each(|_| sort_value(key, pos, sb, h))
        }
        Item::List(n) => {
            for _ in 0..n {
                sb.push(class_byte(Class::List))?;
                sort_value(key, pos, sb, h)?;
            }
            sort_value(key, pos, sb, h)
        }
        // Every pid and map, native or not, stops the string at its class.
        Item::Pid(_) | Item::Map(_) => {
            sb.push(class_byte(class))?;
            sb.stop()
        }
        Item::Ext(_) => match class {
            Class::Reference | Class::Fun | Class::Port | Class::Pid | Class::Map => {
                sb.push(class_byte(class))?;
                sb.stop()
            }
            Class::Nil => sb.push(class_byte(class)),
            // Classes whose native values go on past the class byte.
            _ => Err(Stop::Unknown),
        },
    }
}

/// [`SortPrefix::of`] with explicit host callbacks.
pub fn sort_prefix_with(key: &[u8], h: &Host) -> SortPrefix {
    let mut sb = SortBuf {
        buf: [0; 8 * PREFIX_WORDS],
        len: 0,
        lossy: false,
    };
    let mut pos = 0;
    match sort_value(key, &mut pos, &mut sb, h) {
        Ok(()) | Err(Stop::Done) => {}
        Err(Stop::Unknown) => return SortPrefix::UNKNOWN,
    }
    let mut words = [0u64; PREFIX_WORDS];
    for (w, c) in words.iter_mut().zip(sb.buf.chunks_exact(8)) {
        *w = u64::from_be_bytes(c.try_into().expect("8 bytes"));
    }
    SortPrefix {
        words,
        complete: !sb.lossy && pos == key.len(),
    }
}

/// True when two encoded values are the same term (`=:=`): equal bytes,
/// except that floats compare by value when `zero_eq` (so `0.0` and `-0.0`
/// are the same, as on OTP 25 and 26), and values kept in external term
/// format by their canonical forms (see [`crate::ext`]: equal funs made by
/// different processes, a `-0.0` inside).
pub fn identical(a: &[u8], b: &[u8], zero_eq: bool) -> bool {
    if a == b {
        return true;
    }
    // (Canonical forms keep the lengths: equal terms have equal lengths.)
    if a.len() != b.len() {
        return false;
    }
    let (mut pa, mut pb) = (0, 0);
    while pa < a.len() {
        match (read_item(a, &mut pa), read_item(b, &mut pb)) {
            (Ok(Item::Float(x)), Ok(Item::Float(y)))
                if x.to_bits() == y.to_bits() || (zero_eq && x == y) => {}
            (Ok(Item::Float(_)), _) | (_, Ok(Item::Float(_))) => return false,
            (Ok(Item::Ext(x)), Ok(Item::Ext(y))) if same_ext(x, y, zero_eq) => {}
            (Ok(Item::Ext(_)), _) | (_, Ok(Item::Ext(_))) => return false,
            (Ok(x), Ok(y)) if x == y => {}
            _ => return false,
        }
    }
    pb == b.len()
}

/// Two values in external term format that are the same term.
fn same_ext(x: &[u8], y: &[u8], zero_eq: bool) -> bool {
    if x == y {
        return true;
    }
    let canon = |v: &[u8]| crate::ext::canonical(v, zero_eq).unwrap_or_else(|| v.to_vec());
    x.len() == y.len() && canon(x) == canon(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{
        put_bytes, put_float, put_header, put_int, put_integer, put_list, put_word, tag,
    };

    fn int(v: i64) -> Vec<u8> {
        let mut o = Vec::new();
        put_int(&mut o, v);
        o
    }
    fn flt(v: f64) -> Vec<u8> {
        let mut o = Vec::new();
        put_float(&mut o, v);
        o
    }
    fn big(v: i128) -> Vec<u8> {
        let mut o = Vec::new();
        put_integer(&mut o, v);
        o
    }
    fn atom(w: u64) -> Vec<u8> {
        let mut o = Vec::new();
        put_word(&mut o, tag::WORD, w);
        o
    }
    fn bin(b: &[u8]) -> Vec<u8> {
        let mut o = Vec::new();
        put_bytes(&mut o, tag::BINARY, b);
        o
    }
    fn tuple(els: &[Vec<u8>]) -> Vec<u8> {
        let mut o = Vec::new();
        put_header(&mut o, tag::TUPLE, els.len());
        els.iter().for_each(|e| o.extend_from_slice(e));
        o
    }
    fn list(els: &[Vec<u8>], tail: Vec<u8>) -> Vec<u8> {
        let mut o = Vec::new();
        put_list(&mut o, els.iter().map(|e| &e[..]), &tail);
        o
    }
    fn nil() -> Vec<u8> {
        vec![tag::NIL]
    }

    #[test]
    fn numbers_by_value() {
        use Ordering::*;
        assert_eq!(compare(&int(1), &flt(1.0)), Equal);
        assert_eq!(compare(&int(1), &flt(1.5)), Less);
        assert_eq!(compare(&int(-1), &flt(-1.5)), Greater);
        assert_eq!(compare(&flt(-0.0), &flt(0.0)), Equal);
        assert_eq!(
            compare(&int(9007199254740993), &flt(9007199254740992.0)),
            Greater
        );
        assert_eq!(compare(&int(i64::MAX), &flt(9.3e18)), Less);
        assert_eq!(compare(&big(1 << 70), &int(i64::MAX)), Greater);
        assert_eq!(compare(&big(-(1 << 70)), &int(i64::MIN)), Less);
        assert_eq!(compare(&big(1 << 70), &big(1 << 71)), Less);
        assert_eq!(compare(&big(-(1 << 70)), &big(-(1 << 71))), Greater);
        assert_eq!(compare(&int(5), &atom(1)), Less);
    }

    #[test]
    fn classes_and_structures() {
        use Ordering::*;
        let order = [
            int(3),
            atom(7),
            tuple(&[int(1)]),
            tuple(&[int(1), int(2)]),
            tuple(&[int(2), int(0)]),
            nil(),
            list(&[int(1)], atom(3)),
            list(&[int(1)], nil()),
            list(&[int(1), int(2)], nil()),
            list(&[int(2)], nil()),
            bin(b""),
            bin(b"a"),
            bin(b"ab"),
            bin(b"b"),
        ];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                assert_eq!(compare(a, b), i.cmp(&j), "{i} vs {j}");
            }
        }
        // Tuples and lists compare their elements by value.
        assert_eq!(
            compare(&tuple(&[int(1), flt(2.0)]), &tuple(&[flt(1.0), int(2)])),
            Equal
        );
        assert_eq!(
            compare(&list(&[int(1)], nil()), &list(&[flt(1.0)], nil())),
            Equal
        );
    }

    #[test]
    fn undecidable_cases_go_to_the_host() {
        let h = Host {
            cmp_words: |a, b| b.cmp(&a),
            cmp_values: |_, _| Ordering::Greater,
            atom_text: |_, _| None,
        };
        assert_eq!(compare_with(&atom(1), &atom(2), &h), Ordering::Greater);
        let mut m = Vec::new();
        put_header(&mut m, tag::MAP, 0);
        let mut m2 = Vec::new();
        put_header(&mut m2, tag::MAP, 1);
        m2.extend(int(1));
        m2.extend(int(2));
        assert_eq!(compare_with(&m, &m2, &h), Ordering::Greater);
        // A map against a tuple is decided by class.
        assert_eq!(compare_with(&m, &tuple(&[]), &h), Ordering::Greater);
        assert_eq!(compare_with(&tuple(&[]), &m, &h), Ordering::Less);
        // A reference (external format) against a number: by class.
        let mut r = Vec::new();
        put_bytes(&mut r, tag::EXT, &[131, 90, 0, 3]);
        assert_eq!(compare_with(&r, &int(1), &h), Ordering::Greater);
        assert_eq!(compare_with(&r, &atom(1), &h), Ordering::Greater);
        assert_eq!(compare_with(&r, &tuple(&[]), &h), Ordering::Less);
    }

    #[test]
    fn identity() {
        let a = tuple(&[atom(1), flt(0.0)]);
        let b = tuple(&[atom(1), flt(-0.0)]);
        assert!(identical(&a, &b, true));
        assert!(!identical(&a, &b, false));
        assert!(!identical(&tuple(&[int(1)]), &tuple(&[int(2)]), true));
        assert!(!identical(&int(1), &flt(1.0), true));
    }

    #[test]
    fn sort_prefixes_agree_with_compare() {
        use Ordering::*;
        let mut m = Vec::new();
        put_header(&mut m, tag::MAP, 0);
        let mut r = Vec::new();
        put_bytes(&mut r, tag::EXT, &[131, 90, 0, 3]);
        let mut bits = Vec::new();
        put_bytes(&mut bits, tag::EXT, &[131, 77, 0, 0, 0, 1, 3, 0]);
        let mut pid = Vec::new();
        put_word(&mut pid, tag::PID, 5);
        let long = bin(&[7u8; 40]);
        let mut vals = vec![
            int(0),
            int(-1),
            int(1),
            int(i64::MAX),
            int(i64::MIN),
            flt(0.0),
            flt(-0.0),
            flt(0.5),
            flt(1.0),
            flt(-0.5),
            flt(1e30),
            flt(-1e30),
            flt(9.3e18),
            big(1 << 70),
            big(-(1 << 70)),
            atom(1),
            atom(2),
            atom(256),
            bin(b""),
            bin(b"a"),
            bin(b"a\0"),
            bin(b"a\0\0"),
            bin(b"ab"),
            bin(&[0xff; 30]),
            long.clone(),
            nil(),
            list(&[int(1)], nil()),
            list(&[int(1)], int(2)),
            list(&[int(1), int(2)], nil()),
            list(&[flt(1.5)], nil()),
            m.clone(),
            r.clone(),
            bits.clone(),
            pid.clone(),
            tuple(&[]),
        ];
        let singles = vals.clone();
        for a in &singles {
            for b in &singles[..12] {
                vals.push(tuple(&[a.clone(), b.clone()]));
                vals.push(tuple(&[b.clone(), a.clone(), int(3)]));
                vals.push(list(&[b.clone(), a.clone()], nil()));
            }
        }
        use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
        // Pairs that the host orders are skipped (this host cannot).
        static HOSTED: AtomicBool = AtomicBool::new(false);
        let h = Host {
            cmp_words: |a, b| a.cmp(&b),
            cmp_values: |a, b| {
                HOSTED.store(true, Relaxed);
                a.cmp(b)
            },
            atom_text: |w, buf| {
                buf[..8].copy_from_slice(&w.to_be_bytes());
                Some(8)
            },
        };
        let pre: Vec<SortPrefix> = vals.iter().map(|v| sort_prefix_with(v, &h)).collect();
        assert!(pre[0].complete && pre[18].complete);
        for v in [0, 1, -1, 255, 256, -256, i64::MAX, i64::MIN, 1 << 40] {
            assert_eq!(
                SortPrefix::of(&int(v)),
                sort_prefix_with(&int(v), &h),
                "{v}"
            );
            assert_eq!(SortPrefix::of(&int(v)).integer(), Some(v), "{v}");
        }
        assert_eq!(sort_prefix_with(&flt(-3.0), &h).integer(), Some(-3));
        assert_eq!(sort_prefix_with(&flt(-2.5), &h).number(), Some((-3, 2)));
        assert_eq!(
            sort_prefix_with(&big(-(1 << 70)), &h).number(),
            Some((i64::MIN, 0))
        );
        assert_eq!(sort_prefix_with(&flt(-0.0), &h).integer(), Some(0));
        for v in [
            flt(0.5),
            flt(1e30),
            flt(-1e30),
            big(1 << 70),
            atom(1),
            tuple(&[int(1)]),
        ] {
            assert_eq!(sort_prefix_with(&v, &h).integer(), None, "{v:?}");
        }
        assert!(!pre[24].complete && pre[24].words[0] != 0);
        for (i, a) in vals.iter().enumerate() {
            for (j, b) in vals.iter().enumerate() {
                let (pa, pb) = (&pre[i], &pre[j]);
                HOSTED.store(false, Relaxed);
                let full = compare_with(a, b, &h);
                if pa.words[0] == 0 || pb.words[0] == 0 || HOSTED.load(Relaxed) {
                    continue;
                }
                let p = pa.words.cmp(&pb.words);
                if p != Equal {
                    assert_eq!(p, full, "{i} vs {j}: {a:?} {b:?}");
                } else if pa.complete || pb.complete {
                    assert_eq!(full, Equal, "{i} vs {j}: {a:?} {b:?}");
                }
                if full == Equal {
                    assert_eq!(p, Equal, "{i} vs {j}");
                }
            }
        }
    }
}
