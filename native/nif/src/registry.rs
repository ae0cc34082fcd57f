//! NIFs of `NativeStore.Registry`: term conversion around the engine's
//! `Registry`, process monitors, and the registry catalog by name.
//!
//! Each registry is a resource owned by the registry's process. The resource
//! monitors every process that registers; its `down` callback hides the dead
//! process's entries at once and frees them (on the background worker when
//! there are many). When the owner exits, the registry is deleted.

use crate::atoms;
use crate::codec::{caller, decode, encode_key, encode_value, proper_list, word_of, word_term};
use native_store_engine::background;
use native_store_engine::registry::{RegisterError, Registry};
use parking_lot::RwLock;
use rustler::types::tuple::make_tuple;
use rustler::{
    Atom, Encoder, Env, Error, LocalPid, Monitor, NifResult, Resource, ResourceArc, Term,
};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Processes with more registrations than this are cleaned up on the
/// background worker rather than in the `down` callback.
const INLINE_CLEANUP: usize = 256;

/// A registry and its configuration.
pub struct RegistryRes {
    name: u64,
    owner: u64,
    reg: Arc<Registry>,
    partitions: u64,
    /// Listener names (atom words).
    listeners: Vec<u64>,
    /// `meta/2` storage: encoded key -> encoded value.
    meta: parking_lot::Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

#[rustler::resource_impl]
impl Resource for RegistryRes {
    const IMPLEMENTS_DOWN: bool = true;

    fn down<'a>(&'a self, env: Env<'a>, pid: LocalPid, _monitor: Monitor) {
        let word = word_of(pid.encode(env).as_c_arg());
        if word == self.owner {
            let removed = {
                let mut cat = catalog().write();
                match cat.get(&self.name) {
                    Some(r) if r.owner == self.owner => cat.remove(&self.name),
                    _ => None,
                }
            };
            // The catalog's handle may be the last one: release it later.
            native_store_engine::reclaim::drop_later(removed);
            return;
        }
        if let Some(proc) = self.reg.process_down(word) {
            if proc.registrations() > INLINE_CLEANUP {
                let reg = self.reg.clone();
                background::run(move || reg.cleanup(&proc));
            } else {
                self.reg.cleanup(&proc);
            }
        }
    }
}

fn catalog() -> &'static RwLock<HashMap<u64, ResourceArc<RegistryRes>>> {
    static CATALOG: OnceLock<RwLock<HashMap<u64, ResourceArc<RegistryRes>>>> = OnceLock::new();
    CATALOG.get_or_init(Default::default)
}

/// The registry named `name`, or the `:unknown_registry` error value.
fn registry(name: Term) -> Result<ResourceArc<RegistryRes>, ()> {
    if !name.is_atom() {
        return Err(());
    }
    catalog()
        .read()
        .get(&word_of(name.as_c_arg()))
        .cloned()
        .ok_or(())
}

fn unknown(env: Env) -> Term {
    atoms::unknown_registry().encode(env)
}

macro_rules! with_registry {
    ($env:expr, $name:expr) => {
        match registry($name) {
            Ok(r) => r,
            Err(()) => return Ok(unknown($env)),
        }
    };
}

fn bytes(env: Env, t: Term, key: bool) -> NifResult<Vec<u8>> {
    let r = if key {
        encode_key(env, t).map(|s| s.to_vec())
    } else {
        encode_value(env, t)
    };
    r.map_err(|_| Error::BadArg)
}

fn term<'a>(env: Env<'a>, b: &[u8]) -> NifResult<Term<'a>> {
    decode(env, b).map_err(|_| Error::BadArg)
}

/// `{:ok, value}` or `:error`.
fn ok_or_error<'a>(env: Env<'a>, v: Option<Term<'a>>) -> Term<'a> {
    match v {
        Some(v) => make_tuple(env, &[atoms::ok().encode(env), v]),
        None => atoms::error().encode(env),
    }
}

fn listeners<'a>(env: Env<'a>, r: &RegistryRes) -> Term<'a> {
    r.listeners
        .iter()
        .map(|w| word_term(env, *w))
        .collect::<Vec<_>>()
        .encode(env)
}

