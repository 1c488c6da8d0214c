//! `ff-sim`: pushes executions through simulated workers on the memory backend
//! under a simulated clock, with crashes that let leases expire and reclaims
//! that recover them, then prints a summary. Runs are reproducible by seed.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ff_sim::{SimConfig, run};

#[derive(Parser)]
#[command(name = "ff-sim", about = "Deterministic simulation of FlowFabric workers and leases")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one seeded simulation and prints its summary.
    Run {
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Run { seed, workers, executions, crash_pct, fail_pct } = cli.command;
    let cfg = SimConfig { seed, workers, executions, crash_pct, fail_pct, ..SimConfig::default() };
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ff-sim: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(summary) => {
            println!("{summary}");
            if summary.violations.is_empty() && summary.unfinished == 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "ff-sim: FAILED — replay with: ff-sim run --seed {seed} --workers {workers} --executions {executions}"
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("ff-sim: engine error: {e} (seed {seed})");
            ExitCode::FAILURE
        }
    }
}
