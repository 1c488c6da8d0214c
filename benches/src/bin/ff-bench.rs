//! `ff-bench`: end-to-end scenarios, one JSON report line each on stdout.
//!
//!     ff-bench --backend memory|sqlite:PATH|valkey://HOST:PORT [--scenario 1,2,4,5] [--scale 0.1]
//!
//! On Valkey every scenario also runs a raw-Valkey baseline of the same shape
//! against the same server, prints its line, and the engine line carries
//! `ratio_to_baseline`. Skips and summaries go to stderr.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ff_benches::backends::server_version;
use ff_benches::report::{Environment, Measured, SYSTEM_BASELINE, SYSTEM_ENGINE};
use ff_benches::scenarios::baseline::{self, Raw};
use ff_benches::scenarios::capability_routed::{self as cap, CapMode};
use ff_benches::scenarios::{
    RunOptions, linear_flow, submit_claim_complete as s1, suspend_signal_resume as s2,
};
use ff_benches::{BackendSpec, BenchError};
use ff_core::PartitionConfig;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "ff-bench", about = "End-to-end scenarios in FlowFabric's bench report schema")]
struct Args {
    /// `memory`, `sqlite:PATH` (each scenario uses PATH.<scenario>, deleted after) or `valkey://HOST:PORT`.
    #[arg(long, default_value = "memory")]
    backend: String,
    /// Scenarios to run, comma-separated: 1 (submit→claim→complete), 2 (suspend→signal→resume),
    /// 4 (linear 10-node flow), 5 (capability-routed claim).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,5")]
    scenario: Vec<u8>,
    /// Multiplies task, cycle, flow and (scenario 5) worker counts; 1.0 is the sizes.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Scenario 5 capability layouts to run.
    #[arg(long, value_delimiter = ',', default_value = "happy,partial")]
    cap_mode: Vec<String>,
    /// A scenario stops after this many seconds and reports what it finished.
    #[arg(long, default_value_t = 300)]
    deadline_secs: u64,
    /// Sleep of an engine worker whose claim found nothing, in ms.
    #[arg(long, default_value_t = 2)]
    poll_ms: u64,
    /// Skip the raw-Valkey baseline on Valkey runs.
    #[arg(long)]
    no_baseline: bool,
}

/// What every scenario needs.
struct Ctx {
    spec: BackendSpec,
    env: Environment,
    opts: RunOptions,
    baseline: bool,
}

impl Ctx {
    /// A raw baseline on the run's server, when the run is on Valkey and baselines are on.
    fn raw(&self, scenario: &str) -> Option<Raw> {
        match &self.spec {
            BackendSpec::Valkey { host, port } if self.baseline => Some(Raw::new(host, *port, scenario)),
            _ => None,
        }
    }

    /// Prints the baseline line (if any), then the engine line with the ratio.
    fn emit(&self, scenario: &str, config: serde_json::Value, engine: Measured, baseline: Option<Measured>) {
        let base = baseline.map(|m| self.env.report(scenario, SYSTEM_BASELINE, config.clone(), m));
        let mut report = self.env.report(scenario, SYSTEM_ENGINE, config, engine);
        if let Some(b) = &base {
            print_line(b);
            if b.throughput_ops_per_sec > 0.0 {
                report.ratio_to_baseline = Some(report.throughput_ops_per_sec / b.throughput_ops_per_sec);
            }
        }
        print_line(&report);
        let ratio =
            report.ratio_to_baseline.map_or(String::new(), |r| format!(", {:.1}% of baseline", r * 100.0));
        eprintln!(
            "ff-bench: {scenario} on {}: {:.0} ops/s, p50 {:.3} ms, p99 {:.3} ms{ratio}",
            self.env.backend, report.throughput_ops_per_sec, report.latency_ms.p50, report.latency_ms.p99
        );
    }

    fn skip(&self, scenario: &str, reason: &str) {
        eprintln!("ff-bench: skipped {scenario} on {}: {reason}", self.env.backend);
    }
}

