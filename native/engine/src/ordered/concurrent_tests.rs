//! Concurrency and boundary tests of the ordered table's parts (from a
//! review of the parts design: each failed before its fix).

use super::tests::{fk, ik, keyed, obj};
use super::*;
use crate::format::tag;
use std::sync::atomic::{AtomicBool, AtomicU64 as AU64, Ordering as O};

/// insert/2 of a list must be atomic: a reader that sees the list's
/// object in the first part, then walks the last part, must see the list's
/// object there too. The lock-free key copies (KEY_RUN for general keys,
/// INT_KEYS for integer keys) of the last part are checked against that
/// part's version, which insert_all must publish for every part before it
/// unlocks any.
///
/// `key(x)` is the key of the number `x` (float or integer); the table
/// holds `key(j * step + base)` for j in 0..64, in 16 parts; the writer
/// inserts `low` (part 0) and `high` together, then removes `high`, then
/// `low`; the reader steps through `walk` (a walk whose last step copies
/// keys ahead), checks `low`, then steps from `from`: it must get `high`
/// unless a removal came between.
fn insert_all_stays_atomic(
    key: fn(f64) -> Vec<u8>,
    entry: fn(f64) -> Entry,
    (step, base): (f64, f64),
    (low, high): (f64, f64),
    walk: &[f64],
    from: f64,
) {
    let t = &OrderedTable::new();
    for j in 0..64 {
        t.insert(entry(j as f64 * step + base));
    }
    for _ in 0..4 {
        t.split_parts();
    }
    assert_eq!(t.parts(), 16);
    let stop = &AtomicBool::new(false);
    let violations = AU64::new(0);
    let gen = &AU64::new(0);
    std::thread::scope(|s| {
        s.spawn(move || {
            while !stop.load(O::Relaxed) {
                t.insert_all(vec![entry(low), entry(high)]);
                gen.fetch_add(1, O::SeqCst);
                t.remove(&key(high));
                t.remove(&key(low));
                gen.fetch_add(1, O::SeqCst);
            }
        });
        // Interference: readers of the middle parts.
        for m in 0..2 {
            s.spawn(move || {
                let mut j = m;
                while !stop.load(O::Relaxed) {
                    j = (j + 7) % 56 + 4;
                    t.get(&key(j as f64 * step + base));
                }
            });
        }
        let next = |k: f64| {
            t.read_next_key(&key(k), |n| match n {
                Next::End => None,
                Next::Entry(e) => Some(e.key().to_vec()),
                Next::Key(b) => Some(b.to_vec()),
            })
        };
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(1500) {
            for &k in walk {
                next(k);
            }
            let g0 = gen.load(O::SeqCst);
            let has = t.contains(&key(low));
            let n = next(from); // lock-free while the part's version holds
            let g1 = gen.load(O::SeqCst);
            // Both present from the insert to the first removal: flagged
            // only when no write came between the two reads.
            if has && n != Some(key(high)) && g0 == g1 && g0.is_multiple_of(2) {
                violations.fetch_add(1, O::Relaxed);
            }
        }
        stop.store(true, O::Relaxed);
    });
    assert_eq!(violations.load(O::Relaxed), 0);
}

#[test]
fn insert_all_atomic_vs_key_run() {
    // Float keys j + 0.5: the keys after 60.5 are copied (61.5, 62.5...).
    insert_all_stays_atomic(
        fk,
        |x| obj(x, true, 1),
        (1.0, 0.5),
        (1.25, 61.75),
        &[60.5],
        61.5,
    );
}

#[test]
fn insert_all_atomic_vs_int_keys() {
    // Integer keys j * 10: a walk from 580 copies the keys after 600.
    insert_all_stays_atomic(
        |x| ik(x as i64),
        |x| obj(x, false, 1),
        (10.0, 0.0),
        (15.0, 615.0),
        &[580.0, 590.0, 600.0],
        610.0,
    );
}

