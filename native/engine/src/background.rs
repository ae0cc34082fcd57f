//! One background worker thread for work that must not run on a BEAM
//! scheduler (for example removing 100,000 registrations of a dead process).

use crossbeam_channel::{unbounded, Sender};
use std::sync::OnceLock;

type Job = Box<dyn FnOnce() + Send>;

fn sender() -> &'static Sender<Job> {
    static SENDER: OnceLock<Sender<Job>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = unbounded::<Job>();
        std::thread::Builder::new()
            .name("native_store_worker".into())
            .spawn(move || {
                for job in rx {
                    // A panicking job must not take the worker down.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .expect("spawn the background worker");
        tx
    })
}

/// Runs `job` on the background worker, in submission order.
pub fn run(job: impl FnOnce() + Send + 'static) {
    if let Err(e) = sender().send(Box::new(job)) {
        (e.into_inner())();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn jobs_run_in_order() {
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 0..10 {
            let tx = tx.clone();
            super::run(move || tx.send(i).unwrap());
        }
        super::run(|| panic!("a failing job"));
        let tx2 = tx.clone();
        super::run(move || tx2.send(99).unwrap());
        let got: Vec<i32> = (0..11).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 99]);
    }
}
