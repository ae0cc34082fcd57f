//! Out-of-line binaries shared with the VM through NIF resources (the host
//! side of `native_store_engine::blob`).
//!
//! A large binary stored as a top-level, non-key element of an object of a
//! set or an ordered_set (bags keep their bytes inline) is copied once, on
//! insert, into a block of our own (`Blob`: a header and the bytes); the entry keeps the block's address as the blob handle and
//! one reference (`entry_refs`). Inserting and deleting never touch the
//! VM's allocators.
//!
//! The first lookup of a blob makes a resource object that points at it
//! (`BlobRes`) and caches it in the blob (which holds one reference to the
//! resource); every lookup returns the bytes with
//! `enif_make_resource_binary`: no binary allocated, no copy, and the VM's
//! binary terms keep the resource alive as long as they live.
//!
//! Freeing: when the last entry releases a blob, the blob is freed at once
//! if no lookup ever showed it to the VM; otherwise the blob's reference to
//! its resource is released, and the resource's destructor frees the blob
//! when the VM's last binary of it is gone too.

use native_store_engine::blob::{self, BlobHost};
use rustler::sys::*;
use std::alloc::Layout;
use std::ffi::c_void;
use std::sync::atomic::{fence, AtomicPtr, AtomicUsize, Ordering};

/// Binaries of at least this many bytes are kept out of line: smaller ones
/// are heap binaries in the VM (copied by ETS too), and for them a copy
/// costs less than a shared block.
pub const MIN_BYTES: usize = 65;

/// A blob: a header and the bytes, in one allocation of our own (the
/// handle is its address).
#[repr(C)]
struct Blob {
    /// References held by entries (and by the encoder that made it).
    entry_refs: AtomicUsize,
    /// The resource that shares the bytes with the VM, made by the first
    /// lookup (null until then); this field holds one reference to it.
    res: AtomicPtr<c_void>,
    /// Length of the bytes that follow the header.
    len: usize,
}

const HEADER: usize = std::mem::size_of::<Blob>();

fn layout(len: usize) -> Option<Layout> {
    Layout::from_size_align(HEADER.checked_add(len)?, std::mem::align_of::<Blob>()).ok()
}

/// The data of a blob resource: the blob whose bytes its binaries show.
#[repr(C)]
struct BlobRes {
    blob: *mut Blob,
    /// Whether the resource frees the blob when the VM frees it (false for
    /// a resource that lost the race to be the blob's, never shown to the VM).
    owns: bool,
}

const _: () = assert!(std::mem::align_of::<BlobRes>() <= 8);

static BLOB_TYPE: AtomicPtr<ErlNifResourceType> = AtomicPtr::new(std::ptr::null_mut());

/// Blocks of this many bytes at most are kept for reuse by [`Spare`].
const SPARE_MAX: usize = 64 << 10;

/// A few freed blob blocks of this thread, for the next blobs of the same
/// size: overwriting a large value frees one block and allocates another
/// of the same size, which the general allocator serves on its slow path
/// (a page's free list is refilled on the next allocation). At most
/// `SLOTS` blocks of at most [`SPARE_MAX`] bytes per thread; freed with the
/// thread.
struct Spare([(usize, usize); Spare::SLOTS]);

impl Spare {
    const SLOTS: usize = 4;

    /// A kept block of exactly `l` (null if none).
    fn take(&mut self, l: Layout) -> *mut u8 {
        for slot in self.0.iter_mut() {
            if slot.0 != 0 && slot.1 == l.size() {
                let p = slot.0;
                *slot = (0, 0);
                return p as *mut u8;
            }
        }
        std::ptr::null_mut()
    }

    /// Keeps the block `p` of layout `l`; false when there is no room.
    fn put(&mut self, p: *mut u8, l: Layout) -> bool {
        if l.size() > SPARE_MAX {
            return false;
        }
        for slot in self.0.iter_mut() {
            if slot.0 == 0 {
                *slot = (p as usize, l.size());
                return true;
            }
        }
        false
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        for &(p, size) in &self.0 {
            if p != 0 {
                // SAFETY: a kept block was allocated with this size and the
                // blob alignment, and is owned by the cache alone.
                unsafe {
                    std::alloc::dealloc(
                        p as *mut u8,
                        Layout::from_size_align_unchecked(size, std::mem::align_of::<Blob>()),
                    )
                }
            }
        }
    }
}

