//! The test server: started once per test binary through `scripts/postgres.sh`,
//! with a fresh database per test run. A server that cannot start fails the
//! test; it is never skipped.

#![allow(dead_code)]

use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use ff_backend_postgres::{PostgresBackend, PostgresOptions, open};
use std::sync::atomic::{AtomicU64, Ordering};

static DATABASE_URL: OnceLock<String> = OnceLock::new();
static NEXT_SCHEMA: AtomicU64 = AtomicU64::new(0);

/// Starts (or reuses) the loopback server and returns its `postgres://` URL.
fn server_url() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres.sh");
    let out = match Command::new("bash").arg(script).arg("start").output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run {script}: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let url = stdout.lines().rev().find(|l| l.starts_with("postgres://")).map(str::to_owned);
    match (out.status.success(), url) {
        (true, Some(url)) => url,
        _ => panic!(
            "PostgreSQL did not start ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Creates this run's database; on a plain thread, since the synchronous client
/// must not run inside an async runtime.
fn create_database(server: String) -> String {
    let name = format!(
        "ff_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
    );
    let created = std::thread::spawn({
        let (server, name) = (server.clone(), name.clone());
        move || -> Result<(), postgres::Error> {
            let mut client = postgres::Client::connect(&server, postgres::NoTls)?;
            client.batch_execute(&format!("CREATE DATABASE {name}"))
        }
    })
    .join();
    match created {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("cannot create database {name} at {server}: {e}"),
        Err(_) => panic!("creating database {name} panicked"),
    }
    if let Some(local) = unix_socket_url(&server, &name) {
        return local;
    }
    match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("unexpected server URL {server}"),
    }
}

/// The same server through its Unix socket in `target/postgres/` when present:
/// a round trip costs less than over TCP loopback, and the kit is round-trip bound.
fn unix_socket_url(server: &str, database: &str) -> Option<String> {
    let port = server.rsplit_once(':')?.1.split('/').next()?.parse::<u16>().ok()?;
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../target/postgres/sock-{port}"));
    if !dir.join(format!(".s.PGSQL.{port}")).exists() {
        return None;
    }
    let dir = dir.canonicalize().ok()?;
    Some(format!("host={} port={port} user=flowfabric dbname={database}", dir.display()))
}

/// The URL of this test run's database (server started on first use).
pub fn database_url() -> String {
    DATABASE_URL.get_or_init(|| create_database(server_url())).clone()
}

/// A schema name unique within this run.
pub fn fresh_schema(prefix: &str) -> String {
    format!("{prefix}_{}", NEXT_SCHEMA.fetch_add(1, Ordering::Relaxed))
}

/// Schemas handed out by [`pooled_backend`], with the backend last opened on each.
static POOL: Mutex<Vec<(String, Weak<PostgresBackend>)>> = Mutex::new(Vec::new());

/// A backend on an empty schema of this run: a schema whose previous backend is
/// gone is emptied and reused (creating the tables is the slow part of a
/// fixture), else a new schema is created.
pub fn pooled_backend(mut options: PostgresOptions) -> Arc<PostgresBackend> {
    let reused = {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        let free = pool.iter().position(|(_, b)| b.strong_count() == 0);
        free.map(|i| pool.swap_remove(i).0)
    };
    let fresh = reused.is_none();
    options.url = database_url();
    options.schema = reused.unwrap_or_else(|| fresh_schema("kit"));
    let schema = options.schema.clone();
    let backend = match open(options) {
        Ok(b) => Arc::new(b),
        Err(e) => panic!("cannot open a postgres fixture on {schema}: {e}"),
    };
    if !fresh {
        match backend.runner().with_store_blocking(|s| s.reset()) {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => panic!("cannot empty schema {schema} for reuse: {e}"),
        }
    }
    POOL.lock().unwrap_or_else(|p| p.into_inner()).push((schema, Arc::downgrade(&backend)));
    backend
}
