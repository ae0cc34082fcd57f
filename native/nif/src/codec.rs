//! Conversion between BEAM terms and the engine's byte format
//! (`native_store_engine::format`).
//!
//! Atoms and local pids are immediates whose term word is valid for the life
//! of the VM (atoms are never collected; a local pid word is what an
//! `ErlNifPid` holds, which the NIF API documents as environment
//! independent), so they are stored as raw words. Integers, floats, binaries,
//! tuples, lists and maps are encoded structurally; everything else
//! (references, funs, ports, remote pids, bitstrings, values nested deeper
//! than [`MAX_DEPTH`]) falls back to the external term format.
//!
//! The hot paths read the VM's term representation directly where the
//! NIF API would cost a call per value: small integers, atoms, local pids
//! and `[]` are classified from the term word, lists are walked by reading
//! their cells, and small (flat) maps by reading their keys and values.
//! Each of these layouts is checked on sample terms at load ([`init`]);
//! when a check fails the codec uses the `enif_*` calls.

use native_store_engine::bag::Objects;
use native_store_engine::format::{self, tag, Item};
use native_store_engine::set::Key;
use rustler::sys::*;
use rustler::{Env, Term};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Nesting depth past which a value is stored in external term format
/// (bounds the recursion of both encoder and decoder).
pub const MAX_DEPTH: u32 = 64;

/// True when the VM considers `0.0 =:= -0.0` (OTP 25/26); keys are then
/// canonicalised so both find the same entry, as in ETS.
static ZERO_EQ: AtomicBool = AtomicBool::new(true);

/// True when small integers are the VM's 64-bit immediates
/// `(i << 4) | 0xF` (checked at load), so [`decode`] can write their words
/// directly instead of calling `enif_make_int64`.
static SMALL_IMMEDIATE: AtomicBool = AtomicBool::new(false);

/// True when atoms are the VM's immediates with tag `0x0B` in the low six
/// bits, local pids immediates with tag `0x3` in the low four, `[]` one
/// immediate word, and no other kind of term uses these tags or the
/// small-integer tag `0xF` (checked at load), so [`Encoder`] classifies
/// those scalars from the term word alone, without `enif_term_type`.
static TAGGED_WORDS: AtomicBool = AtomicBool::new(false);

/// True when a list cell term is a pointer to its two words `[head, tail]`
/// plus 1 (primary tag `0b01`) and no other kind of term has that tag
/// (checked at load), so the encoder walks lists by reading the cells
/// instead of calling `enif_get_list_cell` per element.
static CONS_CELLS: AtomicBool = AtomicBool::new(false);

/// The header word of a flat map (small maps: a header, the size, a
/// tuple of keys, then the values), or 0 when that layout did not check out
/// at load; maps with other headers go through the map iterator.
static FLATMAP_HEADER: AtomicU64 = AtomicU64::new(0);

/// The low six bits of the header words of the VM's off-heap (refc)
/// binaries and of sub-binaries (one byte each), or 0 when they could not
/// be told apart at load from those of heap binaries and other boxed terms:
/// only those two kinds can be large binaries (see [`maybe_binary`]).
static BIG_BIN_TAGS: AtomicU64 = AtomicU64::new(0);

/// The word of `[]` (an immediate; recorded at load, used when
/// [`TAGGED_WORDS`] holds).
static NIL_WORD: AtomicU64 = AtomicU64::new(0);

const ATOM_MASK: u64 = 0x3F;
const ATOM_TAG: u64 = 0x0B;
const PID_MASK: u64 = 0xF;
const PID_TAG: u64 = 0x3;
const SMALL_MASK: u64 = 0xF;
const SMALL_TAG: u64 = 0xF;

/// The range of integers the VM keeps as immediates on 64-bit builds.
const MIN_SMALL: i64 = -(1 << 59);
const MAX_SMALL: i64 = (1 << 59) - 1;

/// The address a list or boxed term word points at: the word without its
/// tag bits. Cells and boxed objects are 8-byte aligned, so masking the low
/// three bits also drops the literal-pointer tag some emulator builds add.
#[inline(always)]
fn address_of(w: u64) -> usize {
    w as usize & !7
}

#[inline(always)]
fn small_word(i: i64) -> u64 {
    ((i as u64) << 4) | 0xF
}

/// Records the VM's float-zero equality and integer representation
/// (called once at load).
pub fn init(env: Env) {
    // SAFETY: making doubles and integers in the load environment is
    // always allowed.
    let same = unsafe {
        let a = enif_make_double(env.as_c_arg(), 0.0);
        let b = enif_make_double(env.as_c_arg(), -0.0);
        enif_is_identical(a, b) != 0
    };
    ZERO_EQ.store(same, Ordering::Relaxed);
    let immediate = std::mem::size_of::<usize>() == 8
        && [0, 1, -1, 42, -42, MIN_SMALL, MAX_SMALL, 1 << 40, -(1 << 40)]
            .iter()
            .all(|&i| {
                // SAFETY: as above.
                let t = unsafe { enif_make_int64(env.as_c_arg(), i) };
                word_of(t) == small_word(i)
            });
    SMALL_IMMEDIATE.store(immediate, Ordering::Relaxed);
    // SAFETY: as above; every term is made in the load environment.
    let tagged = immediate && unsafe { tagged_words(env.as_c_arg()) };
    // SAFETY: as above.
    let nil = unsafe { enif_make_list_from_array(env.as_c_arg(), std::ptr::null(), 0) };
    NIL_WORD.store(word_of(nil), Ordering::Relaxed);
    // SAFETY: reads cells of lists made here, only on a 64-bit VM whose
    // immediate tags were just checked (`tagged`).
    let cons = tagged && unsafe { cons_cells(env.as_c_arg()) };
    CONS_CELLS.store(cons, Ordering::Relaxed);
    // SAFETY: reads maps made here, only once the list layout (and so the
    // boxed-pointer tagging) was checked (`cons`); `flat_parts` checks the
    // keys tuple's arity before trusting a sample's header.
    let flat = if cons {
        unsafe { flatmap_header(env.as_c_arg()) }
    } else {
        0
    };
    FLATMAP_HEADER.store(flat, Ordering::Relaxed);
    // SAFETY: as for the maps (boxed pointers checked by `cons`).
    let bins = if cons {
        unsafe { big_bin_tags(env.as_c_arg()) }
    } else {
        0
    };
    BIG_BIN_TAGS.store(bins, Ordering::Relaxed);
    TAGGED_WORDS.store(tagged, Ordering::Relaxed);
}

/// The header tags behind [`BIG_BIN_TAGS`], learnt from a refc binary and
/// a sub-binary made here, and checked to differ from those of a heap
/// binary and of other boxed terms; 0 when they do not.
///
/// # Safety
/// `env` must be a live environment, and boxed term words pointers (plus
/// tag `0b10`) to their header word (checked by the caller).
unsafe fn big_bin_tags(env: *mut ErlNifEnv) -> u64 {
    let header = |t: ErlNifTerm| {
        let w = word_of(t);
        (w & 0x3 == 0x2).then(|| *(address_of(w) as *const u64) & 0x3F)
    };
    let mut refc = ErlNifTerm::default();
    if enif_make_new_binary(env, 200, &mut refc).is_null() {
        return 0;
    }
    let sub = enif_make_sub_binary(env, refc, 10, 150);
    let mut small = ErlNifTerm::default();
    enif_make_new_binary(env, 8, &mut small);
    let elems = [refc, sub];
    let others = [
        small,
        enif_make_tuple_from_array(env, elems.as_ptr(), 2),
        enif_make_double(env, 1.5),
        enif_make_int64(env, i64::MAX),
        enif_make_ref(env),
        enif_make_new_map(env),
    ];
    let (Some(r), Some(s)) = (header(refc), header(sub)) else {
        return 0;
    };
    if others
        .iter()
        .any(|&o| header(o).is_none_or(|h| h == r || h == s))
    {
        return 0;
    }
    r | s << 8
}

