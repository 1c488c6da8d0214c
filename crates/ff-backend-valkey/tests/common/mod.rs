//! Shared test setup: one real Valkey server per test port, started once per
//! test binary by `scripts/valkey.sh`; a failure to start fails the tests.

#![allow(dead_code)]

use std::sync::OnceLock;

use ff_backend_valkey::raw::{Conn, Resp, command};
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
        ff_backend_valkey::raw::start_local_server(port())?;
        remove_stale_keys(port());
        Ok(())
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// A key prefix unique to this process and call, so tests share the server safely.
pub fn fresh_prefix() -> String {
    ff_backend_valkey::raw::fresh_test_prefix()
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

/// A deterministic dump of every key under `prefix` on the test server.
pub fn raw_dump(prefix: &str) -> String {
    ff_backend_valkey::raw::dump_prefix("127.0.0.1", port(), prefix)
}

/// The pid a test key prefix names (`t<pid>-<nanos>-<n>:`), if the key has one.
fn prefix_pid(key: &[u8]) -> Option<u32> {
    let rest = key.strip_prefix(b"t")?;
    let end = rest.iter().position(|b| *b == b'-')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Deletes the keys of test prefixes whose process is gone from the server (or cluster
/// node) on `port`, so the shared keyspace (and with it every `KEYS` of the state dump)
/// stays bounded across runs. Keys of live processes and keys without a test prefix
/// are left alone.
pub fn remove_stale_keys(port: u16) {
    const SCAN_COUNT: &[u8] = b"1000";
    const SCAN_ROUNDS_MAX: usize = 100_000;
    let run = || -> std::io::Result<()> {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        let mut conn = Conn::new(stream)?;
        let mut cursor = b"0".to_vec();
        for _ in 0..SCAN_ROUNDS_MAX {
            let Resp::Array(mut reply) =
                command(&mut conn, &[b"SCAN", &cursor, b"MATCH", b"t*", b"COUNT", SCAN_COUNT])?
            else {
                return Ok(());
            };
            let (Some(Resp::Array(keys)), Some(Resp::Bulk(Some(next)))) = (reply.pop(), reply.pop()) else {
                return Ok(());
            };
            let stale: Vec<Vec<u8>> = keys
                .into_iter()
                .filter_map(|k| if let Resp::Bulk(Some(k)) = k { Some(k) } else { None })
                .filter(|k| {
                    prefix_pid(k).is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
                })
                .collect();
            // One UNLINK per hash slot: a cluster node refuses a multi-key command
            // across slots.
            let mut by_slot: std::collections::BTreeMap<u16, Vec<&[u8]>> = std::collections::BTreeMap::new();
            for k in &stale {
                let slot = ff_backend_valkey::key_hash_slot(&String::from_utf8_lossy(k));
                by_slot.entry(slot).or_default().push(k);
            }
            for keys in by_slot.into_values() {
                let mut args: Vec<&[u8]> = vec![b"UNLINK"];
                args.extend(keys);
                command(&mut conn, &args)?;
            }
            if next == b"0" {
                return Ok(());
            }
            cursor = next;
        }
        Ok(())
    };
    // Liveness is read from /proc; without it nothing is known to be stale.
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    // Best effort: a failed cleanup only leaves old keys behind.
    let _ = run();
}
