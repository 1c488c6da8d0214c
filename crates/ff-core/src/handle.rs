//! The worker `Handle`: an attempt cookie with a shared binary codec (spec 04 §1).

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ValidationKind};
use crate::ids::{AttemptId, AttemptIndex, ExecutionId, LaneId, LeaseEpoch, LeaseId, WorkerInstanceId};

/// Which backend minted a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BackendTag {
    /// Valkey (`0x01`).
    Valkey,
    /// Postgres (`0x02`, reserved).
    Postgres,
    /// SQLite (`0x03`).
    Sqlite,
    /// In-memory (`0x04`).
    Memory,
}

impl BackendTag {
    /// The wire byte.
    pub fn wire_byte(self) -> u8 {
        match self {
            Self::Valkey => 0x01,
            Self::Postgres => 0x02,
            Self::Sqlite => 0x03,
            Self::Memory => 0x04,
        }
    }

    /// Parses a wire byte.
    pub fn from_wire_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::Valkey,
            0x02 => Self::Postgres,
            0x03 => Self::Sqlite,
            0x04 => Self::Memory,
            _ => return None,
        })
    }

    /// The family name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valkey => "valkey",
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
            Self::Memory => "memory",
        }
    }
}

/// The lifecycle stage a handle was minted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HandleKind {
    /// New attempt from a claim.
    Fresh,
    /// Same attempt, new lease.
    Resumed,
    /// Same attempt; lease released by a suspend.
    Suspended,
    /// New attempt after a lost lease.
    Reclaimed,
}

/// The eight fields every backend encodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlePayload {
    /// Claimed execution.
    pub execution_id: ExecutionId,
    /// Attempt index.
    pub attempt_index: AttemptIndex,
    /// Attempt id.
    pub attempt_id: AttemptId,
    /// Lease id.
    pub lease_id: LeaseId,
    /// Lease epoch.
    pub lease_epoch: LeaseEpoch,
    /// TTL the claim used; `renew` extends by it.
    pub lease_ttl_ms: u64,
    /// Lane.
    pub lane_id: LaneId,
    /// Claimer.
    pub worker_instance_id: WorkerInstanceId,
}

/// Why handle bytes failed to decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleDecodeError {
    /// A read runs past the end.
    #[error("truncated: needed {needed} bytes at {at}, have {have}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Offset.
        at: usize,
        /// Total length.
        have: usize,
    },
    /// Bytes left after the last field.
    #[error("trailing bytes at {pos} of {len}")]
    TrailingBytes {
        /// Offset.
        pos: usize,
        /// Total length.
        len: usize,
    },
    /// Magic `0x02` with an unknown version.
    #[error("bad wire version {got}")]
    BadWireVersion {
        /// Version byte.
        got: u8,
    },
    /// First byte neither `0x02` nor `0x01`.
    #[error("bad leading byte {got}")]
    BadV1Version {
        /// Leading byte.
        got: u8,
    },
    /// Unknown backend tag.
    #[error("bad backend tag {got}")]
    BadBackendTag {
        /// Tag byte.
        got: u8,
    },
    /// A string field is not UTF-8.
    #[error("field {field} is not UTF-8")]
    InvalidUtf8 {
        /// Field.
        field: &'static str,
    },
    /// An id fails to parse.
    #[error("field {field}: {detail}")]
    ParseField {
        /// Field.
        field: &'static str,
        /// Why.
        detail: String,
    },
}