/// Checks the list cell layout behind [`CONS_CELLS`] on sample lists
/// (proper and improper, made cell by cell and from an array) against
/// `enif_get_list_cell`, and that sample terms of other kinds do not carry
/// the list tag.
///
/// # Safety
/// `env` must be a live environment; the cells read are those of lists
/// just made in it.
unsafe fn cons_cells(env: *mut ErlNifEnv) -> bool {
    let ints: Vec<ErlNifTerm> = (0..5).map(|i| enif_make_int64(env, i)).collect();
    let atom = enif_make_atom_len(env, b"tail".as_ptr() as *const c_char, 4);
    let mut improper = atom;
    for &h in ints.iter().rev() {
        improper = enif_make_list_cell(env, h, improper);
    }
    let nested = enif_make_list_cell(env, improper, enif_make_list_from_array(env, &atom, 1));
    let proper = enif_make_list_from_array(env, ints.as_ptr(), ints.len() as c_uint);
    let cells_ok = [improper, proper, nested].iter().all(|&l| {
        let mut cur = l;
        let mut n = 0;
        loop {
            let mut head = ErlNifTerm::default();
            let mut tail = ErlNifTerm::default();
            let is_cell = enif_get_list_cell(env, cur, &mut head, &mut tail) != 0;
            let w = word_of(cur);
            if is_cell != (w & 0x3 == 0x1) {
                return false;
            }
            if !is_cell {
                return n > 0;
            }
            let p = address_of(w) as *const ErlNifTerm;
            if word_of(*p) != word_of(head) || word_of(*p.add(1)) != word_of(tail) {
                return false;
            }
            cur = tail;
            n += 1;
        }
    });
    let one = enif_make_int64(env, 1);
    let mut bin_term = ErlNifTerm::default();
    if enif_make_new_binary(env, 100, &mut bin_term).is_null() {
        return false;
    }
    let others = [
        enif_make_tuple_from_array(env, &one, 1),
        enif_make_double(env, 2.5),
        enif_make_int64(env, i64::MIN),
        enif_make_new_map(env),
        enif_make_ref(env),
        enif_make_list_from_array(env, std::ptr::null(), 0),
        atom,
        one,
        bin_term,
    ];
    cells_ok && others.iter().all(|&t| word_of(t) & 0x3 != 0x1)
}

/// The header word of sample flat maps, when every one of them reads (size,
/// keys and values, in order) exactly as the map iterator walks it and a
/// large map has another header; 0 otherwise.
///
/// # Safety
/// `env` must be a live environment; the words read are those of maps
/// just made in it.
unsafe fn flatmap_header(env: *mut ErlNifEnv) -> u64 {
    let mut header = None;
    for n in [1usize, 2, 5, 32, 40] {
        let ks: Vec<ErlNifTerm> = (0..n as i64)
            .map(|i| enif_make_int64(env, 1000 - 7 * i))
            .collect();
        let vs: Vec<ErlNifTerm> = (0..n as i64)
            .map(|i| enif_make_double(env, i as f64))
            .collect();
        let mut m = ErlNifTerm::default();
        if enif_make_map_from_arrays(env, ks.as_ptr(), vs.as_ptr(), n, &mut m) == 0 {
            return 0;
        }
        let w = word_of(m);
        if w & 0x3 != 0x2 {
            return 0;
        }
        let p = address_of(w) as *const u64;
        let h = *p;
        if n > 32 {
            // A large (hash) map: must not pass for a flat one.
            return match header {
                Some(flat) if flat != h => flat,
                _ => 0,
            };
        }
        if *header.get_or_insert(h) != h {
            return 0;
        }
        let Some((size, fk, fv)) = flat_parts(w) else {
            return 0;
        };
        if size != n {
            return 0;
        }
        let mut i = 0;
        let mut same = true;
        let walked = map_pairs(env, m, |k, v| {
            same &= i < n && word_of(*fk.add(i)) == word_of(k) && word_of(*fv.add(i)) == word_of(v);
            i += 1;
            true
        });
        if walked.is_none() || !same || i != n {
            return 0;
        }
    }
    0
}

/// Runs `f` on the external term format of `t` (a term of `env`).
fn with_ext<R>(
    env: *mut ErlNifEnv,
    t: ErlNifTerm,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, EncodeError> {
    let mut bin = std::mem::MaybeUninit::<ErlNifBinary>::uninit();
    // SAFETY: `t` is a valid term of `env` (the encoder's caller); on
    // success `bin` is an initialised binary that we own, read, and release.
    unsafe {
        if enif_term_to_binary(env, t, bin.as_mut_ptr()) == 0 {
            return Err(EncodeError);
        }
        let mut bin = bin.assume_init();
        let r = f(std::slice::from_raw_parts(bin.data, bin.size));
        enif_release_binary(&mut bin);
        Ok(r)
    }
}

/// Calls `f` on each key and value of the map `t`, in the map iterator's
/// order, while it returns true. `None` when no iterator could be made.
///
/// # Safety
/// `t` must be a valid map term of `env` for the duration of the call.
unsafe fn map_pairs(
    env: *mut ErlNifEnv,
    t: ErlNifTerm,
    mut f: impl FnMut(ErlNifTerm, ErlNifTerm) -> bool,
) -> Option<()> {
    let mut it = std::mem::MaybeUninit::<ErlNifMapIterator>::uninit();
    if enif_map_iterator_create(
        env,
        t,
        it.as_mut_ptr(),
        ErlNifMapIteratorEntry::ERL_NIF_MAP_ITERATOR_HEAD,
    ) == 0
    {
        return None;
    }
    let mut it = it.assume_init();
    let (mut k, mut v) = (ErlNifTerm::default(), ErlNifTerm::default());
    while enif_map_iterator_get_pair(env, &mut it, &mut k, &mut v) != 0 && f(k, v) {
        enif_map_iterator_next(env, &mut it);
    }
    enif_map_iterator_destroy(env, &mut it);
    Some(())
}

/// Size, keys and values of the flat map whose term word is `w` (a boxed
/// map), read from its layout: `[header, size, keys tuple]` then the values;
/// the keys tuple is `[arity header, keys...]`.
///
/// # Safety
/// `w` must be the word of a live boxed term of at least three words whose
/// layout is a flat map's, or a sample being checked against that layout
/// (its keys tuple's arity is checked before its keys are used).
#[inline(always)]
unsafe fn flat_parts(w: u64) -> Option<(usize, *const ErlNifTerm, *const ErlNifTerm)> {
    let p = address_of(w) as *const u64;
    let size = *p.add(1) as usize;
    let keys = *p.add(2);
    if keys & 0x3 != 0x2 {
        return None;
    }
    let kp = address_of(keys) as *const u64;
    if (*kp >> 6) as usize != size || *kp & 0x3F != 0 {
        return None;
    }
    Some((
        size,
        kp.add(1) as *const ErlNifTerm,
        p.add(3) as *const ErlNifTerm,
    ))
}

/// Size, keys and values of `t` when it is a flat map (see
/// [`FLATMAP_HEADER`]); `None` for other maps.
///
/// # Safety
/// `t` must be a valid map term for the duration of the call.
#[inline(always)]
unsafe fn flatmap(t: ErlNifTerm) -> Option<(usize, *const ErlNifTerm, *const ErlNifTerm)> {
    let flat = FLATMAP_HEADER.load(Ordering::Relaxed);
    let w = word_of(t);
    if flat == 0 || w & 0x3 != 0x2 || *(address_of(w) as *const u64) != flat {
        return None;
    }
    flat_parts(w)
}

/// The head and tail of `t` when it is a list cell.
///
/// # Safety
/// `t` must be a valid term of `env` for the duration of the call.
#[inline(always)]
unsafe fn list_cell(
    env: *mut ErlNifEnv,
    t: ErlNifTerm,
    head: &mut ErlNifTerm,
    tail: &mut ErlNifTerm,
) -> bool {
    if CONS_CELLS.load(Ordering::Relaxed) {
        let w = word_of(t);
        if w & 0x3 != 0x1 {
            return false;
        }
        // The cell's two words (layout checked in `init`); `t` is live, so
        // its cell is.
        let p = address_of(w) as *const ErlNifTerm;
        *head = *p;
        *tail = *p.add(1);
        return true;
    }
    enif_get_list_cell(env, t, head, tail) != 0
}

/// Checks the word tags behind [`TAGGED_WORDS`] on sample terms.
///
/// # Safety
/// `env` must be a live process-independent or process environment.
unsafe fn tagged_words(env: *mut ErlNifEnv) -> bool {
    let is_atom = |w: u64| w & ATOM_MASK == ATOM_TAG;
    let is_pid = |w: u64| w & PID_MASK == PID_TAG;
    let is_small = |w: u64| w & SMALL_MASK == SMALL_TAG;
    let atoms = [
        "true",
        "false",
        "ok",
        "undefined",
        "native_store_codec_probe",
    ];
    let atoms_ok = atoms.iter().all(|a| {
        let t = enif_make_atom_len(env, a.as_ptr() as *const c_char, a.len());
        matches!(
            enif_term_type(env, t),
            ErlNifTermType::ERL_NIF_TERM_TYPE_ATOM
        ) && is_atom(word_of(t))
            && !is_pid(word_of(t))
            && !is_small(word_of(t))
    });
    let ints_ok = [0i64, -1, MAX_SMALL].iter().all(|&i| {
        let w = word_of(enif_make_int64(env, i));
        is_small(w) && !is_atom(w) && !is_pid(w)
    });
    // Terms of every other kind that can be made here: none may carry an
    // atom, pid or small-integer tag.
    let mut bin_term = ErlNifTerm::default();
    let p = enif_make_new_binary(env, 3, &mut bin_term);
    if p.is_null() {
        return false;
    }
    p.write_bytes(7, 3);
    let one = enif_make_int64(env, 1);
    let others = [
        enif_make_list_from_array(env, std::ptr::null(), 0),
        enif_make_list_from_array(env, &one, 1),
        enif_make_tuple_from_array(env, &one, 1),
        enif_make_tuple_from_array(env, std::ptr::null(), 0),
        enif_make_double(env, 1.5),
        enif_make_int64(env, i64::MAX),
        enif_make_new_map(env),
        enif_make_ref(env),
        bin_term,
    ];
    let others_ok = others.iter().all(|&t| {
        let w = word_of(t);
        !is_atom(w) && !is_pid(w) && !is_small(w)
    });
    // A local pid, when the environment belongs to a process.
    let mut pid = std::mem::MaybeUninit::<ErlNifPid>::uninit();
    let pid_ok = if enif_self(env, pid.as_mut_ptr()).is_null() {
        // Nothing to check against: leave the raw-word path off.
        false
    } else {
        let t = enif_make_pid(env, pid.assume_init());
        let w = word_of(t);
        is_pid(w) && !is_atom(w) && !is_small(w)
    };
    // `[]` is an immediate (primary tag 0b11): one fixed word.
    let nil_ok = word_of(others[0]) & 0x3 == 0x3;
    atoms_ok && ints_ok && others_ok && pid_ok && nil_ok
}

/// True when the VM considers `0.0 =:= -0.0`.
pub fn zero_eq() -> bool {
    ZERO_EQ.load(Ordering::Relaxed)
}

/// The raw word of a term (atoms and local pids are immediates, so their
/// word identifies them for the life of the VM).
#[inline]
pub fn word_of(t: ErlNifTerm) -> u64 {
    // SAFETY: `ErlNifTerm` is `#[repr(transparent)]` over `ERL_NIF_UINT`
    // (usize); reading it as an integer is a plain copy.
    unsafe { std::mem::transmute::<ErlNifTerm, usize>(t) as u64 }
}

/// The term for a word produced by [`word_of`] from an atom or a local pid.
#[inline]
pub fn term_of(w: u64) -> ErlNifTerm {
    // SAFETY: as in `word_of`; the word came from an immediate term, which
    // is valid in every environment.
    unsafe { std::mem::transmute::<usize, ErlNifTerm>(w as usize) }
}

/// The term for an immediate word (atom or local pid) in `env`.
#[inline]
pub fn word_term(env: Env, w: u64) -> Term {
    // SAFETY: immediates need no heap, so the term is valid in `env`.
    unsafe { Term::new(env, term_of(w)) }
}

/// The calling process's pid word (`enif_self`).
pub fn caller(env: Env) -> u64 {
    word_of(rustler::Encoder::encode(&env.pid(), env).as_c_arg())
}

/// The elements of a tuple term, read in place (the VM's own array: no
/// copy, unlike `rustler::types::tuple::get_tuple`, which allocates).
#[derive(Clone, Copy)]
pub struct TupleTerms<'a> {
    env: Env<'a>,
    raw: &'a [ErlNifTerm],
}

