//! The conformance kit against file-backed SQLite databases.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ff_backend_sqlite::{Durability, SqliteOptions, open};
use ff_conformance::Fixture;
use ff_core::{PartitionConfig, SimClock};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A fresh database file under the target directory, on a simulated clock.
fn fixture() -> Fixture {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sqlite-conformance");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("kit-{}-{n}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let clock = SimClock::default();
    let options = SqliteOptions {
        partitions: PartitionConfig { num_flow_partitions: 8, ..PartitionConfig::default() },
        clock: Arc::new(clock),
        durability: Durability::Normal,
    };
    let backend = match open(&path, options) {
        Ok(b) => Arc::new(b),
        Err(e) => panic!("cannot open {}: {e}", path.display()),
    };
    let dump = backend.clone();
    let check = backend.clone();
    Fixture::new(backend)
        .with_inspect(Arc::new(move || dump.runner().dump()))
        .with_deep_check(Arc::new(move || check.runner().invariant_violations()))
}

ff_conformance::suite!(|| async { fixture() });