/// next/2 across a part boundary: the part of the key is read and
/// unlocked, then the next part is read. Writes in between can make the
/// answer one that was never the next key at any instant: the writer
/// below goes {10,11} -> {5,10,11} -> {5,11} -> {5,10,11} -> {10,11}, so
/// next(3) is 10 or 5, never 11.
#[test]
fn next_across_parts_is_linearizable() {
    let t = &OrderedTable::new();
    for k in [0, 1, 2, 3, 10, 11, 12, 13] {
        t.insert(obj(k as f64, false, 0));
    }
    t.split_parts();
    assert_eq!(t.parts(), 2);
    let stop = &AtomicBool::new(false);
    let bad = AU64::new(0);
    std::thread::scope(|s| {
        s.spawn(move || {
            while !stop.load(O::Relaxed) {
                t.insert(obj(5.0, false, 0));
                t.remove(&ik(10));
                t.insert(obj(10.0, false, 0));
                t.remove(&ik(5));
            }
        });
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(1500) {
            let n = t.read_next(&ik(3), |e| e.map(|e| e.key().to_vec()));
            if n == Some(ik(11)) {
                bad.fetch_add(1, O::Relaxed);
            }
        }
        stop.store(true, O::Relaxed);
    });
    assert_eq!(bad.load(O::Relaxed), 0);
}

/// The same for first/1 over an empty first part.
#[test]
fn first_across_parts_is_linearizable() {
    let t = &OrderedTable::new();
    for k in [0, 1, 2, 3, 10, 11, 12, 13] {
        t.insert(obj(k as f64, false, 0));
    }
    t.split_parts();
    assert_eq!(t.parts(), 2);
    for k in [0, 1, 2, 3, 12, 13] {
        t.remove(&ik(k));
    }
    let stop = &AtomicBool::new(false);
    let bad = AU64::new(0);
    std::thread::scope(|s| {
        s.spawn(move || {
            while !stop.load(O::Relaxed) {
                t.insert(obj(1.0, false, 0));
                t.remove(&ik(10));
                t.insert(obj(10.0, false, 0));
                t.remove(&ik(1));
            }
        });
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(1500) {
            let n = t.read_first(|e| e.map(|e| e.key().to_vec()));
            if n == Some(ik(11)) {
                bad.fetch_add(1, O::Relaxed);
            }
        }
        stop.store(true, O::Relaxed);
    });
    assert_eq!(bad.load(O::Relaxed), 0);
}

/// Integer keys, some stored as integral floats (so part lows are floats
/// like 8.0), probed by every spelling at every boundary.
#[test]
fn boundaries_with_integral_float_lows() {
    for float_every in [1i64, 2, 3] {
        for splits in 0..6 {
            let t = OrderedTable::with_concurrency(true);
            let vals: Vec<i64> = (0..64).map(|i| i * 2).collect();
            for &v in &vals {
                t.insert(obj(v as f64, v % (2 * float_every) == 0, v));
            }
            // Non-integer keys too, in some runs.
            if splits % 2 == 1 {
                for &v in &vals {
                    t.insert(obj(v as f64 + 0.5, true, -v));
                }
            }
            for _ in 0..splits {
                t.split_parts();
            }
            assert_eq!(t.parts(), 1 << splits);
            let mut all: Vec<f64> = vals.iter().map(|&v| v as f64).collect();
            if splits % 2 == 1 {
                all.extend(vals.iter().map(|&v| v as f64 + 0.5));
            }
            all.sort_by(|a, b| a.partial_cmp(b).unwrap());
            // Probes: every integer and half-integer and quarter, both spellings.
            for q in -4..(64 * 2 * 4 + 8) {
                let x = q as f64 / 4.0;
                let mut spellings = vec![fk(x)];
                if x.fract() == 0.0 {
                    spellings.push(ik(x as i64));
                }
                for k in spellings {
                    let want_next = all.iter().copied().find(|&y| y > x);
                    let want_prev = all.iter().rev().copied().find(|&y| y < x);
                    let present = all.contains(&x);
                    assert_eq!(t.contains(&k), present, "contains {x} splits {splits}");
                    let got_next = t.read_next(&k, |e| e.map(|e| e.key().to_vec()));
                    let got_next_k = t.read_next_key(&k, |n| match n {
                        Next::End => None,
                        Next::Entry(e) => Some(e.key().to_vec()),
                        Next::Key(b) => Some(b.to_vec()),
                    });
                    let got_prev = t.read_prev(&k, |e| e.map(|e| e.key().to_vec()));
                    let asnum = |o: Option<Vec<u8>>| {
                        o.map(|b| match probe(&b) {
                            Search::Int(v) => v as f64,
                            Search::Key(_) => f64::from_le_bytes(b[1..9].try_into().unwrap()),
                        })
                    };
                    let c1 = t.chunk_after(Some(&k), 2);
                    let c2 = t.chunk_before(Some(&k), 2);
                    let n1 = asnum(got_next);
                    let n2 = asnum(got_next_k);
                    let p1 = asnum(got_prev);
                    assert_eq!(
                        n1, want_next,
                        "next {x} (float_every {float_every} splits {splits})"
                    );
                    assert_eq!(n2, want_next, "next_key {x} splits {splits}");
                    assert_eq!(p1, want_prev, "prev {x} splits {splits}");
                    assert_eq!(
                        c1.first()
                            .map(|e| e.key().to_vec())
                            .map(|b| asnum(Some(b)).unwrap()),
                        want_next
                    );
                    assert_eq!(
                        c2.first()
                            .map(|e| e.key().to_vec())
                            .map(|b| asnum(Some(b)).unwrap()),
                        want_prev
                    );
                }
            }
        }
    }
}