impl<'a> TupleTerms<'a> {
    /// The elements of `t`, or `None` when it is not a tuple.
    #[inline]
    pub fn of(t: Term<'a>) -> Option<Self> {
        let env = t.get_env();
        let mut arity: c_int = 0;
        let mut elems: *const ErlNifTerm = std::ptr::null();
        // SAFETY: `t` is a valid term of `env`; the out-pointers are live
        // locals.
        if unsafe { enif_get_tuple(env.as_c_arg(), t.as_c_arg(), &mut arity, &mut elems) } == 0 {
            return None;
        }
        let raw = if arity == 0 {
            &[][..]
        } else {
            // SAFETY: `enif_get_tuple` points `elems` at the tuple's `arity`
            // elements, which live on the heap of `env` as long as `t` does,
            // and the heap is not collected while the NIF call (`'a`) runs.
            unsafe { std::slice::from_raw_parts(elems, arity as usize) }
        };
        Some(TupleTerms { env, raw })
    }

    /// Number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Element `i` (0-based); `None` past the end.
    #[inline]
    pub fn get(&self, i: usize) -> Option<Term<'a>> {
        // SAFETY: the element is a valid term of `env` (see `of`).
        self.raw.get(i).map(|&t| unsafe { Term::new(self.env, t) })
    }

    /// The elements in order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = Term<'a>> + 'a {
        let env = self.env;
        // SAFETY: as in `get`.
        self.raw.iter().map(move |&t| unsafe { Term::new(env, t) })
    }
}

/// The elements of a proper list; `badarg` for anything else (rustler's
/// list decoder, also behind `Vec<T>` NIF arguments, panics on improper
/// lists).
pub fn proper_list(t: Term) -> rustler::NifResult<Vec<Term>> {
    let mut out = Vec::new();
    let mut cur = t;
    loop {
        if cur.is_empty_list() {
            return Ok(out);
        }
        let (head, tail) = cur.list_get_cell().map_err(|_| rustler::Error::BadArg)?;
        out.push(head);
        cur = tail;
    }
}

/// False when `t` is certainly not a large binary: only off-heap binaries
/// and sub-binaries pass, told by their header words (or, when their tags
/// were not learnt at load, anything boxed but a small map), without a
/// call into the VM. A false "maybe" only costs [`large_binary`]'s check.
#[inline(always)]
pub fn maybe_binary(t: Term) -> bool {
    let w = word_of(t.as_c_arg());
    if TAGGED_WORDS.load(Ordering::Relaxed) {
        if w & 0x3 != 0x2 {
            // Not boxed: an immediate or a list cell.
            return false;
        }
        let bins = BIG_BIN_TAGS.load(Ordering::Relaxed);
        let flat = FLATMAP_HEADER.load(Ordering::Relaxed);
        if bins != 0 || flat != 0 {
            // SAFETY: a boxed term word points at its header word (checked
            // at load with the list layout, which either value implies).
            let h = unsafe { *(address_of(w) as *const u64) };
            if bins != 0 {
                let tag = h & 0x3F;
                return tag == bins & 0xFF || tag == bins >> 8;
            }
            return h != flat;
        }
    }
    true
}

/// The bytes of `t` when it is a binary of at least `min` bytes (to be kept
/// out of line, see [`crate::blob`]); `None` for anything else.
pub fn large_binary<'a>(env: Env<'a>, t: Term<'a>, min: usize) -> Option<&'a [u8]> {
    let mut bin = std::mem::MaybeUninit::<ErlNifBinary>::uninit();
    // SAFETY: `t` is a live term of `env`; `bin` is a live out-pointer, read
    // only when the call succeeded; the bytes of a binary term stay valid
    // and unchanged while the term lives (`'a`, the call's environment).
    unsafe {
        if enif_inspect_binary(env.as_c_arg(), t.as_c_arg(), bin.as_mut_ptr()) == 0 {
            return None;
        }
        let bin = bin.assume_init();
        if bin.size < min.max(1) {
            return None;
        }
        Some(std::slice::from_raw_parts(bin.data, bin.size))
    }
}

/// Why a term could not be encoded.
#[derive(Debug)]
pub struct EncodeError;

/// Encodes terms into a buffer.
pub struct Encoder<'o> {
    env: *mut ErlNifEnv,
    out: &'o mut Vec<u8>,
    /// Write keys in canonical form (`-0.0` as `0.0` where they are equal).
    canonical: bool,
    /// Set when a faithful encoding differs from the canonical one.
    pub noncanonical: bool,
    /// Whether [`Encoder::noncanonical`] is wanted for what is encoded now
    /// (only a key's is): when not, values kept in external term format
    /// are not put in canonical form to find out.
    pub track: bool,
    zero_eq: bool,
}

impl<'o> Encoder<'o> {
    /// An encoder appending to `out`.
    pub fn new(env: Env, out: &'o mut Vec<u8>, canonical: bool) -> Self {
        Encoder {
            env: env.as_c_arg(),
            out,
            canonical,
            noncanonical: false,
            track: true,
            zero_eq: ZERO_EQ.load(Ordering::Relaxed),
        }
    }

    /// The output buffer (for headers written around encoded terms).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Current length of the output.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Appends the encoding of `term`.
    pub fn term(&mut self, term: Term, depth: u32) -> Result<(), EncodeError> {
        self.raw(term.as_c_arg(), depth)
    }

    /// Appends `t` in external term format; in canonical (key) form with
    /// equal terms' differences rewritten (see [`crate::ext::canonical`]).
    fn ext(&mut self, t: ErlNifTerm) -> Result<(), EncodeError> {
        let out = &mut *self.out;
        let (canonical, zero_eq) = (self.canonical, self.zero_eq);
        if !canonical && !self.track {
            return with_ext(self.env, t, |bytes| format::put_bytes(out, tag::EXT, bytes));
        }
        let rewritten = with_ext(self.env, t, |bytes| {
            let c = native_store_engine::ext::canonical(bytes, zero_eq);
            format::put_bytes(
                out,
                tag::EXT,
                c.as_deref().filter(|_| canonical).unwrap_or(bytes),
            );
            c.is_some()
        })?;
        if rewritten && !canonical {
            self.noncanonical = true;
        }
        Ok(())
    }

