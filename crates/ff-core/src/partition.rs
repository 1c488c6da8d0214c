//! Partition families, partition math and the `PartitionKey` wire form (spec 01 §2).

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Default flow/execution partition count.
pub const FLOW_PARTITIONS_DEFAULT: u16 = 256;
/// Default budget partition count.
pub const BUDGET_PARTITIONS_DEFAULT: u16 = 32;
/// Default quota partition count.
pub const QUOTA_PARTITIONS_DEFAULT: u16 = 32;

const CRC16_TABLE: [u16; 256] = crc16_table();

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// CRC-16/XMODEM (poly 0x1021, init 0): the CRC Valkey Cluster uses for slots.
pub fn crc16_xmodem(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, b| (crc << 8) ^ CRC16_TABLE[usize::from(((crc >> 8) as u8) ^ b)])
}

/// A partition family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PartitionFamily {
    /// Flows (and their executions).
    Flow,
    /// Executions (a routing alias of `Flow`).
    Execution,
    /// Budgets.
    Budget,
    /// Quotas.
    Quota,
}

impl PartitionFamily {
    /// The hash-tag prefix.
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
    /// Family.
    pub family: PartitionFamily,
    /// Index within the family.
    pub index: u16,
}

impl Partition {
    /// A partition.
    pub fn new(family: PartitionFamily, index: u16) -> Self {
        Self { family, index }
    }

    /// The hash tag, e.g. `{fp:7}`.
    pub fn hash_tag(&self) -> String {
        format!("{{{}:{}}}", self.family.prefix(), self.index)
    }

    /// The wire form.
    pub fn key(&self) -> PartitionKey {
        PartitionKey(self.hash_tag())
    }
}

/// Partition counts, fixed at deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionConfig {
    /// Flow/execution partitions.
    pub num_flow_partitions: u16,
    /// Budget partitions.
    pub num_budget_partitions: u16,
    /// Quota partitions.
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
pub enum PartitionConfigError {
    /// A count is zero.
    #[error("partition count {field} must be at least 1")]
    ZeroCount {
        /// Which field.
        field: &'static str,
    },
}

impl PartitionConfig {
    /// Rejects zero counts.
    pub fn validate(&self) -> Result<(), PartitionConfigError> {
        for (field, n) in [
            ("num_flow_partitions", self.num_flow_partitions),
            ("num_budget_partitions", self.num_budget_partitions),
            ("num_quota_partitions", self.num_quota_partitions),
        ] {
            if n == 0 {
                return Err(PartitionConfigError::ZeroCount { field });
            }
        }
        Ok(())
    }
}

fn modulo(crc: u16, n: u16) -> u16 {
    if n == 0 { 0 } else { crc % n }
}

/// The flow partition of a flow id (crc16 of the 16 raw UUID bytes).
pub fn flow_partition(flow: &Uuid, cfg: &PartitionConfig) -> Partition {
    let index = modulo(crc16_xmodem(flow.as_bytes()), cfg.num_flow_partitions);
    Partition::new(PartitionFamily::Flow, index)
}

/// The budget partition of a budget id.
pub fn budget_partition(budget: &Uuid, cfg: &PartitionConfig) -> Partition {
    let index = modulo(crc16_xmodem(budget.as_bytes()), cfg.num_budget_partitions);
    Partition::new(PartitionFamily::Budget, index)
}

/// The quota partition of a quota policy id.
pub fn quota_partition(quota: &Uuid, cfg: &PartitionConfig) -> Partition {
    let index = modulo(crc16_xmodem(quota.as_bytes()), cfg.num_quota_partitions);
    Partition::new(PartitionFamily::Quota, index)
}

/// The execution partition of a solo execution (crc16 of the lane name).
pub fn solo_partition(lane: &str, cfg: &PartitionConfig) -> Partition {
    let index = modulo(crc16_xmodem(lane.as_bytes()), cfg.num_flow_partitions);
    Partition::new(PartitionFamily::Execution, index)
}

/// Why a partition key failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionKeyError {
    /// Not wrapped in braces.
    #[error("partition key must be wrapped in braces")]
    MissingBraces,
    /// No `:` in the body.
    #[error("partition key body has no ':'")]
    MalformedBody,
    /// Unknown family prefix.
    #[error("unknown partition family prefix: {0}")]
    UnknownFamilyPrefix(String),
    /// Index not a u16.
    #[error("invalid partition index: {0}")]
    InvalidIndex(String),
}

