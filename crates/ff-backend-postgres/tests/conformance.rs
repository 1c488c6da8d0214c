//! The conformance kit against a real PostgreSQL server: every fixture gets an
//! empty schema of its own (new, or emptied once its previous backend is gone).

mod common;

use std::sync::Arc;

use ff_backend_postgres::PostgresOptions;
use ff_core::{PartitionConfig, SimClock};

/// An empty schema of this run's database (fresh or emptied), on a simulated clock.
fn fixture() -> ff_conformance::Fixture {
    let mut options = PostgresOptions::new(String::new());
    options.partitions = PartitionConfig { num_flow_partitions: 8, ..PartitionConfig::default() };
    options.clock = Arc::new(SimClock::default());
    let backend = common::pooled_backend(options);
    let dump = backend.clone();
    let check = backend.clone();
    ff_conformance::Fixture::new(backend)
        .with_inspect(Arc::new(move || dump.runner().dump()))
        .with_deep_check(Arc::new(move || check.runner().invariant_violations()))
}

// Every contract is a few network round trips and the kit's deep check after every
// differential step is ~50 queries, so the randomised groups run 64 cases by default
// here (FF_CONFORMANCE_CASES overrides); memory and SQLite run the full 512.
ff_conformance::suite!(|| async { fixture() }, cases = 64);
