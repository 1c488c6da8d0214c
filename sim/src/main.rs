//! `ff-sim`: pushes executions through simulated workers under a simulated
//! clock, with crashes that let leases expire and reclaims that recover them,
//! optionally through a seeded fault layer, then prints a summary. Runs are
//! reproducible by seed.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use ff_core::SimClock;
use ff_sim::faults::FaultRates;
use ff_sim::{
    DeepCheck, NetFaultRates, SimConfig, Summary, TurmoilConfig, partitions_of, run, run_on, run_turmoil,
};

#[derive(Parser)]
#[command(name = "ff-sim", about = "Deterministic simulation of FlowFabric workers and leases")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Whether and how faults are injected between workers and the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Faults {
    /// No injected faults (crashes still happen).
    None,
    /// The seed draws the fault rates (swarm testing).
    Swarm,
}

#[derive(clap::Args, Debug, Clone)]
struct Workload {
    /// Seed for every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated workers.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Executions to push through.
    #[arg(long, default_value_t = 1000)]
    executions: usize,
    /// Per-task probability (percent) that a worker crashes mid-task.
    #[arg(long, default_value_t = 5)]
    crash_pct: u8,
    /// Per-task probability (percent) that a task fails (and is retried per policy).
    #[arg(long, default_value_t = 10)]
    fail_pct: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one seeded simulation on the memory backend and prints its summary.
    Run {
        #[command(flatten)]
        workload: Workload,
        /// Fault injection between workers and the backend.
        #[arg(long, value_enum, default_value_t = Faults::None)]
        faults: Faults,
    },
    /// Runs the workload through the seeded fault layer against a chosen backend
    /// (`memory`, `sqlite:PATH` or `valkey://HOST:PORT`): lost acks after commit, failures before
    /// commit and delays, then a healed liveness phase.
    Chaos {
        #[command(flatten)]
        workload: Workload,
        /// `memory`, `sqlite:PATH` (a fresh file is created) or `valkey://HOST:PORT` (a fresh key prefix).
        #[arg(long, default_value = "memory")]
        backend: String,
    },
    /// Runs ff-server and N SDK workers as turmoil hosts over simulated TCP: a safety phase
    /// under a seeded fault plan, then a healed liveness phase; prints the summary.
    Turmoil {
        /// Seed for every random choice (turmoil's included).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Worker hosts.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Executions to push through.
        #[arg(long, default_value_t = 40)]
        executions: usize,
        /// Fault plan: none, swarm (the seed draws the rates) or partitions.
        #[arg(long, value_enum, default_value_t = NetFaults::Swarm)]
        faults: NetFaults,
        /// Length of the safety phase, in simulated ms.
        #[arg(long, default_value_t = 30_000)]
        safety_ms: u64,
        /// Deliberately break fencing on the server (completes skip the lease check).
        #[arg(long)]
        unfenced: bool,
        /// Runs this many consecutive seeds from `--seed` (a sweep) and lists the failures.
        #[arg(long, default_value_t = 1)]
        runs: u64,
    },
}

/// The arguments of `ff-sim turmoil`.
struct TurmoilArgs {
    seed: u64,
    workers: usize,
    executions: usize,
    faults: NetFaults,
    safety_ms: u64,
    unfenced: bool,
    runs: u64,
}

/// The fault plan of a turmoil run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NetFaults {
    /// No faults.
    None,
    /// The seed draws the rates (swarm testing).
    Swarm,
    /// Frequent partitions and holds of worker links.
    Partitions,
}

fn turmoil_cmd(args: TurmoilArgs) -> ExitCode {
    let runs = args.runs.max(1);
    let mut failed = Vec::new();
    for seed in args.seed..args.seed.saturating_add(runs) {
        let replay = args.replay(seed);
        match run_turmoil(args.config(seed)) {
            Ok(summary) if runs == 1 => {
                println!("{summary}");
                if !summary.passed() {
                    failed.push(replay);
                }
            }
            Ok(summary) => {
                let verdict = if summary.passed() { "ok" } else { "FAILED" };
                println!(
                    "seed {seed:>6} {verdict:<6} trace {:016x} fenced {:>3} reclaims {:>3}",
                    summary.trace_hash, summary.fenced_late_ops, summary.reclaims
                );
                if !summary.passed() {
                    eprintln!("{summary}");
                    failed.push(replay);
                }
            }
            Err(e) => {
                eprintln!("ff-sim: seed {seed}: {e}");
                failed.push(replay);
            }
        }
    }
    if failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("ff-sim: {} of {runs} runs FAILED; replay with:", failed.len());
    for replay in failed {
        eprintln!("  {replay}");
    }
    ExitCode::FAILURE
}