    fn bigint(&mut self, t: ErlNifTerm) -> Result<(), EncodeError> {
        let out = &mut *self.out;
        with_ext(self.env, t, |b| {
            // 131, SMALL_BIG_EXT(110) n sign digits | LARGE_BIG_EXT(111) n:32 sign digits
            let (sign, mag) = match b {
                [131, 110, n, sign, rest @ ..] if rest.len() == *n as usize => (*sign, rest),
                [131, 111, a, b2, c, d, sign, rest @ ..]
                    if rest.len() == u32::from_be_bytes([*a, *b2, *c, *d]) as usize =>
                {
                    (*sign, rest)
                }
                _ => return Err(EncodeError),
            };
            out.push(tag::BIGINT);
            format::put_uvarint(out, mag.len() as u64);
            out.push(sign);
            out.extend_from_slice(mag);
            Ok(())
        })?
    }

    fn raw(&mut self, t: ErlNifTerm, depth: u32) -> Result<(), EncodeError> {
        if depth > MAX_DEPTH {
            return self.ext(t);
        }
        // Scalars classified from the term word (tags checked in `init`).
        let w = word_of(t);
        if TAGGED_WORDS.load(Ordering::Relaxed) {
            if w & SMALL_MASK == SMALL_TAG {
                format::put_int(self.out, (w as i64) >> 4);
                return Ok(());
            }
            if w & ATOM_MASK == ATOM_TAG {
                format::put_word(self.out, tag::WORD, w);
                return Ok(());
            }
            if w & PID_MASK == PID_TAG {
                format::put_word(self.out, tag::PID, w);
                return Ok(());
            }
            if w == NIL_WORD.load(Ordering::Relaxed) {
                self.out.push(tag::NIL);
                return Ok(());
            }
        }
        let env = self.env;
        // SAFETY: `t` is a valid term of `env` for the duration of the call;
        // every out-pointer passed below points at a live local.
        unsafe {
            match enif_term_type(env, t) {
                ErlNifTermType::ERL_NIF_TERM_TYPE_ATOM => {
                    format::put_word(self.out, tag::WORD, word_of(t));
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_INTEGER => {
                    let mut i: i64 = 0;
                    if enif_get_int64(env, t, &mut i) != 0 {
                        format::put_int(self.out, i);
                    } else {
                        self.bigint(t)?;
                    }
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_FLOAT => {
                    let mut d: f64 = 0.0;
                    enif_get_double(env, t, &mut d);
                    if d == 0.0 && d.is_sign_negative() && self.zero_eq {
                        if self.canonical {
                            d = 0.0;
                        } else {
                            self.noncanonical = true;
                        }
                    }
                    format::put_float(self.out, d);
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_BITSTRING => {
                    let mut bin = std::mem::MaybeUninit::<ErlNifBinary>::uninit();
                    if enif_inspect_binary(env, t, bin.as_mut_ptr()) != 0 {
                        let bin = bin.assume_init();
                        let bytes = if bin.size == 0 {
                            &[][..]
                        } else {
                            std::slice::from_raw_parts(bin.data, bin.size)
                        };
                        format::put_bytes(self.out, tag::BINARY, bytes);
                    } else {
                        self.ext(t)?;
                    }
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_TUPLE => {
                    let mut arity: c_int = 0;
                    let mut elems: *const ErlNifTerm = std::ptr::null();
                    enif_get_tuple(env, t, &mut arity, &mut elems);
                    format::put_header(self.out, tag::TUPLE, arity as usize);
                    for i in 0..arity as usize {
                        self.raw(*elems.add(i), depth + 1)?;
                    }
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_LIST => {
                    let mut head: ErlNifTerm = ErlNifTerm::default();
                    let mut tail: ErlNifTerm = ErlNifTerm::default();
                    if !list_cell(env, t, &mut head, &mut tail) {
                        self.out.push(tag::NIL);
                    } else {
                        // Elements are written as the list is walked; the
                        // count and byte length are filled in at the end.
                        let mark = format::begin_list_uncounted(self.out);
                        let mut count = 0usize;
                        loop {
                            self.raw(head, depth + 1)?;
                            count += 1;
                            let cur = tail;
                            if !list_cell(env, cur, &mut head, &mut tail) {
                                // The tail: `[]` for a proper list, any term otherwise.
                                self.raw(cur, depth + 1)?;
                                break;
                            }
                        }
                        format::end_list_counted(self.out, mark, count);
                    }
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_MAP => {
                    if let Some((size, ks, vs)) = flatmap(t) {
                        // The iterator's order: keys and values by index.
                        let mark = format::begin_map(self.out, size);
                        for i in 0..size {
                            self.raw(*ks.add(i), depth + 1)?;
                            self.raw(*vs.add(i), depth + 1)?;
                        }
                        format::end_map(self.out, mark);
                        return Ok(());
                    }
                    let mut size: size_t = 0;
                    enif_get_map_size(env, t, &mut size);
                    let mark = format::begin_map(self.out, size);
                    if size > 0 {
                        let mut result = Ok(());
                        map_pairs(env, t, |k, v| {
                            result = self.raw(k, depth + 1).and_then(|_| self.raw(v, depth + 1));
                            result.is_ok()
                        })
                        .ok_or(EncodeError)?;
                        result?;
                    }
                    format::end_map(self.out, mark);
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_PID => {
                    let mut pid = std::mem::MaybeUninit::<ErlNifPid>::uninit();
                    if enif_get_local_pid(env, t, pid.as_mut_ptr()) != 0 {
                        // A local pid term is an immediate: its word is the pid.
                        format::put_word(self.out, tag::PID, word_of(t));
                    } else {
                        self.ext(t)?;
                    }
                }
                _ => self.ext(t)?,
            }
        }
        Ok(())
    }
}

thread_local! {
    /// Spare buffers of this scheduler thread, so that encoding a key or an
    /// object does not allocate a fresh buffer each call.
    static POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer borrowed from the thread's pool; returned to it on drop.
pub struct Scratch(Vec<u8>);

impl Scratch {
    /// An empty buffer.
    pub fn take() -> Self {
        let mut v = POOL
            .with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop()))
            .unwrap_or_else(|| Vec::with_capacity(64));
        v.clear();
        Scratch(v)
    }

    /// The buffer itself (to hand to a builder; give it back with `restore`).
    pub fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }

    /// Returns a buffer obtained from `into_vec` to the pool.
    pub fn restore(v: Vec<u8>) {
        drop(Scratch(v));
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.0.capacity() == 0 || self.0.capacity() > 1 << 16 {
            return;
        }
        let v = std::mem::take(&mut self.0);
        POOL.with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                if p.len() < 8 {
                    p.push(v);
                }
            }
        });
    }
}

impl std::ops::Deref for Scratch {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// Encodes `term` alone in canonical (key) form.
pub fn encode_key(env: Env, term: Term) -> Result<Scratch, EncodeError> {
    let mut out = Scratch::take();
    Encoder::new(env, &mut out, true).term(term, 0)?;
    Ok(out)
}

/// A canonical key, without a heap buffer for the common immediate keys.
pub enum KeyBytes {
    /// An atom or an integer that fits in i64, as its tag (widened) and 8-byte word
    /// (the bytes [`Encoder`] writes for it are `[tag, word LE]`), kept in
    /// registers rather than written out and read back.
    Inline(u64, u64),
    /// A short binary, or a tuple of at most 8 small integers, atoms, local
    /// pids, `[]` and short binaries (`{:users, "id-1"}`), encoded on the
    /// stack (the bytes are `.0[...1]`): [`Encoder`]'s bytes for it,
    /// without a pooled buffer and the general encoder's calls into the VM.
    Small([u8; SMALL_KEY], u8),
    /// Any other key, encoded in a pooled buffer.
    Pooled(Scratch),
}

/// Bytes a [`KeyBytes::Small`] key holds at most.
pub const SMALL_KEY: usize = 64;

/// The bytes of a [`KeyBytes::Small`] key.
struct SmallKey {
    buf: [u8; SMALL_KEY],
    len: usize,
}

impl SmallKey {
    /// Appends `bytes`; `None` when they do not fit.
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len + bytes.len();
        self.buf.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }

    /// `[tag, word LE]`, as `format::put_word` and `format::put_int` write.
    #[inline(always)]
    fn word(&mut self, t: u8, w: u64) -> Option<()> {
        self.put(&[t])?;
        self.put(&w.to_le_bytes())
    }

    /// A binary of fewer than 128 bytes, as `format::put_bytes` writes it
    /// (its varint length is one byte). `None` for anything else.
    #[inline(always)]
    fn binary(&mut self, env: *mut ErlNifEnv, t: ErlNifTerm) -> Option<()> {
        let mut bin = std::mem::MaybeUninit::<ErlNifBinary>::uninit();
        // SAFETY: `t` is a valid term of `env`; `bin` is a live out-pointer,
        // initialised when the call succeeds. The bytes stay valid while
        // `t` does (this call).
        let bytes = unsafe {
            if enif_inspect_binary(env, t, bin.as_mut_ptr()) == 0 {
                return None;
            }
            let bin = bin.assume_init();
            if bin.size >= 0x80 {
                return None;
            }
            if bin.size == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(bin.data, bin.size)
            }
        };
        self.put(&[tag::BINARY, bytes.len() as u8])?;
        self.put(bytes)
    }

    /// An element of a small tuple key: an immediate the encoder writes
    /// from its word, or a short binary.
    #[inline(always)]
    fn element(&mut self, env: *mut ErlNifEnv, t: ErlNifTerm) -> Option<()> {
        let w = word_of(t);
        if w & SMALL_MASK == SMALL_TAG {
            self.word(tag::INT, ((w as i64) >> 4) as u64)
        } else if w & ATOM_MASK == ATOM_TAG {
            self.word(tag::WORD, w)
        } else if w & PID_MASK == PID_TAG {
            self.word(tag::PID, w)
        } else if w == NIL_WORD.load(Ordering::Relaxed) {
            self.put(&[tag::NIL])
        } else {
            self.binary(env, t)
        }
    }
}

/// [`KeyBytes::Small`] of `t`, or `None` (the caller then encodes it in
/// full). Only where the load-time layout checks passed.
#[inline]
fn small_key(env: *mut ErlNifEnv, t: ErlNifTerm) -> Option<KeyBytes> {
    if !TAGGED_WORDS.load(Ordering::Relaxed) {
        return None;
    }
    let mut k = SmallKey {
        buf: [0; SMALL_KEY],
        len: 0,
    };
    let mut arity: c_int = 0;
    let mut elems: *const ErlNifTerm = std::ptr::null();
    // SAFETY: `t` is a valid term of `env`; `arity` and `elems` are live
    // out-pointers. On success `elems` points at `arity` terms of the
    // tuple, valid while `t` is.
    if unsafe { enif_get_tuple(env, t, &mut arity, &mut elems) } != 0 {
        if !(0..=8).contains(&arity) {
            return None;
        }
        // `format::put_header` of a tuple: its count is one varint byte.
        k.put(&[tag::TUPLE, arity as u8])?;
        for i in 0..arity as usize {
            // SAFETY: `i < arity` (see above).
            k.element(env, unsafe { *elems.add(i) })?;
        }
    } else {
        k.binary(env, t)?;
    }
    Some(KeyBytes::Small(k.buf, k.len as u8))
}

#[inline(always)]
fn inline_key(t: u8, w: u64) -> KeyBytes {
    // The tag is widened to a word: copies of the key are then whole words
    // (byte-sized fields were copied piecewise and read back as a word,
    // stalling on store forwarding).
    KeyBytes::Inline(u64::from(t), w)
}

impl KeyBytes {
    /// The key to look up (hashed).
    #[inline(always)]
    pub fn key(&self) -> Key<'_> {
        match self {
            KeyBytes::Inline(t, w) => Key::word(*t as u8, *w),
            KeyBytes::Small(b, n) => Key::new(&b[..*n as usize]),
            KeyBytes::Pooled(s) => Key::new(s),
        }
    }
}