const MAGIC_V2: u8 = 0x02;
const WIRE_VERSION: u8 = 0x01;
const LEGACY_V1: u8 = 0x01;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes a payload in wire format v2.
pub fn encode(tag: BackendTag, p: &HandlePayload) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(&[MAGIC_V2, WIRE_VERSION, tag.wire_byte()]);
    put_str(&mut out, p.execution_id.as_str());
    out.extend_from_slice(&p.attempt_index.to_le_bytes());
    put_str(&mut out, &p.attempt_id.to_string());
    put_str(&mut out, &p.lease_id.to_string());
    out.extend_from_slice(&p.lease_epoch.to_le_bytes());
    out.extend_from_slice(&p.lease_ttl_ms.to_le_bytes());
    put_str(&mut out, p.lane_id.as_str());
    put_str(&mut out, p.worker_instance_id.as_str());
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HandleDecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(HandleDecodeError::Truncated { needed: n, at: self.pos, have: self.bytes.len() })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, HandleDecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, HandleDecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn string(&mut self, field: &'static str) -> Result<&'a str, HandleDecodeError> {
        let len = self.u32()? as usize;
        let b = self.take(len)?;
        std::str::from_utf8(b).map_err(|_| HandleDecodeError::InvalidUtf8 { field })
    }
}

fn parse_field<T, E: std::fmt::Display>(
    field: &'static str,
    r: Result<T, E>,
) -> Result<T, HandleDecodeError> {
    r.map_err(|e| HandleDecodeError::ParseField { field, detail: e.to_string() })
}

/// Decodes wire format v2 (or legacy v1, which decodes as `Valkey`).
pub fn decode(bytes: &[u8]) -> Result<(BackendTag, HandlePayload), HandleDecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let first = r.take(1)?[0];
    let tag = match first {
        MAGIC_V2 => {
            let version = r.take(1)?[0];
            if version != WIRE_VERSION {
                return Err(HandleDecodeError::BadWireVersion { got: version });
            }
            let t = r.take(1)?[0];
            BackendTag::from_wire_byte(t).ok_or(HandleDecodeError::BadBackendTag { got: t })?
        }
        LEGACY_V1 => BackendTag::Valkey,
        other => return Err(HandleDecodeError::BadV1Version { got: other }),
    };
    let execution_id = parse_field("execution_id", ExecutionId::parse(r.string("execution_id")?))?;
    let attempt_index = r.u32()?;
    let attempt_id = parse_field("attempt_id", AttemptId::parse(r.string("attempt_id")?))?;
    let lease_id = parse_field("lease_id", LeaseId::parse(r.string("lease_id")?))?;
    let lease_epoch = r.u64()?;
    let lease_ttl_ms = r.u64()?;
    let lane_id = LaneId::new(r.string("lane_id")?);
    let worker_instance_id = WorkerInstanceId::new(r.string("worker_instance_id")?);
    if r.pos != bytes.len() {
        return Err(HandleDecodeError::TrailingBytes { pos: r.pos, len: bytes.len() });
    }
    let payload = HandlePayload {
        execution_id,
        attempt_index,
        attempt_id,
        lease_id,
        lease_epoch,
        lease_ttl_ms,
        lane_id,
        worker_instance_id,
    };
    Ok((tag, payload))
}

/// An attempt cookie: which backend, which stage, and the backend-private bytes.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Handle {
    /// Minting backend.
    pub backend: BackendTag,
    /// Stage minted in.
    pub kind: HandleKind,
    /// Encoded payload.
    pub opaque: Vec<u8>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("backend", &self.backend)
            .field("kind", &self.kind)
            .field("opaque_len", &self.opaque.len())
            .finish()
    }
}

impl Handle {
    /// Encodes a payload into a handle.
    pub fn mint(tag: BackendTag, kind: HandleKind, p: &HandlePayload) -> Self {
        Self { backend: tag, kind, opaque: encode(tag, p) }
    }

    /// Builds a handle from raw parts (for codecs and tests).
    pub fn from_parts(backend: BackendTag, kind: HandleKind, opaque: Vec<u8>) -> Self {
        Self { backend, kind, opaque }
    }

