//! The epoch ticker: a thread that advances the wasmtime engine's epoch
//! every tick, which is how a running guest learns its time is up.
//! Stopped and joined when dropped.

use std::time::Duration;

use crate::periodic::PeriodicThread;

pub(crate) struct EpochTicker {
    _thread: PeriodicThread,
}

impl EpochTicker {
    pub fn start(engine: wasmtime::Engine, period: Duration) -> std::io::Result<Self> {
        let thread =
            PeriodicThread::start("hightower-epoch", period, move || engine.increment_epoch())?;
        Ok(EpochTicker { _thread: thread })
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
