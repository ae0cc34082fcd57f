//! NIFs of `NativeStore.Table`: argument checks, term conversion, and calls
//! into the engine's set table. Errors are `badarg`, as in ETS.

use crate::atoms;
use crate::blob;
use crate::codec::{
    self, caller, decode, encode_key_bytes, encode_value, proper_list, word_of, word_term, Encoder,
    KeyBytes, Scratch, TupleTerms,
};
use native_store_engine::bag::{BagTable, Objects};
use native_store_engine::entry::{Entry, EntryBuf, EntryImage};
use native_store_engine::fixation::Released;
use native_store_engine::format::{self, tag};
use native_store_engine::map_merge;
use native_store_engine::meta::{Access, Heir, Meta, OwnerExit};
use native_store_engine::order::{self, Host};
use native_store_engine::ordered::{Next, OrderedTable};
use native_store_engine::prefilter::{self, Cmp, Filter};
use native_store_engine::reclaim::drop_later;
use native_store_engine::set::{Change, Key, SetTable, Slot, CHUNK_BYTES};
use native_store_engine::tuple_ops::{self, CounterOp};
use parking_lot::{Mutex, RwLock};
use rustler::types::tuple::make_tuple;
use rustler::{Atom, Encoder as _, Env, Error, LocalPid, NifResult, Term};
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::AtomicPtr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A table: engine data, ownership rules, and what `info/1` reports.
pub struct TableRes {
    id: u64,
    /// The name atom's word (changed by `rename/2`).
    name: AtomicU64,
    named: bool,
    meta: Meta,
    data: Data,
    /// `{read_concurrency, write_concurrency, decentralized_counters,
    /// compressed}` as given, as atom words (reported by `info/1`).
    flags: [u64; 4],
    /// Pids this table's resource monitors (owner, heirs, former owners,
    /// fixers): each is monitored once, however often it becomes owner or
    /// heir.
    monitored: Mutex<Vec<u64>>,
    /// Who fixed the table with `safe_fixtable/2`.
    fixations: Mutex<Fixations>,
}

/// The `safe_fixtable/2` state of a table.
#[derive(Default)]
struct Fixations {
    /// `erlang:monotonic_time()` when the table became fixed.
    since: i64,
    /// Fixing processes (pid words) and how many times each fixed the
    /// table, in the order they first did.
    procs: Vec<(u64, u64)>,
}

/// The engine table behind a [`TableRes`], by table type.
pub enum Data {
    /// `set`: the sharded hash table.
    Set(SetTable),
    /// `ordered_set`: the B-tree in term order.
    Ordered(OrderedTable),
    /// `bag` or `duplicate_bag`.
    Bag(BagTable),
}

impl Data {
    /// The housekeeping an unfix left (see `SetTable::tidy_all`).
    fn tidy_all(&self) {
        match self {
            Data::Set(s) => s.tidy_all(),
            Data::Bag(b) => b.tidy_all(),
            Data::Ordered(_) => {}
        }
    }

    /// Fixes or unfixes a hash table (see `SetTable::set_fixed`); an
    /// `ordered_set` needs nothing: its walks go on from any key.
    fn set_fixed(&self, fixed: bool) -> Released {
        match self {
            Data::Set(s) => s.set_fixed(fixed),
            Data::Bag(b) => b.set_fixed(fixed),
            Data::Ordered(_) => Released::default(),
        }
    }

    /// The table of type `kind` (an atom of `:ets.new/2`'s types); an
    /// `ordered_set` with `write_concurrency` splits the key ranges its
    /// writers contend for.
    fn new(kind: Atom, write_concurrency: bool) -> NifResult<Self> {
        Ok(if kind == atoms::set() {
            Data::Set(SetTable::new())
        } else if kind == atoms::ordered_set() {
            Data::Ordered(OrderedTable::with_concurrency(write_concurrency))
        } else if kind == atoms::bag() {
            Data::Bag(BagTable::new(false, codec::zero_eq()))
        } else if kind == atoms::duplicate_bag() {
            Data::Bag(BagTable::new(true, codec::zero_eq()))
        } else {
            return Err(Error::BadArg);
        })
    }

    /// Takes every object out; dropping the result frees them.
    fn take_all(&self) -> Box<dyn Send> {
        self.take_all_counted().0
    }

    /// [`Data::take_all`], with the number of allocations taken (entries;
    /// a bag's keys, whose objects share a bucket): what freeing them
    /// costs, about.
    fn take_all_counted(&self) -> (Box<dyn Send>, usize) {
        match self {
            Data::Set(s) => {
                let c = s.take_all();
                let n = c.len();
                (Box::new(c), n)
            }
            Data::Ordered(o) => {
                let c = o.take_all();
                let n = c.len();
                (Box::new(c), n)
            }
            Data::Bag(b) => {
                let c = b.take_all();
                let n = c.keys();
                (Box::new(c), n)
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Data::Set(s) => s.len(),
            Data::Ordered(o) => o.len(),
            Data::Bag(b) => b.len(),
        }
    }

    fn memory_bytes(&self) -> usize {
        match self {
            Data::Set(s) => s.memory_bytes(),
            Data::Ordered(o) => o.memory_bytes(),
            Data::Bag(b) => b.memory_bytes(),
        }
    }

    fn type_atom(&self) -> Atom {
        match self {
            Data::Set(_) => atoms::set(),
            Data::Ordered(_) => atoms::ordered_set(),
            Data::Bag(b) if b.is_duplicate() => atoms::duplicate_bag(),
            Data::Bag(_) => atoms::bag(),
        }
    }
}

/// Runs `f` on the canonical bytes of a key (inline keys are written out
/// on the stack).
#[inline]
fn with_key<R>(kb: &KeyBytes, f: impl FnOnce(&[u8]) -> R) -> R {
    match kb {
        KeyBytes::Inline(t, w) => {
            let mut b = [0u8; 9];
            b[0] = *t as u8;
            b[1..].copy_from_slice(&w.to_le_bytes());
            f(&b)
        }
        KeyBytes::Small(b, n) => f(&b[..*n as usize]),
        KeyBytes::Pooled(s) => f(s),
    }
}

/// Atomic read-modify-write of the object under a key of a table with at
/// most one object per key; `badarg` for bags (as ETS's `update_counter`
/// and `update_element`).
#[inline]
fn update_keyed<R>(
    data: &Data,
    kb: &KeyBytes,
    f: impl FnOnce(Option<&mut Entry>) -> (Change, R),
) -> NifResult<R> {
    match data {
        Data::Set(s) => Ok(s.update_mut(&kb.key(), f)),
        Data::Ordered(o) => Ok(with_key(kb, |k| o.update_mut(k, f))),
        Data::Bag(_) => Err(Error::BadArg),
    }
}

/// Term order for the engine: atoms and pids through `enif_compare` on
/// their immediate words; whole values decoded into a process-independent
/// environment of the calling thread and compared there.
fn install_term_order() {
    fn cmp_words(a: u64, b: u64) -> std::cmp::Ordering {
        // SAFETY: the words are immediates (atoms, local pids) that were
        // valid terms; comparing them reads nothing else.
        let c = unsafe { rustler::sys::enif_compare(codec::term_of(a), codec::term_of(b)) };
        c.cmp(&0)
    }
    fn cmp_values(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
        thread_local! {
            static ENV: std::cell::RefCell<Option<rustler::OwnedEnv>> =
                const { std::cell::RefCell::new(None) };
        }
        ENV.with(|cell| {
            let Ok(mut slot) = cell.try_borrow_mut() else {
                return a.cmp(b);
            };
            let env = slot.get_or_insert_with(rustler::OwnedEnv::new);
            let o = env.run(|env| match (decode(env, a), decode(env, b)) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => a.cmp(b),
            });
            env.clear();
            o
        })
    }
    fn atom_text(w: u64, buf: &mut [u8; 256]) -> Option<usize> {
        thread_local! {
            static ATOM_ENV: rustler::OwnedEnv = rustler::OwnedEnv::new();
        }
        ATOM_ENV.with(|owned| {
            owned.run(|env| {
                // SAFETY: `w` is an atom word that was a valid term; the
                // buffer holds 256 bytes, enough for any Latin-1 atom text
                // and its terminating NUL (atoms have at most 255
                // characters). Latin-1 text orders atoms as the VM does
                // (character by character); other atoms give `None`.
                let n = unsafe {
                    rustler::sys::enif_get_atom(
                        env.as_c_arg(),
                        codec::term_of(w),
                        buf.as_mut_ptr().cast(),
                        256,
                        rustler::sys::ErlNifCharEncoding::ERL_NIF_LATIN1,
                    )
                };
                (n > 0).then(|| n as usize - 1)
            })
        })
    }
    order::install(Host {
        cmp_words,
        cmp_values,
        atom_text,
    });
}

/// The VM resource type of tables, opened at load.
///
/// Tables are resources of a type this module registers itself (not through
/// rustler's `ResourceArc`), so that recognising a table argument is one
/// `enif_get_resource` with a known type pointer: rustler looks the type up
/// in a SipHash map on every call (about 9 ns, a sixth of a `member/2`).
static TABLE_TYPE: AtomicPtr<rustler::sys::ErlNifResourceType> =
    AtomicPtr::new(std::ptr::null_mut());

/// Resource data is at least 8-byte aligned; `TableRes` must not need more.
const _: () = assert!(std::mem::align_of::<TableRes>() <= 8);

/// Opens the table resource type; false on failure (the load then fails).
fn open_table_type(env: Env) -> bool {
    use rustler::sys::{ErlNifResourceDown, ErlNifResourceDtor, ErlNifResourceFlags};
    let init = rustler::sys::ErlNifResourceTypeInit {
        dtor: table_dtor as *const ErlNifResourceDtor,
        stop: std::ptr::null(),
        down: table_down as *const ErlNifResourceDown,
        members: 3,
        dyncall: std::ptr::null(),
    };
    // Loaded again (the module was purged and reloaded while the library
    // stayed mapped): try to take over the existing type, so that tables
    // created before stay recognisable; else open a fresh one.
    let open = |flags: ErlNifResourceFlags| {
        let mut tried = ErlNifResourceFlags::ERL_NIF_RT_CREATE;
        // SAFETY: called from the load callback with its environment; the
        // name is NUL-terminated and `init` and `tried` outlive the call
        // (the VM copies `init`).
        unsafe {
            rustler::sys::enif_init_resource_type(
                env.as_c_arg(),
                c"NativeStore.Table".as_ptr(),
                &init,
                flags,
                &mut tried,
            )
        }
    };
    let mut ty = std::ptr::null();
    if !TABLE_TYPE.load(Ordering::Acquire).is_null() {
        ty = open(ErlNifResourceFlags::ERL_NIF_RT_TAKEOVER);
    }
    if ty.is_null() {
        ty = open(ErlNifResourceFlags::ERL_NIF_RT_CREATE);
    }
    TABLE_TYPE.store(ty as *mut _, Ordering::Release);
    !ty.is_null()
}

/// Destructor: the VM frees the last reference to a table resource.
unsafe extern "C" fn table_dtor(_env: *mut rustler::sys::ErlNifEnv, obj: *mut std::ffi::c_void) {
    // SAFETY: `obj` is the data of a table resource, initialised by
    // `TableArc::new` and never used again after this call.
    let _ = std::panic::catch_unwind(|| unsafe { std::ptr::drop_in_place(obj as *mut TableRes) });
}

/// Down callback: a monitored process (owner or heir) exited.
unsafe extern "C" fn table_down(
    env: *mut rustler::sys::ErlNifEnv,
    obj: *mut std::ffi::c_void,
    pid: *const rustler::sys::ErlNifPid,
    _mon: *const rustler::sys::ErlNifMonitor,
) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: the VM passes a live callback environment, the data of a
        // live table resource (initialised by `TableArc::new`) and a pid.
        let (env, t, pid) = unsafe {
            (
                Env::new(&env, env),
                &*(obj as *const TableRes),
                LocalPid::from_c_arg(*pid),
            )
        };
        t.down(env, pid);
    });
}

/// A counted reference to a table resource (like rustler's `ResourceArc`).
pub struct TableArc(NonNull<TableRes>);

// SAFETY: `TableRes` is `Send + Sync`, and the VM's resource reference
// counts are thread-safe.
unsafe impl Send for TableArc {}
// SAFETY: as above.
unsafe impl Sync for TableArc {}

impl TableArc {
    /// Allocates a table resource holding `t`.
    fn new(t: TableRes) -> NifResult<Self> {
        let ty = TABLE_TYPE.load(Ordering::Acquire);
        if ty.is_null() {
            return Err(Error::BadArg);
        }
        // SAFETY: `ty` is our opened resource type; the new resource's one
        // reference is owned by the returned handle. Resource data is 8-byte
        // aligned (checked below, as `TableRes` needs at most that) and big
        // enough for a `TableRes`, which is written before any use.
        unsafe {
            let p = rustler::sys::enif_alloc_resource(ty, std::mem::size_of::<TableRes>());
            let p = NonNull::new(p as *mut TableRes).ok_or(Error::BadArg)?;
            assert!(p.as_ptr().is_aligned(), "resource data misaligned");
            p.as_ptr().write(t);
            Ok(TableArc(p))
        }
    }

    /// A new reference to the table `t` (which lives in a table resource).
    fn from_ref(t: &TableRes) -> Self {
        let p = NonNull::from(t);
        // SAFETY: every `TableRes` lives in a table resource (only
        // `TableArc::new` makes them), which `t` keeps alive meanwhile.
        unsafe { rustler::sys::enif_keep_resource(p.as_ptr() as *const _) };
        TableArc(p)
    }

