//! Identifiers and their textual formats (spec 01 §1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::partition::{Partition, PartitionConfig, PartitionFamily, flow_partition, solo_partition};

/// Longest lane name accepted at ingress, in bytes.
pub const LANE_ID_MAX_BYTES: usize = 64;
/// Longest namespace, worker id or instance id accepted at ingress, in bytes.
pub const NAME_MAX_BYTES: usize = 256;

/// Why an identifier failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The execution id does not start with `{fp:` or lacks `}:`.
    #[error("execution id is missing its {{fp:N}} hash tag")]
    MissingTag,
    /// The partition part of the tag is not a u16.
    #[error("execution id partition index is not a u16: {0}")]
    InvalidPartitionIndex(String),
    /// The UUID part does not parse.
    #[error("invalid uuid: {0}")]
    InvalidUuid(String),
    /// The id parses but is not in canonical form.
    #[error("id is not canonical: {0}")]
    NonCanonical(String),
    /// A lane id is empty.
    #[error("lane id is empty")]
    Empty,
    /// A lane id is longer than [`LANE_ID_MAX_BYTES`].
    #[error("lane id is {0} bytes, more than 64")]
    TooLong(usize),
    /// A lane id has a byte outside printable ASCII at this index.
    #[error("lane id has a non-printable byte at index {0}")]
    NonPrintable(usize),
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Wraps a caller-minted UUID.
            pub const fn from_uuid(u: Uuid) -> Self {
                Self(u)
            }
            /// The wrapped UUID.
            pub const fn uuid(&self) -> Uuid {
                self.0
            }
            /// Parses any form the `uuid` crate accepts.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdError::InvalidUuid(s.to_owned()))
            }
            /// Parses only the canonical lowercase hyphenated form.
            pub fn parse_canonical(s: &str) -> Result<Self, IdError> {
                let id = Self::parse(s)?;
                if id.to_string() != s {
                    return Err(IdError::NonCanonical(s.to_owned()));
                }
                Ok(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

uuid_id!(
    /// A flow's id.
    FlowId
);
uuid_id!(
    /// A budget's id.
    BudgetId
);
uuid_id!(
    /// A quota policy's id.
    QuotaPolicyId
);
uuid_id!(
    /// One lease acquisition's id.
    LeaseId
);
uuid_id!(
    /// One attempt's id.
    AttemptId
);
uuid_id!(
    /// A signal's id.
    SignalId
);
uuid_id!(
    /// A waitpoint's id.
    WaitpointId
);
uuid_id!(
    /// A suspension episode's id.
    SuspensionId
);
uuid_id!(
    /// A dependency edge's id.
    EdgeId
);

/// An execution id: `{fp:N}:<uuid>`, carrying its partition as a hash tag.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutionId {
    text: String,
    partition: u16,
}

impl ExecutionId {
    /// Mints the id of a flow member: partition from the flow id.
    pub fn for_flow(flow: &FlowId, cfg: &PartitionConfig, uuid: Uuid) -> Self {
        Self::from_parts(flow_partition(&flow.0, cfg).index, uuid)
    }

    /// Mints the id of a solo execution: partition from the lane name.
    pub fn solo(lane: &LaneId, cfg: &PartitionConfig, uuid: Uuid) -> Self {
        Self::from_parts(solo_partition(lane.as_str(), cfg).index, uuid)
    }

    /// Builds the canonical id for a partition index and UUID.
    pub fn from_parts(partition: u16, uuid: Uuid) -> Self {
        Self { text: format!("{{fp:{partition}}}:{}", uuid.hyphenated()), partition }
    }

    /// Parses per spec 01 §1.2 (lenient; the text is kept verbatim).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let rest = s.strip_prefix("{fp:").ok_or(IdError::MissingTag)?;
        let close = rest.find("}:").ok_or(IdError::MissingTag)?;
        let part_text = &rest[..close];
        let partition =
            u16::from_str(part_text).map_err(|_| IdError::InvalidPartitionIndex(part_text.to_owned()))?;
        let uuid_text = &rest[close + 2..];
        Uuid::parse_str(uuid_text).map_err(|_| IdError::InvalidUuid(uuid_text.to_owned()))?;
        Ok(Self { text: s.to_owned(), partition })
    }

    /// Parses and additionally requires the canonical form (ingress rule).
    pub fn parse_canonical(s: &str) -> Result<Self, IdError> {
        let id = Self::parse(s)?;
        let uuid = id.uuid();
        if Self::from_parts(id.partition, uuid).text != s {
            return Err(IdError::NonCanonical(s.to_owned()));
        }
        Ok(id)
    }

    /// The id's text, verbatim.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The partition index decoded from the tag.
    pub fn partition_index(&self) -> u16 {
        self.partition
    }

    /// The execution partition this id lives on.
    pub fn partition(&self) -> Partition {
        Partition::new(PartitionFamily::Execution, self.partition)
    }

    /// The `{fp:N}` hash tag.
    pub fn hash_tag(&self) -> String {
        format!("{{fp:{}}}", self.partition)
    }

    /// The UUID part.
    pub fn uuid(&self) -> Uuid {
        let start = self.text.find("}:").map_or(0, |i| i + 2);
        Uuid::parse_str(&self.text[start..]).unwrap_or_default()
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExecutionId({})", self.text)
    }
}

impl FromStr for ExecutionId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl Serialize for ExecutionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ExecutionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A lane: a named queue of executions.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct LaneId(String);

