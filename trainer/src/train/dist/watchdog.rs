//! A rank whose peers stop answering would wait in its next collective forever (NCCL blocks
//! until every rank joins). The watchdog ends such a rank with a message after a timeout
//! without progress, so the launcher — or, on another node, that node's launcher — takes the
//! job down instead of leaving it hanging.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Progress marks of one rank; [`Watchdog::alive`] after each step.
pub struct Watchdog {
    last: Arc<AtomicU64>,
    start: Instant,
}

impl Watchdog {
    /// Watch rank `rank`: exit(1) after `timeout` without a call to [`alive`](Self::alive).
    pub fn start(rank: usize, timeout: Duration) -> Watchdog {
        let start = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let seen = last.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1).min(timeout));
            let idle = start
                .elapsed()
                .saturating_sub(Duration::from_millis(seen.load(Ordering::Relaxed)));
            if idle > timeout {
                eprintln!(
                    "error: rank {rank}: no progress for {} s: another rank stopped answering (died, or its node lost the network); stopping",
                    idle.as_secs()
                );
                std::process::exit(1);
            }
        });
        Watchdog { last, start }
    }

    pub fn alive(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}
