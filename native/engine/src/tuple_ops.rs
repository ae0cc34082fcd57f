//! In-place style updates of stored tuples: counters and elements.
//!
//! These work on the encoded object alone and return the new encoding; the
//! table applies them under its write lock, so each call is atomic.

use crate::format::{self, put_integer, tag, FormatError};

/// Why an operation on a stored tuple is refused (the caller maps this to
/// its API's error, `badarg` for ETS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpError {
    /// A position is below 1 or beyond the tuple's arity.
    BadPosition,
    /// The position is the key's.
    KeyPosition,
    /// The element to update is not an integer (or is too large).
    NotInteger,
    /// The stored bytes are not a tuple.
    Corrupt,
}

impl From<FormatError> for OpError {
    fn from(_: FormatError) -> Self {
        OpError::Corrupt
    }
}

/// One counter update: add `incr` to element `pos` (1-based); with a
/// threshold, reset to `set` when the result passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterOp {
    /// Element position, 1-based.
    pub pos: i64,
    /// Increment (may be negative).
    pub incr: i128,
    /// `(threshold, set_value)`.
    pub threshold: Option<(i128, i128)>,
}

impl CounterOp {
    /// The counter's new value from `current`: plus the increment, reset to
    /// the set value when it passes the threshold (in the increment's
    /// direction), as ETS's `update_counter`.
    /// `None` when the sum overflows `i128`.
    #[inline]
    fn apply(&self, current: i128) -> Option<i128> {
        let next = current.checked_add(self.incr)?;
        Some(match self.threshold {
            Some((threshold, set))
                if (self.incr >= 0 && next > threshold) || (self.incr < 0 && next < threshold) =>
            {
                set
            }
            _ => next,
        })
    }
}

fn check_pos(pos: i64, arity: usize, keypos: usize) -> Result<usize, OpError> {
    if pos < 1 || pos as u64 > arity as u64 {
        return Err(OpError::BadPosition);
    }
    if pos as usize == keypos {
        return Err(OpError::KeyPosition);
    }
    Ok(pos as usize - 1)
}

/// The byte range of element `pos` (1-based) of the encoded tuple.
pub fn element(obj: &[u8], pos: i64) -> Result<std::ops::Range<usize>, OpError> {
    let mut at = 0;
    let arity = match format::read_item(obj, &mut at)? {
        format::Item::Tuple(n) => n,
        _ => return Err(OpError::Corrupt),
    };
    if pos < 1 || pos as u64 > arity as u64 {
        return Err(OpError::BadPosition);
    }
    // Only the elements before it are skipped (lists in one jump each).
    for _ in 1..pos {
        at = format::skip(obj, at)?;
    }
    Ok(at..format::skip(obj, at)?)
}

/// Applies counter operations in order; returns the new object and the new
/// value after each operation. Fails without changing anything.
pub fn update_counter(
    obj: &[u8],
    keypos: usize,
    ops: &[CounterOp],
) -> Result<(Vec<u8>, Vec<i128>), OpError> {
    let els = format::tuple_elements(obj)?;
    let mut values: Vec<Option<i128>> = vec![None; els.len()];
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let i = check_pos(op.pos, els.len(), keypos)?;
        let current = match values[i] {
            Some(v) => v,
            None => format::get_integer(obj, els[i].start).ok_or(OpError::NotInteger)?,
        };
        let next = op.apply(current).ok_or(OpError::NotInteger)?;
        values[i] = Some(next);
        results.push(next);
    }
    let mut out = Vec::with_capacity(obj.len() + 8);
    format::put_header(&mut out, tag::TUPLE, els.len());
    for (range, v) in els.iter().zip(&values) {
        match v {
            Some(v) => put_integer(&mut out, *v),
            None => out.extend_from_slice(&obj[range.clone()]),
        }
    }
    Ok((out, results))
}