    /// The table a term refers to, if it is a table resource term.
    #[inline]
    fn get<'a>(term: Term<'a>) -> Option<&'a TableRes> {
        let ty = TABLE_TYPE.load(Ordering::Relaxed);
        let mut obj: *const std::ffi::c_void = std::ptr::null();
        // SAFETY: `term` is a valid term of its environment; `obj` is a live
        // out-pointer. On success it points at the data of a table resource,
        // which the term (alive for 'a) keeps alive.
        unsafe {
            if rustler::sys::enif_get_resource(
                term.get_env().as_c_arg(),
                term.as_c_arg(),
                ty,
                &mut obj,
            ) == 0
            {
                return None;
            }
            Some(&*(obj as *const TableRes))
        }
    }
}

impl Clone for TableArc {
    fn clone(&self) -> Self {
        TableArc::from_ref(self)
    }
}

impl Drop for TableArc {
    fn drop(&mut self) {
        // SAFETY: this handle owns one reference to the resource.
        unsafe { rustler::sys::enif_release_resource(self.0.as_ptr() as *const _) };
    }
}

impl std::ops::Deref for TableArc {
    type Target = TableRes;
    fn deref(&self) -> &TableRes {
        // SAFETY: the resource is alive while this handle holds a reference.
        unsafe { self.0.as_ref() }
    }
}

impl rustler::Encoder for TableArc {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        // SAFETY: a live resource; the new term is valid in `env`.
        unsafe {
            Term::new(
                env,
                rustler::sys::enif_make_resource(env.as_c_arg(), self.0.as_ptr() as *const _),
            )
        }
    }
}

impl TableRes {
    /// Monitors `pid` unless it already is; false if it is not alive.
    fn monitor_once(&self, env: Env, pid: &LocalPid) -> bool {
        let word = word_of(pid.encode(env).as_c_arg());
        let mut m = self.monitored.lock();
        if m.contains(&word) {
            return true;
        }
        let alive = monitor_from(env, self, pid);
        if alive {
            m.push(word);
        }
        alive
    }

    fn down(&self, env: Env, pid: LocalPid) {
        let word = word_of(pid.encode(env).as_c_arg());
        self.monitored.lock().retain(|w| *w != word);
        // A process's fixations end with it, as in ETS (what the unfix
        // leaves is done by the shards' next writes).
        self.unfix(word, u64::MAX);
        match self.meta.owner_exited(word) {
            OwnerExit::NotOwner => self.meta.heir_exited(word),
            OwnerExit::Delete => delete_table(self),
            OwnerExit::Inherited(heir) => {
                let Some(res) = catalog().read().by_id.get(&self.id).cloned() else {
                    return;
                };
                let data =
                    decode(env, &heir.data).unwrap_or_else(|_| atoms::undefined().encode(env));
                let msg = make_tuple(
                    env,
                    &[
                        atoms::ets_transfer().encode(env),
                        res.encode(env),
                        pid.encode(env),
                        data,
                    ],
                );
                let Ok(to) = word_term(env, heir.pid).decode::<LocalPid>() else {
                    return delete_table(self);
                };
                // An heir that died before its `down` was handled cannot
                // take the table: delete it, as ETS does.
                if env.send(&to, msg).is_err() {
                    delete_table(self);
                }
            }
        }
    }
}

impl TableRes {
    /// Adds one fixation by `pid` (a word) at monotonic time `now`.
    fn fix(&self, pid: u64, now: i64) {
        let mut f = self.fixations.lock();
        // Deleted meanwhile: `delete_table` has released the fixations
        // (under this lock) and nothing may fix the table again.
        if self.meta.is_deleted() {
            return;
        }
        if f.procs.is_empty() {
            f.since = now;
            self.data.set_fixed(true);
        }
        match f.procs.iter_mut().find(|p| p.0 == pid) {
            Some(p) => p.1 += 1,
            None => f.procs.push((pid, 1)),
        }
    }

    /// Removes up to `n` fixations by `pid`; the table is unfixed when none
    /// is left (what the fixation kept is freed off the scheduler). Returns
    /// true when the unfix left housekeeping to the shards' next writes
    /// (see `SegMap::tidy`), which the caller may do at once off the
    /// schedulers (`table_tidy`).
    fn unfix(&self, pid: u64, n: u64) -> bool {
        let mut f = self.fixations.lock();
        let Some(i) = f.procs.iter().position(|p| p.0 == pid) else {
            return false;
        };
        f.procs[i].1 = f.procs[i].1.saturating_sub(n);
        if f.procs[i].1 == 0 {
            f.procs.remove(i);
            if f.procs.is_empty() {
                let released = self.data.set_fixed(false);
                let untidy = released.untidy();
                if !released.is_empty() {
                    drop_later(released);
                }
                return untidy;
            }
        }
        false
    }
}

/// Every live table, by id and by name.
#[derive(Default)]
struct Catalog {
    by_id: HashMap<u64, TableArc>,
    by_name: HashMap<u64, TableArc>,
}

fn catalog() -> &'static RwLock<Catalog> {
    static CATALOG: OnceLock<RwLock<Catalog>> = OnceLock::new();
    CATALOG.get_or_init(Default::default)
}

/// Serialises table creation so the name check and the insert are atomic.
static CREATE: Mutex<()> = Mutex::new(());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn delete_table(t: &TableRes) {
    if !t.meta.mark_deleted() {
        return;
    }
    let removed = {
        let mut cat = catalog_write();
        if t.named {
            cat.by_name.remove(&t.name.load(Ordering::Acquire));
        }
        cat.by_id.remove(&t.id)
    };
    // Fixations end with the table (or its shards would keep what it held
    // until every fixer exits: a deleted table cannot be unfixed). Its
    // contents are taken out first, so that unfixing tidies nothing.
    let (contents, kept) = {
        let mut f = t.fixations.lock();
        f.procs.clear();
        let contents = t.data.take_all();
        (contents, t.data.set_fixed(false))
    };
    // Freeing a big table takes time: do it off the scheduler. The resource
    // handle itself is released there too (it may be the last one).
    drop_later((kept, contents, removed));
}

/// A table argument: a resource term, or the name of a named table.
enum Tab<'a> {
    Ref(&'a TableRes),
    /// A named table, from this thread's [`NameCache`]: the guard keeps the
    /// cache's reference to it alive while the `Tab` lives.
    Cached(NonNull<TableRes>, CacheGuard),
}

impl std::ops::Deref for Tab<'_> {
    type Target = TableRes;
    fn deref(&self) -> &TableRes {
        match self {
            Tab::Ref(r) => r,
            // SAFETY: the cache entry holding a counted reference to this
            // resource is not released while the guard lives (see
            // `NameCache::graveyard`).
            Tab::Cached(p, _) => unsafe { p.as_ref() },
        }
    }
}

/// Bumped (under the catalog's write lock) whenever the catalog changes, so
/// threads can trust their cached name resolutions with a plain load
/// instead of taking the catalog's lock and a resource reference (two
/// atomic read-modify-writes on shared cache lines per call).
static CATALOG_GEN: AtomicU64 = AtomicU64::new(0);

/// The catalog, for a change (bumps [`CATALOG_GEN`]).
fn catalog_write() -> parking_lot::RwLockWriteGuard<'static, Catalog> {
    let cat = catalog().write();
    CATALOG_GEN.fetch_add(1, Ordering::Release);
    cat
}

/// This scheduler thread's resolutions of table names.
#[derive(Default)]
struct NameCache {
    /// `(name word, catalog generation, table)`.
    entries: Vec<(u64, u64, TableArc)>,
    /// Replaced entries, released once no `Tab` of this thread uses the
    /// cache (a NIF call may still hold a reference from an entry that a
    /// later resolution in the same call replaced).
    graveyard: Vec<TableArc>,
    /// Live `Tab::Cached` of this thread.
    in_use: usize,
}

thread_local! {
    static NAMES: std::cell::RefCell<NameCache> = std::cell::RefCell::new(NameCache::default());
}

/// Marks a `Tab::Cached` as live (see [`NameCache::in_use`]).
struct CacheGuard;

impl Drop for CacheGuard {
    fn drop(&mut self) {
        let dead = NAMES.with(|c| {
            let Ok(mut c) = c.try_borrow_mut() else {
                return Vec::new();
            };
            c.in_use -= 1;
            if c.in_use == 0 {
                std::mem::take(&mut c.graveyard)
            } else {
                Vec::new()
            }
        });
        // Released outside the borrow (a release may run a destructor).
        drop(dead);
    }
}

/// The table named by the atom word `name`, through this thread's cache.
fn lookup_named<'a>(name: u64) -> Option<Tab<'a>> {
    let gen = CATALOG_GEN.load(Ordering::Acquire);
    NAMES.with(|cell| {
        let mut c = cell.try_borrow_mut().ok()?;
        let hit = c
            .entries
            .iter()
            .find(|(n, g, _)| *n == name && *g == gen)
            .map(|(_, _, t)| t.0);
        let p = match hit {
            Some(p) => p,
            None => {
                let (gen, found) = {
                    let cat = catalog().read();
                    // Writers bump the generation under the write lock: this
                    // one matches the catalog read here.
                    let gen = CATALOG_GEN.load(Ordering::Acquire);
                    (gen, cat.by_name.get(&name).cloned())
                };
                let c = &mut *c;
                // Entries of older generations go to the graveyard.
                let mut i = 0;
                while i < c.entries.len() {
                    if c.entries[i].1 != gen {
                        let (_, _, t) = c.entries.swap_remove(i);
                        c.graveyard.push(t);
                    } else {
                        i += 1;
                    }
                }
                let t = found?;
                let p = t.0;
                if c.entries.len() >= 8 {
                    let (_, _, old) = c.entries.swap_remove(0);
                    c.graveyard.push(old);
                }
                c.entries.push((name, gen, t));
                p
            }
        };
        c.in_use += 1;
        Some(Tab::Cached(p, CacheGuard))
    })
}

fn lookup_table<'a>(term: Term<'a>) -> Option<Tab<'a>> {
    if let Some(r) = TableArc::get(term) {
        return (!r.meta.is_deleted()).then_some(Tab::Ref(r));
    }
    if term.is_atom() {
        return lookup_named(word_of(term.as_c_arg()));
    }
    None
}

/// The table `term` names, if the caller may read it. The caller's pid is
/// looked up only for private tables.
#[inline]
fn readable<'a>(env: Env, term: Term<'a>) -> NifResult<Tab<'a>> {
    match lookup_table(term) {
        Some(t) if t.meta.can_read_by(|| caller(env)) => Ok(t),
        _ => Err(Error::BadArg),
    }
}

/// The table `term` names, if the caller may write it. The caller's pid is
/// looked up only for protected and private tables.
#[inline]
fn writable<'a>(env: Env, term: Term<'a>) -> NifResult<Tab<'a>> {
    match lookup_table(term) {
        Some(t) if t.meta.can_write_by(|| caller(env)) => Ok(t),
        _ => Err(Error::BadArg),
    }
}

#[inline]
fn key_bytes(env: Env, key: Term) -> NifResult<KeyBytes> {
    encode_key_bytes(env, key).map_err(|_| Error::BadArg)
}

/// Encodes `obj` (a tuple with at least `keypos` elements) as an entry,
/// optionally replacing its key element by `key`. Binaries stay inline.
fn encode_object<'a>(
    env: Env<'a>,
    obj: Term<'a>,
    keypos: usize,
    key: Option<Term<'a>>,
) -> NifResult<Entry> {
    with_encoded_object(env, obj, keypos, key, false, |img| img.to_entry())
}

/// Encodes `obj` as an entry to store in a table of type `data`: for a
/// set or an ordered set, large binary elements outside the key go out of
/// line (see [`crate::blob`]); bags keep every byte inline (their buckets
/// are byte buffers, not entries).
fn encode_stored<'a>(env: Env<'a>, obj: Term<'a>, keypos: usize, data: &Data) -> NifResult<Entry> {
    let blobs = !matches!(data, Data::Bag(_));
    with_encoded_object(env, obj, keypos, None, blobs, |img| img.to_entry())
}

/// Encodes `obj` like [`encode_object`] into a pooled buffer and passes
/// the entry image to `f` (which may store it without a new allocation).
/// With `blobs`, binaries of at least `blob::MIN_BYTES` bytes that are
/// top-level elements other than the key are made blobs: the image then
/// refers to them, and their creation references are released when this
/// returns (after `f`, whose stored entry keeps its own).
fn with_encoded_object<'a, R>(
    env: Env<'a>,
    obj: Term<'a>,
    keypos: usize,
    key: Option<Term<'a>>,
    blobs: bool,
    f: impl FnOnce(&EntryImage) -> R,
) -> NifResult<R> {
    let elems = TupleTerms::of(obj).ok_or(Error::BadArg)?;
    if elems.len() < keypos {
        return Err(Error::BadArg);
    }
    OBJECT_BUF.with(|cell| {
        // This thread's object buffer (a pooled one if it is in use): one
        // thread-local access, where taking and returning a pooled buffer
        // cost two and their bookkeeping.
        let mut own = cell.try_borrow_mut().ok();
        let out = match own.as_deref_mut() {
            Some(v) => std::mem::take(v),
            None => Scratch::take().into_vec(),
        };
        let mut buf = EntryBuf::with_buffer(out);
        let r = encode_into(env, &elems, keypos, key, blobs, &mut buf, f);
        let out = buf.into_buffer();
        match own {
            Some(mut v) if out.capacity() <= OBJECT_BUF_MAX => *v = out,
            Some(_) => {}
            None => Scratch::restore(out),
        }
        r
    })
}

