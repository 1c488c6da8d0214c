//! `ff-sim`: pushes executions through simulated workers under a simulated
//! clock, with crashes that let leases expire and reclaims that recover them,
//! optionally through a seeded fault layer, then prints a summary. `turmoil`
//! runs ff-server and SDK workers over simulated TCP; `sweep` runs it over a
//! seed range and prints the replay of every failing seed; `replay` re-runs
//! one seed and draws its lease timeline. Runs are reproducible by seed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use ff_core::SimClock;
use ff_sim::faults::FaultRates;
use ff_sim::sweep::{FaultPlan, TurmoilWorkload, parse_seeds, sweep};
use ff_sim::timeline::timeline_svg;
use ff_sim::{
    DeepCheck, SimConfig, Summary, TurmoilConfig, TurmoilSummary, partitions_of, run, run_on, run_turmoil,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

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

/// The seed-independent flags of a turmoil run.
#[derive(clap::Args, Debug, Clone)]
struct NetWorkload {
    /// Worker hosts.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Executions to push through.
    #[arg(long, default_value_t = 40)]
    executions: usize,
    /// Fault plan: none, swarm (the seed draws the rates) or partitions.
    #[arg(long, value_enum, default_value_t = FaultPlan::Swarm)]
    faults: FaultPlan,
    /// Length of the safety phase, in simulated ms.
    #[arg(long, default_value_t = 30_000)]
    safety_ms: u64,
    /// Longest task, in simulated ms.
    #[arg(long, default_value_t = TurmoilConfig::default().task_ms_max)]
    task_ms_max: u64,
    /// Deliberately break fencing on the server (completes skip the lease check).
    #[arg(long)]
    unfenced: bool,
}

impl NetWorkload {
    fn workload(&self) -> TurmoilWorkload {
        TurmoilWorkload {
            workers: self.workers,
            executions: self.executions,
            faults: self.faults,
            safety_ms: self.safety_ms,
            task_ms_max: self.task_ms_max,
            unfenced: self.unfenced,
        }
    }
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
        /// Also writes the summary as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
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
        /// Also writes the summary as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Runs ff-server and N SDK workers as turmoil hosts over simulated TCP: a safety phase
    /// under a seeded fault plan, then a healed liveness phase; prints the summary.
    Turmoil {
        /// Seed for every random choice (turmoil's included).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        workload: NetWorkload,
        /// Also writes the summary as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Runs the turmoil simulation under every seed of a range (`A..B`, `A..=B`), with a progress
    /// bar; lists the failing seeds with the command that replays each; exits non-zero on any.
    Sweep {
        /// Seed range: `A..B` (B excluded) or `A..=B`.
        #[arg(long)]
        seeds: String,
        #[command(flatten)]
        workload: NetWorkload,
        /// Also writes every seed's summary as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Re-runs one turmoil seed, prints its summary and draws its lease timeline as SVG.
    Replay {
        /// The seed to replay.
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        workload: NetWorkload,
        /// Writes the lease timeline (one row per execution, one bar per lease) to this SVG file.
        #[arg(long)]
        timeline: Option<PathBuf>,
        /// Also writes the summary and the lease history as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// Writes `value` as pretty JSON to `path`.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Prints an error and turns it into a failing exit code.
fn fail(what: &str) -> ExitCode {
    eprintln!("ff-sim: {what}");
    ExitCode::FAILURE
}

fn turmoil_cmd(seed: u64, workload: &TurmoilWorkload, json: Option<&Path>) -> ExitCode {
    let replay = format!("ff-sim turmoil --seed {seed} {}", workload.flags());
    let summary = match run_turmoil(workload.config(seed)) {
        Ok(summary) => summary,
        Err(e) => return fail(&format!("{e} — replay with: {replay}")),
    };
    println!("{summary}");
    if let Some(Err(e)) = json.map(|path| write_json(path, &summary)) {
        return fail(&e);
    }
    if summary.passed() {
        return ExitCode::SUCCESS;
    }
    fail(&format!("FAILED — replay with: {replay}\n  timeline: {}", workload.replay_command(seed)))
}

fn sweep_cmd(seeds: &str, workload: &TurmoilWorkload, json: Option<&Path>) -> ExitCode {
    let seeds = match parse_seeds(seeds) {
        Ok(seeds) => seeds,
        Err(e) => return fail(&e),
    };
    let total = seeds.end() - seeds.start() + 1;
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40} {pos}/{len} seeds, {msg} failed, {elapsed_precise} elapsed, eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message("0");
    let mut failed = 0;
    let report = sweep(workload, seeds, &mut |run| {
        if !run.passed {
            failed += 1;
            bar.set_message(failed.to_string());
            bar.println(format!("seed {} FAILED — replay with: {}", run.seed, run.replay));
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    println!("{report}");
    if let Some(Err(e)) = json.map(|path| write_json(path, &report)) {
        return fail(&e);
    }
    if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The JSON of a replay: the summary with the history it drew.
#[derive(Serialize)]
struct ReplayJson<'a> {
    summary: &'a TurmoilSummary,
    history: &'a ff_sim::History,
}

fn replay_cmd(
    seed: u64,
    workload: &TurmoilWorkload,
    timeline: Option<&Path>,
    json: Option<&Path>,
) -> ExitCode {
    let summary = match run_turmoil(workload.config(seed)) {
        Ok(summary) => summary,
        Err(e) => return fail(&format!("seed {seed}: {e}")),
    };
    println!("{summary}");
    if let Some(path) = timeline {
        let title = format!("ff-sim replay --seed {seed} {}", workload.flags());
        if let Err(e) = std::fs::write(path, timeline_svg(&summary.history, &title)) {
            return fail(&format!("{}: {e}", path.display()));
        }
        println!("timeline        {} ({} leases)", path.display(), summary.history.leases.len());
    }
    if let Some(Err(e)) =
        json.map(|path| write_json(path, &ReplayJson { summary: &summary, history: &summary.history }))
    {
        return fail(&e);
    }
    if summary.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
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
    // Turmoil runs its own runtimes; its commands must not run inside another one.
    match &cli.command {
        Command::Turmoil { seed, workload, json } => {
            return turmoil_cmd(*seed, &workload.workload(), json.as_deref());
        }
        Command::Sweep { seeds, workload, json } => {
            return sweep_cmd(seeds, &workload.workload(), json.as_deref());
        }
        Command::Replay { seed, workload, timeline, json } => {
            return replay_cmd(*seed, &workload.workload(), timeline.as_deref(), json.as_deref());
        }
        Command::Run { .. } | Command::Chaos { .. } => {}
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start runtime: {e}")),
    };
    let (result, workload, replay, json) = match cli.command {
        Command::Run { workload, faults, json } => {
            let rates = (faults == Faults::Swarm).then(|| FaultRates::swarm(workload.seed));
            let flag = if faults == Faults::Swarm { " --faults swarm" } else { "" };
            let out = rt.block_on(run(config(&workload, rates))).map_err(|e| e.to_string());
            (out, workload, format!("ff-sim run{flag}"), json)
        }
        Command::Chaos { workload, backend, json } => {
            let cfg = config(&workload, Some(FaultRates::swarm(workload.seed)));
            let out = rt.block_on(chaos(cfg, &backend));
            (out, workload, format!("ff-sim chaos --backend {backend}"), json)
        }
        Command::Turmoil { .. } | Command::Sweep { .. } | Command::Replay { .. } => return ExitCode::FAILURE,
    };
    let w = &workload;
    let replay = format!(
        "{replay} --seed {} --workers {} --executions {} --crash-pct {} --fail-pct {}",
        w.seed, w.workers, w.executions, w.crash_pct, w.fail_pct
    );
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => return fail(&format!("{e} — replay with: {replay}")),
    };
    println!("{summary}");
    if let Some(Err(e)) = json.map(|path| write_json(&path, &summary)) {
        return fail(&e);
    }
    if summary.violations.is_empty() && summary.unfinished == 0 {
        ExitCode::SUCCESS
    } else {
        fail(&format!("FAILED — replay with: {replay}"))
    }
}
