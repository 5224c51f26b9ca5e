//! A deterministic generator shared by the process-level tests (no
//! dependency on the host's randomness, so a printed seed replays a run).

/// xorshift64.
pub struct Rng(u64);

#[allow(dead_code)] // Each test file uses a different subset.
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A byte that is never zero (zeros read as "end of log").
    pub fn nonzero_byte(&mut self) -> u8 {
        (self.below(255) + 1) as u8
    }
}

/// The seed named by the environment variable `var` (to replay a run), or
/// a fresh one from the clock and the process id.
#[allow(dead_code)] // Not every test file that uses the generator needs it.
pub fn seed_from_env(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            (nanos as u64) ^ u64::from(std::process::id())
        })
}