thread_local! {
    /// The buffer [`with_encoded_object`] encodes into on this thread.
    static OBJECT_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Largest capacity [`OBJECT_BUF`] keeps between calls (bytes).
const OBJECT_BUF_MAX: usize = 1 << 16;

/// The body of [`with_encoded_object`], encoding into `buf`.
fn encode_into<'a, R>(
    env: Env<'a>,
    elems: &TupleTerms<'a>,
    keypos: usize,
    key: Option<Term<'a>>,
    blobs: bool,
    buf: &mut EntryBuf,
    f: impl FnOnce(&EntryImage) -> R,
) -> NifResult<R> {
    // Creation references of the blobs made: released on every return,
    // after `f` (whose stored entry keeps its own).
    let mut made: Option<blob::NewBlobs> = None;
    let (range, canonical) = {
        let mut enc = Encoder::new(env, &mut buf.out, false);
        let mut range = 0..0;
        let mut dirty = false;
        format::put_header(enc_out(&mut enc), tag::TUPLE, elems.len());
        for (i, e) in elems.iter().enumerate() {
            let start = enc.len();
            let e = if i + 1 == keypos { key.unwrap_or(e) } else { e };
            if blobs
                && i + 1 != keypos
                && codec::maybe_binary(e)
                && put_blob(env, e, &mut made, enc_out(&mut enc))
            {
                continue;
            }
            enc.noncanonical = false;
            enc.track = i + 1 == keypos;
            enc.term(e, 0).map_err(|_| Error::BadArg)?;
            if i + 1 == keypos {
                range = start..enc.len();
                dirty = enc.noncanonical;
            }
        }
        let canonical = if dirty {
            Some(
                codec::encode_key(env, key.or(elems.get(keypos - 1)).ok_or(Error::BadArg)?)
                    .map_err(|_| Error::BadArg)?,
            )
        } else {
            None
        };
        (range, canonical)
    };
    let canonical_len = canonical.as_ref().map_or(0, |c| c.len());
    if !fits_entry(buf.out.len() + canonical_len) {
        return Err(Error::BadArg);
    }
    if made.is_some() {
        buf.mark_blobs();
    }
    Ok(f(
        &buf.seal(range, canonical.as_deref().map(|c| c.as_slice()))
    ))
}

/// Writes `e` as a blob when it is a binary of at least `blob::MIN_BYTES`
/// bytes (adopting its creation reference in `made`); false otherwise
/// (nothing written).
#[cold]
#[inline(never)]
fn put_blob<'a>(
    env: Env<'a>,
    e: Term<'a>,
    made: &mut Option<blob::NewBlobs>,
    out: &mut Vec<u8>,
) -> bool {
    match codec::large_binary(env, e, blob::MIN_BYTES).and_then(blob::make) {
        Some(h) => {
            made.get_or_insert_with(Default::default).push(h);
            format::put_blob(out, h);
            true
        }
        None => false,
    }
}

/// The largest stored entry, in bytes: entries and bag buckets record
/// offsets and lengths in 32 bits (a key length's top bit is a flag), so
/// an object whose encoding is 2 GiB or more is refused with `badarg`.
const MAX_ENTRY: usize = i32::MAX as usize;

/// True when an entry of `len` bytes can be stored (see [`MAX_ENTRY`]).
#[inline]
fn fits_entry(len: usize) -> bool {
    len <= MAX_ENTRY
}

/// Access to an encoder's buffer for container headers.
fn enc_out<'b>(enc: &'b mut Encoder<'_>) -> &'b mut Vec<u8> {
    enc.buffer()
}

fn decode_entry<'a>(env: Env<'a>, e: &Entry) -> NifResult<Term<'a>> {
    decode(env, e.object()).map_err(|_| Error::BadArg)
}

/// Objects of an `insert` argument: one tuple or a proper list of tuples,
/// encoded to be stored in `data` (see [`encode_stored`]).
fn encode_objects<'a>(
    env: Env<'a>,
    arg: Term<'a>,
    keypos: usize,
    data: &Data,
) -> NifResult<Vec<Entry>> {
    if arg.is_tuple() {
        return Ok(vec![encode_stored(env, arg, keypos, data)?]);
    }
    let all = encode_list_while(env, arg, keypos, data, &|| true)?;
    Ok(all.expect("go() always says yes"))
}

/// [`encode_objects`] of a list, asking `go()` every [`GO_EVERY`]
/// objects: `None` (and nothing more encoded) once it says no, so that a
/// dirty insert whose caller was killed stops early.
fn encode_list_while<'a>(
    env: Env<'a>,
    arg: Term<'a>,
    keypos: usize,
    data: &Data,
    go: &impl Fn() -> bool,
) -> NifResult<Option<Vec<Entry>>> {
    let list = proper_list(arg)?;
    let mut entries = Vec::with_capacity(list.len());
    for (i, o) in list.into_iter().enumerate() {
        if i % GO_EVERY == GO_EVERY - 1 && !go() {
            return Ok(None);
        }
        entries.push(encode_stored(env, o, keypos, data)?);
    }
    Ok(Some(entries))
}

/// Objects a list insert encodes between two checks that it may go on.
const GO_EVERY: usize = 4096;

fn pid_word(t: Term) -> Option<u64> {
    t.decode::<LocalPid>().ok().map(|_| word_of(t.as_c_arg()))
}

#[rustler::nif]
#[allow(clippy::too_many_arguments)]
fn table_new<'a>(
    env: Env<'a>,
    name: Atom,
    named: bool,
    access: Atom,
    keypos: usize,
    heir: Term<'a>,
    heir_data: Term<'a>,
    flags: (Atom, Atom, Atom, Atom),
    kind: Atom,
) -> NifResult<Term<'a>> {
    // (`write_concurrency` is `true`, `false` or `auto`.)
    let data = Data::new(kind, flags.1 != rustler::types::atom::false_())?;
    let access = access_of(access)?;
    if keypos < 1 {
        return Err(Error::BadArg);
    }
    let heir = if heir.is_atom() {
        None
    } else {
        let pid = pid_word(heir).ok_or(Error::BadArg)?;
        let data = encode_value(env, heir_data).map_err(|_| Error::BadArg)?;
        Some(Heir { pid, data })
    };
    let owner = env.pid();
    let owner_word = caller(env);
    let name_word = word_of(name.as_c_arg());
    let _guard = CREATE.lock();
    if named && catalog().read().by_name.contains_key(&name_word) {
        return Err(Error::BadArg);
    }
    let heir_pid = heir.as_ref().map(|h| h.pid);
    let res = TableArc::new(TableRes {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        name: AtomicU64::new(name_word),
        named,
        meta: Meta::new(owner_word, access, keypos, heir),
        data,
        flags: [
            word_of(flags.0.as_c_arg()),
            word_of(flags.1.as_c_arg()),
            word_of(flags.2.as_c_arg()),
            word_of(flags.3.as_c_arg()),
        ],
        monitored: Mutex::new(Vec::new()),
        fixations: Mutex::default(),
    })?;
    // The owner is alive: it is calling us.
    res.monitor_once(env, &owner);
    if let Some(h) = heir_pid {
        monitor_heir(env, &res, h);
    }
    {
        let mut cat = catalog_write();
        cat.by_id.insert(res.id, res.clone());
        if named {
            cat.by_name.insert(name_word, res.clone());
        }
    }
    Ok(if named {
        name.encode(env)
    } else {
        res.encode(env)
    })
}

/// Monitors an heir so that its death is known when the owner exits. If it
/// is already dead, the heir is marked as such and the table will be deleted
/// with its owner.
fn monitor_heir(env: Env, res: &TableArc, pid: u64) {
    let Ok(lp) = word_term(env, pid).decode::<LocalPid>() else {
        return;
    };
    if !res.monitor_once(env, &lp) {
        res.meta.set_heir(None);
    }
}

/// Registers a hot NIF directly, as `#[rustler::nif]` does but without its
/// per-call `Vec` of arguments (an allocation and a free on every call):
/// the arguments are passed as an array. Panics are caught and results and
/// errors converted exactly as rustler does (`handle_nif_result`).
macro_rules! hot_nif {
    ($name:ident, $arity:literal) => {
        rustler::codegen_runtime::inventory::submit!(rustler::Nif {
            name: concat!(stringify!($name), "\0").as_ptr()
                as *const rustler::codegen_runtime::c_char,
            arity: $arity,
            flags: 0,
            raw_func: {
                unsafe extern "C" fn nif_func(
                    env: *mut rustler::sys::ErlNifEnv,
                    argc: rustler::codegen_runtime::c_int,
                    argv: *const rustler::sys::ErlNifTerm,
                ) -> rustler::sys::ErlNifTerm {
                    // SAFETY: the VM calls this with a live environment and
                    // `argc` (the registered arity) valid terms.
                    unsafe { call_hot::<$arity>(env, argc, argv, $name) }
                }
                nif_func
            },
        });
    };
}

/// The body of a [`hot_nif!`] entry point.
///
/// # Safety
/// `env` must be the live environment of a NIF call and `argv` point at
/// `argc` valid terms of it.
#[inline(always)]
unsafe fn call_hot<const N: usize>(
    env: *mut rustler::sys::ErlNifEnv,
    argc: rustler::codegen_runtime::c_int,
    argv: *const rustler::sys::ErlNifTerm,
    f: for<'a> fn(Env<'a>, [Term<'a>; N]) -> NifResult<Term<'a>>,
) -> rustler::sys::ErlNifTerm {
    let lifetime = ();
    // SAFETY: see the function's contract.
    let env = unsafe { Env::new(&lifetime, env) };
    debug_assert_eq!(argc as usize, N);
    // SAFETY: `argv` holds `argc == N` terms of `env`.
    let args: [Term; N] = std::array::from_fn(|i| unsafe { Term::new(env, *argv.add(i)) });
    let result = std::panic::catch_unwind(move || f(env, args));
    match result {
        // The common outcomes without rustler's general return machinery.
        Ok(Ok(term)) => term.as_c_arg(),
        // SAFETY: `env` is the live environment of this call.
        Ok(Err(Error::BadArg)) => unsafe { rustler::sys::enif_make_badarg(env.as_c_arg()) },
        // SAFETY: the returned value is applied in the same environment.
        other => unsafe { rustler::codegen_runtime::handle_nif_result(other, env).apply(env) },
    }
}

hot_nif!(table_insert, 2);
fn table_insert<'a>(env: Env<'a>, [tab, objs]: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    // A process cannot be terminated inside a call on a normal scheduler.
    insert(env, tab, objs, || true)
}

/// `insert/2`: a list's objects go in only if `go()`, asked while they
/// are encoded and once every lock they need is held, says so (see
/// [`caller_alive`]).
fn insert<'a>(
    env: Env<'a>,
    tab: Term<'a>,
    objs: Term<'a>,
    go: impl Fn() -> bool,
) -> NifResult<Term<'a>> {
    let t = writable(env, tab)?;
    let keypos = t.meta.keypos();
    let list = || encode_list_while(env, objs, keypos, &t.data, &go);
    match &t.data {
        Data::Set(s) => {
            if objs.is_tuple() {
                // One object (the common case): no vector of entries.
                let replaced =
                    with_encoded_object(env, objs, keypos, None, true, |img| s.insert_image(img))?;
                drop(replaced);
            } else {
                if let Some(entries) = list()? {
                    drop(s.insert_all_if(entries, &go));
                }
            }
        }
        Data::Ordered(o) => {
            if objs.is_tuple() {
                let old = with_encoded_object(env, objs, keypos, None, true, |img| {
                    // A small object's entry is built with the part locked
                    // (see `OrderedTable::insert_with`); a big one's copy
                    // would hold the lock as long as it takes.
                    if img.object().len() <= UNDER_LOCK_MAX {
                        o.insert_with(img.key(), || entry_of_image(img))
                    } else {
                        o.insert(entry_of_image(img))
                    }
                })?;
                keep_spare(old);
            } else {
                if let Some(entries) = list()? {
                    drop(o.insert_all_if(entries, &go));
                }
            }
        }
        Data::Bag(b) => {
            if objs.is_tuple() {
                // One object: its bytes go straight into the key's bucket
                // (no entry is allocated for it).
                with_encoded_object(env, objs, keypos, None, false, |img| b.insert_image(img))?;
            } else {
                if let Some(entries) = list()? {
                    b.insert_all_if(entries, &go);
                }
            }
        }
    }
    Ok(true.encode(env))
}

thread_local! {
    /// An entry replaced by this thread's last `ordered_set` insert, kept
    /// to hold the next object of the same size: rewriting an object of an
    /// `ordered_set` then allocates and frees nothing (a set reuses the
    /// replaced entry in place, under its shard lock: see
    /// `SetTable::insert_image`).
    static SPARE: std::cell::Cell<Option<Entry>> = const { std::cell::Cell::new(None) };
}

/// Largest replaced entry kept as [`SPARE`] (bytes of heap).
const SPARE_MAX: usize = 256;

/// Largest object (bytes encoded) whose entry an `ordered_set` insert
/// builds with the part locked.
const UNDER_LOCK_MAX: usize = 256;

/// A stored entry with the bytes of `img`: this thread's spare entry when
/// it has the same size, else a new allocation.
#[inline]
fn entry_of_image(img: &EntryImage) -> Entry {
    if let Some(mut e) = SPARE.take() {
        if e.assign(img).is_some() {
            return e;
        }
        SPARE.set(Some(e));
    }
    img.to_entry()
}

