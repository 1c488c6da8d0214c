//! Partition families, partition math and the `PartitionKey` wire form (spec 01 §2).
//!
//! Everything here is a pure function of its input and the deployment's
//! [`PartitionConfig`]: the same id lands on the same partition on every node and
//! every backend, which is what lets one atomic operation touch a flow and all of
//! its member executions.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Default flow/execution partition count.
pub const FLOW_PARTITIONS_DEFAULT: u16 = 256;
/// Default budget partition count.
pub const BUDGET_PARTITIONS_DEFAULT: u16 = 32;
/// Default quota partition count.
pub const QUOTA_PARTITIONS_DEFAULT: u16 = 32;

const CRC16_POLY: u16 = 0x1021;
const CRC16_TABLE: [u16; 256] = crc16_table();

/// Builds the byte-at-a-time table for CRC-16/XMODEM at compile time.
const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ CRC16_POLY } else { crc << 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// CRC-16/XMODEM (poly 0x1021, init 0, no reflection, no final XOR): Valkey Cluster's slot CRC.
pub fn crc16_xmodem(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        let top = (crc >> 8) as u8;
        (crc << 8) ^ CRC16_TABLE[usize::from(top ^ b)]
    })
}

/// A partition family; `Execution` is a routing alias of `Flow` with the same tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PartitionFamily {
    /// Flows and their member executions (`{fp:N}`).
    Flow,
    /// Executions, a routing alias of `Flow` (`{fp:N}`).
    Execution,
    /// Budgets (`{b:N}`).
    Budget,
    /// Quota policies (`{q:N}`).
    Quota,
}

impl PartitionFamily {
    /// The hash-tag prefix: `fp`, `fp`, `b` or `q`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Flow | Self::Execution => "fp",
            Self::Budget => "b",
            Self::Quota => "q",
        }
    }
}

/// One partition of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Partition {
    /// The family the partition belongs to.
    pub family: PartitionFamily,
    /// The index within the family, `0..count`.
    pub index: u16,
}

impl Partition {
    /// A partition of `family` at `index`.
    pub fn new(family: PartitionFamily, index: u16) -> Self {
        Self { family, index }
    }

    /// The hash tag, e.g. `{fp:7}`.
    pub fn hash_tag(&self) -> String {
        format!("{{{}:{}}}", self.family.prefix(), self.index)
    }

    /// The wire form (the hash tag as a [`PartitionKey`]).
    pub fn key(&self) -> PartitionKey {
        PartitionKey(self.hash_tag())
    }
}

/// Partition counts, fixed at deployment time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionConfig {
    /// Number of flow/execution partitions.
    pub num_flow_partitions: u16,
    /// Number of budget partitions.
    pub num_budget_partitions: u16,
    /// Number of quota partitions.
    pub num_quota_partitions: u16,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        Self {
            num_flow_partitions: FLOW_PARTITIONS_DEFAULT,
            num_budget_partitions: BUDGET_PARTITIONS_DEFAULT,
            num_quota_partitions: QUOTA_PARTITIONS_DEFAULT,
        }
    }
}

/// A bad partition configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionConfigError {
    /// A partition count is zero, which would make every modulus undefined.
    #[error("partition count {field} is zero; it must be at least 1")]
    ZeroCount {
        /// The offending field, e.g. `num_flow_partitions`.
        field: &'static str,
    },
}