/// `[]` in `env` from the word recorded at load, without a call into the
/// VM (`Term::list_new_empty` calls `enif_make_list_from_array`).
#[inline(always)]
pub fn nil(env: Env<'_>) -> Term<'_> {
    // SAFETY: `[]` is an immediate: the word recorded at load (from a `[]`
    // the VM made, before any NIF runs) is the same valid term in every
    // environment.
    unsafe { Term::new(env, term_of(NIL_WORD.load(Ordering::Relaxed))) }
}

/// The value of a small integer term, read from its word (no call into the
/// VM) where the load-time check of the word layout passed; `None` for
/// anything else (or when the layout is not known: use the enif API).
#[inline(always)]
pub fn small_int(term: Term) -> Option<i64> {
    let w = word_of(term.as_c_arg());
    (TAGGED_WORDS.load(Ordering::Relaxed) && w & SMALL_MASK == SMALL_TAG).then_some((w as i64) >> 4)
}

/// Encodes `term` in canonical (key) form, like [`encode_key`], but keeps
/// atoms and small integers on the stack (the same bytes: `format::put_word`
/// and `format::put_int`).
#[inline(always)]
pub fn encode_key_bytes(env: Env, term: Term) -> Result<KeyBytes, EncodeError> {
    let t = term.as_c_arg();
    let w = word_of(t);
    if let Some(i) = small_int(term) {
        return Ok(inline_key(tag::INT, i as u64));
    }
    if TAGGED_WORDS.load(Ordering::Relaxed) && w & ATOM_MASK == ATOM_TAG {
        return Ok(inline_key(tag::WORD, w));
    }
    if let Some(k) = small_key(env.as_c_arg(), t) {
        return Ok(k);
    }
    // SAFETY: `t` is a valid term of `env`; `i` is a live out-pointer.
    unsafe {
        match enif_term_type(env.as_c_arg(), t) {
            ErlNifTermType::ERL_NIF_TERM_TYPE_ATOM => return Ok(inline_key(tag::WORD, word_of(t))),
            ErlNifTermType::ERL_NIF_TERM_TYPE_INTEGER => {
                let mut i: i64 = 0;
                if enif_get_int64(env.as_c_arg(), t, &mut i) != 0 {
                    return Ok(inline_key(tag::INT, i as u64));
                }
            }
            _ => {}
        }
    }
    encode_key(env, term).map(KeyBytes::Pooled)
}

/// Encodes `term` faithfully (as a value).
pub fn encode_value(env: Env, term: Term) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(32);
    Encoder::new(env, &mut out, false).term(term, 0)?;
    Ok(out)
}

/// Compares `term` with the value encoded at `*pos` in `buf` without
/// encoding it: `Some(true)` when [`encode_value`] would write exactly these
/// bytes (advancing `*pos` past them), `Some(false)` when it would not, and
/// `None` for values this walk does not handle (big integers, floats,
/// external-format values, deep nesting): the caller then encodes.
pub fn matches_encoded(env: Env, term: Term, buf: &[u8], pos: &mut usize) -> Option<bool> {
    matches_raw(env.as_c_arg(), term.as_c_arg(), buf, pos, 0)
}

fn matches_raw(
    env: *mut ErlNifEnv,
    t: ErlNifTerm,
    buf: &[u8],
    pos: &mut usize,
    depth: u32,
) -> Option<bool> {
    if depth > MAX_DEPTH {
        return None;
    }
    let Ok(item) = format::read_item(buf, pos) else {
        return Some(false);
    };
    // The scalars the encoder writes from the term word alone.
    let w = word_of(t);
    if TAGGED_WORDS.load(Ordering::Relaxed) {
        if w & SMALL_MASK == SMALL_TAG {
            return Some(item == Item::Int((w as i64) >> 4));
        }
        if w & ATOM_MASK == ATOM_TAG {
            return Some(item == Item::Word(w));
        }
        if w & PID_MASK == PID_TAG {
            return Some(item == Item::Pid(w));
        }
        if w == NIL_WORD.load(Ordering::Relaxed) {
            return Some(item == Item::Nil);
        }
    }
    // SAFETY: `t` is a valid term of `env` for the duration of the call;
    // every out-pointer passed below points at a live local.
    unsafe {
        match enif_term_type(env, t) {
            ErlNifTermType::ERL_NIF_TERM_TYPE_ATOM => Some(item == Item::Word(word_of(t))),
            ErlNifTermType::ERL_NIF_TERM_TYPE_INTEGER => {
                let mut i: i64 = 0;
                if enif_get_int64(env, t, &mut i) == 0 {
                    return None;
                }
                Some(item == Item::Int(i))
            }
            ErlNifTermType::ERL_NIF_TERM_TYPE_BITSTRING => {
                let mut bin = std::mem::MaybeUninit::<ErlNifBinary>::uninit();
                if enif_inspect_binary(env, t, bin.as_mut_ptr()) == 0 {
                    return None;
                }
                let bin = bin.assume_init();
                let bytes = if bin.size == 0 {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(bin.data, bin.size)
                };
                Some(item == Item::Binary(bytes))
            }
            ErlNifTermType::ERL_NIF_TERM_TYPE_TUPLE => {
                let mut arity: c_int = 0;
                let mut elems: *const ErlNifTerm = std::ptr::null();
                enif_get_tuple(env, t, &mut arity, &mut elems);
                if item != Item::Tuple(arity as usize) {
                    return Some(false);
                }
                for i in 0..arity as usize {
                    if !matches_raw(env, *elems.add(i), buf, pos, depth + 1)? {
                        return Some(false);
                    }
                }
                Some(true)
            }
            ErlNifTermType::ERL_NIF_TERM_TYPE_LIST => {
                let mut len: c_uint = 0;
                if enif_get_list_length(env, t, &mut len) == 0 {
                    return None; // improper
                }
                if len == 0 {
                    return Some(item == Item::Nil);
                }
                if item != Item::List(len as usize) {
                    return Some(false);
                }
                let mut cur = t;
                let mut head: ErlNifTerm = ErlNifTerm::default();
                let mut tail: ErlNifTerm = ErlNifTerm::default();
                while list_cell(env, cur, &mut head, &mut tail) {
                    if !matches_raw(env, head, buf, pos, depth + 1)? {
                        return Some(false);
                    }
                    cur = tail;
                }
                Some(format::read_item(buf, pos) == Ok(Item::Nil))
            }
            ErlNifTermType::ERL_NIF_TERM_TYPE_MAP => {
                let mut size: size_t = 0;
                enif_get_map_size(env, t, &mut size);
                if item != Item::Map(size) {
                    return Some(false);
                }
                if size == 0 {
                    return Some(true);
                }
                let mut result = Some(true);
                map_pairs(env, t, |k, v| {
                    result = match matches_raw(env, k, buf, pos, depth + 1) {
                        Some(true) => matches_raw(env, v, buf, pos, depth + 1),
                        other => other,
                    };
                    result == Some(true)
                })?;
                result
            }
            ErlNifTermType::ERL_NIF_TERM_TYPE_PID => {
                let mut pid = std::mem::MaybeUninit::<ErlNifPid>::uninit();
                if enif_get_local_pid(env, t, pid.as_mut_ptr()) == 0 {
                    return None;
                }
                Some(item == Item::Pid(word_of(t)))
            }
            _ => None,
        }
    }
}