/// One thread: random inserts/removes/splits interleaved with steps of
/// several walks (next_key, next, prev, first/last), each step compared
/// with a model at that instant. Exercises the walk caches across splits.
#[test]
fn walks_with_caches_vs_model_under_splits() {
    use std::collections::BTreeMap;
    for seed in 1..300u64 {
        let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let t = OrderedTable::with_concurrency(true);
        // model: half-units (v*2) -> key bytes
        let mut m: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        let only_ints = seed % 2 == 0;
        let spell = |h: i64, r: u64| -> Vec<u8> {
            let h = if only_ints { h & !1 } else { h };
            if h % 2 != 0 {
                fk(h as f64 / 2.0)
            } else if r.is_multiple_of(3) {
                fk((h / 2) as f64)
            } else {
                ik(h / 2)
            }
        };
        let half = |b: &[u8]| -> i64 {
            match probe(b) {
                Search::Int(v) => v * 2,
                Search::Key(_) => (f64::from_le_bytes(b[1..9].try_into().unwrap()) * 2.0) as i64,
            }
        };
        for _ in 0..(rnd() % 300) {
            let h = (rnd() % 400) as i64;
            let k = spell(h, rnd());
            t.insert(keyed(&k));
            m.insert(half(&k), k);
        }
        let mut cur: [Option<Vec<u8>>; 3] = [None, None, None];
        for _step in 0..3000 {
            match rnd() % 10 {
                0 | 1 => {
                    let h = (rnd() % 400) as i64;
                    let k = spell(h, rnd());
                    t.insert(keyed(&k));
                    m.insert(half(&k), k);
                }
                2 => {
                    let h = (rnd() % 400) as i64;
                    let k = spell(h, rnd());
                    assert_eq!(t.remove(&k).is_some(), m.remove(&half(&k)).is_some());
                }
                3 if rnd() % 8 == 0 => {
                    let r = t.route();
                    let i = (rnd() as usize) % r.parts.len();
                    let p = r.parts[i].clone();
                    t.split(&p, rnd() % 2 == 0);
                }
                _ => {
                    let w = (rnd() % 3) as usize;
                    let c = cur[w].clone();
                    let got = match (w, &c) {
                        (0, Some(k)) => t.read_next_key(k, |n| match n {
                            Next::End => None,
                            Next::Entry(e) => Some(e.key().to_vec()),
                            Next::Key(b) => Some(b.to_vec()),
                        }),
                        (1, Some(k)) => t.read_next(k, |e| e.map(|e| e.key().to_vec())),
                        (2, Some(k)) => t.read_prev(k, |e| e.map(|e| e.key().to_vec())),
                        (2, None) => t.read_last(|e| e.map(|e| e.key().to_vec())),
                        (_, None) => t.read_first(|e| e.map(|e| e.key().to_vec())),
                        _ => unreachable!(),
                    };
                    let want = match (w, &c) {
                        (2, Some(k)) => m.range(..half(k)).next_back().map(|(_, v)| v.clone()),
                        (2, None) => m.values().next_back().cloned(),
                        (_, Some(k)) => m.range(half(k) + 1..).next().map(|(_, v)| v.clone()),
                        (_, None) => m.values().next().cloned(),
                    };
                    assert_eq!(
                        got,
                        want,
                        "seed {seed} walk {w} from {:?}",
                        c.as_ref().map(|k| half(k))
                    );
                    cur[w] = got;
                }
            }
        }
        assert_eq!(t.len(), m.len());
    }
}

