//! A fault-injecting layer usable around any backend: it withholds a call
//! before it reaches the store (a transport failure before commit), loses the
//! reply of a call that committed (an ack lost after commit), or delays a call
//! on the simulated clock. Every choice comes from one seeded generator.

use parking_lot::Mutex;

use ff_core::EngineError;
use ff_core::SimClock;
use ff_core::error::BackendErrorKind;
use ff_core::layer::{Call, CallFuture, Layer};

use crate::Rng;

/// Per-call fault probabilities, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultRates {
    /// The call fails with a transport error before it reaches the store.
    pub fail_before_pct: u8,
    /// The call commits, then its reply is lost (a transport error instead).
    pub lose_ack_pct: u8,
    /// The call is held back on the simulated clock first.
    pub delay_pct: u8,
    /// Longest delay, in simulated ms.
    pub delay_ms_max: u64,
}

impl FaultRates {
    /// Swarm testing: the seed draws the rates as well as the events, so
    /// different seeds explore quiet, noisy and hostile networks.
    pub fn swarm(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5eed_fa17);
        let pick = |rng: &mut Rng, max: u64| u8::try_from(rng.below(max + 1)).unwrap_or(0);
        Self {
            fail_before_pct: pick(&mut rng, 15),
            lose_ack_pct: pick(&mut rng, 15),
            delay_pct: pick(&mut rng, 20),
            delay_ms_max: 1 + rng.below(8_000),
        }
    }
}

/// What the layer injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct FaultStats {
    /// Calls failed before the store saw them.
    pub failed_before: u64,
    /// Calls that committed but answered a transport error.
    pub acks_lost: u64,
    /// Calls held back on the clock.
    pub delayed: u64,
}

struct State {
    rng: Rng,
    stats: FaultStats,
    enabled: bool,
}

/// The fault-injecting [`Layer`]; wrap a backend with `ff_core::layer::Layered::new(inner, layer)`.
pub struct FaultLayer {
    rates: FaultRates,
    clock: Option<SimClock>,
    state: Mutex<State>,
}

impl std::fmt::Debug for FaultLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultLayer").field("rates", &self.rates).finish_non_exhaustive()
    }
}

impl FaultLayer {
    /// A layer drawing its faults from `seed`; delays advance `clock` when given.
    pub fn new(seed: u64, rates: FaultRates, clock: Option<SimClock>) -> Self {
        let state = State { rng: Rng::new(seed ^ 0xfa17_1a7e), stats: FaultStats::default(), enabled: true };
        Self { rates, clock, state: Mutex::new(state) }
    }

    /// Turns injection on or off (the liveness phase runs with it off).
    pub fn set_enabled(&self, on: bool) {
        self.state.lock().enabled = on;
    }

    /// What was injected so far.
    pub fn stats(&self) -> FaultStats {
        self.state.lock().stats
    }

    /// Draws the fate of one call: (fail before, lose ack, delay ms).
    fn draw(&self) -> (bool, bool, u64) {
        let mut s = self.state.lock();
        if !s.enabled {
            return (false, false, 0);
        }
        let fail_before = s.rng.chance(self.rates.fail_before_pct);
        let lose_ack = !fail_before && s.rng.chance(self.rates.lose_ack_pct);
        let delay =
            if s.rng.chance(self.rates.delay_pct) { 1 + s.rng.below(self.rates.delay_ms_max) } else { 0 };
        if fail_before {
            s.stats.failed_before += 1;
        }
        if delay > 0 {
            s.stats.delayed += 1;
        }
        (fail_before, lose_ack, delay)
    }

    fn count_lost_ack(&self) {
        self.state.lock().stats.acks_lost += 1;
    }
}

fn injected(what: &'static str) -> EngineError {
    EngineError::transport("fault-layer", BackendErrorKind::Transport, what.into())
}

impl Layer for FaultLayer {
    fn around<'a, T: Send + 'a>(&'a self, _call: Call, run: CallFuture<'a, T>) -> CallFuture<'a, T> {
        Box::pin(async move {
            let (fail_before, lose_ack, delay) = self.draw();
            if fail_before {
                return Err(injected("injected: connection reset before the request was sent"));
            }
            if delay > 0
                && let Some(clock) = &self.clock
            {
                clock.advance(delay);
            }
            let answer = run.await;
            if lose_ack && answer.is_ok() {
                self.count_lost_ack();
                return Err(injected("injected: reply lost after commit"));
            }
            answer
        })
    }
}

/// Whether an error is a transport failure whose outcome the caller cannot know.
pub fn is_transport(e: &EngineError) -> bool {
    matches!(e.root(), EngineError::Transport { .. })
}
