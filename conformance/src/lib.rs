//! The FlowFabric conformance kit: the same contract cases, golden scenarios,
//! differential property tests, hostile-input checks and queue-anomaly checks
//! against any `EngineBackend`.
//!
//! One line in a backend crate's tests:
//!
//! ```ignore
//! ff_conformance::suite!(|| async { std::sync::Arc::new(MyBackend::connect().await) });
//! ```
//!
//! expands to one `#[test]` per group; [`run`] runs everything and returns a
//! [`Report`] for custom harnesses and the `ff-conformance` CLI.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ff_core::{Clock, ContractFamily, EngineBackend, SimClock, SystemClock};
use serde::Serialize;

pub mod admission;
pub mod anomalies;
pub mod cases;
pub mod differential;
pub mod flows;
pub mod golden;
pub mod harness;
pub mod hostile;
pub mod snapshot;
pub mod streams;
pub mod suspension;
pub mod tamper;

pub use harness::Harness;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// A deterministic dump of a backend's whole state.
pub type Inspect = Arc<dyn Fn() -> String + Send + Sync>;
/// A backend's own deep invariant check (violations as text).
pub type DeepCheck = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Environment variable narrowing the families a setup claims (comma-separated).
pub const FAMILIES_ENV: &str = "FF_CONFORMANCE_FAMILIES";
/// Longest a single case may run.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// A fresh, isolated backend and what the kit may use of it.
#[derive(Clone)]
pub struct Fixture {
    /// The backend under test.
    pub backend: Arc<dyn EngineBackend>,
    /// Its simulated clock, when it runs on one.
    pub clock: Option<SimClock>,
    /// A full state dump, when the backend offers one (kept on failure).
    pub inspect: Option<Inspect>,
    /// A deep invariant check, when the backend offers one.
    pub deep_check: Option<DeepCheck>,
}

impl Fixture {
    /// A fixture whose clock is the backend's own simulated clock, if any.
    pub fn new(backend: Arc<dyn EngineBackend>) -> Self {
        let clock = backend.sim_clock();
        Self { backend, clock, inspect: None, deep_check: None }
    }

    /// Adds a state dump.
    pub fn with_inspect(mut self, f: Inspect) -> Self {
        self.inspect = Some(f);
        self
    }

    /// Adds a deep invariant check.
    pub fn with_deep_check(mut self, f: DeepCheck) -> Self {
        self.deep_check = Some(f);
        self
    }
}

/// What a factory may return.
pub trait IntoFixture {
    /// Converts into a fixture.
    fn into_fixture(self) -> Fixture;
}

impl IntoFixture for Fixture {
    fn into_fixture(self) -> Fixture {
        self
    }
}

impl IntoFixture for Arc<dyn EngineBackend> {
    fn into_fixture(self) -> Fixture {
        Fixture::new(self)
    }
}

impl<B: EngineBackend> IntoFixture for Arc<B> {
    fn into_fixture(self) -> Fixture {
        Fixture::new(self)
    }
}

/// Makes a fresh, isolated fixture per case.
pub trait Factory: Send + Sync + 'static {
    /// A fresh fixture.
    fn make(&self) -> BoxFuture<Fixture>;
}

impl<F, Fut, T> Factory for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: IntoFixture,
{
    fn make(&self) -> BoxFuture<Fixture> {
        let fut = self();
        Box::pin(async move { fut.await.into_fixture() })
    }
}

/// The memory reference backend on a simulated clock, with its dump and deep check.
pub fn memory_fixture() -> Fixture {
    memory_fixture_on(Arc::new(SimClock::default()))
}

/// The memory reference backend on the wall clock (real-TTL mode), with its
/// dump and deep check.
pub fn memory_fixture_real_time() -> Fixture {
    memory_fixture_on(Arc::new(SystemClock))
}

fn memory_fixture_on(clock: Arc<dyn Clock>) -> Fixture {
    let cfg = ff_core::PartitionConfig { num_flow_partitions: 8, ..ff_core::PartitionConfig::default() };
    let runner = ff_backend_memory::MemoryRunner::new(clock, cfg);
    let backend = Arc::new(ff_backend_memory::MemoryBackend::new(runner));
    let dump = backend.clone();
    let check = backend.clone();
    Fixture::new(backend)
        .with_inspect(Arc::new(move || dump.runner().dump()))
        .with_deep_check(Arc::new(move || check.runner().invariant_violations()))
}

