//! What a backend supports (spec 04 §3), for callers and the conformance kit.

use serde::{Deserialize, Serialize};

/// A semantic version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

/// Which backend this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BackendIdentity {
    /// `memory`, `valkey`, `sqlite`, or `unknown`.
    pub family: &'static str,
    /// Crate version.
    pub version: Version,
}

macro_rules! supports {
    ($($(#[$doc:meta])* $field:ident),* $(,)?) => {
        /// Flat flags: true means the method is implemented.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[non_exhaustive]
        pub struct Supports {
            $($(#[$doc])* pub $field: bool,)*
        }

        impl Supports {
            /// Every flag false.
            pub fn none() -> Self {
                Self::default()
            }

            /// Every flag true.
            pub fn all() -> Self {
                Self { $($field: true,)* }
            }

            /// `(name, flag)` pairs in parity-matrix order.
            pub fn entries(&self) -> Vec<(&'static str, bool)> {
                vec![$((stringify!($field), self.$field),)*]
            }

            /// Sets a flag by name; false if the name is unknown.
            pub fn set(&mut self, name: &str, value: bool) -> bool {
                match name {
                    $(stringify!($field) => { self.$field = value; true })*
                    _ => false,
                }
            }
        }
    };
}

supports!(
    /// `cancel_execution`.
    cancel_execution,
    /// `change_priority`.
    change_priority,
    /// `replay_execution`.
    replay_execution,
    /// `revoke_lease`.
    revoke_lease,
    /// `read_execution_state`.
    read_execution_state,
    /// `read_execution_info`.
    read_execution_info,
    /// `get_execution_result`.
    get_execution_result,
    /// Budget administration.
    budget_admin,
    /// Quota administration.
    quota_admin,
    /// `rotate_waitpoint_hmac_secret_all`.
    rotate_waitpoint_hmac_secret_all,
    /// `seed_waitpoint_hmac_secret`.
    seed_waitpoint_hmac_secret,
    /// `list_pending_waitpoints`.
    list_pending_waitpoints,
    /// `cancel_flow_header`.
    cancel_flow_header,
    /// `cancel_flow` with a timeout wait.
    cancel_flow_wait_timeout,
    /// `cancel_flow` with an indefinite wait.
    cancel_flow_wait_indefinite,
    /// `ack_cancel_member`.
    ack_cancel_member,
    /// `claim_for_worker`.
    claim_for_worker,
    /// `issue_reclaim_grant` and `reclaim_execution`.
    issue_reclaim_grant,
    /// `prepare` does real work.
    prepare,
    /// `subscribe_lease_history`.
    subscribe_lease_history,
    /// `subscribe_completion`.
    subscribe_completion,
    /// `subscribe_signal_delivery`.
    subscribe_signal_delivery,
    /// `subscribe_instance_tags` (false everywhere).
    subscribe_instance_tags,
    /// `read_summary` and durable-summary frames.
    stream_durable_summary,
    /// `tail_stream` and best-effort live frames.
    stream_best_effort_live,
    /// `register_worker`.
    register_worker,
    /// `heartbeat_worker`.
    heartbeat_worker,
    /// `mark_worker_dead`.
    mark_worker_dead,
    /// `list_expired_leases`.
    list_expired_leases,
    /// `list_workers`.
    list_workers,
    /// `release_admission`.
    release_admission,
    /// `read_quota_policy_limits`.
    read_quota_policy_limits,
    /// `block_execution_for_admission`.
    block_execution_for_admission,
    /// `read_budget_usage_and_limits`.
    read_budget_usage_and_limits,
);

/// Contract families the conformance kit gates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ContractFamily {
    /// Create, claim, complete, fail, cancel, delay, replay, tags, expire.
    Execution,
    /// Renew, mark expired, revoke, reclaim, expired-lease listing.
    Lease,
    /// Grants, priority, progress, promotion, block/unblock, claim paths.
    Scheduling,
    /// Register, heartbeat, mark dead, list.
    WorkerRegistry,
    /// Suspend, waitpoints, signals, HMAC tokens.
    Suspension,
    /// Attempt streams and summaries.
    Streams,
    /// Flows and dependency edges.
    Flows,
    /// Budgets.
    Budgets,
    /// Quotas and admission.
    Quotas,
}

impl ContractFamily {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Execution => "execution",
            Self::Lease => "lease",
            Self::Scheduling => "scheduling",
            Self::WorkerRegistry => "worker_registry",
            Self::Suspension => "suspension",
            Self::Streams => "streams",
            Self::Flows => "flows",
            Self::Budgets => "budgets",
            Self::Quotas => "quotas",
        }
    }
}

/// A backend's identity, method flags and contract families.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// Which backend.
    pub identity: BackendIdentity,
    /// Method flags.
    pub supports: Supports,
    /// Contract families implemented in full.
    pub families: Vec<ContractFamily>,
    /// Whether the backend runs on an injected simulated clock.
    pub simulated_clock: bool,
}

impl Capabilities {
    /// Builds a capability report.
    pub fn new(
        identity: BackendIdentity,
        supports: Supports,
        families: Vec<ContractFamily>,
        simulated_clock: bool,
    ) -> Self {
        Self { identity, supports, families, simulated_clock }
    }

    /// Whether a family is claimed.
    pub fn has(&self, family: ContractFamily) -> bool {
        self.families.contains(&family)
    }
}

impl Version {
    /// Parses `major.minor.patch` (as `CARGO_PKG_VERSION`); missing or unparsable parts are 0.
    pub fn parse_lenient(text: &str) -> Self {
        let mut parts = text.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        Self {
            major: parts.next().unwrap_or(0),
            minor: parts.next().unwrap_or(0),
            patch: parts.next().unwrap_or(0),
        }
    }
}

/// The `Supports` flags of a backend that implements every method of the trait
/// (the flags of methods nobody implements, such as subscriptions, stay false).
pub const COMPLETE_SUPPORTS: [&str; 26] = [
    "cancel_execution",
    "change_priority",
    "replay_execution",
    "revoke_lease",
    "read_execution_state",
    "read_execution_info",
    "get_execution_result",
    "issue_reclaim_grant",
    "register_worker",
    "heartbeat_worker",
    "mark_worker_dead",
    "list_expired_leases",
    "list_workers",
    "block_execution_for_admission",
    "stream_durable_summary",
    "stream_best_effort_live",
    "seed_waitpoint_hmac_secret",
    "rotate_waitpoint_hmac_secret_all",
    "list_pending_waitpoints",
    "cancel_flow_header",
    "ack_cancel_member",
    "budget_admin",
    "quota_admin",
    "release_admission",
    "read_quota_policy_limits",
    "read_budget_usage_and_limits",
];

/// Every contract family.
pub const ALL_FAMILIES: [ContractFamily; 9] = [
    ContractFamily::Execution,
    ContractFamily::Lease,
    ContractFamily::Scheduling,
    ContractFamily::WorkerRegistry,
    ContractFamily::Streams,
    ContractFamily::Suspension,
    ContractFamily::Flows,
    ContractFamily::Budgets,
    ContractFamily::Quotas,
];

impl Capabilities {
    /// The report of a backend that implements every contract of every family.
    pub fn complete(family: &'static str, version: Version, simulated_clock: bool) -> Self {
        let mut supports = Supports::none();
        for name in COMPLETE_SUPPORTS {
            supports.set(name, true);
        }
        Self::new(BackendIdentity { family, version }, supports, ALL_FAMILIES.to_vec(), simulated_clock)
    }
}
