//! `ff-server`: the FlowFabric REST server binary.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use ff_core::partition::{BUDGET_PARTITIONS_DEFAULT, FLOW_PARTITIONS_DEFAULT, QUOTA_PARTITIONS_DEFAULT};
use ff_server::{LISTEN_ADDR_DEFAULT, ServerConfig, serve};

/// Command-line overrides of the `FF_*` environment.
#[derive(Debug, Parser)]
#[command(name = "ff-server", about = "FlowFabric REST server")]
struct Args {
    /// HTTP bind address.
    #[arg(long, env = "FF_LISTEN_ADDR", default_value = LISTEN_ADDR_DEFAULT)]
    listen: SocketAddr,
    /// Backend: `memory`, `sqlite:PATH` or `valkey://HOST:PORT[/PREFIX]`.
    #[arg(long, env = "FF_BACKEND", default_value = "memory")]
    backend: String,
    /// Bearer token required on every route but /healthz (unset: no auth).
    #[arg(long, env = "FF_API_TOKEN")]
    api_token: Option<String>,
    /// Initial waitpoint HMAC secret (64 hex digits).
    #[arg(long, env = "FF_WAITPOINT_HMAC_SECRET", hide_env_values = true)]
    waitpoint_hmac_secret: String,
    /// Grace of the previous kid after a rotation, in ms.
    #[arg(long, env = "FF_WAITPOINT_HMAC_GRACE_MS")]
    waitpoint_hmac_grace_ms: Option<u64>,
    /// Flow (and execution) partitions.
    #[arg(long, env = "FF_FLOW_PARTITIONS", default_value_t = FLOW_PARTITIONS_DEFAULT)]
    flow_partitions: u16,
    /// Budget partitions.
    #[arg(long, env = "FF_BUDGET_PARTITIONS", default_value_t = BUDGET_PARTITIONS_DEFAULT)]
    budget_partitions: u16,
    /// Quota partitions.
    #[arg(long, env = "FF_QUOTA_PARTITIONS", default_value_t = QUOTA_PARTITIONS_DEFAULT)]
    quota_partitions: u16,
}

fn config_from(args: &Args) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::new(args.waitpoint_hmac_secret.clone());
    config.backend = args.backend.parse().map_err(|e: ff_sdk::SdkError| e.to_string())?;
    config.api_token = args.api_token.clone().filter(|t| !t.is_empty());
    if let Some(grace) = args.waitpoint_hmac_grace_ms {
        config.waitpoint_hmac_grace_ms = grace;
    }
    config.partitions = ff_core::PartitionConfig {
        num_flow_partitions: args.flow_partitions,
        num_budget_partitions: args.budget_partitions,
        num_quota_partitions: args.quota_partitions,
    };
    Ok(config)
}

async fn run(args: Args) -> Result<(), String> {
    let config = config_from(&args)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| e.to_string())?;
    let handle = serve(config, listener).await.map_err(|e| e.to_string())?;
    eprintln!("ff-server listening on {}", handle.base_url());
    wait_for_signal().await;
    eprintln!("ff-server shutting down");
    handle.shutdown().await.map_err(|e| e.to_string())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ff-server: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ff-server: {e}");
            ExitCode::from(1)
        }
    }
}