/// A fresh SQLite database file (any leftover at `path` is removed) on a
/// simulated clock, with its dump and deep check.
pub fn sqlite_fixture(path: &std::path::Path) -> Fixture {
    sqlite_fixture_on(path, Arc::new(SimClock::default()))
}

/// As [`sqlite_fixture`], on the wall clock (real-TTL mode).
pub fn sqlite_fixture_real_time(path: &std::path::Path) -> Fixture {
    sqlite_fixture_on(path, Arc::new(SystemClock))
}

fn sqlite_fixture_on(path: &std::path::Path, clock: Arc<dyn Clock>) -> Fixture {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let options = ff_backend_sqlite::SqliteOptions {
        partitions: ff_core::PartitionConfig {
            num_flow_partitions: 8,
            ..ff_core::PartitionConfig::default()
        },
        clock,
        durability: ff_backend_sqlite::Durability::Normal,
    };
    let backend = match ff_backend_sqlite::open(path, options) {
        Ok(b) => Arc::new(b),
        Err(e) => panic!("cannot open {}: {e}", path.display()),
    };
    let dump = backend.clone();
    let check = backend.clone();
    Fixture::new(backend)
        .with_inspect(Arc::new(move || dump.runner().dump()))
        .with_deep_check(Arc::new(move || check.runner().invariant_violations()))
}

/// A group of cases: one `#[test]` each under `suite!`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Error codes and outcomes of one contract family.
    Family(ContractFamily),
    /// Golden scenario transcripts.
    Golden,
    /// Random sequences compared with the memory reference.
    Differential,
    /// Hostile input: typed errors, no writes.
    Hostile,
    /// Jepsen queue anomalies over concurrent claim/complete.
    QueueAnomalies,
    /// `capabilities()` agrees with the methods.
    Capabilities,
}

impl Group {
    /// Every group, in report order.
    pub const ALL: [Group; 14] = [
        Group::Family(ContractFamily::Execution),
        Group::Family(ContractFamily::Lease),
        Group::Family(ContractFamily::Scheduling),
        Group::Family(ContractFamily::WorkerRegistry),
        Group::Family(ContractFamily::Streams),
        Group::Family(ContractFamily::Suspension),
        Group::Family(ContractFamily::Flows),
        Group::Family(ContractFamily::Budgets),
        Group::Family(ContractFamily::Quotas),
        Group::Golden,
        Group::Differential,
        Group::Hostile,
        Group::QueueAnomalies,
        Group::Capabilities,
    ];

    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Group::Family(f) => f.as_str(),
            Group::Golden => "golden",
            Group::Differential => "differential",
            Group::Hostile => "hostile",
            Group::QueueAnomalies => "queue_anomalies",
            Group::Capabilities => "capabilities",
        }
    }

    /// The contract family a group exercises (for capability gating).
    pub fn family(self) -> ContractFamily {
        match self {
            Group::Family(f) => f,
            Group::Golden | Group::Differential | Group::Hostile | Group::QueueAnomalies => {
                ContractFamily::Execution
            }
            Group::Capabilities => ContractFamily::Execution,
        }
    }
}

/// Knobs of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seed of every randomised case.
    pub seed: u64,
    /// Cases per property.
    pub cases: u32,
    /// Only these groups (all when empty).
    pub groups: Vec<Group>,
}

impl Default for Options {
    fn default() -> Self {
        Self { seed: 0x00c0_ffee, cases: 512, groups: Vec::new() }
    }
}

/// Everything a case gets.
pub struct Ctx {
    /// The fixture.
    pub fixture: Fixture,
    /// The run's options.
    pub options: Options,
    /// A factory for cases that need more fixtures (differential, anomalies).
    pub factory: Arc<dyn Factory>,
}

/// One case of the kit.
#[derive(Clone, Copy)]
pub struct Case {
    /// Its group.
    pub group: Group,
    /// Its name.
    pub name: &'static str,
    /// How it uses time (and so whether it runs without a simulated clock).
    pub time: CaseTime,
    /// The contract family the backend must claim for the case to run.
    pub requires: ContractFamily,
    /// The case body; a panic is a failure.
    pub run: fn(Ctx) -> BoxFuture<()>,
}