/// Keeps a replaced entry (if small) as this thread's [`SPARE`].
#[inline]
fn keep_spare(replaced: Option<Entry>) {
    // (Not one holding blobs: the spare would keep them alive.)
    if let Some(e) = replaced.filter(|e| !e.has_blobs() && e.heap_bytes() <= SPARE_MAX) {
        drop(SPARE.replace(Some(e)));
    }
}

hot_nif!(table_insert_new, 2);
fn table_insert_new<'a>(env: Env<'a>, [tab, objs]: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    insert_new(env, tab, objs, || true).map(|b| b.encode(env))
}

/// `insert_new/2`; a list's objects go in only if `go()` says so (see
/// [`insert`]).
fn insert_new<'a>(
    env: Env<'a>,
    tab: Term<'a>,
    objs: Term<'a>,
    go: impl Fn() -> bool,
) -> NifResult<bool> {
    let t = writable(env, tab)?;
    let keypos = t.meta.keypos();
    let mut entries = if objs.is_tuple() {
        encode_objects(env, objs, keypos, &t.data)?
    } else {
        match encode_list_while(env, objs, keypos, &t.data, &go)? {
            Some(entries) => entries,
            None => return Ok(false),
        }
    };
    Ok(match &t.data {
        Data::Set(s) if entries.len() == 1 => s.insert_new(entries.pop().expect("one entry")),
        Data::Set(s) => s.insert_new_all_if(entries, &go),
        Data::Ordered(o) if entries.len() == 1 => o.insert_new(entries.pop().expect("one entry")),
        Data::Ordered(o) => o.insert_new_all_if(entries, &go),
        Data::Bag(b) => b.insert_new_all_if(entries, &go),
    })
}

hot_nif!(table_lookup, 2);
fn table_lookup<'a>(env: Env<'a>, [tab, key]: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    let t = readable(env, tab)?;
    let kb = key_bytes(env, key)?;
    let nil = codec::nil(env);
    let one = |e: Option<&Entry>| match e {
        None => Ok(nil),
        Some(e) => Ok(nil.list_prepend(decode_entry(env, e)?)),
    };
    match &t.data {
        Data::Set(s) => s.read(&kb.key(), one),
        Data::Ordered(o) => match kb {
            KeyBytes::Inline(t, w) if t == u64::from(tag::INT) => o.read_int(w as i64, one),
            _ => with_key(&kb, |k| o.read(k, one)),
        },
        Data::Bag(b) => b.read(&kb.key(), |os| match kb {
            _ if os.len() == 0 => Ok(nil),
            // An atom or integer key: the same term in every object that
            // spells it as its canonical bytes.
            KeyBytes::Inline(..) => codec::decode_list_by(env, os, key).map_err(|_| Error::BadArg),
            KeyBytes::Small(..) | KeyBytes::Pooled(_) => bag_objects(env, os),
        }),
    }
}

/// `slot(tab, i)`: the objects in slot `i` (see `SetTable::slot`; for an
/// `ordered_set`, the `i`th object in key order), `:"$end_of_table"` when
/// `i` is the number of slots, `badarg` past it or for a negative or
/// non-integer `i`. `:dirty` when `i` is too far into an `ordered_set`
/// for a normal scheduler (the caller then calls `table_slot_dirty`).
#[rustler::nif]
fn table_slot<'a>(env: Env<'a>, tab: Term<'a>, i: Term<'a>) -> NifResult<Term<'a>> {
    slot(env, tab, i, Some(DIRTY_SLOT))
}

/// Objects an `ordered_set`'s `slot/2` walks on a normal scheduler at most.
const DIRTY_SLOT: usize = 20_000;

/// `table_slot/2` on a dirty CPU scheduler: an `ordered_set`'s slot `i`
/// walks `i` objects. (`NativeStore.Table.slot/2` sends big indexes here.)
#[rustler::nif(schedule = "DirtyCpu")]
fn table_slot_dirty<'a>(env: Env<'a>, tab: Term<'a>, i: Term<'a>) -> NifResult<Term<'a>> {
    slot(env, tab, i, None)
}

/// `slot/2`; an `ordered_set`'s slot past `walk_max` (objects to walk) is
/// answered `:dirty`.
fn slot<'a>(
    env: Env<'a>,
    tab: Term<'a>,
    i: Term<'a>,
    walk_max: Option<usize>,
) -> NifResult<Term<'a>> {
    let t = readable(env, tab)?;
    let i: usize = i.decode().map_err(|_| Error::BadArg)?;
    if matches!(t.data, Data::Ordered(_)) && walk_max.is_some_and(|m| i > m) {
        return Ok(atoms::dirty().encode(env));
    }
    let nil = Term::list_new_empty(env);
    let one = |e: Option<&Entry>| match e {
        None => Ok(nil),
        Some(e) => Ok(nil.list_prepend(decode_entry(env, e)?)),
    };
    let found = match &t.data {
        Data::Set(s) => s.slot(i, one),
        Data::Ordered(o) => o.slot(i, |e| one(Some(e))),
        Data::Bag(b) => b.slot(i, |os| bag_objects(env, os)),
    };
    match found {
        Slot::At(objects) => objects,
        Slot::End => Ok(atoms::end_of_table().encode(env)),
        Slot::Beyond => Err(Error::BadArg),
    }
}

/// The list of the objects `objs` of a bag key, in order.
#[inline]
fn bag_objects<'a>(env: Env<'a>, objs: Objects) -> NifResult<Term<'a>> {
    codec::decode_list(env, objs).map_err(|_| Error::BadArg)
}

/// The list of `f` of each of the objects `objs` of a bag key, in order.
fn objects_list<'a>(
    env: Env<'a>,
    objs: Objects,
    f: impl Fn(&[u8]) -> NifResult<Term<'a>>,
) -> NifResult<Term<'a>> {
    const STACK: usize = 16;
    let n = objs.len();
    if n <= 1 {
        let nil = Term::list_new_empty(env);
        return match objs.into_iter().next() {
            Some(o) => Ok(nil.list_prepend(f(o)?)),
            None => Ok(nil),
        };
    }
    if n > STACK {
        return Ok(objs.map(f).collect::<NifResult<Vec<Term>>>()?.encode(env));
    }
    let mut terms = [Term::list_new_empty(env).as_c_arg(); STACK];
    for (slot, o) in terms.iter_mut().zip(objs) {
        *slot = f(o)?.as_c_arg();
    }
    // SAFETY: every slot holds a term of `env` (the empty list, or made by
    // `f`), `n <= STACK`, and the array outlives the call.
    Ok(unsafe {
        Term::new(
            env,
            rustler::sys::enif_make_list_from_array(env.as_c_arg(), terms.as_ptr(), n as u32),
        )
    })
}

hot_nif!(table_lookup_element, 3);
fn table_lookup_element<'a>(env: Env<'a>, [tab, key, pos]: [Term<'a>; 3]) -> NifResult<Term<'a>> {
    let pos: i64 = pos.decode()?;
    let t = readable(env, tab)?;
    let kb = key_bytes(env, key)?;
    let element = |obj: &[u8]| {
        let r = tuple_ops::element(obj, pos).map_err(|_| Error::BadArg)?;
        decode(env, &obj[r]).map_err(|_| Error::BadArg)
    };
    let one = |e: Option<&Entry>| element(e.ok_or(Error::BadArg)?.object());
    match &t.data {
        Data::Set(s) => s.read(&kb.key(), one),
        Data::Ordered(o) => with_key(&kb, |k| o.read(k, one)),
        Data::Bag(b) => b.read(&kb.key(), |os| {
            if os.len() == 0 {
                return Err(Error::BadArg);
            }
            objects_list(env, os, element)
        }),
    }
}

hot_nif!(table_member, 2);
fn table_member<'a>(env: Env<'a>, [tab, key]: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    let t = readable(env, tab)?;
    let kb = key_bytes(env, key)?;
    let found = match &t.data {
        Data::Set(s) => s.contains(&kb.key()),
        Data::Ordered(o) => with_key(&kb, |k| o.contains(k)),
        Data::Bag(b) => b.contains(&kb.key()),
    };
    Ok(found.encode(env))
}

hot_nif!(table_take, 2);
fn table_take<'a>(env: Env<'a>, [tab, key]: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    let t = writable(env, tab)?;
    let kb = key_bytes(env, key)?;
    let nil = Term::list_new_empty(env);
    let removed = match &t.data {
        Data::Set(s) => s.remove(&kb.key()),
        Data::Ordered(o) => with_key(&kb, |k| o.remove(k)),
        Data::Bag(b) => {
            return b
                .remove(&kb.key())
                .map_or(Ok(nil), |objs| bag_objects(env, objs.objects()))
        }
    };
    match removed {
        None => Ok(nil),
        Some(e) => Ok(
            nil.list_prepend(codec::decode_removed(env, e.object()).map_err(|_| Error::BadArg)?)
        ),
    }
}

#[rustler::nif]
fn table_delete<'a>(env: Env<'a>, tab: Term<'a>) -> NifResult<bool> {
    let t = writable(env, tab)?;
    delete_table(&t);
    Ok(true)
}

hot_nif!(table_delete_key, 2);
fn table_delete_key<'a>(env: Env<'a>, [tab, key]: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    let t = writable(env, tab)?;
    let kb = key_bytes(env, key)?;
    match &t.data {
        Data::Set(s) => drop(s.remove(&kb.key())),
        Data::Ordered(o) => drop(with_key(&kb, |k| o.remove(k))),
        Data::Bag(b) => drop(b.remove(&kb.key())),
    }
    Ok(true.encode(env))
}

/// True when the stored entry is the same object as `obj` (`=:=`): equal
/// bytes, or else (for the rare terms with several encodings, like `-0.0`)
/// the decoded term is identical.
fn same_object<'a>(env: Env<'a>, e: &Entry, encoded: &Entry, obj: Term<'a>) -> bool {
    e.object() == encoded.object() || decode(env, e.object()).map(|t| t.eq(&obj)).unwrap_or(false)
}

#[rustler::nif]
fn table_delete_object<'a>(env: Env<'a>, tab: Term<'a>, obj: Term<'a>) -> NifResult<bool> {
    delete_object(env, tab, obj)
}

fn delete_object<'a>(env: Env<'a>, tab: Term<'a>, obj: Term<'a>) -> NifResult<bool> {
    let t = writable(env, tab)?;
    let encoded = encode_object(env, obj, t.meta.keypos(), None)?;
    let decide = |e: Option<&mut Entry>| match e {
        Some(e) if same_object(env, e, &encoded, obj) => (Change::Remove, ()),
        _ => (Change::Keep, ()),
    };
    match &t.data {
        Data::Set(s) => s.update_mut(&Key::new(encoded.key()), decide),
        Data::Ordered(o) => o.update_mut(encoded.key(), decide),
        Data::Bag(b) => {
            b.remove_object(&encoded);
        }
    }
    Ok(true)
}

/// `delete_object/2` of a bag object as `select_delete/2` needs it: removes
/// the objects whose encoding is exactly `obj`'s (`0.0` and `-0.0` differ,
/// as they do to a match specification). Other table types: as
/// `delete_object/2`.
#[rustler::nif]
fn table_delete_object_exact<'a>(env: Env<'a>, tab: Term<'a>, obj: Term<'a>) -> NifResult<bool> {
    let t = writable(env, tab)?;
    match &t.data {
        Data::Bag(b) => {
            b.remove_object_exact(&encode_object(env, obj, t.meta.keypos(), None)?);
            Ok(true)
        }
        _ => delete_object(env, tab, obj),
    }
}

#[rustler::nif]
fn table_delete_all_objects<'a>(env: Env<'a>, tab: Term<'a>) -> NifResult<Term<'a>> {
    let t = writable(env, tab)?;
    // (The memory is read before the contents are taken: a concurrent
    // insert may add to them; their count is exact.)
    let small_memory = t.data.memory_bytes() <= FREE_WAITED_BYTES;
    let (contents, allocations) = t.data.take_all_counted();
    if allocations <= FREE_HERE_OBJECTS {
        drop(contents);
    } else if allocations <= FREE_WAITED_OBJECTS && small_memory {
        let taken = Taken(Mutex::new(Some(contents)));
        return Ok(rustler::ResourceArc::new(taken).encode(env));
    } else {
        drop_later(contents);
    }
    Ok(true.encode(env))
}

/// Where `delete_all_objects/1` frees what it took out of a table (the
/// table is empty at once either way):
/// - up to this many objects, on the calling scheduler (at most ~0.5 ms:
///   ~0.5 µs per object measured for objects holding out-of-line binaries
///   allocated by another thread);
/// - up to [`FREE_WAITED_OBJECTS`] objects and [`FREE_WAITED_BYTES`]
///   bytes, on a dirty scheduler while the caller waits, as ETS returns
///   once it has freed them (`table_free_taken`; 100,000 small objects:
///   1.6 ms for an ordered_set, 5.7 ms for a set, ETS 2.6 and 4.2 ms);
/// - bigger tables on the background thread, the caller going on at once.
///
/// Freeing in place 100,000 objects held a normal scheduler 0.2-1.6 ms, and
/// 24-56 ms with out-of-line binaries. Freeing them on the background
/// thread instead took CPU time from the table's next users: two processes
/// refilling an emptied 100,000-key ordered_set on this 2-CPU machine ran
/// at 1.22-1.39x ETS's time, 0.80-0.98x when the freeing was done first.
const FREE_HERE_OBJECTS: usize = 1_000;
/// See [`FREE_HERE_OBJECTS`].
const FREE_WAITED_OBJECTS: usize = 100_000;
/// See [`FREE_HERE_OBJECTS`]: a table of 100,000 objects holding 100-byte
/// binaries (17 MiB) took 24-56 ms to free; it goes to the background.
const FREE_WAITED_BYTES: usize = 12 << 20;