impl PartitionConfig {
    /// The counts with their persisted field names, in `ff:config:partitions` order.
    pub fn fields(&self) -> [(&'static str, u16); 3] {
        [
            ("num_flow_partitions", self.num_flow_partitions),
            ("num_budget_partitions", self.num_budget_partitions),
            ("num_quota_partitions", self.num_quota_partitions),
        ]
    }

    /// The partition count of `family` (`Execution` shares the flow count).
    pub fn count(&self, family: PartitionFamily) -> u16 {
        match family {
            PartitionFamily::Flow | PartitionFamily::Execution => self.num_flow_partitions,
            PartitionFamily::Budget => self.num_budget_partitions,
            PartitionFamily::Quota => self.num_quota_partitions,
        }
    }

    /// Checks every count is at least 1; errors with `ZeroCount` naming the first zero field.
    pub fn validate(&self) -> Result<(), PartitionConfigError> {
        match self.fields().into_iter().find(|&(_, n)| n == 0) {
            Some((field, _)) => Err(PartitionConfigError::ZeroCount { field }),
            None => Ok(()),
        }
    }
}

/// `hash mod count`, with a zero count mapped to index 0 instead of a panic.
fn index_mod(hash: u16, count: u16) -> u16 {
    hash.checked_rem(count).unwrap_or(0)
}

/// The flow partition of a flow id: crc16 of the 16 raw UUID bytes mod the flow count.
pub fn flow_partition(flow: &Uuid, cfg: &PartitionConfig) -> Partition {
    let index = index_mod(crc16_xmodem(flow.as_bytes()), cfg.num_flow_partitions);
    Partition::new(PartitionFamily::Flow, index)
}

/// The budget partition of a budget id: crc16 of the 16 raw UUID bytes mod the budget count.
pub fn budget_partition(budget: &Uuid, cfg: &PartitionConfig) -> Partition {
    let index = index_mod(crc16_xmodem(budget.as_bytes()), cfg.num_budget_partitions);
    Partition::new(PartitionFamily::Budget, index)
}

/// The quota partition of a quota policy id: crc16 of the 16 raw UUID bytes mod the quota count.
pub fn quota_partition(quota: &Uuid, cfg: &PartitionConfig) -> Partition {
    let index = index_mod(crc16_xmodem(quota.as_bytes()), cfg.num_quota_partitions);
    Partition::new(PartitionFamily::Quota, index)
}

/// The execution partition of a solo execution: crc16 of the lane's UTF-8 bytes mod the flow count.
pub fn solo_partition(lane: &str, cfg: &PartitionConfig) -> Partition {
    let index = index_mod(crc16_xmodem(lane.as_bytes()), cfg.num_flow_partitions);
    Partition::new(PartitionFamily::Execution, index)
}

/// Why a partition key failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionKeyError {
    /// The key is not wrapped in `{…}`.
    #[error("partition key is not wrapped in braces")]
    MissingBraces,
    /// The body between the braces has no `:`.
    #[error("partition key body has no ':' between prefix and index")]
    MalformedBody,
    /// The prefix is not `fp`, `b` or `q`.
    #[error("partition key has unknown family prefix {0:?}")]
    UnknownFamilyPrefix(String),
    /// The index is not a u16.
    #[error("partition key index {0:?} is not a u16")]
    InvalidIndex(String),
}

/// The wire form of a partition: its hash tag, e.g. `{fp:7}`; opaque to consumers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionKey(String);

impl PartitionKey {
    /// Parses a hash tag into a partition (`Execution` comes back as `Flow`); errors per §2.4.
    pub fn parse(s: &str) -> Result<Partition, PartitionKeyError> {
        let body = s
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .ok_or(PartitionKeyError::MissingBraces)?;
        let (prefix, index) = body.split_once(':').ok_or(PartitionKeyError::MalformedBody)?;
        let family = match prefix {
            "fp" => PartitionFamily::Flow,
            "b" => PartitionFamily::Budget,
            "q" => PartitionFamily::Quota,
            other => return Err(PartitionKeyError::UnknownFamilyPrefix(other.to_owned())),
        };
        let index: u16 = index.parse().map_err(|_| PartitionKeyError::InvalidIndex(index.to_owned()))?;
        Ok(Partition::new(family, index))
    }

    /// The partition this key names; errors as [`PartitionKey::parse`].
    pub fn partition(&self) -> Result<Partition, PartitionKeyError> {
        Self::parse(&self.0)
    }

    /// The raw text, e.g. `{fp:7}`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Partition> for PartitionKey {
    fn from(p: Partition) -> Self {
        p.key()
    }
}

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bit, a byte at a time (not security relevant).
pub fn fnv1a_u64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// 8 lowercase hex digits of FNV-1a's low 32 bits XOR its high 32 bits (a log digest).
pub fn fnv1a_xor8hex(s: &str) -> String {
    let h = fnv1a_u64(s.as_bytes());
    let low = h as u32;
    let high = (h >> 32) as u32;
    format!("{:08x}", low ^ high)
}