/// The wire form of a partition: its hash tag, e.g. `{fp:7}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionKey(String);

impl PartitionKey {
    /// Parses a hash tag into a partition (`Execution` collapses to `Flow`).
    pub fn parse(s: &str) -> Result<Partition, PartitionKeyError> {
        let body =
            s.strip_prefix('{').and_then(|b| b.strip_suffix('}')).ok_or(PartitionKeyError::MissingBraces)?;
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

    /// The partition this key names.
    pub fn partition(&self) -> Result<Partition, PartitionKeyError> {
        Self::parse(&self.0)
    }

    /// The raw text.
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

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bit.
pub fn fnv1a_u64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME))
}

/// 8 hex digits of the low and high 32 bits of FNV-1a XORed (a log digest).
pub fn fnv1a_xor8hex(s: &str) -> String {
    let h = fnv1a_u64(s.as_bytes());
    format!("{:08x}", (h as u32) ^ ((h >> 32) as u32))
}

/// The low 16 bits of FNV-1a modulo `m` (0 when `m = 0`).
pub fn fnv1a_u16_mod(s: &str, m: u16) -> u16 {
    if m == 0 { 0 } else { (fnv1a_u64(s.as_bytes()) as u16) % m }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_check_value() {
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    }

    #[test]
    fn spec_vectors() {
        let cfg = PartitionConfig::default();
        let flow = Uuid::parse_str("550e8400-e29b-41d4-a716-446655440000").unwrap();
        assert_eq!(crc16_xmodem(flow.as_bytes()), 36888);
        assert_eq!(flow_partition(&flow, &cfg).index, 24);
        assert_eq!(crc16_xmodem(b"default"), 54870);
        assert_eq!(solo_partition("default", &cfg).index, 86);
        assert_eq!(crc16_xmodem(b"workers-a"), 11969);
        assert_eq!(solo_partition("workers-a", &cfg).index, 193);
        assert_eq!(budget_partition(&flow, &cfg).family, PartitionFamily::Budget);
        assert_eq!(quota_partition(&flow, &cfg).index, 36888 % 32);
    }

    #[test]
    fn fnv_vectors() {
        assert_eq!(fnv1a_u64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a_xor8hex("gpu,cuda"), "b21a6dfa");
        assert_eq!(fnv1a_u16_mod("worker-a", 256), 253);
        assert_eq!(fnv1a_u16_mod("worker-a", 0), 0);
    }

    #[test]
    fn partition_key_round_trip_and_errors() {
        let p = Partition::new(PartitionFamily::Execution, 7);
        let key = p.key();
        assert_eq!(key.as_str(), "{fp:7}");
        assert_eq!(key.partition().unwrap(), Partition::new(PartitionFamily::Flow, 7));
        assert_eq!(PartitionKey::parse("{b:3}").unwrap(), Partition::new(PartitionFamily::Budget, 3));
        assert_eq!(PartitionKey::parse("{q:0}").unwrap().family, PartitionFamily::Quota);
        assert_eq!(PartitionKey::parse("fp:7"), Err(PartitionKeyError::MissingBraces));
        assert_eq!(PartitionKey::parse("{fp7}"), Err(PartitionKeyError::MalformedBody));
        assert_eq!(PartitionKey::parse("{x:7}"), Err(PartitionKeyError::UnknownFamilyPrefix("x".into())));
        assert_eq!(PartitionKey::parse("{fp:70000}"), Err(PartitionKeyError::InvalidIndex("70000".into())));
    }

    #[test]
    fn zero_counts_are_rejected() {
        let cfg = PartitionConfig { num_budget_partitions: 0, ..PartitionConfig::default() };
        assert_eq!(cfg.validate(), Err(PartitionConfigError::ZeroCount { field: "num_budget_partitions" }));
        assert!(PartitionConfig::default().validate().is_ok());
        assert_eq!(flow_partition(&Uuid::nil(), &PartitionConfig { num_flow_partitions: 0, ..cfg }).index, 0);
    }
}
