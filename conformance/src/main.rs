//! `ff-conformance`: runs the whole kit against a backend and prints a
//! contract-family table; exits non-zero on any failure.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;
use ff_conformance::{Factory, Fixture, Options, Report, run_with_progress};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(name = "ff-conformance", about = "Run the FlowFabric conformance kit against a backend")]
struct Cli {
    /// `memory`, `sqlite:DIR` (a fresh database file per case inside DIR), `valkey://HOST:PORT`
    /// or `valkey+cluster://HOST:PORT[,HOST:PORT…]` (a fresh key prefix per case) or
    /// `postgres://URL` (a fresh schema per case).
    #[arg(long, default_value = "memory")]
    backend: String,
    /// Cases per property test.
    #[arg(long, default_value_t = 512)]
    cases: u32,
    /// Seed of the randomised cases.
    #[arg(long, default_value_t = 0x00c0_ffee)]
    seed: u64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Run the backend on its real clock even where it supports a simulated one
    /// (real-TTL mode: scaled TTLs, real waits, exact-instant cases skipped).
    #[arg(long)]
    real_time: bool,
}

/// A factory for a backend named on the command line, on a simulated clock
/// unless `real_time`.
fn factory_for(spec: &str, real_time: bool) -> Result<Arc<dyn Factory>, String> {
    match spec {
        "memory" if real_time => {
            Ok(Arc::new(|| async { ff_conformance::memory_fixture_real_time() }) as Arc<dyn Factory>)
        }
        "memory" => Ok(Arc::new(|| async { ff_conformance::memory_fixture() }) as Arc<dyn Factory>),
        s if s.starts_with("sqlite:") => {
            let dir = std::path::PathBuf::from(&s["sqlite:".len()..]);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            Ok(Arc::new(SqliteFactory { dir, real_time, next: AtomicU64::new(0) }) as Arc<dyn Factory>)
        }
        s if s.starts_with("valkey://") || s.starts_with("valkey+cluster://") => {
            let (base, topology) = ff_backend_valkey::ValkeyConfig::from_url(s).map_err(|e| e.to_string())?;
            let nodes = match &topology {
                ff_backend_valkey::Topology::Cluster { .. } => {
                    ff_backend_valkey::raw::cluster_primaries(&base.host, base.port)
                        .map_err(|e| format!("backend {s}: {e}"))?
                        .into_iter()
                        .map(|p| (p.host, p.port))
                        .collect()
                }
                _ => vec![(base.host.clone(), base.port)],
            };
            Ok(Arc::new(ValkeyFactory { base, topology, nodes, real_time, next: AtomicU64::new(0) })
                as Arc<dyn Factory>)
        }
        s if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
            Ok(Arc::new(PostgresFactory { url: s.to_owned(), real_time, next: AtomicU64::new(0) })
                as Arc<dyn Factory>)
        }
        other => Err(format!(
            "unknown backend {other:?} (memory | sqlite:DIR | valkey://HOST:PORT | valkey+cluster://HOST:PORT,… | postgres://URL)"
        )),
    }
}

/// Fresh database files inside a directory, one per case.
struct SqliteFactory {
    dir: std::path::PathBuf,
    real_time: bool,
    next: AtomicU64,
}

impl Factory for SqliteFactory {
    fn make(&self) -> ff_conformance::BoxFuture<Fixture> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("case-{}-{n}.db", std::process::id()));
        let real_time = self.real_time;
        Box::pin(async move {
            if real_time {
                ff_conformance::sqlite_fixture_real_time(&path)
            } else {
                ff_conformance::sqlite_fixture(&path)
            }
        })
    }
}

/// A fresh key prefix per case on one Valkey server or cluster, on a simulated
/// clock (or the server's `TIME` when `real_time`).
struct ValkeyFactory {
    base: ff_backend_valkey::ValkeyConfig,
    topology: ff_backend_valkey::Topology,
    /// Every node whose keys a dump must read (the primaries of a cluster).
    nodes: Vec<(String, u16)>,
    real_time: bool,
    next: AtomicU64,
}

