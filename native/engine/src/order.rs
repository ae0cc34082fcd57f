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
//! be ordered: the host installs a [`Host`] with two callbacks, one for two
//! words of the same kind and one for two whole encoded values. The second is
//! called only when the native comparison cannot decide (an `EXT` or a map
//! meeting a value of its own class).

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

/// True when two encoded values are the same term (`=:=`): equal bytes,
/// except that floats compare by value when `zero_eq` (so `0.0` and `-0.0`
/// are the same, as on OTP 25 and 26).
pub fn identical(a: &[u8], b: &[u8], zero_eq: bool) -> bool {
    if a == b {
        return true;
    }
    if !zero_eq || a.len() != b.len() {
        return false;
    }
    let (mut pa, mut pb) = (0, 0);
    while pa < a.len() {
        match (read_item(a, &mut pa), read_item(b, &mut pb)) {
            (Ok(Item::Float(x)), Ok(Item::Float(y))) if x == y => {}
            (Ok(Item::Float(_)), _) | (_, Ok(Item::Float(_))) => return false,
            (Ok(x), Ok(y)) if x == y => {}
            _ => return false,
        }
    }
    pb == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{put_bytes, put_float, put_header, put_int, put_integer, put_word, tag};

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
        if els.is_empty() {
            return tail;
        }
        let mut o = Vec::new();
        put_header(&mut o, tag::LIST, els.len());
        els.iter().for_each(|e| o.extend_from_slice(e));
        o.extend_from_slice(&tail);
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
}