impl TurmoilArgs {
    fn config(&self, seed: u64) -> TurmoilConfig {
        let base = TurmoilConfig::default();
        let rates = match self.faults {
            NetFaults::None => None,
            NetFaults::Swarm => Some(NetFaultRates::swarm(seed, base.lease_ttl_ms)),
            NetFaults::Partitions => Some(NetFaultRates::partitions(base.lease_ttl_ms)),
        };
        TurmoilConfig {
            seed,
            workers: self.workers,
            executions: self.executions,
            safety_ms: self.safety_ms,
            faults: rates,
            unfenced: self.unfenced,
            ..base
        }
    }

    fn replay(&self, seed: u64) -> String {
        let faults = format!("{:?}", self.faults).to_lowercase();
        let unfenced = if self.unfenced { " --unfenced" } else { "" };
        format!(
            "ff-sim turmoil --seed {seed} --workers {} --executions {} --faults {faults} --safety-ms {}{unfenced}",
            self.workers, self.executions, self.safety_ms
        )
    }
}

fn config(w: &Workload, faults: Option<FaultRates>) -> SimConfig {
    SimConfig {
        seed: w.seed,
        workers: w.workers,
        executions: w.executions,
        crash_pct: w.crash_pct,
        fail_pct: w.fail_pct,
        faults,
        ..SimConfig::default()
    }
}

async fn chaos(cfg: SimConfig, backend: &str) -> Result<Summary, String> {
    if backend == "memory" {
        return run(cfg).await.map_err(|e| e.to_string());
    }
    if let Some(addr) = backend.strip_prefix("valkey://") {
        return chaos_valkey(cfg, addr).await;
    }
    let Some(path) = backend.strip_prefix("sqlite:") else {
        return Err(format!(
            "unknown backend {backend:?}: expected memory, sqlite:PATH or valkey://HOST:PORT"
        ));
    };
    if std::path::Path::new(path).exists() {
        return Err(format!("{path} exists; chaos runs need a fresh database file"));
    }
    let clock = SimClock::default();
    let options = ff_backend_sqlite::SqliteOptions {
        partitions: partitions_of(&cfg),
        clock: Arc::new(clock.clone()),
        durability: ff_backend_sqlite::Durability::Normal,
    };
    let backend = Arc::new(ff_backend_sqlite::open(path, options).map_err(|e| e.to_string())?);
    let check = backend.clone();
    let deep: DeepCheck = Arc::new(move || check.runner().invariant_violations());
    run_on(cfg, backend, clock, Some(deep)).await.map_err(|e| e.to_string())
}

/// The workload against a real Valkey server on a fresh key prefix, the backend
/// built on the run's simulated clock (every call carries its `now`).
async fn chaos_valkey(cfg: SimConfig, addr: &str) -> Result<Summary, String> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("valkey://{addr}: expected valkey://HOST:PORT"))?;
    let clock = SimClock::default();
    let config = ff_backend_valkey::ValkeyConfig {
        host,
        port,
        key_prefix: format!("sim-{}-{}:", std::process::id(), cfg.seed),
        partitions: partitions_of(&cfg),
        clock: Some(clock.clone()),
    };
    let backend = ff_backend_valkey::ValkeyBackend::connect(config).await.map_err(|e| e.to_string())?;
    run_on(cfg, Arc::new(backend), clock, None).await.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Turmoil { seed, workers, executions, faults, safety_ms, unfenced, runs } = cli.command {
        // Turmoil runs its own runtimes; it must not run inside another one.
        return turmoil_cmd(TurmoilArgs { seed, workers, executions, faults, safety_ms, unfenced, runs });
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ff-sim: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (result, workload, replay) = match cli.command {
        Command::Run { workload, faults } => {
            let rates = (faults == Faults::Swarm).then(|| FaultRates::swarm(workload.seed));
            let flag = if faults == Faults::Swarm { " --faults swarm" } else { "" };
            let out = rt.block_on(run(config(&workload, rates))).map_err(|e| e.to_string());
            (out, workload, format!("ff-sim run{flag}"))
        }
        Command::Chaos { workload, backend } => {
            let cfg = config(&workload, Some(FaultRates::swarm(workload.seed)));
            let out = rt.block_on(chaos(cfg, &backend));
            (out, workload, format!("ff-sim chaos --backend {backend}"))
        }
        Command::Turmoil { .. } => return ExitCode::FAILURE,
    };
    let w = &workload;
    let replay = format!(
        "{replay} --seed {} --workers {} --executions {} --crash-pct {} --fail-pct {}",
        w.seed, w.workers, w.executions, w.crash_pct, w.fail_pct
    );
    match result {
        Ok(summary) => {
            println!("{summary}");
            if summary.violations.is_empty() && summary.unfinished == 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!("ff-sim: FAILED — replay with: {replay}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("ff-sim: {e} — replay with: {replay}");
            ExitCode::FAILURE
        }
    }
}
