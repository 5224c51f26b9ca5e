//! The epoch ticker: a thread that advances the wasmtime engine's epoch
//! every tick, which is how a running guest learns its time is up.
//! Stopped and joined when dropped.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

pub(crate) struct EpochTicker {
    /// Dropping it disconnects the channel, which ends the thread's wait at
    /// once (not after a whole period).
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: wasmtime::Engine, period: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hightower-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// That ticking interrupts a guest is tested with the `spin` guest
    /// (tests/wasm_guests.rs); here: the ticker starts and stops promptly.
    #[test]
    fn starts_and_stops_promptly() {
        let ticker =
            EpochTicker::start(wasmtime::Engine::default(), Duration::from_millis(1)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let started = Instant::now();
        drop(ticker);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
