//! `ServerConfig` and its environment loader (spec 03 §8.1).

use std::net::SocketAddr;
use std::time::Duration;

use ff_core::PartitionConfig;
use ff_core::hmac_token::{HMAC_GRACE_MS_DEFAULT, SEED_SECRET_HEX_LEN};
use ff_scheduler::{ScannerIntervals, ScannerRuntimeConfig, SchedulerConfig};
use ff_sdk::{BackendConfig, is_even_hex};

use crate::error::ServerError;

/// Default HTTP bind address (loopback only).
pub const LISTEN_ADDR_DEFAULT: &str = "127.0.0.1:9090";

/// Everything the server needs to boot.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Which backend to open (`memory` by default, `sqlite:PATH` or `valkey://HOST:PORT[/PREFIX]`).
    pub backend: BackendConfig,
    /// Bearer token; `None` turns auth off.
    pub api_token: Option<String>,
    /// The initial waitpoint HMAC secret (64 hex digits), seeded as kid `k1`.
    pub waitpoint_hmac_secret_hex: String,
    /// Grace of the previous kid after a rotation, in ms.
    pub waitpoint_hmac_grace_ms: u64,
    /// Partition counts of the backend.
    pub partitions: PartitionConfig,
    /// Scheduler settings for the claim route.
    pub scheduler: SchedulerConfig,
    /// Background scanners; `None` runs none.
    pub scanners: Option<ScannerRuntimeConfig>,
    /// How long shutdown waits for in-flight requests and scanners, each.
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    /// Defaults (memory backend, no auth, default scanners) around a required secret.
    pub fn new(waitpoint_hmac_secret_hex: impl Into<String>) -> Self {
        Self {
            backend: BackendConfig::Memory,
            api_token: None,
            waitpoint_hmac_secret_hex: waitpoint_hmac_secret_hex.into(),
            waitpoint_hmac_grace_ms: HMAC_GRACE_MS_DEFAULT,
            partitions: PartitionConfig::default(),
            scheduler: SchedulerConfig::default(),
            scanners: Some(ScannerRuntimeConfig::default()),
            shutdown_grace: Duration::from_secs(15),
        }
    }

    /// The same config with every scanner on one interval (tests use short ones).
    pub fn with_scanner_interval(mut self, interval: Duration) -> Self {
        let config =
            ScannerRuntimeConfig { intervals: ScannerIntervals::uniform(interval), ..Default::default() };
        self.scanners = Some(config);
        self
    }

    /// Checks the secret, the token and the partition counts; errors: `ServerError::Config`.
    pub fn validate(&self) -> Result<(), ServerError> {
        let secret = &self.waitpoint_hmac_secret_hex;
        if !is_even_hex(secret) {
            return Err(ServerError::Config(
                "FF_WAITPOINT_HMAC_SECRET must be non-empty, even-length hex".into(),
            ));
        }
        if secret.len() != SEED_SECRET_HEX_LEN {
            return Err(ServerError::Config(format!(
                "FF_WAITPOINT_HMAC_SECRET must be {SEED_SECRET_HEX_LEN} hex digits (32 bytes)"
            )));
        }
        if self.api_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ServerError::Config("FF_API_TOKEN is empty or all-whitespace".into()));
        }
        self.partitions.validate().map_err(|e| ServerError::Config(e.to_string()))
    }

    /// Reads `FF_*` variables (spec 03 §8.1 subset) and returns the config and the listen address.
    ///
    /// Errors: `ServerError::Config` for a missing secret or an unparsable value.
    pub fn from_env() -> Result<(Self, SocketAddr), ServerError> {
        let var = |name: &str| std::env::var(name).ok();
        let secret = var("FF_WAITPOINT_HMAC_SECRET")
            .ok_or_else(|| ServerError::Config("FF_WAITPOINT_HMAC_SECRET is required".into()))?;
        let mut config = Self::new(secret);
        if let Some(grace) = var("FF_WAITPOINT_HMAC_GRACE_MS") {
            config.waitpoint_hmac_grace_ms = parse_num("FF_WAITPOINT_HMAC_GRACE_MS", &grace)?;
        }
        config.api_token = var("FF_API_TOKEN").filter(|t| !t.is_empty());
        if let Some(backend) = var("FF_BACKEND") {
            config.backend =
                backend.parse().map_err(|e: ff_sdk::SdkError| ServerError::Config(e.to_string()))?;
        }
        if let Some(n) = var("FF_FLOW_PARTITIONS") {
            config.partitions.num_flow_partitions = parse_num("FF_FLOW_PARTITIONS", &n)?;
        }
        if let Some(n) = var("FF_BUDGET_PARTITIONS") {
            config.partitions.num_budget_partitions = parse_num("FF_BUDGET_PARTITIONS", &n)?;
        }
        if let Some(n) = var("FF_QUOTA_PARTITIONS") {
            config.partitions.num_quota_partitions = parse_num("FF_QUOTA_PARTITIONS", &n)?;
        }
        let listen = var("FF_LISTEN_ADDR").unwrap_or_else(|| LISTEN_ADDR_DEFAULT.to_owned());
        let listen =
            listen.parse().map_err(|e| ServerError::Config(format!("FF_LISTEN_ADDR {listen:?}: {e}")))?;
        Ok((config, listen))
    }
}

fn parse_num<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ServerError>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e| ServerError::Config(format!("{name} {value:?}: {e}")))
}
