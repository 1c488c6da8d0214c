//! Shared test setup: one real Valkey server per test port, started once per
//! test binary by `scripts/valkey.sh`; a failure to start fails the tests.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::{PartitionConfig, SimClock};

/// The port the tests run their server on (override with `FF_VALKEY_TEST_PORT`).
pub fn port() -> u16 {
    std::env::var("FF_VALKEY_TEST_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(6391)
}

/// Starts the server once; panics (fails the test) when it cannot be started.
pub fn ensure_server() {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = STARTED.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = std::process::Command::new("bash")
            .arg(root.join("scripts/valkey.sh"))
            .arg("start")
            .env("FF_VALKEY_PORT", port().to_string())
            .output()
            .map_err(|e| format!("cannot run scripts/valkey.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/valkey.sh start failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// A key prefix unique to this process and call, so tests share the server safely.
pub fn fresh_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("t{}-{nanos}-{n}:", std::process::id())
}

/// A backend on a fresh prefix, with an optional simulated clock.
pub async fn backend(clock: Option<SimClock>) -> ValkeyBackend {
    ensure_server();
    let cfg = ValkeyConfig {
        key_prefix: fresh_prefix(),
        partitions: PartitionConfig { num_flow_partitions: 8, ..PartitionConfig::default() },
        clock,
        ..ValkeyConfig::local(port())
    };
    match ValkeyBackend::connect(cfg).await {
        Ok(b) => b,
        Err(e) => panic!("cannot connect to the test server on port {}: {e}", port()),
    }
}