/// Applies counter operations in place when every counter is an `INT` and
/// every result fits in i64 (the common case: no allocation), writing the
/// new values to `results[..ops.len()]`. Returns `Ok(None)` when the general
/// [`update_counter`] must be used instead (also when `results` is too
/// short). Fails without changing anything.
pub fn update_counter_in_place(
    obj: &mut [u8],
    keypos: usize,
    ops: &[CounterOp],
    results: &mut [i128],
) -> Result<Option<()>, OpError> {
    let mut pos = 0;
    let arity = match format::read_item(obj, &mut pos)? {
        format::Item::Tuple(n) => n,
        _ => return Err(OpError::Corrupt),
    };
    if let [op] = ops {
        return update_one_in_place(obj, pos, arity, keypos, op, results);
    }
    // Element offsets, found once (small tuples need no allocation).
    let mut offsets = [0usize; 16];
    if arity > offsets.len() {
        return Ok(None);
    }
    // Only the elements up to the last counter are visited (a big value
    // after it is not walked over).
    let last = ops
        .iter()
        .map(|op| op.pos.clamp(0, arity as i64) as usize)
        .max()
        .unwrap_or(0);
    for slot in offsets.iter_mut().take(last) {
        *slot = pos;
        pos = format::skip(obj, pos)?;
    }
    // First pass: compute, so that a failure changes nothing.
    let mut staged = [(0usize, 0i64); 8];
    if ops.len() > staged.len() || ops.len() > results.len() {
        return Ok(None);
    }
    for (n, op) in ops.iter().enumerate() {
        let i = check_pos(op.pos, arity, keypos)?;
        let current = match staged[..n].iter().rev().find(|(at, _)| *at == offsets[i]) {
            Some((_, v)) => i128::from(*v),
            None => match format::get_integer(obj, offsets[i]) {
                Some(v) if obj[offsets[i]] == tag::INT => v,
                Some(_) => return Ok(None),
                None => return Err(OpError::NotInteger),
            },
        };
        // Overflow or past i64: the general path decides.
        let Some(Ok(small)) = op.apply(current).map(i64::try_from) else {
            return Ok(None);
        };
        staged[n] = (offsets[i], small);
    }
    for ((at, v), r) in staged[..ops.len()].iter().zip(results.iter_mut()) {
        format::set_int_at(obj, *at, *v)?;
        *r = i128::from(*v);
    }
    Ok(Some(()))
}

/// [`update_counter_in_place`] of a single operation (the common case): no
/// offsets table, no staging. `pos` is where the tuple's elements start.
#[inline]
fn update_one_in_place(
    obj: &mut [u8],
    mut pos: usize,
    arity: usize,
    keypos: usize,
    op: &CounterOp,
    results: &mut [i128],
) -> Result<Option<()>, OpError> {
    let i = check_pos(op.pos, arity, keypos)?;
    for _ in 0..i {
        pos = format::skip(obj, pos)?;
    }
    let current = match obj.get(pos) {
        Some(&tag::INT) => i128::from(format::word_at(obj, pos + 1)? as i64),
        _ => match format::get_integer(obj, pos) {
            Some(_) => return Ok(None),
            None => return Err(OpError::NotInteger),
        },
    };
    let Some(next) = op.apply(current) else {
        return Ok(None);
    };
    let (Ok(small), Some(r)) = (i64::try_from(next), results.first_mut()) else {
        return Ok(None);
    };
    format::set_int_at(obj, pos, small)?;
    *r = next;
    Ok(Some(()))
}

