//! Random kill points for the crash tests: a small xorshift (no dependency)
//! seeded from `VSCTL_CRASH_SEED` or the clock; tests print the seed, so a
//! failure can be replayed (kill timing still varies with the machine).

use std::process::{Child, ExitStatus};
use std::time::Duration;

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The seed for this run (never 0, which xorshift would keep forever).
pub fn seed() -> u64 {
    std::env::var("VSCTL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1
}

/// Let `child` run for `delay`, then SIGKILL it and reap it.
pub fn sigkill_after(mut child: Child, delay: Duration) -> ExitStatus {
    std::thread::sleep(delay);
    let _ = child.kill();
    child.wait().unwrap()
}
