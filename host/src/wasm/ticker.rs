//! The epoch ticker: a thread that advances the wasmtime engine's epoch
//! every tick, which is how a running guest learns its time is up.
//! Stopped and joined when dropped.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) struct EpochTicker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: wasmtime::Engine, period: Duration) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hightower-epoch".into())
            .spawn(move || {
                let (lock, wake) = &*signal;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    // Wait out the whole period, whatever spurious wake-ups
                    // happen, so that a tick is never short.
                    let deadline = Instant::now() + period;
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
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
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

    #[test]
    fn drop_stops_and_joins_the_thread() {
        let ticker =
            EpochTicker::start(wasmtime::Engine::default(), Duration::from_millis(1)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let stop = ticker.stop.clone();
        let started = Instant::now();
        drop(ticker);
        assert!(started.elapsed() < Duration::from_secs(1));
        // The thread held the other clone; joined means it is gone.
        assert_eq!(Arc::strong_count(&stop), 1);
    }
}
