//! What the service takes from its surroundings: randomness and the clock.
//! Behind traits so the native tests can make both deterministic; inside
//! the component they are `wasi:random` and `wasi:clocks`.

/// Cryptographically secure randomness.
pub trait Random {
    fn fill(&self, buf: &mut [u8]);
}

/// Seconds since the Unix epoch.
pub trait Clock {
    fn now(&self) -> u64;
}

/// The OS's randomness (`wasi:random` inside the component).
pub struct SystemRandom;

impl Random for SystemRandom {
    fn fill(&self, buf: &mut [u8]) {
        getrandom::fill(buf).expect("the system's random source failed");
    }
}

/// The system clock (`wasi:clocks` inside the component).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}
