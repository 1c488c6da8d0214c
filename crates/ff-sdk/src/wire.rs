//! JSON bodies of the REST API (spec 03 §8.6), shared by the server and the admin client.
//!
//! Ids travel as strings and are parsed at the edge, so a malformed id is a
//! typed 400 rather than a JSON shape error.

use ff_core::contracts::{ClaimGrant, ExecutionSnapshot, ReclaimGrant};
use ff_core::{AttemptIndex, ExecutionId, LaneId, PartitionKey, PublicState, StateVector, TimestampMs};
use serde::{Deserialize, Serialize};

use crate::error::SdkError;

/// The error body of every non-2xx JSON response (spec 03 §8.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable message (for typed errors, starts with the wire code).
    pub error: String,
    /// Error class or code, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Whether retrying can help, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

/// `POST /v1/workers/{worker_id}/claim` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimForWorkerBody {
    /// Lane to claim from.
    pub lane_id: String,
    /// Claiming process.
    pub worker_instance_id: String,
    /// Worker capability tokens.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Grant TTL in ms (1..=60000).
    pub grant_ttl_ms: u64,
}

/// A claim request of the admin client (the worker id goes into the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimForWorkerRequest {
    /// Worker id (path segment).
    pub worker_id: String,
    /// Lane to claim from.
    pub lane_id: String,
    /// Claiming process.
    pub worker_instance_id: String,
    /// Worker capability tokens.
    pub capabilities: Vec<String>,
    /// Grant TTL in ms (1..=60000).
    pub grant_ttl_ms: u64,
}

/// `POST /v1/workers/{worker_id}/claim` 200 body: a claim grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimForWorkerResponse {
    /// The granted execution.
    pub execution_id: String,
    /// Its partition tag, e.g. `{fp:7}`.
    pub partition_key: String,
    /// The grant record's key.
    pub grant_key: String,
    /// When the grant lapses (scheduler clock).
    pub expires_at_ms: TimestampMs,
}

impl From<ClaimGrant> for ClaimForWorkerResponse {
    fn from(g: ClaimGrant) -> Self {
        Self {
            execution_id: g.execution_id.to_string(),
            partition_key: g.partition_key.as_str().to_owned(),
            grant_key: g.grant_key,
            expires_at_ms: g.expires_at_ms,
        }
    }
}

fn malformed(detail: String) -> SdkError {
    SdkError::Api {
        status: 200,
        code: Some("malformed_response".into()),
        message: detail.clone(),
        retryable: Some(false),
        raw_body: detail,
    }
}

fn parse_grant_parts(
    execution_id: &str,
    partition_key: &str,
) -> Result<(ExecutionId, PartitionKey), SdkError> {
    let id = ExecutionId::parse(execution_id).map_err(|e| malformed(format!("execution_id: {e}")))?;
    let partition =
        PartitionKey::parse(partition_key).map_err(|e| malformed(format!("partition_key: {e}")))?;
    Ok((id, partition.key()))
}

impl ClaimForWorkerResponse {
    /// The typed grant; errors: `Api{status: 200, code: malformed_response}` on unparsable ids.
    pub fn into_grant(self) -> Result<ClaimGrant, SdkError> {
        let (execution_id, partition_key) = parse_grant_parts(&self.execution_id, &self.partition_key)?;
        Ok(ClaimGrant {
            execution_id,
            partition_key,
            grant_key: self.grant_key,
            expires_at_ms: self.expires_at_ms,
        })
    }
}

/// `POST /v1/executions/{id}/reclaim` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueReclaimGrantRequest {
    /// Reclaiming worker.
    pub worker_id: String,
    /// Reclaiming process.
    pub worker_instance_id: String,
    /// Lane of the execution.
    pub lane_id: String,
    /// Opaque, stored.
    #[serde(default)]
    pub capability_hash: Option<String>,
    /// Grant TTL in ms (1..=60000).
    pub grant_ttl_ms: u64,
    /// Opaque, stored.
    #[serde(default)]
    pub route_snapshot_json: Option<String>,
    /// Opaque, stored.
    #[serde(default)]
    pub admission_summary: Option<String>,
    /// Worker capability tokens.
    #[serde(default)]
    pub worker_capabilities: Vec<String>,
}

/// `POST /v1/executions/{id}/reclaim` 200 body, tagged by `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum IssueReclaimGrantResponse {
    /// A reclaim grant was written.
    Granted {
        /// The execution.
        execution_id: String,
        /// Its partition tag.
        partition_key: String,
        /// The grant record's key.
        grant_key: String,
        /// When the grant lapses.
        expires_at_ms: TimestampMs,
        /// The lane.
        lane_id: String,
    },
    /// The execution cannot be reclaimed now.
    NotReclaimable {
        /// The execution.
        execution_id: String,
        /// Why.
        detail: String,
    },
    /// The reclaim cap was reached.
    ReclaimCapExceeded {
        /// The execution.
        execution_id: String,
        /// The cap.
        reclaim_count: u32,
    },
}

impl From<ReclaimGrant> for IssueReclaimGrantResponse {
    fn from(g: ReclaimGrant) -> Self {
        Self::Granted {
            execution_id: g.execution_id.to_string(),
            partition_key: g.partition_key.as_str().to_owned(),
            grant_key: g.grant_key,
            expires_at_ms: g.expires_at_ms,
            lane_id: g.lane_id.as_str().to_owned(),
        }
    }
}