/// Why stored bytes could not be turned back into a term.
#[derive(Debug)]
pub struct DecodeError;

impl From<format::FormatError> for DecodeError {
    fn from(_: format::FormatError) -> Self {
        DecodeError
    }
}

/// Rebuilds the term encoded at the start of `buf` in `env`.
pub fn decode<'a>(env: Env<'a>, buf: &[u8]) -> Result<Term<'a>, DecodeError> {
    decode_with(env, buf, false)
}

/// [`decode`] of the object of an entry the caller removed and is about
/// to drop (`take`): its blobs that were never shown to the VM are copied
/// into new binaries rather than given a resource (they are freed right
/// after: a copy costs less than a resource and its destructor).
pub fn decode_removed<'a>(env: Env<'a>, buf: &[u8]) -> Result<Term<'a>, DecodeError> {
    decode_with(env, buf, true)
}

fn decode_with<'a>(env: Env<'a>, buf: &[u8], removed: bool) -> Result<Term<'a>, DecodeError> {
    if let Some(t) = flat_tuple(env.as_c_arg(), buf) {
        // SAFETY: `t` was made in `env`.
        return Ok(unsafe { Term::new(env, t) });
    }
    decode_general(env, buf, removed)
}

/// [`decode_with`] by the general decoder (no [`flat_tuple`] attempt).
fn decode_general<'a>(env: Env<'a>, buf: &[u8], removed: bool) -> Result<Term<'a>, DecodeError> {
    let mut pos = 0;
    let mut d = Decoder {
        env: env.as_c_arg(),
        buf,
        stack: Vec::new(),
        removed,
    };
    let t = d.raw(&mut pos);
    d.release();
    // SAFETY: `t` was made in `env`.
    Ok(unsafe { Term::new(env, t?) })
}

/// A small integer, an atom or a local pid alone (a key returned by
/// `first/1` or `next/2`), rebuilt from its word without the general
/// decoder; `None` otherwise. (Called by [`flat_tuple`], once the
/// load-time layout checks passed.)
#[inline]
fn lone_immediate(buf: &[u8]) -> Option<ErlNifTerm> {
    let (&t, rest) = buf.split_first()?;
    let w = u64::from_le_bytes(*rest.first_chunk::<8>()?);
    match t {
        tag::INT if (MIN_SMALL..=MAX_SMALL).contains(&(w as i64)) => {
            Some(term_of(small_word(w as i64)))
        }
        tag::WORD | tag::PID => Some(term_of(w)),
        _ => None,
    }
}

/// A tuple of at most 8 immediates (small integers, atoms, local pids,
/// `[]`: counters, bag rows, registry-style objects), maps of at most 16
/// pairs of immediates or binaries of fewer than 128 bytes, rebuilt
/// without the general decoder's item-by-item machinery: the words are
/// the terms (where the load-time layout checks passed). `None` for
/// anything else. (A lookup of `{k, v}` from a bag: ~110 instructions
/// less per object; of `{k, %{a: 1, b: 2, c: 3, d: 4}, 0}`: ~100 less; a
/// `next/2` step over `{atom, "id-123"}` keys: ~200 less.) A lone
/// immediate or short binary is rebuilt that way too.
#[inline]
fn flat_tuple(env: *mut ErlNifEnv, buf: &[u8]) -> Option<ErlNifTerm> {
    if !flat_ok() {
        return None;
    }
    flat_tuple_unchecked(env, buf)
}

/// True when the load-time layout checks behind [`flat_tuple`] passed.
#[inline(always)]
fn flat_ok() -> bool {
    TAGGED_WORDS.load(Ordering::Relaxed) && SMALL_IMMEDIATE.load(Ordering::Relaxed)
}

/// [`flat_tuple`] once [`flat_ok`] is known to hold.
#[inline(always)]
fn flat_tuple_unchecked(env: *mut ErlNifEnv, buf: &[u8]) -> Option<ErlNifTerm> {
    let (&tag::TUPLE, rest) = buf.split_first()? else {
        if buf.first() == Some(&tag::BINARY) {
            return short_binary(env, buf, &mut 0);
        }
        return lone_immediate(buf);
    };
    let n = *rest.first()? as usize;
    if n > 8 {
        return None;
    }
    let word = |p: usize| Some(u64::from_le_bytes(buf.get(p..p + 8)?.try_into().ok()?));
    let mut arr = [ErlNifTerm::default(); 8];
    let mut p = 2;
    let mut checked = false;
    for (i, slot) in arr.iter_mut().take(n).enumerate() {
        *slot = match *buf.get(p)? {
            tag::INT => {
                let i = word(p + 1)? as i64;
                if !(MIN_SMALL..=MAX_SMALL).contains(&i) {
                    return None;
                }
                p += 9;
                term_of(small_word(i))
            }
            tag::WORD | tag::PID => {
                p += 9;
                term_of(word(p - 8)?)
            }
            tag::NIL => {
                p += 1;
                term_of(NIL_WORD.load(Ordering::Relaxed))
            }
            tag::MAP => {
                // Check the rest first: a map is not made for nothing.
                if !checked && !flat_rest(buf, p, n - i) {
                    return None;
                }
                checked = true;
                let (m, q) = flat_map(env, buf, p)?;
                p = q;
                m
            }
            tag::BINARY => {
                // As for a map: nothing is made unless the rest is flat.
                if !checked && !flat_rest(buf, p, n - i) {
                    return None;
                }
                checked = true;
                short_binary(env, buf, &mut p)?
            }
            _ => return None,
        };
    }
    // SAFETY: `env` is the caller's live environment; the array holds `n`
    // valid terms made in it and lives for the call.
    Some(unsafe { enif_make_tuple_from_array(env, arr.as_ptr(), n as c_uint) })
}

/// The binary of fewer than 128 bytes (its length is one byte) at `*p`,
/// an element of a [`flat_tuple`] (an `{atom, binary}` key, say), made
/// as the general decoder makes it; advances `*p` past it.
#[inline]
fn short_binary(env: *mut ErlNifEnv, buf: &[u8], p: &mut usize) -> Option<ErlNifTerm> {
    let len = *buf.get(*p + 1)? as usize;
    if len >= 0x80 {
        return None;
    }
    let bytes = buf.get(*p + 2..*p + 2 + len)?;
    let mut t = ErlNifTerm::default();
    // SAFETY: `env` is the caller's live environment and `t` a live
    // out-pointer; the new binary has `len` writable bytes at `data`.
    unsafe {
        let data = enif_make_new_binary(env, len, &mut t);
        if len > 0 {
            if data.is_null() {
                return None;
            }
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, len);
        }
    }
    *p += 2 + len;
    Some(t)
}

/// A tuple of at most 8 small integers, atoms and local pids (each nine
/// bytes: tag and word), as [`flat_tuple`] rebuilds it once [`flat_ok`]
/// holds, but told from its length and read without per-element bounds
/// checks (the common bag row); `None` for anything else.
#[inline(always)]
fn word_tuple(env: *mut ErlNifEnv, o: &[u8]) -> Option<ErlNifTerm> {
    let ([t, n], body) = o.split_first_chunk::<2>()?;
    let n = *n as usize;
    if *t != tag::TUPLE || n > 8 || body.len() != 9 * n {
        return None;
    }
    // (Left uninitialised: the loop writes exactly the first `n` slots.)
    let mut arr = [std::mem::MaybeUninit::<ErlNifTerm>::uninit(); 8];
    for (slot, c) in arr.iter_mut().zip(body.chunks_exact(9)) {
        slot.write(word_element(c)?);
    }
    // SAFETY: `env` is the caller's live environment; `body` holds exactly
    // `n <= 8` nine-byte elements, so the loop wrote the array's first `n`
    // slots with immediate terms; the array lives for the call.
    Some(unsafe { enif_make_tuple_from_array(env, arr.as_ptr().cast(), n as c_uint) })
}