/// How a case uses time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseTime {
    /// Never moves time: runs the same with or without a simulated clock.
    Untimed,
    /// Moves time: exactly on a simulated clock, else in real-TTL mode by
    /// waiting on the backend's clock with durations scaled by `Harness::ms`.
    Waits,
    /// Is about exact simulated instants: skipped without a simulated clock,
    /// for this reason.
    SimulatedOnly(&'static str),
}

/// The skip reason of golden transcripts that print exact times.
pub const EXACT_TIMESTAMPS: &str = "exact-timestamp transcript needs a simulated clock";

/// `case` marked as never moving time.
pub fn untimed(mut case: Case) -> Case {
    case.time = CaseTime::Untimed;
    case
}

/// `case` marked as about exact simulated instants, skipped without a
/// simulated clock for `reason`.
pub fn simulated_only(mut case: Case, reason: &'static str) -> Case {
    case.time = CaseTime::SimulatedOnly(reason);
    case
}

/// Which clock a run's fixtures had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ClockMode {
    /// A `SimClock` the kit moves exactly.
    #[serde(rename = "simulated")]
    Simulated,
    /// The backend's real clock: scaled real TTLs and real waits.
    #[serde(rename = "real-ttl")]
    RealTtl,
}

impl ClockMode {
    /// Stable name (`simulated`, `real-ttl`).
    pub fn as_str(self) -> &'static str {
        match self {
            ClockMode::Simulated => "simulated",
            ClockMode::RealTtl => "real-ttl",
        }
    }
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum Status {
    /// Passed.
    Passed,
    /// Failed, with why.
    Failed(String),
    /// Not run, with why.
    Skipped(String),
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Group name.
    pub group: &'static str,
    /// Case name.
    pub name: &'static str,
    /// Outcome.
    #[serde(flatten)]
    pub status: Status,
    /// Milliseconds taken.
    pub millis: u64,
    /// Whether it ran against the backend's real clock (real-TTL mode).
    pub real_time: bool,
}

/// Counts per group.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Passed cases.
    pub passed: u32,
    /// Failed cases.
    pub failed: u32,
    /// Skipped cases.
    pub skipped: u32,
}

/// A whole run's report (the CLI's JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Backend family.
    pub backend: String,
    /// Seed.
    pub seed: u64,
    /// Which clock the fixtures had.
    pub clock: ClockMode,
    /// Passed cases.
    pub passed: u32,
    /// Failed cases.
    pub failed: u32,
    /// Skipped cases.
    pub skipped: u32,
    /// Per group.
    pub families: BTreeMap<&'static str, Counts>,
    /// Per case.
    pub cases: Vec<CaseResult>,
}

impl Report {
    /// A plain-text table: group × passed/failed/skipped, then failures.
    pub fn table(&self) -> String {
        let real = self.cases.iter().filter(|c| c.real_time).count();
        let mut out = match self.clock {
            ClockMode::Simulated => "clock: simulated\n".to_owned(),
            ClockMode::RealTtl => format!("clock: real-ttl ({real} cases ran on the backend's real clock)\n"),
        };
        out.push_str(&format!("{:<18} {:>6} {:>6} {:>7}\n", "family", "passed", "failed", "skipped"));
        for g in Group::ALL {
            if let Some(c) = self.families.get(g.name()) {
                out.push_str(&format!("{:<18} {:>6} {:>6} {:>7}\n", g.name(), c.passed, c.failed, c.skipped));
            }
        }
        out.push_str(&format!("{:<18} {:>6} {:>6} {:>7}\n", "total", self.passed, self.failed, self.skipped));
        for c in &self.cases {
            match &c.status {
                Status::Failed(why) => out.push_str(&format!("FAILED {}::{}: {why}\n", c.group, c.name)),
                Status::Skipped(why) => out.push_str(&format!("skipped {}::{}: {why}\n", c.group, c.name)),
                Status::Passed => {}
            }
        }
        out
    }
}

/// Every case of the kit.
pub fn all_cases() -> Vec<Case> {
    let mut v = cases::cases();
    v.extend(golden::cases());
    v.extend(differential::cases());
    v.extend(hostile::cases());
    v.extend(anomalies::cases());
    v.extend(streams::cases());
    v.extend(suspension::cases());
    v.extend(flows::cases());
    v.extend(admission::cases());
    // Every golden transcript prints exact instants (grant and lease expiries,
    // `started`/`done` stamps) as `t+N`, which real time cannot reproduce.
    v.into_iter()
        .map(|c| if c.group == Group::Golden { simulated_only(c, EXACT_TIMESTAMPS) } else { c })
        .collect()
}

