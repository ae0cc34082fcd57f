//! Out-of-line binaries as NIF resources (the host side of
//! `native_store_engine::blob`).
//!
//! A large binary stored as a top-level value of a set table's object is
//! copied once, on insert, into a resource object (`[len: u64][bytes]`);
//! the entry keeps the resource's address as the blob handle and one
//! resource reference. A lookup returns the bytes with
//! `enif_make_resource_binary`: no allocation of a binary and no copy, the
//! VM's binary term keeps the resource alive for as long as it lives. The
//! VM frees the resource when the table's last reference and the last such
//! binary are gone (the resource type has no destructor: the bytes are
//! plain data).

use native_store_engine::blob::{self, BlobHost};
use rustler::sys::*;
use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Binaries of at least this many bytes are kept out of line: smaller ones
/// are heap binaries in the VM (copied by ETS too), and for them a copy
/// costs less than a resource.
pub const MIN_BYTES: usize = 65;

/// Bytes of the length header in front of a blob's data.
const HEADER: usize = 8;

static BLOB_TYPE: AtomicPtr<ErlNifResourceType> = AtomicPtr::new(std::ptr::null_mut());

/// The NIF's blob host (resource references).
struct Resources;

static HOST: Resources = Resources;

impl BlobHost for Resources {
    fn keep(&self, h: u64) {
        // SAFETY: `h` is the address of a live blob resource (the caller
        // holds a reference: an entry, or the encoder's creation reference);
        // `enif_keep_resource` may be called from any thread.
        unsafe { enif_keep_resource(h as *const c_void) }
    }

    fn release(&self, h: u64) {
        // SAFETY: as in `keep`, and the caller gives up a reference it owns;
        // `enif_release_resource` is thread-safe (entries are also dropped
        // on the engine's background thread and in monitor callbacks).
        unsafe { enif_release_resource(h as *const c_void) }
    }

    unsafe fn data<'a>(&self, h: u64) -> &'a [u8] {
        // SAFETY: the caller guarantees `h` is a live blob resource for
        // `'a`; `make` wrote its length at the start and its bytes after,
        // and nothing writes to a blob after it is made.
        unsafe {
            let p = h as *const u8;
            let len = std::ptr::read_unaligned(p as *const u64) as usize;
            std::slice::from_raw_parts(p.add(HEADER), len)
        }
    }

    fn footprint(&self, h: u64) -> usize {
        // SAFETY: the caller holds a reference to `h` (an entry).
        let len = unsafe { self.data(h) }.len();
        // The resource's data, and the VM's magic binary header around it
        // (about six words, rounded to the allocator's granule).
        (HEADER + len + 48).next_multiple_of(16)
    }
}

/// Opens the blob resource type and registers the host (called at load);
/// false on failure.
pub fn init(env: rustler::Env) -> bool {
    if BLOB_TYPE.load(Ordering::Acquire).is_null() {
        let mut tried = ErlNifResourceFlags::ERL_NIF_RT_CREATE;
        // SAFETY: called from the load callback with its environment; the
        // name is NUL-terminated; no destructor is needed (plain bytes).
        let ty = unsafe {
            enif_open_resource_type(
                env.as_c_arg(),
                std::ptr::null(),
                c"NativeStore.Blob".as_ptr(),
                None,
                ErlNifResourceFlags::ERL_NIF_RT_CREATE,
                &mut tried,
            )
        };
        if ty.is_null() {
            return false;
        }
        BLOB_TYPE.store(ty as *mut _, Ordering::Release);
    }
    blob::install(&HOST) || blob::host().is_some()
}

/// A new blob holding `bytes`, with one reference (the caller's: released
/// by [`NewBlobs`]); `None` when the type is missing or the VM refuses.
pub fn make(bytes: &[u8]) -> Option<u64> {
    let ty = BLOB_TYPE.load(Ordering::Acquire);
    if ty.is_null() {
        return None;
    }
    // SAFETY: `ty` is the blob resource type opened at load; the new
    // resource has `HEADER + len` bytes, all written here before the handle
    // is published.
    unsafe {
        let p = enif_alloc_resource(ty, HEADER + bytes.len()) as *mut u8;
        if p.is_null() {
            return None;
        }
        std::ptr::write_unaligned(p as *mut u64, bytes.len() as u64);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(HEADER), bytes.len());
        Some(p as u64)
    }
}

/// The binary term of blob `h` in `env`, sharing its bytes.
///
/// # Safety
/// `env` is the caller's live environment and `h` a live blob (held by an
/// entry the caller reads under the table's lock); the term takes its own
/// reference.
pub unsafe fn term(env: *mut ErlNifEnv, h: u64) -> ErlNifTerm {
    // SAFETY: see the function's contract.
    unsafe {
        let data = HOST.data(h);
        enif_make_resource_binary(
            env,
            h as *const c_void,
            data.as_ptr() as *const c_void,
            data.len(),
        )
    }
}

/// The creation references of the blobs one encoding made: released when
/// dropped, once the entry made from the buffer has kept its own (or the
/// encoding failed or was not stored).
#[derive(Default)]
pub struct NewBlobs(Vec<u64>);

impl NewBlobs {
    /// Adopts the creation reference of `h`.
    pub fn push(&mut self, h: u64) {
        self.0.push(h);
    }

    /// True when no blob was made.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for NewBlobs {
    fn drop(&mut self) {
        for &h in &self.0 {
            HOST.release(h);
        }
    }
}
