//! FlowFabric vocabulary: ids, partitions, key names, states, one `Args` and
//! outcome per contract, the `EngineBackend` trait and `EngineError`.
//!
//! No I/O, no async runtime, no randomness: ids arrive from callers and time
//! from an injected [`Clock`].
#![warn(missing_docs)]

pub mod admission;
pub mod backend;
pub mod capabilities;
pub mod clock;
pub mod contracts;
pub mod error;
pub mod flow;
pub mod handle;
pub mod hmac_token;
pub mod ids;
pub mod keys;
pub mod layer;
pub mod partition;
pub mod policy;
pub mod state;
pub mod stream;
pub mod suspension;

pub use backend::EngineBackend;
pub use capabilities::{Capabilities, ContractFamily, Supports};
pub use clock::{Clock, SimClock, SystemClock};
pub use error::{EngineError, ErrorClass, ErrorStatus};
pub use handle::{BackendTag, Handle, HandleKind};
pub use ids::*;
pub use partition::{Partition, PartitionConfig, PartitionKey};
pub use state::{
    AttemptState, BlockingReason, EligibilityState, LifecyclePhase, OwnershipState, PublicState, StateVector,
    TerminalOutcome,
};