    /// Checks both tags and decodes (spec 04 §1.5 steps 3–5).
    pub fn decode_for(&self, expected: BackendTag) -> Result<HandlePayload, EngineError> {
        if self.backend != expected {
            return Err(EngineError::validation(
                ValidationKind::HandleFromOtherBackend,
                format!("expected={} actual={}", expected.as_str(), self.backend.as_str()),
            ));
        }
        let (tag, payload) = decode(&self.opaque)
            .map_err(|e| EngineError::validation(ValidationKind::Corruption, format!("handle_codec: {e}")))?;
        if tag != expected {
            return Err(EngineError::validation(
                ValidationKind::HandleFromOtherBackend,
                format!("expected={} actual={} (embedded tag)", expected.as_str(), tag.as_str()),
            ));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn payload() -> HandlePayload {
        HandlePayload {
            execution_id: ExecutionId::from_parts(7, Uuid::from_u64_pair(1, 2)),
            attempt_index: 3,
            attempt_id: AttemptId::from_uuid(Uuid::from_u64_pair(3, 4)),
            lease_id: LeaseId::from_uuid(Uuid::from_u64_pair(5, 6)),
            lease_epoch: 9,
            lease_ttl_ms: 30_000,
            lane_id: LaneId::new("default"),
            worker_instance_id: WorkerInstanceId::new("w-1"),
        }
    }

    #[test]
    fn round_trip_every_tag() {
        for tag in [BackendTag::Valkey, BackendTag::Postgres, BackendTag::Sqlite, BackendTag::Memory] {
            let bytes = encode(tag, &payload());
            assert_eq!(decode(&bytes).unwrap(), (tag, payload()));
        }
    }

    #[test]
    fn v2_layout_and_v1_legacy() {
        let bytes = encode(BackendTag::Sqlite, &payload());
        let eid_len = payload().execution_id.as_str().len() as u32;
        assert_eq!(&bytes[..3], &[0x02, 0x01, 0x03]);
        assert_eq!(&bytes[3..7], &eid_len.to_le_bytes());
        let mut v1 = vec![0x01];
        v1.extend_from_slice(&bytes[3..]);
        assert_eq!(decode(&v1).unwrap(), (BackendTag::Valkey, payload()));
    }

    #[test]
    fn every_error_variant() {
        let good = encode(BackendTag::Memory, &payload());
        assert!(matches!(decode(&[]), Err(HandleDecodeError::Truncated { .. })));
        assert_eq!(decode(&[0x02, 0x09]), Err(HandleDecodeError::BadWireVersion { got: 9 }));
        assert_eq!(decode(&[0x07]), Err(HandleDecodeError::BadV1Version { got: 7 }));
        assert_eq!(decode(&[0x02, 0x01, 0x55]), Err(HandleDecodeError::BadBackendTag { got: 0x55 }));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(decode(&trailing), Err(HandleDecodeError::TrailingBytes { .. })));
        let mut bad_utf8 = vec![0x02, 0x01, 0x04, 2, 0, 0, 0, 0xff, 0xfe];
        bad_utf8.extend_from_slice(&good[3..]);
        assert_eq!(decode(&bad_utf8), Err(HandleDecodeError::InvalidUtf8 { field: "execution_id" }));
        let mut bad_id = vec![0x02, 0x01, 0x04, 2, 0, 0, 0, b'n', b'o'];
        bad_id.extend_from_slice(&good[3..]);
        assert!(matches!(decode(&bad_id), Err(HandleDecodeError::ParseField { field: "execution_id", .. })));
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "prefix {cut} decoded");
        }
    }

    #[test]
    fn decode_for_checks_both_tags() {
        let h = Handle::mint(BackendTag::Sqlite, HandleKind::Fresh, &payload());
        let e = h.decode_for(BackendTag::Memory).unwrap_err();
        assert!(matches!(e, EngineError::Validation { kind: ValidationKind::HandleFromOtherBackend, .. }));
        let relabelled = Handle::from_parts(BackendTag::Memory, HandleKind::Fresh, h.opaque.clone());
        let e = relabelled.decode_for(BackendTag::Memory).unwrap_err();
        assert!(e.to_string().contains("embedded tag"), "{e}");
        let empty = Handle::from_parts(BackendTag::Memory, HandleKind::Fresh, Vec::new());
        assert!(matches!(
            empty.decode_for(BackendTag::Memory),
            Err(EngineError::Validation { kind: ValidationKind::Corruption, .. })
        ));
        assert_eq!(h.decode_for(BackendTag::Sqlite).unwrap(), payload());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
