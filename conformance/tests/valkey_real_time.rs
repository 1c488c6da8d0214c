//! The whole kit against a real Valkey server in real-TTL mode: no simulated
//! clock, so every FCALL passes an empty `now` and the Lua reads the server's
//! `TIME`, and the harness waits on `server_time_ms`. The server is the one the
//! Valkey backend's tests use (`scripts/valkey.sh`, port `FF_VALKEY_TEST_PORT`,
//! default 6391), started if it is not running; each case gets a fresh prefix.

use std::sync::Arc;

use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_conformance::{CaseTime, ClockMode, Fixture, Options, Status, all_cases, run};
use ff_core::PartitionConfig;

fn port() -> u16 {
    std::env::var("FF_VALKEY_TEST_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(6391)
}

/// A fresh prefix on the test server, on the server's clock.
async fn valkey_real_time_fixture() -> Fixture {
    let cfg = ValkeyConfig {
        key_prefix: ff_backend_valkey::raw::fresh_test_prefix(),
        partitions: PartitionConfig { num_flow_partitions: 8, ..PartitionConfig::default() },
        clock: None,
        ..ValkeyConfig::local(port())
    };
    let prefix = cfg.key_prefix.clone();
    let backend = match ValkeyBackend::connect(cfg).await {
        Ok(b) => b,
        Err(e) => panic!("cannot connect to the test server on port {}: {e}", port()),
    };
    let port = port();
    Fixture::new(Arc::new(backend))
        .with_inspect(Arc::new(move || ff_backend_valkey::raw::dump_prefix("127.0.0.1", port, &prefix)))
}

#[test]
fn valkey_passes_the_kit_on_the_servers_clock() {
    if let Err(e) = ff_backend_valkey::raw::start_local_server(port()) {
        panic!("cannot start the test server: {e}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start a runtime: {e}"),
    };
    let options = Options { cases: 16, ..Options::default() };
    println!("seed {}", options.seed);
    let started = std::time::Instant::now();
    let report = rt.block_on(run(|| async { valkey_real_time_fixture().await }, options));
    println!("{}\nwall time {:.1} s", report.table(), started.elapsed().as_secs_f64());
    assert_eq!(report.clock, ClockMode::RealTtl);
    assert_eq!(report.failed, 0, "{}", report.table());
    // Every time-dependent case of a family the backend claims ran on the server's clock.
    let waits = all_cases().into_iter().filter(|c| c.time == CaseTime::Waits);
    let mut ran = 0;
    for case in waits {
        let r = report.cases.iter().find(|r| r.name == case.name && r.group == case.group.name());
        match r {
            Some(r) if r.status == Status::Passed => {
                assert!(r.real_time, "{}: passed but not on the real clock", r.name);
                ran += 1;
            }
            Some(r) if matches!(&r.status, Status::Skipped(why) if why.starts_with("backend does not claim")) =>
                {}
            other => panic!("{}: {other:?}", case.name),
        }
    }
    assert!(ran >= 10, "only {ran} time-dependent cases ran on the server's clock:\n{}", report.table());
}
