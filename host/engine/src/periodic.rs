//! A background thread that runs a task once per period, owned by a handle
//! that stops and joins it when dropped. The interval flusher and the
//! WebAssembly epoch ticker are both one.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct PeriodicThread {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl PeriodicThread {
    /// Starts thread `name`, calling `tick` every `period` (never sooner:
    /// spurious wake-ups do not shorten a period) until dropped.
    pub fn start(
        name: &str,
        period: Duration,
        mut tick: impl FnMut() + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let (lock, wake) = &*signal;
                loop {
                    let deadline = Instant::now() + period;
                    let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                    loop {
                        if *stopped {
                            return;
                        }
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        stopped = wake
                            .wait_timeout(stopped, deadline - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    // Not holding the stop lock while the task runs, so a drop
                    // never waits for more than one task.
                    drop(stopped);
                    tick();
                }
            })?;
        Ok(PeriodicThread {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for PeriodicThread {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn ticks_until_dropped_then_joins() {
        let ticks = Arc::new(AtomicU64::new(0));
        let counter = ticks.clone();
        let thread = PeriodicThread::start("test-periodic", Duration::from_millis(1), move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ticks.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "no ticks");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(thread);
        let after_drop = ticks.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            after_drop,
            "no tick after the drop returned"
        );
        assert_eq!(
            Arc::strong_count(&ticks),
            1,
            "the thread (and its task) is gone"
        );
    }

    #[test]
    fn a_long_period_does_not_delay_the_drop() {
        let thread =
            PeriodicThread::start("test-periodic", Duration::from_secs(3600), || {}).unwrap();
        let started = Instant::now();
        drop(thread);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