#[rustler::nif]
fn registry_new<'a>(
    env: Env<'a>,
    name: Atom,
    unique: bool,
    partitions: u64,
    listeners: Term<'a>,
) -> NifResult<Term<'a>> {
    let listeners = proper_list(listeners)?
        .into_iter()
        .map(|l| l.decode::<Atom>())
        .collect::<NifResult<Vec<Atom>>>()?;
    let name_word = word_of(name.as_c_arg());
    let owner = env.pid();
    let res = ResourceArc::new(RegistryRes {
        name: name_word,
        owner: caller(env),
        reg: Arc::new(Registry::new(unique)),
        partitions,
        listeners: listeners.iter().map(|a| word_of(a.as_c_arg())).collect(),
        meta: Default::default(),
    });
    let mut cat = catalog().write();
    if let Some(old) = cat.get(&name_word) {
        // A stale registry whose owner has exited but whose `down` has not
        // run yet may still be listed; a live one makes this an error.
        let old_owner = word_term(env, old.owner).decode::<LocalPid>()?;
        if old_owner.is_alive(env) {
            return Err(Error::BadArg);
        }
    }
    let _ = env.monitor(&res, &owner);
    // A replaced stale registry may be the last handle on a big structure:
    // free it off the scheduler and outside the catalog lock.
    native_store_engine::reclaim::drop_later(cat.insert(name_word, res.clone()));
    Ok(atoms::ok().encode(env))
}

#[rustler::nif]
fn registry_register<'a>(
    env: Env<'a>,
    name: Term<'a>,
    key: Term<'a>,
    value: Term<'a>,
) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    let kb = bytes(env, key, true)?;
    let vb = bytes(env, value, false)?;
    let me = env.pid();
    let is_alive = |pid: u64| {
        word_term(env, pid)
            .decode::<LocalPid>()
            .map(|p| p.is_alive(env))
            .unwrap_or(false)
    };
    match r.reg.register(caller(env), &kb, &vb, is_alive) {
        Ok(first) => {
            if first {
                let _ = env.monitor(&r, &me);
            }
            Ok(make_tuple(
                env,
                &[
                    atoms::ok().encode(env),
                    word_term(env, r.owner),
                    listeners(env, &r),
                ],
            ))
        }
        Err(RegisterError::Taken(pid)) => Ok(make_tuple(
            env,
            &[
                atoms::error().encode(env),
                make_tuple(
                    env,
                    &[atoms::already_registered().encode(env), word_term(env, pid)],
                ),
            ],
        )),
    }
}

/// Removes the caller's entries under `key`: all of them (`values` is
/// `:all`) or those whose value is identical to one in the list `values`.
#[rustler::nif]
fn registry_unregister<'a>(
    env: Env<'a>,
    name: Term<'a>,
    key: Term<'a>,
    values: Term<'a>,
) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    let kb = bytes(env, key, true)?;
    if values.is_atom() {
        r.reg.unregister(caller(env), &kb, |_| true);
    } else {
        let wanted = proper_list(values)?;
        let encoded = wanted
            .iter()
            .map(|v| bytes(env, *v, false))
            .collect::<NifResult<Vec<_>>>()?;
        r.reg
            .unregister(caller(env), &kb, |v| encoded.iter().any(|e| e == v));
    }
    Ok(listeners(env, &r))
}

#[rustler::nif]
fn registry_lookup<'a>(env: Env<'a>, name: Term<'a>, key: Term<'a>) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    let kb = bytes(env, key, true)?;
    let found = r.reg.read_key(&kb, |e| {
        decode(env, e.value)
            .ok()
            .map(|v| make_tuple(env, &[word_term(env, e.pid), v]))
    });
    Ok(found.encode(env))
}

#[rustler::nif]
fn registry_whereis<'a>(env: Env<'a>, name: Term<'a>, key: Term<'a>) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    if !r.reg.is_unique() {
        return Ok(atoms::duplicate().encode(env));
    }
    let kb = bytes(env, key, true)?;
    let pids = r.reg.read_key(&kb, |e| Some(e.pid));
    Ok(match pids.first() {
        Some(p) => word_term(env, *p),
        None => atoms::undefined().encode(env),
    })
}