/// For Miri: a route loaded after a split (the pointer stored before the
/// route's box was moved into `routes`).
#[test]
fn miri_route_after_split() {
    let t = OrderedTable::with_concurrency(true);
    for k in 0..4 {
        t.insert(obj(k as f64, false, k));
    }
    assert!(t.get(&ik(1)).is_some());
    t.split_parts();
    assert_eq!(t.parts(), 2);
    assert!(t.get(&ik(3)).is_some());
}

/// For Miri: walks and caches in two threads while a third splits.
#[test]
fn miri_threads_split_walk() {
    let t = &OrderedTable::with_concurrency(true);
    for k in 0..24 {
        t.insert(obj(k as f64, k % 5 == 0, k));
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            for _ in 0..3 {
                t.split_parts();
            }
        });
        s.spawn(move || {
            for k in 24..40 {
                t.insert(obj(k as f64, false, k));
                t.insert_all(vec![obj(k as f64 + 0.5, true, k), obj(1.5, true, k)]);
            }
        });
        let mut k = t.read_first(|e| e.map(|e| e.key().to_vec()));
        let mut n = 0;
        while let Some(key) = k {
            k = t.read_next_key(&key, |nx| match nx {
                Next::End => None,
                Next::Entry(e) => Some(e.key().to_vec()),
                Next::Key(b) => Some(b.to_vec()),
            });
            n += 1;
        }
        assert!(n >= 24);
        let mut walked = 0;
        t.visit_before(None, 1000, |_| walked += 1);
        assert!(walked >= 24);
    });
}

/// Routes live as long as the table: their low keys are shared (one copy
/// each), and counted in the table's memory.
#[test]
fn route_copies_of_big_keys() {
    use crate::format::put_bytes;
    let t = OrderedTable::with_concurrency(true);
    let key = |i: u32| {
        let mut s = vec![b'k'; 64 * 1024];
        s[..4].copy_from_slice(&i.to_be_bytes());
        let mut o = Vec::new();
        put_bytes(&mut o, tag::BINARY, &s);
        o
    };
    for i in 0..128u32 {
        t.insert(keyed(&key(i)));
    }
    // As contention splits would go: one part at a time, up to MAX_PARTS.
    while t.parts() < MAX_PARTS {
        let r = t.route();
        let biggest = r
            .parts
            .iter()
            .max_by_key(|p| p.inner.read().len())
            .unwrap()
            .clone();
        t.split(&biggest, false);
    }
    // Low keys are shared by the routes that have them: count each once.
    let mut seen = std::collections::HashSet::new();
    let route_bytes: usize = t
        .routes
        .lock()
        .iter()
        .flat_map(|r| r.lows.iter())
        .filter(|l| seen.insert(Arc::as_ptr(l)))
        .map(|l| l.bytes.len())
        .sum();
    assert!(
        route_bytes < t.memory_bytes(),
        "hidden route memory {route_bytes}"
    );
}
