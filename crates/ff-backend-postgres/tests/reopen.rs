//! Reopening keeps everything; different partition counts, foreign schemas and
//! bad schema names are refused at open.

mod common;

use std::sync::Arc;

use ff_backend_postgres::{OpenError, PostgresOptions, open};
use ff_core::contracts::CreateExecutionArgs;
use ff_core::{EngineBackend, ExecutionId, LaneId, PartitionConfig, PublicState, SimClock};
use uuid::Uuid;

fn options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        url: common::database_url(),
        schema: schema.to_owned(),
        partitions: PartitionConfig { num_flow_partitions: 8, ..PartitionConfig::default() },
        clock: Arc::new(SimClock::default()),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime")
}

#[test]
fn data_survives_reopen_and_partition_counts_are_checked() {
    let schema = common::fresh_schema("reopen");
    let id = ExecutionId::from_parts(3, Uuid::from_u64_pair(1, 1));
    {
        let b = open(options(&schema)).expect("open");
        rt().block_on(b.create_execution(CreateExecutionArgs::new(id.clone(), "ns", LaneId::new("l"), "k")))
            .expect("create");
    }
    let b = open(options(&schema)).expect("reopen");
    let state = rt().block_on(b.read_execution_state(&id)).expect("read");
    assert_eq!(state, Some(PublicState::Waiting));
    assert!(b.runner().invariant_violations().is_empty());
    drop(b);
    let other = PostgresOptions { partitions: PartitionConfig::default(), ..options(&schema) };
    match open(other) {
        Err(OpenError::PartitionMismatch { field: "num_flow_partitions", stored: 8, config: 256 }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a different partition count was accepted"),
    }
}

#[test]
fn foreign_schemas_and_bad_names_are_refused_at_open() {
    let schema = common::fresh_schema("foreign");
    let url = common::database_url();
    let setup = std::thread::spawn({
        let schema = schema.clone();
        move || -> Result<(), postgres::Error> {
            let mut c = postgres::Client::connect(&url, postgres::NoTls)?;
            c.batch_execute(&format!(
                "CREATE SCHEMA {schema}; CREATE TABLE {schema}.invoices (id BIGINT PRIMARY KEY, total NUMERIC)"
            ))
        }
    });
    setup.join().expect("setup thread").expect("foreign schema");
    match open(options(&schema)) {
        Err(OpenError::Foreign { .. }) => {}
        Err(e) => panic!("foreign: unexpected error {e}"),
        Ok(_) => panic!("foreign schema opened"),
    }
    for bad in ["", "Upper", "a-b", "x\"; DROP TABLE y; --", &"s".repeat(64)] {
        match open(options(bad)) {
            Err(OpenError::Config(_)) => {}
            Err(e) => panic!("{bad:?}: unexpected error {e}"),
            Ok(_) => panic!("{bad:?}: accepted"),
        }
    }
    let err: ff_core::EngineError = OpenError::Foreign { schema: "x".into(), found: "t".into() }.into();
    assert!(matches!(err, ff_core::EngineError::Validation { .. }));
}

#[test]
fn an_unreachable_server_is_a_connect_error() {
    let mut o = options("unreachable");
    o.url = "postgres://flowfabric@127.0.0.1:1/postgres?connect_timeout=2".into();
    match open(o) {
        Err(OpenError::Connect(_)) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a backend on a closed port"),
    }
}