/// Replaces elements (`(pos, encoded value)`, 1-based; the last write to a
/// position wins); returns the new object. Fails without changing anything.
pub fn update_element(
    obj: &[u8],
    keypos: usize,
    specs: &[(i64, &[u8])],
) -> Result<Vec<u8>, OpError> {
    let els = format::tuple_elements(obj)?;
    let mut values: Vec<Option<&[u8]>> = vec![None; els.len()];
    for (pos, value) in specs {
        let i = check_pos(*pos, els.len(), keypos)?;
        values[i] = Some(value);
    }
    let mut out = Vec::with_capacity(obj.len() + 16);
    format::put_header(&mut out, tag::TUPLE, els.len());
    for (range, v) in els.iter().zip(&values) {
        out.extend_from_slice(v.unwrap_or(&obj[range.clone()]));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{put_header, put_int, put_word};

    fn obj(els: &[i64]) -> Vec<u8> {
        let mut out = Vec::new();
        put_header(&mut out, tag::TUPLE, els.len());
        for e in els {
            put_int(&mut out, *e);
        }
        out
    }

    fn op(pos: i64, incr: i128) -> CounterOp {
        CounterOp {
            pos,
            incr,
            threshold: None,
        }
    }

    #[test]
    fn counters_apply_in_order() {
        let (new, res) =
            update_counter(&obj(&[1, 10, 20]), 1, &[op(2, 5), op(2, 5), op(3, -1)]).unwrap();
        assert_eq!(res, vec![15, 20, 19]);
        assert_eq!(new, obj(&[1, 20, 19]));
    }

    #[test]
    fn thresholds() {
        let t = |incr, th, set| CounterOp {
            pos: 2,
            incr,
            threshold: Some((th, set)),
        };
        let o = obj(&[1, 10]);
        assert_eq!(update_counter(&o, 1, &[t(5, 12, 0)]).unwrap().1, vec![0]);
        assert_eq!(update_counter(&o, 1, &[t(5, 15, 0)]).unwrap().1, vec![15]);
        assert_eq!(
            update_counter(&o, 1, &[t(-5, 6, 100)]).unwrap().1,
            vec![100]
        );
        assert_eq!(update_counter(&o, 1, &[t(-5, 5, 100)]).unwrap().1, vec![5]);
    }

    #[test]
    fn counter_errors() {
        let o = obj(&[1, 10]);
        assert_eq!(
            update_counter(&o, 1, &[op(1, 1)]),
            Err(OpError::KeyPosition)
        );
        assert_eq!(
            update_counter(&o, 1, &[op(3, 1)]),
            Err(OpError::BadPosition)
        );
        assert_eq!(
            update_counter(&o, 1, &[op(0, 1)]),
            Err(OpError::BadPosition)
        );
        let mut w = Vec::new();
        put_header(&mut w, tag::TUPLE, 2);
        put_int(&mut w, 1);
        put_word(&mut w, tag::WORD, 99);
        assert_eq!(update_counter(&w, 1, &[op(2, 1)]), Err(OpError::NotInteger));
    }

    #[test]
    fn in_place_matches_general_path() {
        let ops = [op(2, 5), op(3, -1), op(2, 5)];
        let mut o = obj(&[1, 10, 20]);
        let mut results = [0i128; 8];
        assert_eq!(
            update_counter_in_place(&mut o, 1, &ops, &mut results),
            Ok(Some(()))
        );
        let (general, res) = update_counter(&obj(&[1, 10, 20]), 1, &ops).unwrap();
        assert_eq!(o, general);
        assert_eq!(results[..3], res[..]);
        assert_eq!(
            update_counter_in_place(&mut o, 1, &ops, &mut results[..2]),
            Ok(None)
        );
        // Overflow past i64 is left to the general path, with nothing changed.
        let mut o = obj(&[1, i64::MAX]);
        assert_eq!(
            update_counter_in_place(&mut o, 1, &[op(2, 1)], &mut results),
            Ok(None)
        );
        assert_eq!(o, obj(&[1, i64::MAX]));
        assert_eq!(
            update_counter_in_place(&mut o, 1, &[op(2, -1), op(1, 1)], &mut results),
            Err(OpError::KeyPosition)
        );
        assert_eq!(o, obj(&[1, i64::MAX]));
    }

    #[test]
    fn counters_grow_past_i64() {
        let o = obj(&[1, i64::MAX]);
        let (new, res) = update_counter(&o, 1, &[op(2, 1)]).unwrap();
        assert_eq!(res, vec![i64::MAX as i128 + 1]);
        let (_, res) = update_counter(&new, 1, &[op(2, -2)]).unwrap();
        assert_eq!(res, vec![i64::MAX as i128 - 1]);
    }

    #[test]
    fn elements() {
        let o = obj(&[1, 2, 3]);
        let mut v = Vec::new();
        put_int(&mut v, 9);
        let mut w = Vec::new();
        put_int(&mut w, 8);
        let new = update_element(&o, 1, &[(3, &v), (2, &w), (3, &w)]).unwrap();
        assert_eq!(new, obj(&[1, 8, 8]));
        assert_eq!(update_element(&o, 1, &[(1, &v)]), Err(OpError::KeyPosition));
        assert_eq!(update_element(&o, 1, &[(4, &v)]), Err(OpError::BadPosition));
        assert_eq!(element(&o, 2).unwrap(), 11..20);
        assert_eq!(element(&o, 3).unwrap(), 20..29);
        assert_eq!(element(&o, 1).unwrap(), 2..11);
        assert_eq!(element(&o, 4), Err(OpError::BadPosition));
        assert_eq!(element(&o, 0), Err(OpError::BadPosition));
        assert_eq!(element(&o, -1), Err(OpError::BadPosition));
        assert_eq!(element(&o[..15], 2), Err(OpError::Corrupt));
        assert_eq!(element(&[tag::NIL], 1), Err(OpError::Corrupt));
    }
}