#[rustler::nif]
fn registry_values<'a>(
    env: Env<'a>,
    name: Term<'a>,
    key: Term<'a>,
    pid: LocalPid,
) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    let kb = bytes(env, key, true)?;
    let want = word_of(pid.encode(env).as_c_arg());
    let found = r.reg.read_key(&kb, |e| {
        if e.pid == want {
            decode(env, e.value).ok()
        } else {
            None
        }
    });
    Ok(found.encode(env))
}

#[rustler::nif]
fn registry_keys<'a>(env: Env<'a>, name: Term<'a>, pid: LocalPid) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    let keys = r.reg.keys_of(word_of(pid.encode(env).as_c_arg()));
    let terms = keys
        .iter()
        .map(|k| term(env, k))
        .collect::<NifResult<Vec<_>>>()?;
    Ok(terms.encode(env))
}

/// `{:ok, value}` of the caller's entry under a unique `key`, or `:error`.
#[rustler::nif]
fn registry_own_value<'a>(env: Env<'a>, name: Term<'a>, key: Term<'a>) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    let kb = bytes(env, key, true)?;
    let me = caller(env);
    let mine = r.reg.read_key(&kb, |e| {
        if e.pid == me {
            decode(env, e.value).ok()
        } else {
            None
        }
    });
    Ok(ok_or_error(env, mine.first().copied()))
}

#[rustler::nif]
fn registry_put_value<'a>(
    env: Env<'a>,
    name: Term<'a>,
    key: Term<'a>,
    value: Term<'a>,
) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    let kb = bytes(env, key, true)?;
    let vb = bytes(env, value, false)?;
    Ok(r.reg
        .update_value(caller(env), &kb, &vb)
        .is_some()
        .encode(env))
}

#[rustler::nif]
fn registry_count<'a>(env: Env<'a>, name: Term<'a>) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    Ok(r.reg.count().encode(env))
}

/// Every live entry as `{key, pid, value}`.
#[rustler::nif(schedule = "DirtyCpu")]
fn registry_to_list<'a>(env: Env<'a>, name: Term<'a>) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    let mut out = Vec::with_capacity(r.reg.count());
    let mut failed = false;
    r.reg
        .for_each(|k, pid, v| match (decode(env, k), decode(env, v)) {
            (Ok(k), Ok(v)) => out.push(make_tuple(env, &[k, word_term(env, pid), v])),
            _ => failed = true,
        });
    if failed {
        return Err(Error::BadArg);
    }
    Ok(out.encode(env))
}

/// Bytes of memory the registry holds (walks it: on a dirty scheduler).
#[rustler::nif(schedule = "DirtyCpu")]
fn registry_memory<'a>(env: Env<'a>, name: Term<'a>) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    Ok(r.reg.memory_bytes().encode(env))
}

/// `{unique?, partitions, listeners, owner}`.
#[rustler::nif]
fn registry_info<'a>(env: Env<'a>, name: Term<'a>) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    Ok(make_tuple(
        env,
        &[
            r.reg.is_unique().encode(env),
            r.partitions.encode(env),
            listeners(env, &r),
            word_term(env, r.owner),
        ],
    ))
}

#[rustler::nif]
fn registry_meta<'a>(env: Env<'a>, name: Term<'a>, key: Term<'a>) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    let kb = bytes(env, key, true)?;
    let v = r.meta.lock().get(&kb).cloned();
    let v = v.map(|v| term(env, &v)).transpose()?;
    Ok(ok_or_error(env, v))
}

#[rustler::nif]
fn registry_put_meta<'a>(
    env: Env<'a>,
    name: Term<'a>,
    key: Term<'a>,
    value: Term<'a>,
) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    let kb = bytes(env, key, true)?;
    let vb = bytes(env, value, false)?;
    r.meta.lock().insert(kb, vb);
    Ok(atoms::ok().encode(env))
}

#[rustler::nif]
fn registry_delete_meta<'a>(env: Env<'a>, name: Term<'a>, key: Term<'a>) -> NifResult<Term<'a>> {
    let r = with_registry!(env, name);
    let kb = bytes(env, key, true)?;
    r.meta.lock().remove(&kb);
    Ok(atoms::ok().encode(env))
}