/// The contents `delete_all_objects/1` took out of a table, for
/// `table_free_taken/1` to free on a dirty scheduler; freed on the
/// background thread instead if the handle is dropped first (its caller
/// was killed in between).
struct Taken(Mutex<Option<Box<dyn Send>>>);

#[rustler::resource_impl]
impl rustler::Resource for Taken {}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some(contents) = self.0.get_mut().take() {
            drop_later(contents);
        }
    }
}

/// Frees the contents taken by `table_delete_all_objects/1` (once: a
/// second call finds nothing left), on a dirty scheduler. `true`.
#[rustler::nif(schedule = "DirtyCpu")]
fn table_free_taken(taken: rustler::ResourceArc<Taken>) -> bool {
    let contents = taken.0.lock().take();
    drop(contents);
    true
}

/// Waits until the background thread has freed everything handed to it
/// before this call (deleted tables, emptied contents); `true`. For the
/// benchmarks, so that one measurement does not pay for the freeing left
/// by the one before (ETS frees in the deleting process before it goes
/// on), and for tests.
#[rustler::nif(schedule = "DirtyIo")]
fn reclaim_flush() -> bool {
    native_store_engine::reclaim::flush();
    true
}

/// How many values handed to the background thread are not freed yet (for
/// tests).
#[rustler::nif]
fn reclaim_pending() -> usize {
    native_store_engine::reclaim::pending()
}

/// An integer argument of update_counter: any integer of up to 127 bits
/// (ETS takes bignums there too); `badarg` for anything else.
#[inline(always)]
fn int_arg(t: Term) -> NifResult<i128> {
    if let Some(i) = codec::small_int(t) {
        return Ok(i.into());
    }
    if let Ok(i) = t.decode::<i64>() {
        return Ok(i.into());
    }
    if !t.is_number() {
        return Err(Error::BadArg);
    }
    // A bignum (floats encode as FLOAT, which get_integer refuses).
    let bytes = encode_value(t.get_env(), t).map_err(|_| Error::BadArg)?;
    format::get_integer(&bytes, 0).ok_or(Error::BadArg)
}

#[inline(always)]
fn counter_op(t: Term, keypos: usize) -> NifResult<CounterOp> {
    if !t.is_tuple() {
        return Ok(CounterOp {
            pos: keypos as i64 + 1,
            incr: int_arg(t)?,
            threshold: None,
        });
    }
    bounded_op(t)
}

/// `{Pos, Incr}` or `{Pos, Incr, Threshold, SetValue}`.
#[inline(always)]
fn bounded_op(t: Term) -> NifResult<CounterOp> {
    let els = TupleTerms::of(t).ok_or(Error::BadArg)?;
    let el = |i| els.get(i).ok_or(Error::BadArg);
    let pos = el(0)?;
    let pos = match codec::small_int(pos) {
        Some(p) => p,
        None => pos.decode::<i64>().map_err(|_| Error::BadArg)?,
    };
    match els.len() {
        2 => Ok(CounterOp {
            pos,
            incr: int_arg(el(1)?)?,
            threshold: None,
        }),
        4 => Ok(CounterOp {
            pos,
            incr: int_arg(el(1)?)?,
            threshold: Some((int_arg(el(2)?)?, int_arg(el(3)?)?)),
        }),
        _ => Err(Error::BadArg),
    }
}

fn int_term(env: Env, v: i128) -> NifResult<Term> {
    if let Ok(small) = i64::try_from(v) {
        return Ok(small.encode(env));
    }
    let mut b = Vec::new();
    format::put_integer(&mut b, v);
    decode(env, &b).map_err(|_| Error::BadArg)
}

fn update_counter<'a>(
    env: Env<'a>,
    tab: Term<'a>,
    key: Term<'a>,
    op: Term<'a>,
    default: Option<Term<'a>>,
) -> NifResult<Term<'a>> {
    let t = writable(env, tab)?;
    let keypos = t.meta.keypos();
    // ETS checks that the default is a tuple even when it is not needed
    // (its arity only when it is used).
    if default.is_some_and(|d| !d.is_tuple()) {
        return Err(Error::BadArg);
    }
    // One operation (the common case) lives on the stack.
    let single: [CounterOp; 1];
    let list: Vec<CounterOp>;
    let (ops, many): (&[CounterOp], bool) = if op.is_list() {
        let terms = proper_list(op)?;
        list = terms
            .into_iter()
            .map(bounded_op)
            .collect::<NifResult<Vec<_>>>()?;
        (&list, true)
    } else {
        single = [counter_op(op, keypos)?];
        (&single, false)
    };
    let kb = key_bytes(env, key)?;
    // Results of the in-place path; the general path returns its own.
    let mut small = [0i128; 8];
    let mut general: Option<Vec<i128>> = None;
    // Fast path: the object exists and its counters change in place.
    let found = update_keyed(&t.data, &kb, |e| {
        let Some(e) = e else {
            return (Change::Keep, Ok(false));
        };
        if let Some(obj) = e.object_mut() {
            match tuple_ops::update_counter_in_place(obj, keypos, ops, &mut small) {
                Ok(Some(())) => return (Change::Keep, Ok(true)),
                Err(_) => return (Change::Keep, Err(Error::BadArg)),
                Ok(None) => {}
            }
        }
        apply_counters(e, keypos, ops, &mut general)
    })??;
    if !found {
        let default = default.ok_or(Error::BadArg)?;
        let d = encode_object(env, default, keypos, Some(key))?;
        update_keyed(&t.data, &kb, |e| {
            apply_counters(e.map(|e| &*e).unwrap_or(&d), keypos, ops, &mut general)
        })??;
    }
    let results: &[i128] = match &general {
        Some(v) => v,
        None => &small[..ops.len()],
    };
    if many {
        let terms = results
            .iter()
            .map(|v| int_term(env, *v))
            .collect::<NifResult<Vec<_>>>()?;
        Ok(terms.encode(env))
    } else {
        int_term(env, results[0])
    }
}

/// The general counter update: builds a new object from `base`.
fn apply_counters(
    base: &Entry,
    keypos: usize,
    ops: &[CounterOp],
    results: &mut Option<Vec<i128>>,
) -> (Change, NifResult<bool>) {
    match tuple_ops::update_counter(base.object(), keypos, ops) {
        Err(_) => (Change::Keep, Err(Error::BadArg)),
        Ok((obj, r)) => {
            *results = Some(r);
            (Change::Put(rekey(&obj, base, keypos)), Ok(true))
        }
    }
}

/// Builds an entry from an updated object whose key element (at `keypos`)
/// is unchanged from `old`'s.
fn rekey(obj: &[u8], old: &Entry, keypos: usize) -> Entry {
    let r = format::tuple_elements(obj).expect("a tuple we just built")[keypos - 1].clone();
    // The old entry's key is canonical; it is appended only if the faithful
    // key bytes differ from it.
    let canonical = (obj[r.clone()] != *old.key()).then(|| old.key());
    let mut buf = EntryBuf::new();
    buf.out.extend_from_slice(obj);
    if old.has_blobs() {
        // `obj` was built from `old`'s object: it may hold its blobs.
        buf.mark_blobs();
    }
    let start = EntryBuf::object_start();
    buf.finish(start + r.start..start + r.end, canonical)
}

hot_nif!(table_update_counter, 3);
fn table_update_counter<'a>(env: Env<'a>, [tab, key, op]: [Term<'a>; 3]) -> NifResult<Term<'a>> {
    update_counter(env, tab, key, op, None)
}

hot_nif!(table_update_counter_default, 4);
fn table_update_counter_default<'a>(
    env: Env<'a>,
    [tab, key, op, default]: [Term<'a>; 4],
) -> NifResult<Term<'a>> {
    update_counter(env, tab, key, op, Some(default))
}

hot_nif!(table_update_element, 3);
fn table_update_element<'a>(env: Env<'a>, [tab, key, spec]: [Term<'a>; 3]) -> NifResult<Term<'a>> {
    update_element(env, tab, key, spec).map(|done| done.encode(env))
}

fn update_element<'a>(
    env: Env<'a>,
    tab: Term<'a>,
    key: Term<'a>,
    spec: Term<'a>,
) -> NifResult<bool> {
    let t = writable(env, tab)?;
    let keypos = t.meta.keypos();
    // As in ETS, a malformed spec is an error only when the object exists.
    let encoded = update_specs(env, spec);
    let kb = key_bytes(env, key)?;
    update_keyed(&t.data, &kb, |e| match (e.map(|e| &*e), &encoded) {
        (None, _) => (Change::Keep, Ok(false)),
        (Some(_), Err(_)) => (Change::Keep, Err(Error::BadArg)),
        (Some(e), Ok(specs)) => {
            let borrowed: Vec<(i64, &[u8])> =
                specs.iter().map(|(p, v)| (*p, v.as_slice())).collect();
            match tuple_ops::update_element(e.object(), keypos, &borrowed) {
                Ok(obj) if !fits_entry(obj.len() + e.key().len() + 8) => {
                    (Change::Keep, Err(Error::BadArg))
                }
                Ok(obj) => (Change::Put(rekey(&obj, e, keypos)), Ok(true)),
                Err(_) => (Change::Keep, Err(Error::BadArg)),
            }
        }
    })?
}

/// `{pos, value}` or a proper list of them, values encoded.
fn update_specs(env: Env, spec: Term) -> NifResult<Vec<(i64, Vec<u8>)>> {
    let specs = if spec.is_list() {
        proper_list(spec)?
    } else {
        vec![spec]
    };
    specs
        .into_iter()
        .map(|s| {
            let (pos, value): (i64, Term) = s.decode().map_err(|_| Error::BadArg)?;
            if pos < 1 {
                return Err(Error::BadArg);
            }
            Ok((pos, encode_value(env, value).map_err(|_| Error::BadArg)?))
        })
        .collect()
}

/// Entries decoded per call of a traversal before control returns to the
/// scheduler (about 0.2 ms of work).
const CHUNK: usize = 2000;

/// Where a walk stands between two chunks. It travels to Elixir and back
/// as a plain term (see [`position_term`]), not as a resource: like ETS's
/// continuations, a `select/3` continuation can then be reused (each use
/// continues from the same place), copied, and passed through
/// `term_to_binary/1`.
#[derive(Default)]
struct CursorState {
    /// Set and bag tables: the shard being copied.
    shard: usize,
    /// Set and bag tables: the bucket of that shard to continue from.
    bucket: usize,
    /// `ordered_set`: the key of the last object returned.
    after: Option<Box<[u8]>>,
    /// `ordered_set`: walk in descending key order.
    reverse: bool,
    /// Objects to copy in the next call: a walk that may stop early (a
    /// `select/3` with a small limit) starts small and doubles up to
    /// [`CHUNK`].
    size: usize,
    done: bool,
    /// Objects no clause of the scan's match specification can match are
    /// left out of the chunks (see `table_scan`).
    filter: Option<Filter>,
}

/// The next at most `CHUNK` objects of a walk, in traversal order: term
/// order for `ordered_set`, the order of `first/1` and `next/2` otherwise.
fn next_chunk(t: &TableRes, st: &mut CursorState) -> Vec<Entry> {
    let mut chunk = Vec::new();
    if st.done {
        return chunk;
    }
    let size = st.size.clamp(1, CHUNK);
    st.size = (size * 2).min(CHUNK);
    #[allow(clippy::type_complexity)]
    let (count, snapshot): (
        usize,
        &dyn Fn(usize, usize, usize) -> (Vec<Entry>, Option<usize>),
    ) = match &t.data {
        // Not reached: `walk` reads ordered tables with `ordered_walk`.
        Data::Ordered(_) => {
            st.done = true;
            return chunk;
        }
        Data::Set(s) => (s.shard_count(), &|i, from, max| {
            s.snapshot_part(i, from, max)
        }),
        Data::Bag(b) => (b.shard_count(), &|i, from, max| {
            b.snapshot_part(i, from, max)
        }),
    };
    // Copy at most about CHUNK objects (and CHUNK_BYTES) per call, bucket
    // range by bucket range, so no call holds a scheduler (or a shard lock)
    // for long.
    let mut bytes = 0;
    while chunk.len() < size && bytes < CHUNK_BYTES && st.shard < count {
        let (part, next) = snapshot(st.shard, st.bucket, size - chunk.len());
        bytes += part.iter().map(Entry::heap_bytes).sum::<usize>();
        chunk.extend(part);
        match next {
            Some(b) => st.bucket = b,
            None => {
                st.shard += 1;
                st.bucket = 0;
            }
        }
    }
    st.done = st.shard >= count;
    chunk
}

/// Prepends the next chunk of objects (in traversal order) to `acc`; true
/// when the walk is over.
fn walk<'a>(
    env: Env<'a>,
    t: &TableRes,
    st: &mut CursorState,
    acc: &mut Term<'a>,
) -> NifResult<bool> {
    if let Data::Ordered(o) = &t.data {
        return ordered_walk(env, o, st, acc);
    }
    let chunk = next_chunk(t, st);
    let filter = st.filter.as_ref();
    for e in chunk.iter().rev() {
        if filter.is_none_or(|f| f.pass(e.object())) {
            *acc = acc.list_prepend(decode_entry(env, e)?);
        }
    }
    Ok(st.done)
}

/// Largest chunk of an `ordered_set` walk decoded under the table's read
/// lock (see [`ordered_walk`]).
const DECODE_LOCKED: usize = 64;

