//! Canonical forms of values kept in the VM's external term format (funs,
//! references, ports, values nested too deep for the structural encoding).
//!
//! Two terms the VM holds equal (`=:=`) can have different external forms:
//! a `-0.0` inside is `0.0` on OTP 25/26, and a fun's external form names
//! the process that created it, which fun equality ignores. Keys must
//! hash and compare alike when their terms are equal, so a key's external
//! form is rewritten: `-0.0` floats become `0.0` (when `zero_eq`) and the
//! creator pid of every fun is zeroed. The walk is iterative (values
//! nested to any depth are fine) and gives up (`None`) on anything it does
//! not know, leaving the bytes as they are.

/// `bytes` (a `term_to_binary` result, version byte first) in canonical
/// form, or `None` when it already is (or holds something unknown).
pub fn canonical(bytes: &[u8], zero_eq: bool) -> Option<Vec<u8>> {
    // References, pids and ports (the common keys kept in this format)
    // hold nothing to rewrite; only NEW_FLOAT_EXT (70) and NEW_FUN_EXT
    // (112) are ever rewritten: a value without either byte needs no walk.
    if matches!(
        bytes.get(1),
        Some(88 | 89 | 90 | 101 | 102 | 103 | 114 | 120)
    ) || !bytes.iter().any(|&b| b == NEW_FLOAT || b == NEW_FUN)
    {
        return None;
    }
    let mut out = bytes.to_vec();
    rewrite(&mut out, zero_eq)?;
    (out != bytes).then_some(out)
}

const NEW_FLOAT: u8 = 70;
const NEW_FUN: u8 = 112;

/// Reads `n` bytes at `*pos` as a big-endian unsigned number.
fn uint(b: &[u8], pos: &mut usize, n: usize) -> Option<usize> {
    let s = b.get(*pos..pos.checked_add(n)?)?;
    *pos += n;
    Some(s.iter().fold(0usize, |acc, &x| (acc << 8) | x as usize))
}

fn skip(b: &[u8], pos: &mut usize, n: usize) -> Option<()> {
    let end = pos.checked_add(n)?;
    (end <= b.len()).then(|| *pos = end)
}

/// Skips an atom (any of the atom tags).
fn atom(b: &[u8], pos: &mut usize) -> Option<()> {
    let len = match uint(b, pos, 1)? as u8 {
        100 | 118 => uint(b, pos, 2)?,
        115 | 119 => uint(b, pos, 1)?,
        _ => return None,
    };
    skip(b, pos, len)
}

/// Skips a small integer (a fun's old index and old uniq).
fn small_integer(b: &[u8], pos: &mut usize) -> Option<()> {
    match uint(b, pos, 1)? as u8 {
        97 => skip(b, pos, 1),
        98 => skip(b, pos, 4),
        _ => None,
    }
}

/// Bytes after the node atom of a pid, port or old reference tag.
fn pid_fields(tag: u8) -> Option<usize> {
    match tag {
        88 | 120 => Some(12),
        103 => Some(9),
        89 => Some(8),
        102 | 101 => Some(5),
        _ => None,
    }
}