/// The families a fixture claims, narrowed by [`FAMILIES_ENV`].
fn claimed(fixture: &Fixture) -> Vec<ContractFamily> {
    let mut fams = fixture.backend.capabilities().families;
    if let Ok(list) = std::env::var(FAMILIES_ENV) {
        let keep: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        fams.retain(|f| keep.contains(&f.as_str()));
    }
    fams
}

/// Runs one case on a fresh fixture.
pub async fn run_case(factory: Arc<dyn Factory>, case: Case, options: Options) -> CaseResult {
    let started = std::time::Instant::now();
    let fixture = factory.make().await;
    let real_clock = fixture.clock.is_none();
    let mut ran = false;
    let status = if !claimed(&fixture).contains(&case.requires) {
        Status::Skipped(format!("backend does not claim family {}", case.requires.as_str()))
    } else if let (CaseTime::SimulatedOnly(why), true) = (case.time, real_clock) {
        Status::Skipped(why.into())
    } else {
        ran = true;
        let inspect = fixture.inspect.clone();
        let ctx = Ctx { fixture, options, factory };
        let task = tokio::spawn((case.run)(ctx));
        match tokio::time::timeout(CASE_TIMEOUT, task).await {
            Ok(Ok(())) => Status::Passed,
            Ok(Err(e)) => Status::Failed(failure_text(e, inspect.as_ref())),
            Err(_) => Status::Failed(format!("timed out after {CASE_TIMEOUT:?}")),
        }
    };
    CaseResult {
        group: case.group.name(),
        name: case.name,
        status,
        millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        real_time: ran && real_clock,
    }
}

fn failure_text(e: tokio::task::JoinError, inspect: Option<&Inspect>) -> String {
    let msg = match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panic".into()),
        Err(e) => e.to_string(),
    };
    match inspect {
        Some(f) if std::env::var("FF_CONFORMANCE_KEEP_STATE").is_ok() => {
            format!("{msg}\n--- backend state ---\n{}", f())
        }
        _ => msg,
    }
}

/// Runs the kit (or `options.groups`) and reports case by case; `progress` is
/// called after each case.
pub async fn run_with_progress(
    factory: Arc<dyn Factory>,
    options: Options,
    progress: &(dyn Fn(&CaseResult, usize, usize) + Send + Sync),
) -> Report {
    let cases: Vec<Case> = all_cases()
        .into_iter()
        .filter(|c| options.groups.is_empty() || options.groups.contains(&c.group))
        .collect();
    let probe = factory.make().await;
    let backend = probe.backend.capabilities().identity.family.to_owned();
    let clock = if probe.clock.is_some() { ClockMode::Simulated } else { ClockMode::RealTtl };
    drop(probe);
    let mut report = Report {
        backend,
        seed: options.seed,
        clock,
        passed: 0,
        failed: 0,
        skipped: 0,
        families: BTreeMap::new(),
        cases: Vec::new(),
    };
    let total = cases.len();
    for (i, case) in cases.into_iter().enumerate() {
        let r = run_case(factory.clone(), case, options.clone()).await;
        let counts = report.families.entry(r.group).or_default();
        match r.status {
            Status::Passed => (report.passed += 1, counts.passed += 1),
            Status::Failed(_) => (report.failed += 1, counts.failed += 1),
            Status::Skipped(_) => (report.skipped += 1, counts.skipped += 1),
        };
        progress(&r, i + 1, total);
        report.cases.push(r);
    }
    report
}

/// Runs the kit and returns its report.
pub async fn run<F: Factory>(factory: F, options: Options) -> Report {
    run_with_progress(Arc::new(factory), options, &|_, _, _| {}).await
}

/// Runs one group to completion for a `#[test]`; panics with the table on failure.
pub fn run_group_for_test<F: Factory>(factory: F, group: Group) {
    run_group_for_test_cases(factory, group, Options::default().cases);
}

