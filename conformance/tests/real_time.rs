//! The whole kit against the memory backend on the wall clock (real-TTL mode):
//! time-dependent cases run with scaled real TTLs and real waits.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ff_conformance::{CaseTime, ClockMode, Fixture, Options, Status, all_cases, run};
use ff_core::EngineBackend;
use ff_core::layer::{Call, CallFuture, Layer, Layered};

fn rt() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start a runtime: {e}"),
    }
}

#[test]
fn the_memory_backend_passes_the_kit_on_real_time() {
    let options = Options { cases: 64, ..Options::default() };
    println!("seed {}", options.seed);
    let started = std::time::Instant::now();
    let report = rt().block_on(run(|| async { ff_conformance::memory_fixture_real_time() }, options));
    println!("{}\nwall time {:.1} s", report.table(), started.elapsed().as_secs_f64());
    assert_eq!(report.clock, ClockMode::RealTtl);
    assert_eq!(report.failed, 0, "{}", report.table());
    let json = match serde_json::to_value(&report) {
        Ok(v) => v,
        Err(e) => panic!("the report does not encode: {e}"),
    };
    assert_eq!(json["clock"], "real-ttl", "the JSON report names the mode");
    assert!(json["cases"].as_array().is_some_and(|cs| cs.iter().any(|c| c["real_time"] == true)));
    // Every case that moves time ran, on the real clock, and passed.
    let cases = all_cases();
    let waits: Vec<_> = cases.iter().filter(|c| c.time == CaseTime::Waits).map(|c| c.name).collect();
    assert!(waits.len() >= 15, "too few time-dependent cases run in real time: {waits:?}");
    for name in &waits {
        let r = report.cases.iter().find(|r| r.name == *name);
        match r {
            Some(r) => assert!(r.real_time && r.status == Status::Passed, "{name}: {r:?}"),
            None => panic!("{name} did not run"),
        }
    }
    // Only cases about exact simulated instants are skipped, each with its reason.
    for r in report.cases.iter().filter(|r| matches!(r.status, Status::Skipped(_))) {
        let case = cases.iter().find(|c| c.name == r.name && c.group.name() == r.group);
        match case.map(|c| c.time) {
            Some(CaseTime::SimulatedOnly(why)) => {
                assert_eq!(r.status, Status::Skipped(why.to_owned()), "{}::{}", r.group, r.name)
            }
            other => panic!("{}::{} skipped but is {other:?}: {:?}", r.group, r.name, r.status),
        }
    }
}

/// Delays some contract calls by more than any scaled TTL, so a case that
/// leans on a short TTL *not* having elapsed yet fails here.
struct Stalls {
    rng: Mutex<u64>,
    left_in_fixture: AtomicU32,
    left_in_run: Arc<AtomicU32>,
    taken: Arc<AtomicU32>,
}

/// One call in this many stalls.
const STALL_ONE_IN: u64 = 12;
/// Stalls per fixture, at most.
const STALLS_PER_FIXTURE_MAX: u32 = 4;
/// Stalls per run, at most (bounds the test's wall time).
const STALLS_PER_RUN_MAX: u32 = 120;
/// Shortest and longest stall: above every scaled TTL the cases wait past.
const STALL_MS_MIN: u64 = 120;
const STALL_MS_MAX: u64 = 300;

impl Stalls {
    fn next(&self) -> u64 {
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        // xorshift64*: deterministic per fixture seed.
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn take(&self) -> Option<Duration> {
        let r = self.next();
        if !r.is_multiple_of(STALL_ONE_IN) {
            return None;
        }
        let take =
            |c: &AtomicU32| c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if !take(&self.left_in_fixture) || !take(&self.left_in_run) {
            return None;
        }
        self.taken.fetch_add(1, Ordering::SeqCst);
        Some(Duration::from_millis(STALL_MS_MIN + (r >> 32) % (STALL_MS_MAX - STALL_MS_MIN + 1)))
    }
}

impl Layer for Stalls {
    fn around<'a, T: Send + 'a>(&'a self, call: Call, run: CallFuture<'a, T>) -> CallFuture<'a, T> {
        let stall = if call.op == "server_time_ms" { None } else { self.take() };
        Box::pin(async move {
            if let Some(d) = stall {
                tokio::time::sleep(d).await;
            }
            run.await
        })
    }
}

#[test]
fn the_real_time_kit_passes_when_calls_stall_past_every_short_ttl() {
    let seed: u64 =
        std::env::var("FF_CONFORMANCE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x057a_11ed);
    println!("stall seed {seed} (reproduce with FF_CONFORMANCE_SEED={seed})");
    let left_in_run = Arc::new(AtomicU32::new(STALLS_PER_RUN_MAX));
    let taken = Arc::new(AtomicU32::new(0));
    let fixtures = Arc::new(AtomicU64::new(0));
    let (left, took) = (left_in_run.clone(), taken.clone());
    let factory = move || {
        let inner = ff_conformance::memory_fixture_real_time();
        let n = fixtures.fetch_add(1, Ordering::SeqCst);
        let layer = Stalls {
            rng: Mutex::new((seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1),
            left_in_fixture: AtomicU32::new(STALLS_PER_FIXTURE_MAX),
            left_in_run: left.clone(),
            taken: took.clone(),
        };
        let backend: Arc<dyn EngineBackend> = Arc::new(Layered::new(inner.backend.clone(), layer));
        let mut f = Fixture::new(backend);
        f.inspect = inner.inspect.clone();
        f.deep_check = inner.deep_check.clone();
        std::future::ready(f)
    };
    let options = Options { cases: 32, seed, ..Options::default() };
    let started = std::time::Instant::now();
    let report = rt().block_on(run(factory, options));
    let stalls = taken.load(Ordering::SeqCst);
    println!("{}\n{stalls} stalls, wall time {:.1} s", report.table(), started.elapsed().as_secs_f64());
    assert_eq!(report.clock, ClockMode::RealTtl);
    assert_eq!(report.failed, 0, "seed {seed}, {stalls} stalls:\n{}", report.table());
    assert!(stalls >= 20, "only {stalls} stalls were injected (seed {seed})");
}