impl IssueReclaimGrantResponse {
    /// The typed grant; errors: `Api{status: 200}` with code `not_reclaimable`,
    /// `reclaim_cap_exceeded` or `malformed_response`.
    pub fn into_grant(self) -> Result<ReclaimGrant, SdkError> {
        let refused = |code: &str, message: String| SdkError::Api {
            status: 200,
            code: Some(code.to_owned()),
            message: message.clone(),
            retryable: Some(false),
            raw_body: message,
        };
        match self {
            Self::Granted { execution_id, partition_key, grant_key, expires_at_ms, lane_id } => {
                let (execution_id, partition_key) = parse_grant_parts(&execution_id, &partition_key)?;
                let lane_id = LaneId::try_new(lane_id).map_err(|e| malformed(format!("lane_id: {e}")))?;
                Ok(ReclaimGrant { execution_id, partition_key, grant_key, expires_at_ms, lane_id })
            }
            Self::NotReclaimable { execution_id, detail } => {
                Err(refused("not_reclaimable", format!("{execution_id}: {detail}")))
            }
            Self::ReclaimCapExceeded { execution_id, reclaim_count } => {
                Err(refused("reclaim_cap_exceeded", format!("{execution_id}: reclaim count {reclaim_count}")))
            }
        }
    }
}

/// `POST /v1/admin/rotate-waitpoint-secret` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateWaitpointSecretRequest {
    /// The new key id (non-empty, no `:`).
    pub new_kid: String,
    /// The new secret as hex.
    pub new_secret_hex: String,
}

/// `POST /v1/admin/rotate-waitpoint-secret` 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateWaitpointSecretResponse {
    /// Keystores rotated (or already current).
    pub rotated: u16,
    /// Partitions whose rotation failed.
    pub failed: Vec<u16>,
    /// The kid now current.
    pub new_kid: String,
}

/// `GET /v1/executions/{id}` 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionInfo {
    /// Id.
    pub execution_id: String,
    /// Namespace.
    pub namespace: String,
    /// Submission lane.
    pub lane_id: String,
    /// Priority.
    pub priority: i32,
    /// Handler label.
    pub execution_kind: String,
    /// The six state dimensions.
    pub state_vector: StateVector,
    /// The public state.
    pub public_state: PublicState,
    /// Creation time.
    pub created_at: TimestampMs,
    /// First claim time.
    #[serde(default)]
    pub started_at: Option<TimestampMs>,
    /// Terminal time.
    #[serde(default)]
    pub completed_at: Option<TimestampMs>,
    /// Current attempt index, if any attempt exists.
    #[serde(default)]
    pub current_attempt_index: Option<AttemptIndex>,
    /// Flow membership.
    #[serde(default)]
    pub flow_id: Option<String>,
    /// Why it is blocked, if it is.
    #[serde(default)]
    pub blocking_detail: String,
}

impl From<ExecutionSnapshot> for ExecutionInfo {
    fn from(s: ExecutionSnapshot) -> Self {
        Self {
            execution_id: s.execution_id.to_string(),
            namespace: s.namespace.as_str().to_owned(),
            lane_id: s.lane_id.as_str().to_owned(),
            priority: s.priority,
            execution_kind: s.execution_kind,
            blocking_detail: s.state.blocking_detail.clone(),
            state_vector: s.state,
            public_state: s.public_state,
            created_at: s.created_at,
            started_at: s.started_at,
            completed_at: s.completed_at,
            current_attempt_index: s.current_attempt.map(|(index, _)| index),
            flow_id: s.flow_id,
        }
    }
}

/// `GET /v1/executions` 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListExecutionsResponse {
    /// Execution ids in id order.
    pub executions: Vec<String>,
    /// Cursor for the next page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/executions/{id}/cancel` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelExecutionRequest {
    /// Must equal the path id.
    pub execution_id: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Who (default `operator_override`).
    #[serde(default)]
    pub source: Option<String>,
    /// Holder's lease id, with `lease_epoch`.
    #[serde(default)]
    pub lease_id: Option<String>,
    /// Holder's lease epoch, with `lease_id`.
    #[serde(default)]
    pub lease_epoch: Option<u64>,
}

/// `POST /v1/executions/{id}/cancel` 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelExecutionResponse {
    /// Now terminal `cancelled`.
    Cancelled {
        /// The execution.
        execution_id: String,
        /// Its public state.
        public_state: PublicState,
    },
}

/// `PUT /v1/executions/{id}/priority` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePriorityRequest {
    /// New priority (clamped to 0..=9000).
    pub new_priority: i32,
}

/// `PUT /v1/executions/{id}/priority` 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangePriorityResponse {
    /// Stored.
    Changed {
        /// The execution.
        execution_id: String,
    },
}

/// `GET /v1/executions/{id}/waitpoints/{waitpoint_id}/token` 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitpointTokenResponse {
    /// The waitpoint's HMAC token.
    pub token: String,
}

/// `GET /healthz` 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok`.
    pub status: String,
}

/// Percent-encodes one path segment (everything outside RFC 3986 unreserved).
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET …/attempts/{idx}/stream` and `…/stream/tail` 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPage {
    /// Entries, oldest first.
    pub frames: Vec<ff_core::stream::StreamFrame>,
    /// `frames.len()`.
    pub count: usize,
    /// When the stream was closed, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<TimestampMs>,
    /// Why it was closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_reason: Option<String>,
}

impl From<ff_core::stream::StreamFrames> for StreamPage {
    fn from(f: ff_core::stream::StreamFrames) -> Self {
        Self {
            count: f.frames.len(),
            frames: f.frames,
            closed_at: f.closed_at,
            closed_reason: f.closed_reason,
        }
    }
}
