//! FlowFabric contracts as pure Rust transitions over a small typed [`Store`].
//!
//! Every contract is one function `(store, now, args) -> outcome` that
//! validates, loads, checks, applies, indexes and replies. [`Engine`] turns a
//! [`StoreRunner`] (memory, SQLite, …) into a full `EngineBackend`.

pub mod admission;
pub mod common;
pub mod conditions;
pub mod engine;
pub mod execution;
pub mod flow;
pub mod invariants;
pub mod lease;
pub mod lifecycle;
pub mod reads;
pub mod records;
pub mod scanners;
pub mod scheduling;
pub mod store;
pub mod store_support;
pub mod streams;
pub mod suspension;
pub mod worker;

pub use engine::Engine;
pub use store::{RunnerInfo, Store, StoreResult, StoreRunner};
pub use store_support::StoreThread;
