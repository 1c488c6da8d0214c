//! `ff-sim`: pushes executions through simulated workers under a simulated
//! clock, with crashes that let leases expire and reclaims that recover them,
//! optionally through a seeded fault layer, then prints a summary. Runs are
//! reproducible by seed.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use ff_core::SimClock;
use ff_sim::faults::FaultRates;
use ff_sim::{DeepCheck, SimConfig, Summary, partitions_of, run, run_on};

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
    /// (`memory` or `sqlite:PATH`): lost acks after commit, failures before
    /// commit and delays, then a healed liveness phase.
    Chaos {
        #[command(flatten)]
        workload: Workload,
        /// `memory` or `sqlite:PATH` (a fresh file is created).
        #[arg(long, default_value = "memory")]
        backend: String,
    },
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
    let Some(path) = backend.strip_prefix("sqlite:") else {
        return Err(format!("unknown backend {backend:?}: expected memory or sqlite:PATH"));
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
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