impl ValkeyFactory {
    fn config(&self, n: u64) -> ff_backend_valkey::ValkeyConfig {
        ff_backend_valkey::ValkeyConfig {
            key_prefix: format!("kit-{}-{n}:", std::process::id()),
            partitions: ff_core::PartitionConfig { num_flow_partitions: 8, ..Default::default() },
            clock: if self.real_time { None } else { Some(ff_core::SimClock::default()) },
            ..self.base.clone()
        }
    }
}

impl Factory for ValkeyFactory {
    fn make(&self) -> ff_conformance::BoxFuture<Fixture> {
        let cfg = self.config(self.next.fetch_add(1, Ordering::Relaxed));
        let (topology, nodes) = (self.topology.clone(), self.nodes.clone());
        Box::pin(async move {
            let (host, port) = (cfg.host.clone(), cfg.port);
            let prefix = cfg.key_prefix.clone();
            match ff_backend_valkey::ValkeyBackend::connect_with(cfg, topology).await {
                Ok(b) => Fixture::new(Arc::new(b)).with_inspect(Arc::new(move || {
                    ff_backend_valkey::raw::dump_prefix_nodes(&nodes, &prefix)
                })),
                Err(e) => panic!("cannot connect to valkey {host}:{port}: {e}"),
            }
        })
    }
}

/// A fresh schema per case in one PostgreSQL database, on a simulated clock
/// (or the wall clock when `real_time`).
struct PostgresFactory {
    url: String,
    real_time: bool,
    next: AtomicU64,
}

impl Factory for PostgresFactory {
    fn make(&self) -> ff_conformance::BoxFuture<Fixture> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut options = ff_backend_postgres::PostgresOptions::new(self.url.clone());
        options.schema = format!("kit_{}_{n}", std::process::id());
        options.partitions = ff_core::PartitionConfig { num_flow_partitions: 8, ..Default::default() };
        options.clock = if self.real_time {
            Arc::new(ff_core::SystemClock) as Arc<dyn ff_core::Clock>
        } else {
            Arc::new(ff_core::SimClock::default())
        };
        Box::pin(async move {
            let opened = tokio::task::spawn_blocking(move || ff_backend_postgres::open(options)).await;
            match opened {
                Ok(Ok(b)) => {
                    let b = Arc::new(b);
                    let (dump, check) = (b.clone(), b.clone());
                    Fixture::new(b)
                        .with_inspect(Arc::new(move || dump.runner().dump()))
                        .with_deep_check(Arc::new(move || check.runner().invariant_violations()))
                }
                Ok(Err(e)) => panic!("cannot open the postgres backend: {e}"),
                Err(e) => panic!("postgres open task failed: {e}"),
            }
        })
    }
}

/// Connects once before the run, so an unreachable server is one clear error.
fn preflight(spec: &str, factory: &Arc<dyn Factory>, rt: &tokio::runtime::Runtime) -> Result<(), String> {
    if !["valkey://", "valkey+cluster://", "postgres://", "postgresql://"].iter().any(|p| spec.starts_with(p))
    {
        return Ok(());
    }
    let f = factory.clone();
    rt.block_on(async move { tokio::spawn(async move { f.make().await }).await }).map(|_| ()).map_err(|_| {
        format!("backend {spec}: cannot connect (is the server running? scripts/valkey.sh start)")
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let factory = match factory_for(&cli.backend, cli.real_time) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ff-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ff-conformance: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = preflight(&cli.backend, &factory, &rt) {
        eprintln!("ff-conformance: {e}");
        return ExitCode::from(2);
    }
    let options = Options { seed: cli.seed, cases: cli.cases, groups: Vec::new() };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = |r: &ff_conformance::CaseResult, done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(format!("{}::{}", r.group, r.name));
    };
    let started = std::time::Instant::now();
    let report: Report = rt.block_on(run_with_progress(factory, options, &progress));
    bar.finish_and_clear();
    println!(
        "backend {} — clock {} — seed {} — {:.1} s",
        report.backend,
        report.clock.as_str(),
        report.seed,
        started.elapsed().as_secs_f64()
    );
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        let json = match serde_json::to_string_pretty(&report) {
            Ok(j) => j,
            Err(e) => {
                eprintln!("ff-conformance: cannot encode the report: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("ff-conformance: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