/// [`walk`] of an `ordered_set`. A small chunk (the first ones of a
/// `select/3` with a small limit) is decoded under the table's read lock,
/// without copies of its entries; bigger ones are copied under the lock
/// and decoded after it (decoding takes longer than copying: writers would
/// wait longer).
fn ordered_walk<'a>(
    env: Env<'a>,
    o: &OrderedTable,
    st: &mut CursorState,
    acc: &mut Term<'a>,
) -> NifResult<bool> {
    if st.done {
        return Ok(true);
    }
    let size = st.size.clamp(1, CHUNK);
    st.size = (size * 2).min(CHUNK);
    // A small chunk's terms go to an array on the stack (no allocation).
    let mut small = [acc.as_c_arg(); DECODE_LOCKED];
    let mut len = 0;
    let mut copies = Vec::with_capacity(if size > DECODE_LOCKED { size } else { 0 });
    let mut failed = false;
    let filter = st.filter.as_ref();
    let each = |e: &Entry| {
        if filter.is_some_and(|f| !f.pass(e.object())) {
            return;
        }
        if size > DECODE_LOCKED {
            copies.push(e.clone());
            return;
        }
        match (decode_entry(env, e), small.get_mut(len)) {
            (Ok(t), Some(slot)) => {
                *slot = t.as_c_arg();
                len += 1;
            }
            _ => failed = true,
        }
    };
    let (n, bytes, last) = if st.reverse {
        o.visit_before(st.after.as_deref(), size, each)
    } else {
        o.visit_after(st.after.as_deref(), size, each)
    };
    if failed {
        return Err(Error::BadArg);
    }
    // A short chunk is the end, unless it stopped at the byte limit.
    match last {
        Some(k) if n == size || bytes >= CHUNK_BYTES => st.after = Some(k),
        _ => st.done = true,
    }
    if !copies.is_empty() {
        let terms = copies
            .iter()
            .map(|e| decode_entry(env, e))
            .collect::<NifResult<Vec<_>>>()?;
        for t in terms.into_iter().rev() {
            *acc = acc.list_prepend(t);
        }
    } else if acc.is_empty_list() {
        // SAFETY: the first `len` slots hold terms of `env` made above
        // (`len <= DECODE_LOCKED`); the array outlives the call.
        *acc = unsafe {
            Term::new(
                env,
                rustler::sys::enif_make_list_from_array(env.as_c_arg(), small.as_ptr(), len as u32),
            )
        };
    } else {
        for t in small[..len].iter().rev() {
            // SAFETY: a term of `env` made above.
            *acc = acc.list_prepend(unsafe { Term::new(env, *t) });
        }
    }
    Ok(st.done)
}

#[rustler::nif]
fn table_to_list<'a>(env: Env<'a>, tab: Term<'a>) -> NifResult<Term<'a>> {
    start_walk(env, tab, false, CHUNK)
}

hot_nif!(table_walk, 3);
/// Starts a walk like `table_to_list/1` (`table_to_list_reverse/1` when
/// `reverse`) whose first chunk holds at most `first` objects (the chunks
/// after it double up to the usual size): for `select/3` with a limit.
fn table_walk<'a>(env: Env<'a>, [tab, reverse, first]: [Term<'a>; 3]) -> NifResult<Term<'a>> {
    let reverse: bool = reverse.decode()?;
    let first: usize = first.decode()?;
    start_walk(env, tab, reverse, first)
}

/// Like `table_to_list/1`, but an `ordered_set` is walked in descending key
/// order (other tables in their only order), for `select_reverse` and
/// `foldr`.
#[rustler::nif]
fn table_to_list_reverse<'a>(env: Env<'a>, tab: Term<'a>) -> NifResult<Term<'a>> {
    start_walk(env, tab, true, CHUNK)
}

/// The first chunk of a walk: `{:done, objects}`, or `{:more, objects,
/// position}` whose `cursor_next/2` continues it.
fn start_walk<'a>(env: Env<'a>, tab: Term<'a>, reverse: bool, first: usize) -> NifResult<Term<'a>> {
    start_scan(env, tab, reverse, first, None)
}

/// [`start_walk`] leaving out what `filter` rejects.
fn start_scan<'a>(
    env: Env<'a>,
    tab: Term<'a>,
    reverse: bool,
    first: usize,
    filter: Option<Filter>,
) -> NifResult<Term<'a>> {
    let t = readable(env, tab)?;
    let st = CursorState {
        reverse,
        size: first,
        filter,
        ..CursorState::default()
    };
    // A table reference goes into the position as it is (a name does not).
    let tid = TableArc::get(tab).is_some().then_some(tab);
    continue_walk(env, &t, tid, st, Term::list_new_empty(env))
}

/// Copies the next chunk of the walk at `st` onto `acc` and returns
/// `{:done, objects}` or `{:more, objects, position}`. `tid` is the term
/// of the table's reference when the caller has it (else one is made).
fn continue_walk<'a>(
    env: Env<'a>,
    t: &TableRes,
    tid: Option<Term<'a>>,
    mut st: CursorState,
    mut acc: Term<'a>,
) -> NifResult<Term<'a>> {
    if walk(env, t, &mut st, &mut acc)? {
        return Ok(make_tuple(env, &[atoms::done().encode(env), acc]));
    }
    let pos = position_term(env, t, tid, &st)?;
    Ok(make_tuple(env, &[atoms::more().encode(env), acc, pos]))
}

/// `st` as a term: `{tid, shard, bucket, size}` for set and bag tables,
/// `{tid, last_key, reverse, size}` for an `ordered_set` (the key as a
/// term, so the walk continues after it even if it has been deleted since).
fn position_term<'a>(
    env: Env<'a>,
    t: &TableRes,
    tid: Option<Term<'a>>,
    st: &CursorState,
) -> NifResult<Term<'a>> {
    let tid = tid.unwrap_or_else(|| TableArc::from_ref(t).encode(env));
    let size = st.size.encode(env);
    Ok(match (&t.data, &st.after) {
        (Data::Ordered(_), Some(key)) => {
            let key = decode(env, key).map_err(|_| Error::BadArg)?;
            make_tuple(env, &[tid, key, st.reverse.encode(env), size])
        }
        // An ordered walk always has a last key once a chunk is out.
        (Data::Ordered(_), None) => return Err(Error::BadArg),
        _ => make_tuple(
            env,
            &[tid, st.shard.encode(env), st.bucket.encode(env), size],
        ),
    })
}

/// Continues the walk at `position` (as [`position_term`] makes them),
/// prepending its next chunk to `acc`: `{:done, objects}` or `{:more,
/// objects, position}`. A position is an ordinary term and may be forged:
/// anything that is not a position of a readable table is `badarg`.
#[rustler::nif]
fn cursor_next<'a>(env: Env<'a>, position: Term<'a>, acc: Term<'a>) -> NifResult<Term<'a>> {
    continue_scan(env, position, acc, None)
}

/// A scan for a match specification: a walk like `table_to_list/1`
/// (`table_to_list_reverse/1` when `reverse`) whose chunks leave out the
/// objects that no clause of the specification can match, by `filter`:
/// `nil`, or one `{arity, [{index, literal}], [{index, op, literal}]}`
/// per clause (see `prefilter`; indexes 0-based; `op` one of `<`, `=<`,
/// `>`, `>=`, `==`). `cursor_scan/3` continues it.
#[rustler::nif]
fn table_scan<'a>(
    env: Env<'a>,
    tab: Term<'a>,
    reverse: bool,
    filter: Term<'a>,
) -> NifResult<Term<'a>> {
    start_scan(env, tab, reverse, CHUNK, filter_arg(env, filter)?)
}

/// [`table_scan`] whose first chunk looks at most `first` objects (the
/// chunks after it double up to the usual size, as [`table_walk`]'s): for
/// `select/3` with a limit.
#[rustler::nif]
fn table_walk_scan<'a>(
    env: Env<'a>,
    tab: Term<'a>,
    reverse: bool,
    first: usize,
    filter: Term<'a>,
) -> NifResult<Term<'a>> {
    start_scan(env, tab, reverse, first, filter_arg(env, filter)?)
}

/// `cursor_next/2` of a `table_scan/3` (the filter again).
#[rustler::nif]
fn cursor_scan<'a>(
    env: Env<'a>,
    position: Term<'a>,
    acc: Term<'a>,
    filter: Term<'a>,
) -> NifResult<Term<'a>> {
    continue_scan(env, position, acc, filter_arg(env, filter)?)
}

/// The filter of `table_scan/3` (`None` for `nil`, or when a clause
/// reaches past the elements a filter reads).
fn filter_arg<'a>(env: Env<'a>, filter: Term<'a>) -> NifResult<Option<Filter>> {
    if filter.is_atom() {
        return Ok(None);
    }
    let index = |t: Term| -> NifResult<usize> {
        let i: usize = t.decode().map_err(|_| Error::BadArg)?;
        Ok(i.min(prefilter::MAX_ELEMENT))
    };
    let literal = |t: Term| encode_value(env, t).map_err(|_| Error::BadArg);
    let mut clauses = Vec::new();
    for c in proper_list(filter)? {
        let (arity, equal, compare): (usize, Term, Term) = c.decode().map_err(|_| Error::BadArg)?;
        let mut literals = Vec::new();
        for e in proper_list(equal)? {
            let (i, lit): (Term, Term) = e.decode().map_err(|_| Error::BadArg)?;
            let i = index(i)?;
            // A binary that big may be stored out of line (a blob): its
            // stored bytes are not the literal's, so no condition.
            let big = lit
                .decode::<rustler::Binary>()
                .is_ok_and(|b| b.len() >= blob::MIN_BYTES);
            if !big {
                literals.push((i, literal(lit)?));
            }
        }
        let compare = proper_list(compare)?
            .into_iter()
            .map(|e| {
                let (i, op, lit): (Term, Atom, Term) = e.decode().map_err(|_| Error::BadArg)?;
                let op = if op == atoms::lt() {
                    Cmp::Lt
                } else if op == atoms::le() {
                    Cmp::Le
                } else if op == atoms::gt() {
                    Cmp::Gt
                } else if op == atoms::ge() {
                    Cmp::Ge
                } else if op == atoms::eq() {
                    Cmp::Eq
                } else {
                    return Err(Error::BadArg);
                };
                Ok((index(i)?, op, literal(lit)?))
            })
            .collect::<NifResult<Vec<_>>>()?;
        clauses.push(prefilter::Clause {
            arity,
            equal: literals,
            compare,
        });
    }
    // (No clause would reject every object: only a forged filter has none.)
    if clauses.is_empty() {
        return Err(Error::BadArg);
    }
    Ok(Filter::new(clauses))
}

/// [`cursor_next`] of a walk that leaves out what `filter` rejects.
fn continue_scan<'a>(
    env: Env<'a>,
    position: Term<'a>,
    acc: Term<'a>,
    filter: Option<Filter>,
) -> NifResult<Term<'a>> {
    let els = TupleTerms::of(position).ok_or(Error::BadArg)?;
    let el = |i| els.get(i).ok_or(Error::BadArg);
    if els.len() != 4 || !acc.is_list() {
        return Err(Error::BadArg);
    }
    let t = readable(env, el(0)?)?;
    if TableArc::get(el(0)?).is_none() {
        // Positions carry the table's id, never a name.
        return Err(Error::BadArg);
    }
    let size: usize = el(3)?.decode().map_err(|_| Error::BadArg)?;
    let st = match &t.data {
        Data::Ordered(_) => {
            let kb = key_bytes(env, el(1)?)?;
            CursorState {
                after: Some(with_key(&kb, |k| k.into())),
                reverse: el(2)?.decode().map_err(|_| Error::BadArg)?,
                size,
                ..CursorState::default()
            }
        }
        Data::Set(_) | Data::Bag(_) => {
            let shard: usize = el(1)?.decode().map_err(|_| Error::BadArg)?;
            let bucket: usize = el(2)?.decode().map_err(|_| Error::BadArg)?;
            let shards = match &t.data {
                Data::Set(s) => s.shard_count(),
                Data::Bag(b) => b.shard_count(),
                Data::Ordered(_) => 0,
            };
            if shard >= shards {
                return Err(Error::BadArg);
            }
            CursorState {
                shard,
                bucket,
                size,
                ..CursorState::default()
            }
        }
    };
    let st = CursorState { filter, ..st };
    continue_walk(env, &t, Some(el(0)?), st, acc)
}

/// `safe_fixtable(tab, fix)`: `fix` must be a boolean; `now` is the
/// caller's `erlang:monotonic_time()` (the fixation's start if it is the
/// first). Reading the table suffices, as in ETS. The caller is monitored
/// so that its fixations end when it exits.
#[rustler::nif]
fn table_safe_fixtable<'a>(
    env: Env<'a>,
    tab: Term<'a>,
    fix: Term<'a>,
    now: i64,
) -> NifResult<Term<'a>> {
    let t = readable(env, tab)?;
    let fix: bool = fix.decode().map_err(|_| Error::BadArg)?;
    let me = caller(env);
    if fix {
        t.monitor_once(env, &env.pid());
        t.fix(me, now);
    } else if t.unfix(me, 1) {
        // The caller then runs `table_tidy` (a dirty NIF).
        return Ok(atoms::untidy().encode(env));
    }
    Ok(true.encode(env))
}

/// The housekeeping an unfix left to the shards' next writes (moving what
/// the fixation sent to overflow tables back, shrinking what removals left
/// sparse), done at once on a dirty scheduler: `true`, or `:undefined`
/// for a table that no longer exists.
#[rustler::nif(schedule = "DirtyCpu")]
fn table_tidy<'a>(env: Env<'a>, tab: Term<'a>) -> NifResult<Term<'a>> {
    Ok(match info_target(tab)? {
        Some(t) => {
            t.data.tidy_all();
            true.encode(env)
        }
        None => atoms::undefined().encode(env),
    })
}