fn print_line(report: &ff_benches::Report) {
    match serde_json::to_string(report) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("ff-bench: cannot encode a report: {e}"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ff-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ff-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), BenchError> {
    if !(args.scale > 0.0 && args.scale.is_finite()) {
        return Err(BenchError(format!("--scale must be a positive number, got {}", args.scale)));
    }
    let spec: BackendSpec = args.backend.parse()?;
    let version = match &spec {
        BackendSpec::Valkey { host, port } => server_version(host, *port).await?,
        _ => "n/a".to_owned(),
    };
    let opts = RunOptions {
        scale: args.scale,
        deadline: Duration::from_secs(args.deadline_secs),
        poll_interval: Duration::from_millis(args.poll_ms),
    };
    let ctx = Ctx { env: Environment::probe(spec.label(), version), spec, opts, baseline: !args.no_baseline };
    let modes = parse_modes(&args.cap_mode)?;
    for scenario in &args.scenario {
        match scenario {
            1 => scenario_1(&ctx).await?,
            2 => scenario_2(&ctx).await?,
            4 => scenario_4(&ctx).await?,
            5 => {
                for mode in &modes {
                    scenario_5(&ctx, *mode).await?;
                }
            }
            other => return Err(BenchError(format!("no scenario {other}: choose among 1, 2, 4, 5"))),
        }
    }
    Ok(())
}

fn parse_modes(names: &[String]) -> Result<Vec<CapMode>, BenchError> {
    names
        .iter()
        .map(|n| match n.trim() {
            "happy" => Ok(CapMode::Happy),
            "partial" => Ok(CapMode::Partial),
            other => Err(BenchError(format!("unknown --cap-mode {other:?}: happy or partial"))),
        })
        .collect()
}

/// Runs a baseline if the context has one, then deletes its keys.
async fn with_baseline<F, Fut>(ctx: &Ctx, scenario: &str, f: F) -> Result<Option<Measured>, BenchError>
where
    F: FnOnce(Raw) -> Fut,
    Fut: std::future::Future<Output = (Raw, Result<Measured, BenchError>)>,
{
    let Some(raw) = ctx.raw(scenario) else { return Ok(None) };
    let (raw, measured) = f(raw).await;
    raw.cleanup().await;
    measured.map(Some)
}

async fn scenario_1(ctx: &Ctx) -> Result<(), BenchError> {
    let shape = s1::Shape::new(&ctx.opts);
    let opened = ctx.spec.open_fresh("s1", PartitionConfig::default()).await?;
    let engine = s1::engine(&opened, shape, &ctx.opts).await;
    opened.cleanup().await;
    let opts = ctx.opts;
    let base = with_baseline(ctx, "s1", |raw| async move {
        let m = baseline::submit_claim_complete(&raw, shape.tasks, shape.workers, shape.payload_bytes, &opts)
            .await;
        (raw, m)
    })
    .await?;
    ctx.emit(s1::SCENARIO, shape.config(), engine?, base);
    Ok(())
}

async fn scenario_2(ctx: &Ctx) -> Result<(), BenchError> {
    let cycles = ctx.opts.scaled(s2::CYCLES);
    let opened = ctx.spec.open_fresh("s2", PartitionConfig::default()).await?;
    if let Some(reason) = s2::unsupported(&opened) {
        opened.cleanup().await;
        ctx.skip(s2::SCENARIO, &reason);
        return Ok(());
    }
    let engine = s2::engine(&opened, cycles, &ctx.opts).await;
    opened.cleanup().await;
    let opts = ctx.opts;
    let base = with_baseline(ctx, "s2", |raw| async move {
        let m = baseline::suspend_signal_resume(&raw, cycles, &opts).await;
        (raw, m)
    })
    .await?;
    ctx.emit(s2::SCENARIO, s2::config(cycles), engine?, base);
    Ok(())
}

async fn scenario_4(ctx: &Ctx) -> Result<(), BenchError> {
    let flows = ctx.opts.scaled(linear_flow::FLOWS);
    let opened = ctx.spec.open_fresh("s4", PartitionConfig::default()).await?;
    if let Some(reason) = linear_flow::unsupported(&opened) {
        opened.cleanup().await;
        ctx.skip(linear_flow::SCENARIO, &reason);
        return Ok(());
    }
    let engine = linear_flow::engine(&opened, flows, &ctx.opts).await;
    opened.cleanup().await;
    let opts = ctx.opts;
    let base = with_baseline(ctx, "s4", |raw| async move {
        let m = baseline::linear_flow(&raw, flows, linear_flow::NODES, linear_flow::WORKERS, &opts).await;
        (raw, m)
    })
    .await?;
    ctx.emit(linear_flow::SCENARIO, linear_flow::config(flows), engine?, base);
    Ok(())
}

async fn scenario_5(ctx: &Ctx, mode: CapMode) -> Result<(), BenchError> {
    let tasks = ctx.opts.scaled(cap::TASKS);
    let workers = cap::workers_for(mode, &ctx.opts);
    let opened = ctx.spec.open_fresh(&format!("s5-{}", mode.as_str()), PartitionConfig::default()).await?;
    if let Some(reason) = cap::unsupported(&opened, mode).await {
        opened.cleanup().await;
        ctx.skip(&format!("{} ({})", cap::SCENARIO, mode.as_str()), &reason);
        return Ok(());
    }
    let engine = cap::engine(&opened, mode, tasks, workers, &ctx.opts).await;
    opened.cleanup().await;
    let opts = ctx.opts;
    let base = with_baseline(ctx, "s5", |raw| async move {
        let m = baseline::capability_routed(&raw, mode, tasks, workers, &opts).await;
        (raw, m)
    })
    .await?;
    ctx.emit(cap::SCENARIO, cap::config(mode, tasks, workers), engine?, base);
    Ok(())
}
