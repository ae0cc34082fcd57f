//! Necessary conditions of a match specification, checked on encoded
//! objects before they are decoded: a scan decodes (and runs the match
//! specification on) only the objects some clause could match.
//!
//! A clause's conditions are what its head and guards require of the
//! top-level elements of an object: its arity, elements equal to literals
//! (compared byte for byte: only literals whose encoding is unique, such as
//! atoms, integers and short binaries, may be given), and elements that
//! compare with a literal in term order as a guard requires (`<`, `=<`,
//! `>`, `>=`, `==`). The caller derives them from the specification; a
//! filter never rejects an object that the specification could match if
//! the conditions are necessary ones, and it passes anything it cannot
//! read.

use crate::format::{read_item, skip, tag, Item};
use crate::order::compare;
use std::cmp::Ordering;

/// Elements a condition can refer to (0-based indexes below this).
pub const MAX_ELEMENT: usize = 16;

/// A guard's comparison of an element with a literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `<`
    Lt,
    /// `=<`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==` (also a necessary condition of `=:=`).
    Eq,
}

impl Cmp {
    fn holds(self, o: Ordering) -> bool {
        match self {
            Cmp::Lt => o == Ordering::Less,
            Cmp::Le => o != Ordering::Greater,
            Cmp::Gt => o == Ordering::Greater,
            Cmp::Ge => o != Ordering::Less,
            Cmp::Eq => o == Ordering::Equal,
        }
    }
}

/// What one clause requires of an object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Clause {
    /// The object's arity.
    pub arity: usize,
    /// Elements (0-based, below [`MAX_ELEMENT`]) whose encoding must be
    /// exactly these bytes.
    pub equal: Vec<(usize, Vec<u8>)>,
    /// Elements (0-based, below [`MAX_ELEMENT`]) that must compare with the
    /// encoded literal this way, in term order.
    pub compare: Vec<(usize, Cmp, Vec<u8>)>,
}

impl Clause {
    /// The highest element index a condition refers to, plus one.
    fn reach(&self) -> usize {
        let e = self.equal.iter().map(|(i, _)| i + 1);
        let c = self.compare.iter().map(|(i, _, _)| i + 1);
        e.chain(c).max().unwrap_or(0)
    }

    fn holds<'o>(&self, element: impl Fn(usize) -> Option<&'o [u8]>) -> bool {
        self.equal
            .iter()
            .all(|(i, lit)| element(*i).is_none_or(|e| e == lit.as_slice()))
            && self.compare.iter().all(|(i, op, lit)| {
                element(*i).is_none_or(|e| native_order(e, lit).is_none_or(|o| op.holds(o)))
            })
    }
}

/// The term order of element `e` and literal `lit` when it can be told
/// without the host: `None` for a big integer against a float (the engine
/// asks the host to decode and compare those, which would cost a decode
/// of the element per object; the condition is then not checked).
fn native_order(e: &[u8], lit: &[u8]) -> Option<Ordering> {
    let big_vs_float = matches!(
        (e.first(), lit.first()),
        (Some(&tag::BIGINT), Some(&tag::FLOAT)) | (Some(&tag::FLOAT), Some(&tag::BIGINT))
    );
    (!big_vs_float).then(|| compare(e, lit))
}

/// The conditions of every clause of a specification: an object passes
/// when one clause's conditions hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    clauses: Vec<Clause>,
    /// Elements to locate in an object (the clauses' highest reach).
    reach: usize,
}

impl Filter {
    /// A filter of these clauses; `None` when a clause refers to an element
    /// at or past [`MAX_ELEMENT`] (the caller then scans without one).
    pub fn new(clauses: Vec<Clause>) -> Option<Self> {
        let reach = clauses.iter().map(Clause::reach).max().unwrap_or(0);
        (reach <= MAX_ELEMENT).then_some(Filter { clauses, reach })
    }