/// For tests: splits every key-range part of an `ordered_set` of at least
/// two objects in two (whatever its size; dirty scheduler) and returns how
/// many parts it has; 1 for other tables; `:undefined` when there is no
/// such table.
#[rustler::nif(schedule = "DirtyCpu")]
fn table_split_parts<'a>(env: Env<'a>, tab: Term<'a>) -> NifResult<Term<'a>> {
    Ok(match info_target(tab)? {
        Some(t) => match &t.data {
            Data::Ordered(o) => {
                o.split_parts();
                o.parts().encode(env)
            }
            _ => 1.encode(env),
        },
        None => atoms::undefined().encode(env),
    })
}

/// `false` when the table is not fixed, else `{since, [{pid, count}]}`
/// (`since` in native monotonic time units); `:undefined` when there is no
/// such table.
#[rustler::nif]
fn table_fixation<'a>(env: Env<'a>, tab: Term<'a>) -> NifResult<Term<'a>> {
    let Some(t) = info_target(tab)? else {
        return Ok(atoms::undefined().encode(env));
    };
    let f = t.fixations.lock();
    if f.procs.is_empty() {
        return Ok(false.encode(env));
    }
    let procs: Vec<Term> = f
        .procs
        .iter()
        .map(|&(pid, n)| make_tuple(env, &[word_term(env, pid), n.encode(env)]))
        .collect();
    Ok(make_tuple(env, &[f.since.encode(env), procs.encode(env)]))
}

/// `info(tab, :stats)` as ETS reports it for hash tables: `{buckets,
/// mean_chain, std_dev, expected_std_dev, min_chain, max_chain, kept,
/// locks}` (see `ChainStats`), `false` for an `ordered_set`, `:undefined`
/// when there is no such table. Visits every bucket: a dirty scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn table_stats<'a>(env: Env<'a>, tab: Term<'a>) -> NifResult<Term<'a>> {
    let Some(t) = info_target(tab)? else {
        return Ok(atoms::undefined().encode(env));
    };
    let st = match &t.data {
        Data::Set(s) => s.chain_stats(),
        Data::Bag(b) => b.chain_stats(),
        // An ordered_set: its number of key-range parts.
        Data::Ordered(o) => return Ok(o.parts().encode(env)),
    };
    Ok(make_tuple(
        env,
        &[
            st.buckets.encode(env),
            st.mean().encode(env),
            st.std_dev().encode(env),
            st.expected_std_dev().encode(env),
            st.min.encode(env),
            st.max.encode(env),
            st.kept.encode(env),
            st.locks.encode(env),
        ],
    ))
}

#[rustler::nif]
fn table_info<'a>(env: Env<'a>, tab: Term<'a>) -> NifResult<Term<'a>> {
    let Some(t) = info_target(tab)? else {
        return Ok(atoms::undefined().encode(env));
    };
    let id = match &t {
        Tab::Cached(..) => TableArc::from_ref(&t).encode(env),
        Tab::Ref(_) => tab,
    };
    let word = |w: u64| word_term(env, w);
    let heir = match t.meta.heir() {
        Some(h) => word(h.pid),
        None => atoms::none().encode(env),
    };
    let protection = match t.meta.access() {
        Access::Public => atoms::public(),
        Access::Protected => atoms::protected(),
        Access::Private => atoms::private(),
    };
    Ok(make_tuple(
        env,
        &[
            id,
            word(t.flags[2]),
            word(t.flags[0]),
            word(t.flags[1]),
            word(t.flags[3]),
            t.data.memory_bytes().div_ceil(8).encode(env),
            word(t.meta.owner()),
            heir,
            word(t.name.load(Ordering::Acquire)),
            t.data.len().encode(env),
            t.named.encode(env),
            t.data.type_atom().encode(env),
            t.meta.keypos().encode(env),
            protection.encode(env),
        ],
    ))
}

/// The table `info/1,2` report on: `None` (reported as `:undefined`) for a
/// deleted table or an unknown name; `badarg` for anything that is not a
/// table identifier (another reference, a number...), as in ETS.
fn info_target(tab: Term) -> NifResult<Option<Tab>> {
    let t = lookup_table(tab);
    // Not found: an error unless it names no table or a deleted one.
    if t.is_none() && !tab.is_atom() && TableArc::get(tab).is_none() {
        return Err(Error::BadArg);
    }
    Ok(t)
}

hot_nif!(table_count, 2);
/// `info(tab, :size)` and `info(tab, :memory)` (in words) without the rest
/// of [`table_info`]: `size` is true for `:size`. `:undefined` when the table
/// does not exist.
fn table_count<'a>(env: Env<'a>, [tab, size]: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    let size: bool = size.decode()?;
    Ok(match info_target(tab)? {
        None => atoms::undefined().encode(env),
        Some(t) if size => t.data.len().encode(env),
        Some(t) => t.data.memory_bytes().div_ceil(8).encode(env),
    })
}

hot_nif!(table_multi_chunk, 1);
/// Whether a walk of the table may take more than one chunk ([`CHUNK`]
/// objects or [`CHUNK_BYTES`]): scans fix such tables while they walk them.
/// `:undefined` when the table does not exist.
fn table_multi_chunk<'a>(env: Env<'a>, [tab]: [Term<'a>; 1]) -> NifResult<Term<'a>> {
    Ok(match info_target(tab)? {
        None => atoms::undefined().encode(env),
        Some(t) => (t.data.len() > CHUNK || t.data.memory_bytes() > CHUNK_BYTES).encode(env),
    })
}

#[rustler::nif]
fn table_whereis<'a>(env: Env<'a>, name: Atom) -> Term<'a> {
    match catalog().read().by_name.get(&word_of(name.as_c_arg())) {
        Some(r) => r.encode(env),
        None => atoms::undefined().encode(env),
    }
}

#[rustler::nif]
fn table_all(env: Env) -> Term {
    let cat = catalog().read();
    let mut tables: Vec<(&u64, &TableArc)> = cat.by_id.iter().collect();
    tables.sort_by_key(|(id, _)| std::cmp::Reverse(**id));
    let terms: Vec<Term> = tables
        .into_iter()
        .map(|(_, r)| {
            if r.named {
                word_term(env, r.name.load(Ordering::Acquire))
            } else {
                r.encode(env)
            }
        })
        .collect();
    terms.encode(env)
}

/// Ensures the codec is initialised (for the load hook).
pub fn on_load(env: Env) -> bool {
    codec::init(env);
    install_term_order();
    open_table_type(env) && crate::blob::init(env)
}

/// `swap_objects(tab, key, expected, new)` for bags: when the objects of
/// `key` are exactly the list `expected` (as `lookup/2` returned them),
/// they become the list `new` (objects with that key), atomically and in
/// place; returns whether they did. (`select_replace/2` on a
/// `duplicate_bag` retries until it does.)
#[rustler::nif]
fn table_swap_objects<'a>(
    env: Env<'a>,
    tab: Term<'a>,
    key: Term<'a>,
    expected: Term<'a>,
    new: Term<'a>,
) -> NifResult<bool> {
    let t = writable(env, tab)?;
    let Data::Bag(b) = &t.data else {
        return Err(Error::BadArg);
    };
    let keypos = t.meta.keypos();
    let kb = key_bytes(env, key)?;
    let (expected, new) = (
        encode_objects(env, expected, keypos, &t.data)?,
        encode_objects(env, new, keypos, &t.data)?,
    );
    if new.is_empty() || new.iter().any(|e| !kb.key().matches(e.key())) {
        return Err(Error::BadArg);
    }
    Ok(b.swap_objects(&kb.key(), expected, new))
}

hot_nif!(table_replace, 4);
/// `replace/4`: atomically swaps the object under `key` when it is still
/// what the caller read (`expected`: `[]` or `[object]`, as `lookup/2`
/// returns); `new` is `[]` (delete) or `[object]`.
///
/// The expected object is not encoded: the stored bytes are compared with
/// it term by term (`codec::matches_encoded`), falling back to decoding the
/// stored object and `=:=` when that walk does not decide.
fn table_replace<'a>(
    env: Env<'a>,
    [tab, key, expected, new]: [Term<'a>; 4],
) -> NifResult<Term<'a>> {
    let (expected, new) = (at_most_one(expected)?, at_most_one(new)?);
    let t = writable(env, tab)?;
    let keypos = t.meta.keypos();
    let kb = key_bytes(env, key)?;
    if let Some(o) = expected {
        let elems = TupleTerms::of(o).ok_or(Error::BadArg)?;
        let k = elems.get(keypos - 1).ok_or(Error::BadArg)?;
        let same_key = with_key(&kb, |kbytes| {
            let mut pos = 0;
            match codec::matches_encoded(env, k, kbytes, &mut pos) {
                Some(true) if pos == kbytes.len() => Ok(true),
                _ => codec::encode_key(env, k)
                    .map(|e| e.as_slice() == kbytes)
                    .map_err(|_| Error::BadArg),
            }
        })?;
        if !same_key {
            return Err(Error::BadArg);
        }
    }
    let new = match new {
        Some(o) => {
            let e = encode_stored(env, o, keypos, &t.data)?;
            if !kb.key().matches(e.key()) {
                return Err(Error::BadArg);
            }
            Some(e)
        }
        None => None,
    };
    let done = update_keyed(&t.data, &kb, |current| {
        let current = current.map(|c| &*c);
        let unchanged = match (current, expected) {
            (None, None) => true,
            (Some(c), Some(obj)) => {
                let bytes = c.object();
                let mut pos = 0;
                match codec::matches_encoded(env, obj, bytes, &mut pos) {
                    Some(true) if pos == bytes.len() => true,
                    _ => decode(env, bytes).map(|t| t.eq(&obj)).unwrap_or(false),
                }
            }
            _ => false,
        };
        if !unchanged {
            return (Change::Keep, false);
        }
        match new {
            Some(e) => (Change::Put(e), true),
            None => (Change::Remove, true),
        }
    })?;
    Ok(done.encode(env))
}

/// The element of a list of at most one element (`[]` or `[x]`); `badarg`
/// for anything else.
fn at_most_one(t: Term) -> NifResult<Option<Term>> {
    if t.is_empty_list() {
        return Ok(None);
    }
    let (head, tail) = t.list_get_cell().map_err(|_| Error::BadArg)?;
    if tail.is_empty_list() {
        Ok(Some(head))
    } else {
        Err(Error::BadArg)
    }
}

hot_nif!(table_merge_map, 3);
/// `merge_map/3`: atomically merges `map` into the map stored as
/// `{key, map}` (inserting `{key, map}` when absent); returns the result.
fn table_merge_map<'a>(env: Env<'a>, [tab, key, map]: [Term<'a>; 3]) -> NifResult<Term<'a>> {
    let t = writable(env, tab)?;
    if !map.is_map() || t.meta.keypos() > 2 {
        return Err(Error::BadArg);
    }
    let keypos = t.meta.keypos();
    let kb = key_bytes(env, key)?;
    // The update, encoded once outside the lock (for the byte-level merge).
    let mut upd = Scratch::take();
    Encoder::new(env, &mut upd, false)
        .term(map, 0)
        .map_err(|_| Error::BadArg)?;
    match update_keyed(&t.data, &kb, |current| {
        let current = current.map(|c| &*c);
        let merged = match current {
            None => map,
            Some(c) => {
                if let Some((change, bytes)) = merge_bytes(c, keypos, &upd) {
                    return (change, Ok(Merged::Bytes(bytes)));
                }
                let obj = match decode(env, c.object()) {
                    Ok(o) => o,
                    Err(_) => return (Change::Keep, Err(Error::BadArg)),
                };
                let old = match TupleTerms::of(obj).filter(|els| els.len() == 2) {
                    Some(els) => match els.get(2 - keypos) {
                        Some(m) if m.is_map() => m,
                        _ => return (Change::Keep, Err(Error::BadArg)),
                    },
                    None => return (Change::Keep, Err(Error::BadArg)),
                };
                match merge_maps(old, map) {
                    Ok(m) => m,
                    Err(e) => return (Change::Keep, Err(e)),
                }
            }
        };
        let mut els = [key, merged];
        if keypos == 2 {
            els.swap(0, 1);
        }
        match encode_object(env, make_tuple(env, &els), keypos, None) {
            Ok(e) => (Change::Put(e), Ok(Merged::Term(merged))),
            Err(e) => (Change::Keep, Err(e)),
        }
    })?? {
        Merged::Term(t) => Ok(t),
        Merged::Bytes(b) => decode(env, &b).map_err(|_| Error::BadArg),
    }
}

/// The byte-level `merge_map/3` of an encoded update `upd` into the stored
/// entry `c` (see `native_store_engine::map_merge`): the new entry and the
/// merged map's bytes. `None` when the byte-level merge does not apply
/// (the caller then merges terms).
fn merge_bytes(c: &Entry, keypos: usize, upd: &[u8]) -> Option<(Change, Scratch)> {
    fn cmp_words(a: u64, b: u64) -> std::cmp::Ordering {
        // SAFETY: the words are atom immediates read from encoded maps;
        // comparing them reads nothing else.
        let c = unsafe { rustler::sys::enif_compare(codec::term_of(a), codec::term_of(b)) };
        c.cmp(&0)
    }
    let obj = c.object();
    let mut pos = 0;
    if format::read_item(obj, &mut pos) != Ok(format::Item::Tuple(2)) {
        return None;
    }
    let mid = format::skip(obj, pos).ok()?;
    let (first, second) = (pos..mid, mid..obj.len());
    let (key_el, map_el) = if keypos == 1 {
        (first, second)
    } else {
        (second, first)
    };
    let mut buf = EntryBuf::with_buffer(Scratch::take().into_vec());
    if c.has_blobs() {
        // Elements copied from `c` may be its blobs.
        buf.mark_blobs();
    }
    let base = EntryBuf::object_start();
    format::put_header(&mut buf.out, tag::TUPLE, 2);
    let mut key_range = 0..0;
    let mut map_range = 0..0;
    for i in 1..=2 {
        let start = buf.out.len();
        if i == keypos {
            buf.out.extend_from_slice(&obj[key_el.clone()]);
            key_range = start..buf.out.len();
        } else {
            if map_merge::merge(&obj[map_el.clone()], upd, cmp_words, &mut buf.out).is_none() {
                Scratch::restore(buf.into_buffer());
                return None;
            }
            map_range = start..buf.out.len();
        }
    }
    debug_assert!(key_range.start >= base);
    // The stored key is a slice of the object unless a canonical form was
    // appended to it: keep that form.
    let canonical = (c.key() != &obj[key_el]).then(|| c.key());
    if !fits_entry(buf.out.len() + canonical.map_or(0, <[u8]>::len)) {
        // The term-level merge then refuses it (`with_encoded_object`).
        Scratch::restore(buf.into_buffer());
        return None;
    }
    let mut merged = Scratch::take();
    merged.extend_from_slice(&buf.out[map_range]);
    let entry = buf.seal(key_range, canonical).to_entry();
    Scratch::restore(buf.into_buffer());
    Some((Change::Put(entry), merged))
}

/// What `merge_map/3` returns: a term, or an encoded map decoded once the
/// table's lock is released.
enum Merged<'a> {
    Term(Term<'a>),
    Bytes(Scratch),
}

/// `Map.merge(old, new)`.
fn merge_maps<'a>(old: Term<'a>, new: Term<'a>) -> NifResult<Term<'a>> {
    if old.map_size()? == 0 {
        return Ok(new);
    }
    let mut acc = old;
    for (k, v) in rustler::types::map::MapIterator::new(new).ok_or(Error::BadArg)? {
        acc = acc.map_put(k, v)?;
    }
    Ok(acc)
}

/// The table's term (its resource) in `env`.
fn tid_term<'a>(env: Env<'a>, t: &TableRes) -> Term<'a> {
    // SAFETY: `t` is the data of a live table resource (every `TableRes`
    // lives in one, written by `TableArc::new`); the term is valid in `env`.
    unsafe {
        Term::new(
            env,
            rustler::sys::enif_make_resource(env.as_c_arg(), t as *const TableRes as *const _),
        )
    }
}