thread_local! {
    static SPARE: std::cell::RefCell<Spare> =
        const { std::cell::RefCell::new(Spare([(0, 0); Spare::SLOTS])) };
}

/// A block for a blob of layout `l` (null on failure).
fn alloc_block(l: Layout) -> *mut u8 {
    let kept = SPARE
        .try_with(|s| {
            s.try_borrow_mut()
                .map(|mut s| s.take(l))
                .unwrap_or(std::ptr::null_mut())
        })
        .unwrap_or(std::ptr::null_mut());
    if !kept.is_null() {
        return kept;
    }
    // SAFETY: `l` has a non-zero size (the header).
    unsafe { std::alloc::alloc(l) }
}

/// Frees a blob's allocation.
///
/// # Safety
/// `b` was made by [`make`], and nothing refers to it any more (no entry,
/// no resource that shows its bytes).
unsafe fn free_blob(b: *mut Blob) {
    // SAFETY: see the contract; the layout is the one `make` used.
    unsafe {
        let len = (*b).len;
        if let Some(l) = layout(len) {
            let p = b as *mut u8;
            let kept = SPARE
                .try_with(|s| s.try_borrow_mut().map(|mut s| s.put(p, l)).unwrap_or(false))
                .unwrap_or(false);
            if !kept {
                std::alloc::dealloc(p, l);
            }
        }
    }
}

/// Destructor of a blob resource: the VM freed its last binary and the
/// blob's own reference (given up when the last entry released the blob).
unsafe extern "C" fn blob_dtor(_env: *mut ErlNifEnv, obj: *mut c_void) {
    // SAFETY: `obj` is the data of a blob resource, written by `term`
    // before the resource was published; an owning resource is the last
    // thing referring to its blob (the blob's reference to it was its
    // last entry's, see `release`). Nothing here can panic.
    unsafe {
        let r = &*(obj as *const BlobRes);
        if r.owns {
            free_blob(r.blob);
        }
    }
}

/// The NIF's blob host (see the module docs).
struct Blobs;

static HOST: Blobs = Blobs;

impl BlobHost for Blobs {
    fn keep(&self, h: u64) {
        // SAFETY: `h` is a live blob (the caller holds a reference).
        let b = unsafe { &*(h as *const Blob) };
        b.entry_refs.fetch_add(1, Ordering::Relaxed);
    }

    fn release(&self, h: u64) {
        let b = h as *mut Blob;
        // SAFETY: `h` is a live blob and the caller gives up a reference it
        // holds; the count is read before the blob can go away.
        if unsafe { (*b).entry_refs.fetch_sub(1, Ordering::Release) } != 1 {
            return;
        }
        fence(Ordering::Acquire);
        // That was the last reference: nothing else can reach the blob
        // (lookups reach it only through an entry), so this thread owns it.
        // SAFETY: as above; exclusive now.
        let res = unsafe { (*b).res.swap(std::ptr::null_mut(), Ordering::Acquire) };
        if res.is_null() {
            // SAFETY: never shown to the VM, no entry left.
            unsafe { free_blob(b) }
        } else {
            // SAFETY: `res` is the blob's owning resource, and this is the
            // blob's reference to it; its destructor frees the blob once
            // the VM's binaries of it are gone too. Thread-safe (entries are
            // also dropped on the background thread and in `down`).
            unsafe { enif_release_resource(res) }
        }
    }

    unsafe fn data<'a>(&self, h: u64) -> &'a [u8] {
        // SAFETY: the caller guarantees `h` is a live blob for `'a`; `make`
        // wrote its length and bytes, which never change.
        unsafe {
            let b = h as *const Blob;
            std::slice::from_raw_parts((b as *const u8).add(HEADER), (*b).len)
        }
    }

    fn footprint(&self, h: u64) -> usize {
        // SAFETY: the caller holds a reference to `h` (an entry).
        let len = unsafe { self.data(h) }.len();
        (HEADER + len).next_multiple_of(16)
    }
}