    /// False only when no clause can match `object` (an encoded tuple).
    pub fn pass(&self, object: &[u8]) -> bool {
        let mut pos = 0;
        let arity = match read_item(object, &mut pos) {
            Ok(Item::Tuple(n)) => n,
            _ => return true,
        };
        if !self.clauses.iter().any(|c| c.arity == arity) {
            return false;
        }
        // Where the elements a condition reads start and end.
        let mut bounds = [0usize; MAX_ELEMENT + 1];
        let n = self.reach.min(arity);
        bounds[0] = pos;
        for i in 0..n {
            match skip(object, bounds[i]) {
                Ok(end) => bounds[i + 1] = end,
                Err(_) => return true,
            }
        }
        let element = |i: usize| (i < n).then(|| &object[bounds[i]..bounds[i + 1]]);
        self.clauses
            .iter()
            .any(|c| c.arity == arity && c.holds(element))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{put_bytes, put_float, put_header, put_int, put_integer, put_word};

    fn int(v: i64) -> Vec<u8> {
        let mut o = Vec::new();
        put_int(&mut o, v);
        o
    }

    fn float(v: f64) -> Vec<u8> {
        let mut o = Vec::new();
        put_float(&mut o, v);
        o
    }

    fn word(w: u64) -> Vec<u8> {
        let mut o = Vec::new();
        put_word(&mut o, tag::WORD, w);
        o
    }

    fn tuple(elements: &[Vec<u8>]) -> Vec<u8> {
        let mut o = Vec::new();
        put_header(&mut o, tag::TUPLE, elements.len());
        for e in elements {
            o.extend_from_slice(e);
        }
        o
    }

    #[test]
    fn arity_literals_and_comparisons() {
        let mut bin = Vec::new();
        put_bytes(&mut bin, tag::BINARY, b"tag7");
        let f = Filter::new(vec![Clause {
            arity: 4,
            equal: vec![(2, bin.clone())],
            compare: vec![(1, Cmp::Lt, int(1000))],
        }])
        .unwrap();
        assert!(f.pass(&tuple(&[int(1), int(5), bin.clone(), word(3)])));
        // 999.5 < 1000 in term order (numbers compare by value).
        assert!(f.pass(&tuple(&[int(1), float(999.5), bin.clone(), word(3)])));
        assert!(!f.pass(&tuple(&[int(1), int(1000), bin.clone(), word(3)])));
        // An atom is greater than any number.
        assert!(!f.pass(&tuple(&[int(1), word(9), bin.clone(), word(3)])));
        assert!(!f.pass(&tuple(&[int(1), int(5), word(3), word(3)])));
        assert!(!f.pass(&tuple(&[int(1), int(5), bin.clone()])));
        // Another clause: either may match.
        let g = Filter::new(vec![
            Clause {
                arity: 2,
                equal: vec![(0, word(1))],
                compare: vec![],
            },
            Clause {
                arity: 2,
                equal: vec![],
                compare: vec![(1, Cmp::Ge, float(2.0)), (1, Cmp::Le, int(3))],
            },
        ])
        .unwrap();
        assert!(g.pass(&tuple(&[word(1), word(1)])));
        assert!(g.pass(&tuple(&[word(2), int(2)])));
        assert!(g.pass(&tuple(&[word(2), float(3.0)])));
        assert!(!g.pass(&tuple(&[word(2), int(4)])));
        assert!(!g.pass(&tuple(&[word(2), int(1)])));
        // `==`: 2 == 2.0.
        let h = Filter::new(vec![Clause {
            arity: 1,
            equal: vec![],
            compare: vec![(0, Cmp::Eq, int(2))],
        }])
        .unwrap();
        assert!(h.pass(&tuple(&[float(2.0)])));
        assert!(!h.pass(&tuple(&[float(2.5)])));
    }

    #[test]
    fn big_integers_against_floats_are_not_checked() {
        let mut big = Vec::new();
        put_integer(&mut big, 1i128 << 100);
        let f = Filter::new(vec![Clause {
            arity: 1,
            equal: vec![],
            compare: vec![(0, Cmp::Lt, float(1.0))],
        }])
        .unwrap();
        // 2^100 < 1.0 is false, but the filter leaves it to the spec.
        assert!(f.pass(&tuple(std::slice::from_ref(&big))));
        assert!(!f.pass(&tuple(&[int(2)])));
        // Against an integer literal the order is native.
        let g = Filter::new(vec![Clause {
            arity: 1,
            equal: vec![],
            compare: vec![(0, Cmp::Lt, int(1))],
        }])
        .unwrap();
        assert!(!g.pass(&tuple(&[big])));
    }

    #[test]
    fn unreadable_or_far_elements() {
        assert!(Filter::new(vec![Clause {
            arity: 20,
            equal: vec![(MAX_ELEMENT, int(1))],
            compare: vec![],
        }])
        .is_none());
        let f = Filter::new(vec![Clause {
            arity: 2,
            equal: vec![(1, int(1))],
            compare: vec![],
        }])
        .unwrap();
        // Not a tuple, or cut short: passed (the specification decides).
        assert!(f.pass(&int(1)));
        assert!(f.pass(&[]));
        assert!(f.pass(&tuple(&[int(1), int(1)])[..12]));
        assert!(!f.pass(&tuple(&[int(1), int(2)])));
    }
}
