//! The conformance kit against file-backed SQLite databases.

use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A fresh database file under the target directory.
fn fixture() -> ff_conformance::Fixture {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sqlite-conformance");
    let _ = std::fs::create_dir_all(&dir);
    ff_conformance::sqlite_fixture(&dir.join(format!("kit-{}-{n}.db", std::process::id())))
}

ff_conformance::suite!(|| async { fixture() });