/// Opens the blob resource type and registers the host (called at load);
/// false on failure.
pub fn init(env: rustler::Env) -> bool {
    if BLOB_TYPE.load(Ordering::Acquire).is_null() {
        let mut tried = ErlNifResourceFlags::ERL_NIF_RT_CREATE;
        // SAFETY: called from the load callback with its environment; the
        // name is NUL-terminated; `blob_dtor` matches the destructor type.
        let ty = unsafe {
            enif_open_resource_type(
                env.as_c_arg(),
                std::ptr::null(),
                c"NativeStore.Blob".as_ptr(),
                Some(blob_dtor),
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
/// by [`NewBlobs`]); `None` when the resource type is missing (the caller
/// then keeps the bytes inline).
pub fn make(bytes: &[u8]) -> Option<u64> {
    if BLOB_TYPE.load(Ordering::Acquire).is_null() {
        return None;
    }
    let l = layout(bytes.len())?;
    // SAFETY: the block has layout `l`; the header and the bytes are
    // written before the handle is published.
    unsafe {
        let p = alloc_block(l) as *mut Blob;
        if p.is_null() {
            return None;
        }
        p.write(Blob {
            entry_refs: AtomicUsize::new(1),
            res: AtomicPtr::new(std::ptr::null_mut()),
            len: bytes.len(),
        });
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (p as *mut u8).add(HEADER), bytes.len());
        Some(p as u64)
    }
}

/// The binary term of blob `h` in `env`, sharing its bytes: through the
/// blob's resource, made by the first lookup.
///
/// # Safety
/// `env` is the caller's live environment and `h` a live blob (held by an
/// entry the caller reads under the table's lock).
pub unsafe fn term(env: *mut ErlNifEnv, h: u64) -> Option<ErlNifTerm> {
    // SAFETY: see the function's contract; a resource is published (CAS)
    // only once its data is written, and the blob's reference to it lasts
    // until its last entry is gone, after this call.
    unsafe {
        let b = &*(h as *const Blob);
        let mut res = b.res.load(Ordering::Acquire);
        if res.is_null() {
            let ty = BLOB_TYPE.load(Ordering::Acquire);
            let new = enif_alloc_resource(ty, std::mem::size_of::<BlobRes>());
            if new.is_null() {
                return None;
            }
            (new as *mut BlobRes).write(BlobRes {
                blob: h as *mut Blob,
                owns: true,
            });
            match b.res.compare_exchange(
                std::ptr::null_mut(),
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => res = new,
                Err(current) => {
                    // Another lookup made one first: this one never shows
                    // the bytes and must not free the blob.
                    (*(new as *mut BlobRes)).owns = false;
                    enif_release_resource(new);
                    res = current;
                }
            }
        }
        let data = HOST.data(h);
        Some(enif_make_resource_binary(
            env,
            res,
            data.as_ptr() as *const c_void,
            data.len(),
        ))
    }
}

/// The creation references of the blobs one encoding made: released when
/// dropped, once the entry made from the buffer has kept its own (or the
/// encoding failed or was not stored).
#[derive(Default)]
pub struct NewBlobs {
    /// The first few, without an allocation.
    first: [u64; 4],
    n: usize,
    more: Vec<u64>,
}

impl NewBlobs {
    /// Adopts the creation reference of `h`.
    pub fn push(&mut self, h: u64) {
        if self.n < self.first.len() {
            self.first[self.n] = h;
            self.n += 1;
        } else {
            self.more.push(h);
        }
    }
}

impl Drop for NewBlobs {
    fn drop(&mut self) {
        for &h in self.first[..self.n].iter().chain(&self.more) {
            HOST.release(h);
        }
    }
}

/// The bytes of blob `h`.
///
/// # Safety
/// `h` is a live blob held by an entry the caller reads (for `'a`).
pub unsafe fn bytes<'a>(h: u64) -> &'a [u8] {
    // SAFETY: see the function's contract.
    unsafe { HOST.data(h) }
}

/// True when blob `h` has its resource already (a lookup showed it).
///
/// # Safety
/// `h` is a live blob held by an entry the caller reads.
pub unsafe fn has_resource(h: u64) -> bool {
    // SAFETY: see the function's contract.
    unsafe { !(*(h as *const Blob)).res.load(Ordering::Acquire).is_null() }
}