/// One nine-byte element of a [`word_tuple`] (tag, then word): a small
/// integer, an atom or a local pid; `None` for anything else.
#[inline(always)]
fn word_element(c: &[u8]) -> Option<ErlNifTerm> {
    let w = u64::from_le_bytes(c.get(1..9)?.try_into().ok()?);
    // Integers first: the most common element.
    let t = if c[0] == tag::INT {
        if !(MIN_SMALL..=MAX_SMALL).contains(&(w as i64)) {
            return None;
        }
        small_word(w as i64)
    } else if c[0] == tag::WORD || c[0] == tag::PID {
        w
    } else {
        return None;
    };
    Some(term_of(t))
}

/// [`word_tuple`] of a tuple whose first element is known to be `key`
/// (not read).
#[inline(always)]
fn word_tuple_key_first(env: *mut ErlNifEnv, o: &[u8], key: ErlNifTerm) -> Option<ErlNifTerm> {
    let ([t, n], body) = o.split_first_chunk::<2>()?;
    let n = *n as usize;
    if *t != tag::TUPLE || n == 0 || n > 8 || body.len() != 9 * n {
        return None;
    }
    // (Left uninitialised: the first slot and the loop write exactly the
    // first `n` slots.)
    let mut arr = [std::mem::MaybeUninit::<ErlNifTerm>::uninit(); 8];
    arr[0].write(key);
    for (slot, c) in arr[1..].iter_mut().zip(body[9..].chunks_exact(9)) {
        slot.write(word_element(c)?);
    }
    // SAFETY: as in `word_tuple`: `body` holds exactly `n` nine-byte
    // elements, so the first `n` slots were written with immediate terms.
    Some(unsafe { enif_make_tuple_from_array(env, arr.as_ptr().cast(), n as c_uint) })
}

/// [`decode_list`] of the objects of a key looked up by `key`, an atom or
/// an integer (see [`KeyBytes::Inline`]): an object whose first element is
/// the key's canonical bytes gets the term `key` there (the same term,
/// which those bytes decode to) without reading it again.
#[inline(never)]
pub fn decode_list_by<'a>(
    env: Env<'a>,
    objs: Objects<'_>,
    key: Term<'a>,
) -> Result<Term<'a>, DecodeError> {
    let n = objs.len();
    if n == 0 || n > LIST_STACK || !flat_ok() {
        return decode_list(env, objs);
    }
    // (A local copy: the walk stays in registers.)
    let mut objs = objs.clone();
    let k = key.as_c_arg();
    // (Left uninitialised: only the slots written are read.)
    let mut terms = [std::mem::MaybeUninit::<ErlNifTerm>::uninit(); LIST_STACK];
    let mut len = 0;
    for slot in terms.iter_mut() {
        // The first element starts after the tuple tag and arity bytes.
        let Some((o, key_first)) = objs.next_key_at(2) else {
            break;
        };
        let t = if key_first {
            word_tuple_key_first(env.as_c_arg(), o, k)
        } else {
            word_tuple(env.as_c_arg(), o)
        };
        let t = match t {
            Some(t) => t,
            None => decode_other(env, o, true)?,
        };
        slot.write(t);
        len += 1;
    }
    // SAFETY: see `list_of`.
    Ok(unsafe { list_of(env, &terms[..len]) })
}

/// Objects [`decode_list`] decodes into an array on the stack.
const LIST_STACK: usize = 32;

/// The list of the objects `objs` (the objects of one bag key, in order),
/// decoded: the layout check of [`flat_tuple`] is made once for all of
/// them, tuples of immediate words are rebuilt inline ([`word_tuple`]),
/// others by [`decode_other`]; the list is made in one call from an array
/// on the stack (up to [`LIST_STACK`] objects; more through
/// [`decode_many`], into one vector). Inlined into its callers (the hot
/// path of a bag lookup): no call, frame or vector of its own.
#[inline(always)]
pub fn decode_list<'a, 'b>(
    env: Env<'a>,
    objs: impl ExactSizeIterator<Item = &'b [u8]>,
) -> Result<Term<'a>, DecodeError> {
    let n = objs.len();
    if n == 0 {
        return Ok(nil(env));
    }
    if n > LIST_STACK {
        return decode_many(env, objs);
    }
    // (Left uninitialised: only the slots written are read.)
    let mut terms = [std::mem::MaybeUninit::<ErlNifTerm>::uninit(); LIST_STACK];
    let len = decode_into(env, objs, &mut terms)?;
    // SAFETY: see `list_of`.
    Ok(unsafe { list_of(env, &terms[..len]) })
}

/// [`decode_list`] of more than [`LIST_STACK`] objects.
#[inline(never)]
fn decode_many<'a, 'b>(
    env: Env<'a>,
    objs: impl ExactSizeIterator<Item = &'b [u8]>,
) -> Result<Term<'a>, DecodeError> {
    let mut terms = vec![std::mem::MaybeUninit::<ErlNifTerm>::uninit(); objs.len()];
    let len = decode_into(env, objs, &mut terms)?;
    // SAFETY: see `list_of`.
    Ok(unsafe { list_of(env, &terms[..len]) })
}

/// Decodes `objs` into the first slots of `terms` (as many as both have);
/// returns how many it wrote.
#[inline(always)]
fn decode_into<'b>(
    env: Env<'_>,
    objs: impl Iterator<Item = &'b [u8]>,
    terms: &mut [std::mem::MaybeUninit<ErlNifTerm>],
) -> Result<usize, DecodeError> {
    let flat = flat_ok();
    let mut len = 0;
    for (slot, o) in terms.iter_mut().zip(objs) {
        let t = match flat.then(|| word_tuple(env.as_c_arg(), o)).flatten() {
            Some(t) => t,
            None => decode_other(env, o, flat)?,
        };
        slot.write(t);
        len += 1;
    }
    Ok(len)
}

/// The list of `terms`.
///
/// # Safety
/// Every slot of `terms` must have been written with a valid term made in
/// `env` (the caller's live environment).
#[inline(always)]
unsafe fn list_of<'a>(env: Env<'a>, terms: &[std::mem::MaybeUninit<ErlNifTerm>]) -> Term<'a> {
    // SAFETY: the slots hold valid terms of `env` (the function's contract).
    unsafe {
        Term::new(
            env,
            enif_make_list_from_array(env.as_c_arg(), terms.as_ptr().cast(), terms.len() as c_uint),
        )
    }
}

/// An object of [`decode_list`] that is not a tuple of immediate words:
/// by [`flat_tuple`] (when `flat`, i.e. [`flat_ok`]) or the general decoder.
#[inline(never)]
fn decode_other(env: Env<'_>, o: &[u8], flat: bool) -> Result<ErlNifTerm, DecodeError> {
    if flat {
        if let Some(t) = flat_tuple_unchecked(env.as_c_arg(), o) {
            return Ok(t);
        }
    }
    decode_general(env, o, false).map(|t| t.as_c_arg())
}

/// True when the `count` values from `p` on look like what [`flat_tuple`]
/// builds: immediates, short binaries, or maps (stepped over by their
/// recorded length: their pairs are checked by [`flat_map`] before it
/// makes anything).
fn flat_rest(buf: &[u8], mut p: usize, count: usize) -> bool {
    for _ in 0..count {
        p += match buf.get(p) {
            Some(&(tag::INT | tag::WORD | tag::PID)) => 9,
            Some(&tag::NIL) => 1,
            Some(&tag::BINARY) => match buf.get(p + 1) {
                Some(&len) if len < 0x80 => 2 + len as usize,
                _ => return false,
            },
            Some(&tag::MAP) => match buf.get(p + 2..p + 6) {
                Some(len) => 6 + u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize,
                None => return false,
            },
            _ => return false,
        };
    }
    true
}

