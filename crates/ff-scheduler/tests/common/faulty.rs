//! A fault-injecting backend: a [`Layer`] over an inner backend that fails the
//! calls whose fault switch is on with a transport error and forwards the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use ff_core::error::BackendErrorKind;
use ff_core::layer::{Call, CallFuture, Layer, Layered};
use ff_core::{EngineBackend, EngineError};

/// Sentinel for "no scanner partition fails".
const NO_PARTITION: u32 = u32::MAX;

/// A backend with switchable faults; reach them with `layer()`.
pub type Faulty = Layered<Faults>;

/// Which calls fail; each switch can be flipped while the backend is in use.
#[derive(Debug)]
pub struct Faults {
    /// `get_budget_status` fails.
    pub budget_reads: AtomicBool,
    /// `read_quota_policy_limits` fails.
    pub quota_reads: AtomicBool,
    /// `issue_claim_grant` fails.
    pub grants: AtomicBool,
    /// `run_scanner` fails on this partition (`u32::MAX`: none).
    pub scanner_partition: AtomicU32,
    /// `release_admission` calls seen.
    pub releases: AtomicU32,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            budget_reads: AtomicBool::new(false),
            quota_reads: AtomicBool::new(false),
            grants: AtomicBool::new(false),
            scanner_partition: AtomicU32::new(NO_PARTITION),
            releases: AtomicU32::new(0),
        }
    }
}

impl Faults {
    /// Wraps `inner` with every fault off.
    pub fn wrap(inner: Arc<dyn EngineBackend>) -> Arc<Faulty> {
        Arc::new(Layered::new(inner, Self::default()))
    }

    /// Makes `run_scanner` fail on one partition.
    pub fn fail_scanner_partition(&self, partition: u16) {
        self.scanner_partition.store(u32::from(partition), Ordering::SeqCst);
    }

    /// Whether the switch for this call is on.
    fn fails(&self, call: &Call) -> bool {
        let on = |switch: &AtomicBool| switch.load(Ordering::SeqCst);
        match call.op {
            "get_budget_status" => on(&self.budget_reads),
            "read_quota_policy_limits" => on(&self.quota_reads),
            "issue_claim_grant" => on(&self.grants),
            "run_scanner" => {
                call.partition.map(u32::from) == Some(self.scanner_partition.load(Ordering::SeqCst))
            }
            _ => false,
        }
    }
}

impl Layer for Faults {
    fn around<'a, T: Send + 'a>(&'a self, call: Call, run: CallFuture<'a, T>) -> CallFuture<'a, T> {
        if call.op == "release_admission" {
            self.releases.fetch_add(1, Ordering::SeqCst);
        }
        if self.fails(&call) {
            return Box::pin(async move { Err(injected(call.op)) });
        }
        run
    }
}

fn injected(what: &str) -> EngineError {
    let cause = std::io::Error::other(format!("injected fault: {what}"));
    EngineError::transport("faulty", BackendErrorKind::Transport, Box::new(cause))
}