/// Monitors `pid` from the table's resource; false if it is not alive.
fn monitor_from(env: Env, t: &TableRes, pid: &LocalPid) -> bool {
    let mut mon = std::mem::MaybeUninit::<rustler::sys::ErlNifMonitor>::uninit();
    // SAFETY: process-bound `env`; `t` is the data of a live table resource
    // of our type, which has a `down` callback; `mon` is a live out-pointer.
    unsafe {
        rustler::sys::enif_monitor_process(
            env.as_c_arg(),
            t as *const TableRes as *const _,
            pid.as_c_arg(),
            mon.as_mut_ptr(),
        ) == 0
    }
}

/// The table, if the caller owns it.
fn owned<'a>(env: Env, term: Term<'a>) -> NifResult<Tab<'a>> {
    match lookup_table(term) {
        Some(t) if t.meta.owner() == caller(env) && !t.meta.is_deleted() => Ok(t),
        _ => Err(Error::BadArg),
    }
}

/// `give_away/3`: makes `pid` (alive, local, not the owner) the owner and
/// sends it `{'ETS-TRANSFER', tid, from, gift}`.
#[rustler::nif]
fn table_give_away<'a>(
    env: Env<'a>,
    tab: Term<'a>,
    pid: Term<'a>,
    gift: Term<'a>,
) -> NifResult<bool> {
    let t = owned(env, tab)?;
    let to = pid.decode::<LocalPid>().map_err(|_| Error::BadArg)?;
    let to_word = word_of(pid.as_c_arg());
    if to_word == t.meta.owner() || !t.monitor_once(env, &to) {
        return Err(Error::BadArg);
    }
    t.meta.set_owner(to_word);
    // If the new owner died after it was monitored but before it became the
    // owner, its `down` found it was not the owner: handle its exit now.
    if !to.is_alive(env) {
        t.down(env, to);
        return Ok(true);
    }
    let msg = make_tuple(
        env,
        &[
            atoms::ets_transfer().encode(env),
            tid_term(env, &t),
            env.pid().encode(env),
            gift,
        ],
    );
    let _ = env.send(&to, msg);
    Ok(true)
}

/// `setopts/2` for `{heir, pid, data}` / `{heir, none}` (`heir` is a pid or
/// `:none`).
#[rustler::nif]
fn table_set_heir<'a>(
    env: Env<'a>,
    tab: Term<'a>,
    heir: Term<'a>,
    data: Term<'a>,
) -> NifResult<bool> {
    let t = owned(env, tab)?;
    if heir.is_atom() {
        t.meta.set_heir(None);
        return Ok(true);
    }
    let lp = heir.decode::<LocalPid>().map_err(|_| Error::BadArg)?;
    let pid = word_of(heir.as_c_arg());
    let data = encode_value(env, data).map_err(|_| Error::BadArg)?;
    if !t.monitor_once(env, &lp) || !lp.is_alive(env) {
        // Already dead: no heir, as ETS reports it (an heir that dies
        // later stays reported; see `Meta::heir_exited`).
        t.meta.set_heir(None);
    } else {
        t.meta.set_heir(Some(Heir { pid, data }));
    }
    Ok(true)
}

/// The access mode an atom names.
fn access_of(access: Atom) -> NifResult<Access> {
    if access == atoms::public() {
        Ok(Access::Public)
    } else if access == atoms::protected() {
        Ok(Access::Protected)
    } else if access == atoms::private() {
        Ok(Access::Private)
    } else {
        Err(Error::BadArg)
    }
}

/// `setopts(tab, {:protection, access})`: the owner changes the access mode.
#[rustler::nif]
fn table_set_protection<'a>(env: Env<'a>, tab: Term<'a>, access: Atom) -> NifResult<bool> {
    let t = owned(env, tab)?;
    let access = access_of(access)?;
    t.meta.set_access(access);
    Ok(true)
}

/// `rename/2`: a named table gets a new name (and is returned as it); an
/// unnamed table only changes the name `info/2` reports and is returned as
/// its reference, as ETS does.
#[rustler::nif]
fn table_rename<'a>(env: Env<'a>, tab: Term<'a>, name: Atom) -> NifResult<Term<'a>> {
    let t = writable(env, tab)?;
    if !t.named {
        t.name.store(word_of(name.as_c_arg()), Ordering::Release);
        return Ok(tid_term(env, &t));
    }
    let new = word_of(name.as_c_arg());
    let _guard = CREATE.lock();
    let mut cat = catalog_write();
    let old = t.name.load(Ordering::Acquire);
    // Deleted meanwhile, or its old name already given to another table?
    let still_ours = cat
        .by_name
        .get(&old)
        .is_some_and(|r| std::ptr::eq(&**r, &*t as &TableRes));
    if t.meta.is_deleted() || !still_ours {
        return Err(Error::BadArg);
    }
    // The new name must be free: its own name is taken too, as in ETS.
    if cat.by_name.contains_key(&new) {
        return Err(Error::BadArg);
    }
    if let Some(r) = cat.by_name.remove(&old) {
        cat.by_name.insert(new, r);
    }
    t.name.store(new, Ordering::Release);
    Ok(name.encode(env))
}

/// The key of the object `obj` (the element at the table's key position, as
/// stored), or `'$end_of_table'`.
fn key_or_end<'a>(env: Env<'a>, t: &TableRes, obj: Option<&[u8]>) -> NifResult<Term<'a>> {
    let Some(obj) = obj else {
        return Ok(atoms::end_of_table().encode(env));
    };
    let r = tuple_ops::element(obj, t.meta.keypos() as i64).map_err(|_| Error::BadArg)?;
    decode(env, &obj[r]).map_err(|_| Error::BadArg)
}

/// The key of the entry `e` as stored in its object, or `'$end_of_table'`
/// (as [`key_or_end`]). An entry's key is usually the key element itself,
/// a slice of the object: it is decoded as it is, without finding the
/// element in the object. (A canonical key appended after the object, see
/// `entry.rs`, may be spelled differently: the element is decoded then.)
#[inline]
fn entry_key_or_end<'a>(env: Env<'a>, t: &TableRes, e: Option<&Entry>) -> NifResult<Term<'a>> {
    let Some(e) = e else {
        return Ok(atoms::end_of_table().encode(env));
    };
    let (obj, key) = (e.object().as_ptr_range(), e.key().as_ptr_range());
    if obj.start <= key.start && key.end <= obj.end {
        return decode(env, e.key()).map_err(|_| Error::BadArg);
    }
    key_or_end(env, t, Some(e.object()))
}

/// `first/1` (`last/1` when `last` and the table is an `ordered_set`; other
/// types have no order, and `last/1` is `first/1` there, as in ETS).
fn first_or_last<'a>(env: Env<'a>, tab: Term<'a>, last: bool) -> NifResult<Term<'a>> {
    let t = readable(env, tab)?;
    let f = |e: Option<&Entry>| entry_key_or_end(env, &t, e);
    match &t.data {
        Data::Set(s) => s.read_first(f),
        Data::Ordered(o) if last => o.read_last(f),
        Data::Ordered(o) => o.read_first(f),
        Data::Bag(b) => b.read_first(|o| key_or_end(env, &t, o)),
    }
}

/// `next/2` (`prev/2` when `prev` and the table is an `ordered_set`). For
/// set and bag tables a key that is not in the table is `badarg`, as in
/// ETS; an `ordered_set` gives the key after (or before) it anyway.
fn next_or_prev<'a>(env: Env<'a>, tab: Term<'a>, key: Term<'a>, prev: bool) -> NifResult<Term<'a>> {
    let t = readable(env, tab)?;
    let kb = key_bytes(env, key)?;
    let f = |e: Option<&Entry>| entry_key_or_end(env, &t, e);
    match &t.data {
        Data::Set(s) => s.read_next(&kb.key(), f).ok_or(Error::BadArg)?,
        Data::Ordered(o) if prev => with_key(&kb, |k| o.read_prev(k, f)),
        Data::Ordered(o) => with_key(&kb, |k| {
            o.read_next_key(k, |n| match n {
                Next::End => f(None),
                Next::Entry(e) => f(Some(e)),
                Next::Key(b) => decode(env, b).map_err(|_| Error::BadArg),
            })
        }),
        Data::Bag(b) => b
            .read_next(&kb.key(), |o| key_or_end(env, &t, o))
            .ok_or(Error::BadArg)?,
    }
}

hot_nif!(table_first, 1);
fn table_first<'a>(env: Env<'a>, [tab]: [Term<'a>; 1]) -> NifResult<Term<'a>> {
    first_or_last(env, tab, false)
}

hot_nif!(table_last, 1);
fn table_last<'a>(env: Env<'a>, [tab]: [Term<'a>; 1]) -> NifResult<Term<'a>> {
    first_or_last(env, tab, true)
}

hot_nif!(table_next, 2);
fn table_next<'a>(env: Env<'a>, [tab, key]: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    next_or_prev(env, tab, key, false)
}

hot_nif!(table_prev, 2);
fn table_prev<'a>(env: Env<'a>, [tab, key]: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    next_or_prev(env, tab, key, true)
}

/// `insert/2` of a long list, on a dirty CPU scheduler: encoding and
/// inserting many objects atomically takes longer than a normal scheduler
/// may be held. (`NativeStore.Table` routes lists longer than a threshold
/// here.) A caller killed meanwhile inserts nothing (see [`caller_alive`]).
#[rustler::nif(schedule = "DirtyCpu")]
fn table_insert_dirty<'a>(env: Env<'a>, tab: Term<'a>, objs: Term<'a>) -> NifResult<Term<'a>> {
    insert(env, tab, objs, || caller_alive(env))
}

/// `insert_new/2` of a long list, on a dirty CPU scheduler (as
/// [`table_insert_dirty`]).
#[rustler::nif(schedule = "DirtyCpu")]
fn table_insert_new_dirty<'a>(env: Env<'a>, tab: Term<'a>, objs: Term<'a>) -> NifResult<bool> {
    insert_new(env, tab, objs, || caller_alive(env))
}

/// Whether the process calling this dirty NIF still lives. A process killed
/// while it runs a dirty NIF is terminated around it: its monitors fire
/// (others see it gone) while the NIF goes on. A write it would make then
/// could land after its `DOWN` (ETS drops the insert of a process killed
/// while it trapped, or completes it before the process exits): a dirty
/// write asks this once it holds the locks and does nothing if the caller
/// is gone, so a reader that saw the `DOWN` and then takes a lock sees
/// either all of it or none. (`erl_nif(3)` names this function as the way
/// for a dirty NIF to learn that its process was terminated; that the
/// process reads as not alive before its monitors fire is the VM's order
/// of exit, which the manual does not state: the test "a process killed
/// inside insert/2 of a long list" checks it.) Only for NIF-calling
/// threads: the VM aborts if another thread calls it.
fn caller_alive(env: Env) -> bool {
    // SAFETY: `env` is the environment of the running NIF call, on the
    // thread that runs it, as the function requires.
    unsafe { rustler::sys::enif_is_current_process_alive(env.as_c_arg()) != 0 }
}
