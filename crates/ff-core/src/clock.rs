//! Time as an injected value: `SystemClock` in production, `SimClock` in tests and simulation.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::ids::TimestampMs;

/// A source of `now` in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time in ms.
    fn now_ms(&self) -> TimestampMs;

    /// The simulated clock behind this one, if any.
    fn as_sim(&self) -> Option<&SimClock> {
        None
    }
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> TimestampMs {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A simulated clock: set, advance, drift and jump; clones share one time.
#[derive(Debug, Clone)]
pub struct SimClock {
    now_ms: Arc<AtomicI64>,
    drift_ppm: Arc<AtomicI64>,
}

/// 2025-01-01T00:00:00Z, the default start of a simulated clock.
pub const SIM_CLOCK_START_MS: TimestampMs = 1_735_689_600_000;

impl Default for SimClock {
    fn default() -> Self {
        Self::new(SIM_CLOCK_START_MS)
    }
}

impl SimClock {
    /// A clock that starts at `start_ms` with no drift.
    pub fn new(start_ms: TimestampMs) -> Self {
        Self { now_ms: Arc::new(AtomicI64::new(start_ms)), drift_ppm: Arc::new(AtomicI64::new(0)) }
    }

    /// Sets the time.
    pub fn set(&self, ms: TimestampMs) {
        self.now_ms.store(ms, Ordering::SeqCst);
    }

    /// Advances by `ms` (scaled by the drift rate); returns the new time.
    pub fn advance(&self, ms: u64) -> TimestampMs {
        let ms = i64::try_from(ms).unwrap_or(i64::MAX);
        let drift = self.drift_ppm.load(Ordering::SeqCst);
        let step = ms.saturating_add(ms.saturating_mul(drift) / 1_000_000).max(0);
        self.now_ms.fetch_add(step, Ordering::SeqCst).saturating_add(step)
    }

    /// Jumps by a signed amount (a clock step, possibly backwards); returns the new time.
    pub fn jump(&self, delta_ms: i64) -> TimestampMs {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst).saturating_add(delta_ms)
    }

    /// Sets the drift rate in parts per million applied to later advances.
    pub fn set_drift_ppm(&self, ppm: i64) {
        self.drift_ppm.store(ppm, Ordering::SeqCst);
    }

    /// The drift rate in parts per million.
    pub fn drift_ppm(&self) -> i64 {
        self.drift_ppm.load(Ordering::SeqCst)
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> TimestampMs {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn as_sim(&self) -> Option<&SimClock> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_clock_shares_time_between_clones() {
        let a = SimClock::new(1000);
        let b = a.clone();
        assert_eq!(a.advance(500), 1500);
        assert_eq!(b.now_ms(), 1500);
        b.set(10);
        assert_eq!(a.now_ms(), 10);
        assert_eq!(a.jump(-5), 5);
    }

    #[test]
    fn drift_scales_advances() {
        let c = SimClock::new(0);
        c.set_drift_ppm(100_000); // +10 %
        assert_eq!(c.advance(1000), 1100);
        c.set_drift_ppm(-500_000);
        assert_eq!(c.advance(1000), 1600);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
