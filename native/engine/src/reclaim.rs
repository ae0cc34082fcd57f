//! Freeing big structures off the caller's thread.
//!
//! Dropping a table of a million entries takes milliseconds; a BEAM
//! scheduler must not spend that long in one call. [`drop_later`] hands the
//! value to one background thread that drops it.

use crossbeam_channel::{unbounded, Sender};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

type Garbage = Box<dyn Send>;

/// Values handed to [`drop_later`] and not dropped yet.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// A value to drop; if `counted`, counted in [`PENDING`] until it is
/// dropped.
struct Counted {
    value: Garbage,
    counted: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        // Drop the value first: the count falls once it is gone.
        drop(std::mem::replace(&mut self.value, Box::new(())));
        if self.counted {
            PENDING.fetch_sub(1, Ordering::Release);
        }
    }
}

fn sender() -> &'static Sender<Counted> {
    static SENDER: OnceLock<Sender<Counted>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = unbounded::<Counted>();
        std::thread::Builder::new()
            .name("native_store_reclaim".into())
            .spawn(move || {
                for garbage in rx {
                    drop(garbage);
                }
            })
            .expect("spawn the reclaim thread");
        tx
    })
}

/// Hands `value` to the background thread.
fn send(value: Garbage, counted: bool) {
    if counted {
        PENDING.fetch_add(1, Ordering::Relaxed);
    }
    if let Err(e) = sender().send(Counted { value, counted }) {
        // The thread is gone (only at process exit): drop here.
        drop(e.into_inner());
    }
}

/// Drops `value` on the background reclaim thread.
pub fn drop_later<T: Send + 'static>(value: T) {
    send(Box::new(value), true);
}

/// Values handed to [`drop_later`] that are not dropped yet (for tests).
pub fn pending() -> usize {
    PENDING.load(Ordering::Acquire)
}

/// Blocks until everything handed to [`drop_later`] before this call has
/// been dropped (for tests, benchmarks and orderly shutdown).
pub fn flush() {
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    struct Signal(Sender<()>);
    impl Drop for Signal {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    // Not counted: when this returns, [`pending`] counts only what was
    // handed over since (the signal's count could still be falling).
    send(Box::new(Signal(tx)), false);
    let _ = rx.recv();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn drops_happen_in_background() {
        let count = Arc::new(AtomicUsize::new(0));
        struct D(Arc<AtomicUsize>);
        impl Drop for D {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        for _ in 0..100 {
            drop_later(D(count.clone()));
        }
        flush();
        assert_eq!(count.load(Ordering::SeqCst), 100);
    }

    #[test]
    fn pending_counts_until_dropped() {
        // A value that takes a while to drop: still pending meanwhile.
        struct Slow;
        impl Drop for Slow {
            fn drop(&mut self) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        drop_later(Slow);
        assert!(pending() >= 1);
        flush();
    }
}