/// As [`run_group_for_test`], with `default_cases` randomised cases per property
/// unless `FF_CONFORMANCE_CASES` says otherwise (for backends whose every contract
/// is a network round trip).
pub fn run_group_for_test_cases<F: Factory>(factory: F, group: Group, default_cases: u32) {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("conformance: cannot start a runtime: {e}"),
    };
    let seed = std::env::var("FF_CONFORMANCE_SEED").ok().and_then(|s| s.parse().ok());
    let cases = std::env::var("FF_CONFORMANCE_CASES").ok().and_then(|s| s.parse().ok());
    let defaults = Options::default();
    let options = Options {
        seed: seed.unwrap_or(defaults.seed),
        cases: cases.unwrap_or(default_cases),
        groups: vec![group],
    };
    let report = rt.block_on(run(factory, options));
    println!("{}", report.table());
    assert!(
        report.failed == 0,
        "conformance group {} failed (seed {}, clock {}):\n{}",
        group.name(),
        report.seed,
        report.clock.as_str(),
        report.table()
    );
    assert!(report.passed > 0 || report.skipped > 0, "group {} ran nothing", group.name());
}

/// Expands to one `#[test]` per group of the kit for a backend factory:
/// `suite!(factory)`, or `suite!(factory, cases = N)` to lower the default number of
/// randomised cases for a backend whose every contract is a network round trip
/// (`FF_CONFORMANCE_CASES` still overrides).
#[macro_export]
macro_rules! suite {
    ($factory:expr) => {
        $crate::suite!($factory, cases = $crate::Options::default().cases);
    };
    ($factory:expr, cases = $cases:expr) => {
        #[test]
        fn conformance_execution() {
            $crate::run_group_for_test_cases(
                $factory,
                $crate::Group::Family(::ff_core::ContractFamily::Execution),
                $cases,
            );
        }
        #[test]
        fn conformance_lease() {
            $crate::run_group_for_test_cases(
                $factory,
                $crate::Group::Family(::ff_core::ContractFamily::Lease),
                $cases,
            );
        }
        #[test]
        fn conformance_scheduling() {
            $crate::run_group_for_test_cases(
                $factory,
                $crate::Group::Family(::ff_core::ContractFamily::Scheduling),
                $cases,
            );
        }
        #[test]
        fn conformance_worker_registry() {
            $crate::run_group_for_test_cases(
                $factory,
                $crate::Group::Family(::ff_core::ContractFamily::WorkerRegistry),
                $cases,
            );
        }
        #[test]
        fn conformance_streams() {
            $crate::run_group_for_test_cases(
                $factory,
                $crate::Group::Family(::ff_core::ContractFamily::Streams),
                $cases,
            );
        }
        #[test]
        fn conformance_suspension() {
            $crate::run_group_for_test_cases(
                $factory,
                $crate::Group::Family(::ff_core::ContractFamily::Suspension),
                $cases,
            );
        }
        #[test]
        fn conformance_flows() {
            $crate::run_group_for_test_cases(
                $factory,
                $crate::Group::Family(::ff_core::ContractFamily::Flows),
                $cases,
            );
        }
        #[test]
        fn conformance_budgets() {
            $crate::run_group_for_test_cases(
                $factory,
                $crate::Group::Family(::ff_core::ContractFamily::Budgets),
                $cases,
            );
        }
        #[test]
        fn conformance_quotas() {
            $crate::run_group_for_test_cases(
                $factory,
                $crate::Group::Family(::ff_core::ContractFamily::Quotas),
                $cases,
            );
        }
        #[test]
        fn conformance_golden() {
            $crate::run_group_for_test_cases($factory, $crate::Group::Golden, $cases);
        }
        #[test]
        fn conformance_differential() {
            $crate::run_group_for_test_cases($factory, $crate::Group::Differential, $cases);
        }
        #[test]
        fn conformance_hostile() {
            $crate::run_group_for_test_cases($factory, $crate::Group::Hostile, $cases);
        }
        #[test]
        fn conformance_queue_anomalies() {
            $crate::run_group_for_test_cases($factory, $crate::Group::QueueAnomalies, $cases);
        }
        #[test]
        fn conformance_capabilities() {
            $crate::run_group_for_test_cases($factory, $crate::Group::Capabilities, $cases);
        }
    };
}

/// Declares a case from an `async fn(Ctx)`.
#[macro_export]
macro_rules! case {
    ($group:expr, $name:ident) => {
        $crate::Case {
            group: $group,
            name: stringify!($name),
            time: $crate::CaseTime::Waits,
            requires: $group.family(),
            run: |ctx| Box::pin($name(ctx)),
        }
    };
}