impl LaneId {
    /// Wraps a lane name without validation (use [`LaneId::try_new`] at ingress).
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Validates per spec 01 §1.3: non-empty, at most 64 bytes, printable ASCII.
    pub fn try_new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > LANE_ID_MAX_BYTES {
            return Err(IdError::TooLong(s.len()));
        }
        if let Some(i) = s.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
            return Err(IdError::NonPrintable(i));
        }
        Ok(Self(s))
    }

    /// The lane name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LaneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LaneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LaneId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for LaneId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::try_new(s).map_err(serde::de::Error::custom)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a name (no validation).
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

string_id!(
    /// A tenant or workspace name.
    Namespace
);
string_id!(
    /// A logical worker or pool name, stable across restarts.
    WorkerId
);
string_id!(
    /// One worker process instance, unique per boot.
    WorkerInstanceId
);
string_id!(
    /// An opaque external signal-routing key.
    WaitpointKey
);

/// A lease epoch: +1 at every acquisition, never decreases.
pub type LeaseEpoch = u64;
/// A 0-based attempt index.
pub type AttemptIndex = u32;
/// Milliseconds since the Unix epoch.
pub type TimestampMs = i64;

/// The caller's claim to hold the current lease (spec 01 §1.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseFence {
    /// The lease id.
    pub lease_id: LeaseId,
    /// The lease epoch.
    pub lease_epoch: LeaseEpoch,
    /// The attempt id the lease runs.
    pub attempt_id: AttemptId,
}

/// Who asked for a cancel (or the source gate of terminal ops), spec 01 §1.5.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum CancelSource {
    /// An operator; bypasses lease checks.
    #[default]
    OperatorOverride,
    /// The lease holder itself.
    LeaseHolder,
    /// A flow cancel cascading to members.
    FlowCascade,
    /// A system timeout.
    SystemTimeout,
    /// Any other source, carried verbatim.
    Custom(String),
}

impl CancelSource {
    /// Parses a wire string (infallible).
    pub fn parse(s: &str) -> Self {
        match s {
            "operator_override" => Self::OperatorOverride,
            "lease_holder" => Self::LeaseHolder,
            "flow_cascade" => Self::FlowCascade,
            "system_timeout" => Self::SystemTimeout,
            other => Self::Custom(other.to_owned()),
        }
    }

    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::OperatorOverride => "operator_override",
            Self::LeaseHolder => "lease_holder",
            Self::FlowCascade => "flow_cascade",
            Self::SystemTimeout => "system_timeout",
            Self::Custom(s) => s,
        }
    }

    /// Whether this source bypasses the fence (operator override).
    pub fn is_override(&self) -> bool {
        matches!(self, Self::OperatorOverride)
    }
}

impl Serialize for CancelSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CancelSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "550e8400-e29b-41d4-a716-446655440000";

    #[test]
    fn execution_id_parse_rules() {
        let id = ExecutionId::parse(&format!("{{fp:42}}:{U}")).unwrap();
        assert_eq!(id.partition_index(), 42);
        assert_eq!(id.hash_tag(), "{fp:42}");
        assert_eq!(ExecutionId::parse(U), Err(IdError::MissingTag));
        assert_eq!(ExecutionId::parse("{fp:42"), Err(IdError::MissingTag));
        assert_eq!(
            ExecutionId::parse(&format!("{{fp:70000}}:{U}")),
            Err(IdError::InvalidPartitionIndex("70000".into()))
        );
        assert_eq!(ExecutionId::parse("{fp:1}:nope"), Err(IdError::InvalidUuid("nope".into())));
        // Lenient parse keeps the text verbatim; canonical parse rejects it.
        let lenient = format!("{{fp:007}}:{}", U.to_uppercase());
        assert_eq!(ExecutionId::parse(&lenient).unwrap().as_str(), lenient);
        assert!(matches!(ExecutionId::parse_canonical(&lenient), Err(IdError::NonCanonical(_))));
        assert!(ExecutionId::parse_canonical(&format!("{{fp:7}}:{U}")).is_ok());
    }

    #[test]
    fn execution_id_minting_uses_partition_math() {
        let cfg = PartitionConfig::default();
        let flow = FlowId::parse(U).unwrap();
        let id = ExecutionId::for_flow(&flow, &cfg, Uuid::nil());
        assert_eq!(id.partition_index(), 24);
        let solo = ExecutionId::solo(&LaneId::new("default"), &cfg, Uuid::nil());
        assert_eq!(solo.partition_index(), 86);
        assert_eq!(solo.uuid(), Uuid::nil());
    }

    #[test]
    fn execution_id_serde_rejects_bare_uuid() {
        let bare = serde_json::to_string(U).unwrap();
        assert!(serde_json::from_str::<ExecutionId>(&bare).is_err());
        let id = ExecutionId::from_parts(3, Uuid::nil());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ExecutionId>(&json).unwrap(), id);
    }

    #[test]
    fn lane_validation() {
        assert_eq!(LaneId::try_new(""), Err(IdError::Empty));
        assert_eq!(LaneId::try_new("x".repeat(65)), Err(IdError::TooLong(65)));
        assert_eq!(LaneId::try_new("ab\tc"), Err(IdError::NonPrintable(2)));
        assert!(LaneId::try_new("x".repeat(64)).is_ok());
    }

    #[test]
    fn cancel_source_round_trip() {
        for s in ["operator_override", "lease_holder", "flow_cascade", "system_timeout", "worker"] {
            assert_eq!(CancelSource::parse(s).as_str(), s);
        }
        assert!(CancelSource::default().is_override());
    }

    #[test]
    fn uuid_ids_accept_other_forms_but_render_canonical() {
        let id = LeaseId::parse(&U.to_uppercase()).unwrap();
        assert_eq!(id.to_string(), U);
        assert!(LeaseId::parse_canonical(&U.to_uppercase()).is_err());
    }
}
