//! Benchmarks of the engine kit: criterion benches of the hot paths per
//! backend (`benches/hot_paths.rs`) and the `ff-bench` end-to-end scenarios
//! with a same-run raw-Valkey baseline. This library holds what both share:
//! backend setup, the local Valkey server, the scenarios and the report schema.

pub mod backends;
pub mod report;
pub mod scenarios;

pub use backends::{BackendSpec, BenchError, Opened};
pub use report::{Environment, LatencyMs, Measured, Report};