/// Rewrites `b` in place (see [`canonical`]).
fn rewrite(b: &mut [u8], zero_eq: bool) -> Option<()> {
    let mut pos = 1;
    if b.first() != Some(&131) {
        return None;
    }
    // Terms still to read: containers add their elements.
    let mut pending: usize = 1;
    while pending > 0 {
        pending -= 1;
        let tag = uint(b, &mut pos, 1)? as u8;
        let more = match tag {
            97 => skip(b, &mut pos, 1).map(|_| 0)?,
            98 => skip(b, &mut pos, 4).map(|_| 0)?,
            NEW_FLOAT => {
                let at = pos;
                skip(b, &mut pos, 8)?;
                if zero_eq && b[at..at + 8] == (-0.0f64).to_be_bytes() {
                    b[at..at + 8].copy_from_slice(&0.0f64.to_be_bytes());
                }
                0
            }
            99 => skip(b, &mut pos, 31).map(|_| 0)?,
            100 | 118 => {
                let n = uint(b, &mut pos, 2)?;
                skip(b, &mut pos, n).map(|_| 0)?
            }
            115 | 119 => {
                let n = uint(b, &mut pos, 1)?;
                skip(b, &mut pos, n).map(|_| 0)?
            }
            104 => uint(b, &mut pos, 1)?,
            105 => uint(b, &mut pos, 4)?,
            106 => 0,
            107 => {
                let n = uint(b, &mut pos, 2)?;
                skip(b, &mut pos, n).map(|_| 0)?
            }
            // Elements and the tail.
            108 => uint(b, &mut pos, 4)?.checked_add(1)?,
            109 => {
                let n = uint(b, &mut pos, 4)?;
                skip(b, &mut pos, n).map(|_| 0)?
            }
            77 => {
                let n = uint(b, &mut pos, 4)?;
                skip(b, &mut pos, n.checked_add(1)?).map(|_| 0)?
            }
            110 => {
                let n = uint(b, &mut pos, 1)?;
                skip(b, &mut pos, n + 1).map(|_| 0)?
            }
            111 => {
                let n = uint(b, &mut pos, 4)?;
                skip(b, &mut pos, n.checked_add(1)?).map(|_| 0)?
            }
            // Pids, ports and old references: node atom, then fixed fields.
            88 | 103 | 89 | 120 | 102 | 101 => {
                atom(b, &mut pos)?;
                skip(b, &mut pos, pid_fields(tag)?).map(|_| 0)?
            }
            // References: id length, node atom, creation, ids.
            90 | 114 => {
                let n = uint(b, &mut pos, 2)?;
                atom(b, &mut pos)?;
                let creation = if tag == 90 { 4 } else { 1 };
                skip(b, &mut pos, n.checked_mul(4)?.checked_add(creation)?).map(|_| 0)?
            }
            // Export funs: module, function, arity.
            113 => {
                atom(b, &mut pos)?;
                atom(b, &mut pos)?;
                small_integer(b, &mut pos).map(|_| 0)?
            }
            116 => uint(b, &mut pos, 4)?.checked_mul(2)?,
            NEW_FUN => {
                // Size, arity, uniq, index, free variable count.
                skip(b, &mut pos, 4 + 1 + 16 + 4)?;
                let free = uint(b, &mut pos, 4)?;
                atom(b, &mut pos)?;
                small_integer(b, &mut pos)?;
                small_integer(b, &mut pos)?;
                // The creator pid: its fixed fields zeroed (the node stays,
                // so the size does not change).
                let fixed = match uint(b, &mut pos, 1)? as u8 {
                    t @ (88 | 103) => pid_fields(t)?,
                    _ => return None,
                };
                atom(b, &mut pos)?;
                let at = pos;
                skip(b, &mut pos, fixed)?;
                b[at..at + fixed].fill(0);
                free
            }
            _ => return None,
        };
        pending = pending.checked_add(more)?;
    }
    (pos == b.len()).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `term_to_binary(fn -> x end)` of a closure made in `erl_eval` by a
    /// process `<0.96.0>` on `nonode@nohost` (OTP 25), capturing `1`.
    fn fun_bytes(pid_id: u8) -> Vec<u8> {
        let mut b = vec![
            131, 112, 0, 0, 0, 157, 0, 6, 83, 97, 170, 70, 21, 144, 209, 189, 241, 235, 98, 209,
            166, 235, 8, 0, 0, 0, 43, 0, 0, 0, 1, 100, 0, 8, 101, 114, 108, 95, 101, 118, 97, 108,
            97, 43, 98, 0, 50, 155, 13, 88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111,
            104, 111, 115, 116, 0, 0, 0, 96, 0, 0, 0, 0, 0, 0, 0, 0, 104, 6, 97, 1, 116, 0, 0, 0,
            1, 100, 0, 4, 95, 120, 64, 49, 97, 1, 100, 0, 4, 110, 111, 110, 101, 100, 0, 4, 110,
            111, 110, 101, 116, 0, 0, 0, 0, 108, 0, 0, 0, 1, 104, 5, 100, 0, 6, 99, 108, 97, 117,
            115, 101, 97, 1, 106, 106, 108, 0, 0, 0, 1, 104, 3, 100, 0, 3, 118, 97, 114, 97, 1,
            100, 0, 4, 95, 120, 64, 49, 106, 106,
        ];
        b[69] = pid_id;
        b
    }

    #[test]
    fn funs_made_by_different_processes_have_one_canonical_form() {
        let (a, b) = (fun_bytes(96), fun_bytes(97));
        assert_ne!(a, b);
        let (ca, cb) = (canonical(&a, true).unwrap(), canonical(&b, true).unwrap());
        assert_eq!(ca, cb);
        assert_eq!(ca.len(), a.len());
        // Already canonical: nothing to rewrite.
        assert_eq!(canonical(&ca, true), None);
        // Truncated or unknown: left alone, no panic.
        for n in 0..a.len() {
            let _ = canonical(&a[..n], true);
        }
    }

    #[test]
    fn negative_zero_becomes_zero_when_equal() {
        // {-0.0, 1}
        let mut t = vec![131, 104, 2, 70];
        t.extend_from_slice(&(-0.0f64).to_be_bytes());
        t.extend_from_slice(&[97, 1]);
        let c = canonical(&t, true).unwrap();
        assert_eq!(&c[4..12], &0.0f64.to_be_bytes());
        assert_eq!(canonical(&t, false), None);
        // References, pids, ports: never rewritten (no walk).
        assert_eq!(
            canonical(
                &[
                    131, 90, 0, 3, 100, 0, 1, 97, 0, 0, 0, 1, 70, 70, 70, 70, 112, 112, 112, 112,
                    0, 0, 0, 0
                ],
                true
            ),
            None
        );
    }
}