/// FNV-1a's low 16 bits mod `m`, or 0 when `m = 0`.
pub fn fnv1a_u16_mod(s: &str, m: u16) -> u16 {
    index_mod(fnv1a_u64(s.as_bytes()) as u16, m)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The spec's example FlowId `550e8400-e29b-41d4-a716-446655440000`.
    const SPEC_FLOW_ID: Uuid = Uuid::from_u128(0x550e_8400_e29b_41d4_a716_4466_5544_0000);

    /// Bit-at-a-time CRC-16/XMODEM, the reference the table must agree with.
    fn crc16_bitwise(bytes: &[u8]) -> u16 {
        let mut crc = 0u16;
        for &b in bytes {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 { (crc << 1) ^ CRC16_POLY } else { crc << 1 };
            }
        }
        crc
    }

    #[test]
    fn crc16_check_value() {
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(crc16_xmodem(b""), 0);
    }

    #[test]
    fn spec_partition_vectors() {
        let cfg = PartitionConfig::default();
        assert_eq!(SPEC_FLOW_ID.to_string(), "550e8400-e29b-41d4-a716-446655440000");
        assert_eq!(crc16_xmodem(SPEC_FLOW_ID.as_bytes()), 36888);
        assert_eq!(flow_partition(&SPEC_FLOW_ID, &cfg), Partition::new(PartitionFamily::Flow, 24));

        // (lane, crc16, partition of 256)
        let lanes: [(&str, u16, u16); 2] = [("default", 54870, 86), ("workers-a", 11969, 193)];
        for (lane, crc, index) in lanes {
            assert_eq!(crc16_xmodem(lane.as_bytes()), crc, "crc16 of lane {lane}");
            assert_eq!(
                solo_partition(lane, &cfg),
                Partition::new(PartitionFamily::Execution, index),
                "{lane}"
            );
        }

        assert_eq!(
            budget_partition(&SPEC_FLOW_ID, &cfg),
            Partition::new(PartitionFamily::Budget, 36888 % 32)
        );
        assert_eq!(quota_partition(&SPEC_FLOW_ID, &cfg), Partition::new(PartitionFamily::Quota, 36888 % 32));
    }

    #[test]
    fn fnv_vectors() {
        assert_eq!(fnv1a_u64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_xor8hex("gpu,cuda"), "b21a6dfa");
        assert_eq!(fnv1a_u16_mod("worker-a", 256), 253);
        assert_eq!(fnv1a_u16_mod("worker-a", 0), 0);
    }

    #[test]
    fn hash_tags() {
        let cases: [(PartitionFamily, u16, &str); 4] = [
            (PartitionFamily::Flow, 7, "{fp:7}"),
            (PartitionFamily::Execution, 7, "{fp:7}"),
            (PartitionFamily::Budget, 3, "{b:3}"),
            (PartitionFamily::Quota, 31, "{q:31}"),
        ];
        for (family, index, tag) in cases {
            let p = Partition::new(family, index);
            assert_eq!(p.hash_tag(), tag);
            assert_eq!(p.key().as_str(), tag);
            assert_eq!(PartitionKey::from(p).to_string(), tag);
        }
    }

    #[test]
    fn partition_key_parses_and_collapses_execution_to_flow() {
        let key = Partition::new(PartitionFamily::Execution, 7).key();
        assert_eq!(key.partition(), Ok(Partition::new(PartitionFamily::Flow, 7)));
        assert_eq!(PartitionKey::parse("{b:3}"), Ok(Partition::new(PartitionFamily::Budget, 3)));
        assert_eq!(PartitionKey::parse("{q:0}"), Ok(Partition::new(PartitionFamily::Quota, 0)));
        assert_eq!(PartitionKey::parse("{fp:65535}"), Ok(Partition::new(PartitionFamily::Flow, u16::MAX)));
    }

    #[test]
    fn partition_key_errors() {
        let cases: [(&str, PartitionKeyError); 10] = [
            ("fp:7", PartitionKeyError::MissingBraces),
            ("{fp:7", PartitionKeyError::MissingBraces),
            ("fp:7}", PartitionKeyError::MissingBraces),
            ("", PartitionKeyError::MissingBraces),
            ("{fp7}", PartitionKeyError::MalformedBody),
            ("{x:7}", PartitionKeyError::UnknownFamilyPrefix("x".to_owned())),
            ("{:7}", PartitionKeyError::UnknownFamilyPrefix(String::new())),
            ("{fp:70000}", PartitionKeyError::InvalidIndex("70000".to_owned())),
            ("{fp:}", PartitionKeyError::InvalidIndex(String::new())),
            ("{fp:7:8}", PartitionKeyError::InvalidIndex("7:8".to_owned())),
        ];
        for (input, expected) in cases {
            assert_eq!(PartitionKey::parse(input), Err(expected), "input {input:?}");
        }
    }

    #[test]
    fn partition_key_serializes_as_a_bare_string() {
        let key = Partition::new(PartitionFamily::Flow, 7).key();
        assert_eq!(serde_json::to_string(&key).ok().as_deref(), Some("\"{fp:7}\""));
        assert_eq!(
            serde_json::from_str::<PartitionKey>("\"{b:2}\"").ok(),
            Some(Partition::new(PartitionFamily::Budget, 2).key())
        );
    }

    #[test]
    fn zero_counts_are_rejected() {
        assert_eq!(PartitionConfig::default().validate(), Ok(()));
        let cases: [(PartitionConfig, &str); 3] = [
            (PartitionConfig { num_flow_partitions: 0, ..PartitionConfig::default() }, "num_flow_partitions"),
            (
                PartitionConfig { num_budget_partitions: 0, ..PartitionConfig::default() },
                "num_budget_partitions",
            ),
            (
                PartitionConfig { num_quota_partitions: 0, ..PartitionConfig::default() },
                "num_quota_partitions",
            ),
        ];
        for (cfg, field) in cases {
            assert_eq!(cfg.validate(), Err(PartitionConfigError::ZeroCount { field }));
        }
    }

    #[test]
    fn zero_counts_map_to_index_zero() {
        let cfg =
            PartitionConfig { num_flow_partitions: 0, num_budget_partitions: 0, num_quota_partitions: 0 };
        assert_eq!(flow_partition(&SPEC_FLOW_ID, &cfg).index, 0);
        assert_eq!(budget_partition(&SPEC_FLOW_ID, &cfg).index, 0);
        assert_eq!(quota_partition(&SPEC_FLOW_ID, &cfg).index, 0);
        assert_eq!(solo_partition("default", &cfg).index, 0);
    }

    fn any_family() -> impl Strategy<Value = PartitionFamily> {
        prop_oneof![
            Just(PartitionFamily::Flow),
            Just(PartitionFamily::Execution),
            Just(PartitionFamily::Budget),
            Just(PartitionFamily::Quota),
        ]
    }

    proptest! {
        #[test]
        fn crc16_table_matches_bitwise(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(crc16_xmodem(&bytes), crc16_bitwise(&bytes));
        }

        #[test]
        fn partition_key_round_trips(family in any_family(), index in any::<u16>()) {
            let expected_family = match family {
                PartitionFamily::Execution => PartitionFamily::Flow,
                other => other,
            };
            let parsed = PartitionKey::parse(Partition::new(family, index).key().as_str());
            prop_assert_eq!(parsed, Ok(Partition::new(expected_family, index)));
        }

        #[test]
        fn partitions_stay_in_range(bytes in any::<[u8; 16]>(), count in 1u16..=1024) {
            let cfg = PartitionConfig {
                num_flow_partitions: count,
                num_budget_partitions: count,
                num_quota_partitions: count,
            };
            let id = Uuid::from_bytes(bytes);
            prop_assert!(flow_partition(&id, &cfg).index < count);
            prop_assert!(budget_partition(&id, &cfg).index < count);
            prop_assert!(quota_partition(&id, &cfg).index < count);
            prop_assert!(fnv1a_u16_mod(&id.to_string(), count) < count);
        }
    }
}