/// A map of at most 16 pairs of immediates at `*p` (an element of a
/// [`flat_tuple`]), with the position just past it; `None` for anything else. The
/// words are checked before the map is made, so `None` allocates nothing.
#[inline(never)]
fn flat_map(env: *mut ErlNifEnv, buf: &[u8], p: usize) -> Option<(ErlNifTerm, usize)> {
    let n = *buf.get(p + 1)? as usize;
    if n > 16 {
        return None;
    }
    let word = |q: usize| Some(u64::from_le_bytes(buf.get(q..q + 8)?.try_into().ok()?));
    let mut kv = [ErlNifTerm::default(); 32];
    let mut q = p + 6;
    for slot in kv.iter_mut().take(2 * n) {
        *slot = match *buf.get(q)? {
            tag::INT => {
                let i = word(q + 1)? as i64;
                if !(MIN_SMALL..=MAX_SMALL).contains(&i) {
                    return None;
                }
                q += 9;
                term_of(small_word(i))
            }
            tag::WORD | tag::PID => {
                q += 9;
                term_of(word(q - 8)?)
            }
            tag::NIL => {
                q += 1;
                term_of(NIL_WORD.load(Ordering::Relaxed))
            }
            _ => return None,
        };
    }
    let mut ks = [ErlNifTerm::default(); 16];
    let mut vs = [ErlNifTerm::default(); 16];
    for i in 0..n {
        ks[i] = kv[2 * i];
        vs[i] = kv[2 * i + 1];
    }
    let mut m = ErlNifTerm::default();
    // SAFETY: `env` is the caller's live environment; the arrays hold `n`
    // immediate terms each and live for the call.
    if unsafe { enif_make_map_from_arrays(env, ks.as_ptr(), vs.as_ptr(), n, &mut m) } == 0 {
        return None;
    }
    Some((m, q))
}

thread_local! {
    /// This scheduler thread's spare term stack (see [`Decoder::stack`]).
    static TERMS: std::cell::Cell<Vec<ErlNifTerm>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Rebuilds terms from `buf`.
struct Decoder<'b> {
    env: *mut ErlNifEnv,
    buf: &'b [u8],
    /// Elements of the containers being rebuilt, innermost last: a
    /// container pushes its elements, makes its term from them and
    /// truncates back. Borrowed from [`TERMS`] on first use (values without
    /// large containers never touch it).
    stack: Vec<ErlNifTerm>,
    /// The bytes are a removed entry's (see [`decode_removed`]).
    removed: bool,
}

impl Decoder<'_> {
    /// Returns the stack to the thread's pool.
    fn release(self) {
        if self.stack.capacity() > 0 && self.stack.capacity() <= 1 << 16 {
            let mut v = self.stack;
            v.clear();
            TERMS.with(|c| c.set(v));
        }
    }

    /// Decodes `n` values onto the stack; returns where they start. Never
    /// trusts a count beyond what the bytes can hold.
    fn push_many(&mut self, pos: &mut usize, n: usize) -> Result<usize, DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError);
        }
        if self.stack.capacity() == 0 {
            self.stack = TERMS.with(|c| c.take());
        }
        let start = self.stack.len();
        self.stack.reserve(n);
        for _ in 0..n {
            let t = self.raw(pos)?;
            self.stack.push(t);
        }
        Ok(start)
    }

    /// Decodes one value: immediates inline (no call), anything else
    /// through [`Decoder::item`].
    #[inline(always)]
    fn raw(&mut self, pos: &mut usize) -> Result<ErlNifTerm, DecodeError> {
        let start = *pos;
        match format::read_item(self.buf, pos)? {
            Item::Word(w) | Item::Pid(w) => Ok(term_of(w)),
            Item::Int(i)
                if (MIN_SMALL..=MAX_SMALL).contains(&i)
                    && SMALL_IMMEDIATE.load(Ordering::Relaxed) =>
            {
                // The word the VM itself makes for `i` (checked in `init`).
                Ok(term_of(small_word(i)))
            }
            item => self.item(item, start, pos),
        }
    }

    /// Decodes the value whose head `item` was just read from `start` (its
    /// elements, if any, follow at `*pos`).
    #[inline(never)]
    fn item(
        &mut self,
        item: Item,
        start: usize,
        pos: &mut usize,
    ) -> Result<ErlNifTerm, DecodeError> {
        let env = self.env;
        // SAFETY: every enif call below receives the caller's live `env` and
        // terms made in it; arrays passed by pointer live for the call.
        unsafe {
            Ok(match item {
                Item::Word(w) | Item::Pid(w) => term_of(w),
                Item::Int(i) => enif_make_int64(env, i),
                Item::Float(f) => enif_make_double(env, f),
                Item::Binary(_) if self.buf[start] == tag::BLOB => {
                    // An out-of-line binary: shared, not copied. The handle
                    // is live: `buf` is the object of an entry that owns a
                    // reference to it, read under the table's lock.
                    let h = format::blob_at(self.buf, start).ok_or(DecodeError)?;
                    let shared = if self.removed && !crate::blob::has_resource(h) {
                        None
                    } else {
                        crate::blob::term(env, h)
                    };
                    match shared {
                        Some(t) => t,
                        None => {
                            // No resource: a copy, as for inline bytes.
                            let bytes = crate::blob::bytes(h);
                            let mut t: ErlNifTerm = ErlNifTerm::default();
                            let p = enif_make_new_binary(env, bytes.len(), &mut t);
                            if p.is_null() {
                                return Err(DecodeError);
                            }
                            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
                            t
                        }
                    }
                }
                Item::Binary(bytes) => {
                    let mut t: ErlNifTerm = ErlNifTerm::default();
                    let p = enif_make_new_binary(env, bytes.len(), &mut t);
                    if bytes.is_empty() {
                        t
                    } else if p.is_null() {
                        return Err(DecodeError);
                    } else {
                        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
                        t
                    }
                }
                Item::Ext(bytes) => ext_to_term(env, bytes)?,
                Item::BigInt(neg, mag) => {
                    let mut b = Vec::with_capacity(mag.len() + 8);
                    b.push(131);
                    if mag.len() < 256 {
                        b.extend_from_slice(&[110, mag.len() as u8]);
                    } else {
                        b.push(111);
                        b.extend_from_slice(&(mag.len() as u32).to_be_bytes());
                    }
                    b.push(u8::from(neg));
                    b.extend_from_slice(mag);
                    ext_to_term(env, &b)?
                }
                Item::Nil if TAGGED_WORDS.load(Ordering::Relaxed) => {
                    term_of(NIL_WORD.load(Ordering::Relaxed))
                }
                Item::Nil => enif_make_list_from_array(env, std::ptr::null(), 0),
                Item::Tuple(n) if n <= 8 => {
                    let mut arr = [ErlNifTerm::default(); 8];
                    for slot in arr.iter_mut().take(n) {
                        *slot = self.raw(pos)?;
                    }
                    enif_make_tuple_from_array(env, arr.as_ptr(), n as c_uint)
                }
                Item::Tuple(n) => {
                    let start = self.push_many(pos, n)?;
                    let els = &self.stack[start..];
                    let t = enif_make_tuple_from_array(env, els.as_ptr(), els.len() as c_uint);
                    self.stack.truncate(start);
                    t
                }
                Item::List(n) => {
                    let start = self.push_many(pos, n)?;
                    let mut p2 = *pos;
                    let t = if let Ok(Item::Nil) = format::read_item(self.buf, &mut p2) {
                        *pos = p2;
                        let els = &self.stack[start..];
                        enif_make_list_from_array(env, els.as_ptr(), els.len() as c_uint)
                    } else {
                        let mut acc = self.raw(pos)?;
                        for h in self.stack[start..].iter().rev() {
                            acc = enif_make_list_cell(env, *h, acc);
                        }
                        acc
                    };
                    self.stack.truncate(start);
                    t
                }
                Item::Map(n) if n <= 16 => {
                    let mut ks = [ErlNifTerm::default(); 16];
                    let mut vs = [ErlNifTerm::default(); 16];
                    for i in 0..n {
                        ks[i] = self.raw(pos)?;
                        vs[i] = self.raw(pos)?;
                    }
                    let mut m = ErlNifTerm::default();
                    if enif_make_map_from_arrays(env, ks.as_ptr(), vs.as_ptr(), n, &mut m) == 0 {
                        return Err(DecodeError);
                    }
                    m
                }
                Item::Map(n) => {
                    // Keys and values alternate on the stack; split them.
                    let start = self.push_many(pos, n.checked_mul(2).ok_or(DecodeError)?)?;
                    let pairs = &self.stack[start..];
                    let ks: Vec<ErlNifTerm> = pairs.iter().step_by(2).copied().collect();
                    let vs: Vec<ErlNifTerm> = pairs.iter().skip(1).step_by(2).copied().collect();
                    self.stack.truncate(start);
                    let mut m: ErlNifTerm = ErlNifTerm::default();
                    if enif_make_map_from_arrays(env, ks.as_ptr(), vs.as_ptr(), n, &mut m) == 0 {
                        return Err(DecodeError);
                    }
                    m
                }
            })
        }
    }
}

fn ext_to_term(env: *mut ErlNifEnv, bytes: &[u8]) -> Result<ErlNifTerm, DecodeError> {
    let mut t: ErlNifTerm = ErlNifTerm::default();
    // SAFETY: `bytes` is a live slice; `t` is a live out-pointer.
    let used = unsafe { enif_binary_to_term(env, bytes.as_ptr(), bytes.len(), &mut t, 0) };
    if used == 0 {
        Err(DecodeError)
    } else {
        Ok(t)
    }
}
