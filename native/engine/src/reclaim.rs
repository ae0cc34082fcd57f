//! Freeing big structures off the caller's thread.
//!
//! Dropping a table of a million entries takes milliseconds; a BEAM
//! scheduler must not spend that long in one call. [`drop_later`] hands the
//! value to one background thread that drops it.

use crossbeam_channel::{unbounded, Sender};
use std::sync::OnceLock;

type Garbage = Box<dyn Send>;

fn sender() -> &'static Sender<Garbage> {
    static SENDER: OnceLock<Sender<Garbage>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = unbounded::<Garbage>();
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

/// Drops `value` on the background reclaim thread.
pub fn drop_later<T: Send + 'static>(value: T) {
    if let Err(e) = sender().send(Box::new(value)) {
        // The thread is gone (only at process exit): drop here.
        drop(e.into_inner());
    }
}

/// Blocks until everything handed to [`drop_later`] before this call has
/// been dropped (for tests and orderly shutdown).
pub fn flush() {
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    struct Signal(Sender<()>);
    impl Drop for Signal {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    drop_later(Signal(tx));
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
}
