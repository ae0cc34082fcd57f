//! Taking hash shard locks with a short spin before parking.
//!
//! A hash shard's critical sections last tens of nanoseconds. When another
//! thread holds the lock, `parking_lot`'s own slow path soon yields the
//! thread to the kernel and then parks it: system calls that cost far more
//! than the wait. Two processes bumping one counter spent ~30 % of their
//! time there. These helpers first wait for the lock to look free, with a
//! pause per check (reads only, so waiting threads do not bounce the lock's
//! cache line), and try to take it; after `SPINS` checks they fall back
//! to `parking_lot`, which parks (a holder that was preempted is then not
//! waited for by spinning).
//!
//! Measured with two processes on one counter: ~95 -> ~79 ns per update,
//! and no loss with a CPU hog on the machine. Not used for the
//! `ordered_set`'s single lock: its longer critical sections under
//! constant contention ran slower with spinning (the releasing thread
//! re-takes the lock before the spinner sees it free).

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Checks of a contended lock before falling back to parking.
const SPINS: u32 = 20;

/// Write-locks `lock`.
#[inline]
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    match lock.try_write() {
        Some(g) => g,
        None => write_contended(lock),
    }
}

#[cold]
#[inline(never)]
fn write_contended<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    for _ in 0..SPINS {
        std::hint::spin_loop();
        if !lock.is_locked() {
            if let Some(g) = lock.try_write() {
                return g;
            }
        }
    }
    lock.write()
}

/// Read-locks `lock`.
#[inline]
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match lock.try_read() {
        Some(g) => g,
        None => read_contended(lock),
    }
}

#[cold]
#[inline(never)]
fn read_contended<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    for _ in 0..SPINS {
        std::hint::spin_loop();
        if !lock.is_locked_exclusive() {
            if let Some(g) = lock.try_read() {
                return g;
            }
        }
    }
    lock.read()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_stay_exact_under_contention() {
        let lock = Arc::new(RwLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for i in 0..50_000 {
                        if i % 3 == 0 {
                            let _ = *read(&lock);
                        } else {
                            *write(&lock) += 1;
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*read(&lock), 4 * (50_000 - 50_000_u64.div_ceil(3)));
    }
}
