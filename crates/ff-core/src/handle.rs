//! The worker `Handle`: an attempt cookie carrying a shared binary codec (spec 04 §1).
//!
//! Every backend encodes the same eight-field [`HandlePayload`] with [`encode`]
//! (wire format v2) and reads it back with [`decode`], which also accepts the
//! legacy v1 layout. Backends only add a tag check on top ([`Handle::decode_for`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ValidationKind};
use crate::ids::{AttemptId, AttemptIndex, ExecutionId, LaneId, LeaseEpoch, LeaseId, WorkerInstanceId};

/// Which backend minted a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BackendTag {
    /// Valkey, wire byte `0x01`.
    Valkey,
    /// Postgres, wire byte `0x02` (reserved; no backend ships it).
    Postgres,
    /// SQLite, wire byte `0x03`.
    Sqlite,
    /// The in-memory backend, wire byte `0x04`.
    Memory,
}

impl BackendTag {
    /// The byte this tag occupies at offset 2 of a v2 handle.
    pub fn wire_byte(self) -> u8 {
        match self {
            Self::Valkey => 0x01,
            Self::Postgres => 0x02,
            Self::Sqlite => 0x03,
            Self::Memory => 0x04,
        }
    }

    /// The tag for a wire byte, or `None` for a byte no backend owns.
    pub fn from_wire_byte(b: u8) -> Option<Self> {
        match b {
            0x01 => Some(Self::Valkey),
            0x02 => Some(Self::Postgres),
            0x03 => Some(Self::Sqlite),
            0x04 => Some(Self::Memory),
            _ => None,
        }
    }

    /// The backend family name used in error details: `valkey`, `postgres`, `sqlite`, `memory`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valkey => "valkey",
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
            Self::Memory => "memory",
        }
    }
}

impl fmt::Display for BackendTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lifecycle stage a handle was minted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HandleKind {
    /// A new attempt from a claim.
    Fresh,
    /// The same attempt under a new lease, after a resume.
    Resumed,
    /// The same attempt, parked by a suspend; its lease is released.
    Suspended,
    /// A new attempt after a lost lease was reclaimed.
    Reclaimed,
}

/// The eight fields every backend encodes into a handle (spec 04 §1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlePayload {
    /// The claimed execution.
    pub execution_id: ExecutionId,
    /// The 0-based attempt index.
    pub attempt_index: AttemptIndex,
    /// The attempt record's id.
    pub attempt_id: AttemptId,
    /// The lease minted by the claim.
    pub lease_id: LeaseId,
    /// The lease epoch after the claim.
    pub lease_epoch: LeaseEpoch,
    /// The TTL the claim used; `renew` extends by this much.
    pub lease_ttl_ms: u64,
    /// The execution's lane.
    pub lane_id: LaneId,
    /// The claiming worker instance.
    pub worker_instance_id: WorkerInstanceId,
}

/// Why handle bytes failed to decode; surfaced as `Validation(Corruption)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleDecodeError {
    /// A read ran past the end of the bytes.
    #[error("handle is truncated: needed {needed} bytes at offset {at}, but it is {have} bytes long")]
    Truncated {
        /// Bytes the read needed.
        needed: usize,
        /// Offset the read started at.
        at: usize,
        /// Total length of the input.
        have: usize,
    },
    /// Bytes were left over after the last field.
    #[error("handle has trailing bytes: the last field ends at offset {pos}, but it is {len} bytes long")]
    TrailingBytes {
        /// Offset just past the last field.
        pos: usize,
        /// Total length of the input.
        len: usize,
    },
    /// The v2 magic was followed by an unknown wire version.
    #[error("handle wire version {got:#04x} is not supported (expected 0x01)")]
    BadWireVersion {
        /// The version byte found.
        got: u8,
    },
    /// The first byte is neither the v2 magic `0x02` nor the legacy v1 marker `0x01`.
    #[error("handle starts with {got:#04x}, which is neither the v2 magic 0x02 nor the v1 marker 0x01")]
    BadV1Version {
        /// The leading byte found.
        got: u8,
    },
    /// The backend tag byte names no known backend.
    #[error("handle backend tag {got:#04x} is unknown")]
    BadBackendTag {
        /// The tag byte found.
        got: u8,
    },
    /// A string field is not valid UTF-8.
    #[error("handle field {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field's name.
        field: &'static str,
    },
    /// An id field is UTF-8 but does not parse as its id type.
    #[error("handle field {field} does not parse: {detail}")]
    ParseField {
        /// The field's name.
        field: &'static str,
        /// The parser's complaint.
        detail: String,
    },
}

/// First byte of a v2 handle.
const MAGIC_V2: u8 = 0x02;
/// Second byte of a v2 handle: the only wire version we know.
const WIRE_VERSION_V2: u8 = 0x01;
/// First byte of a legacy v1 handle (no version, no tag; always Valkey).
const MARKER_V1: u8 = 0x01;
/// Typical encoded size: header, two UUIDs, an execution id, a lane and an instance id.
const ENCODED_CAPACITY_BYTES: usize = 192;

/// Appends a string as u32 LE length + bytes.
fn put_str(out: &mut Vec<u8>, s: &str) {
    // Ids and names are bounded far below 4 GiB at ingress; a longer string cannot reach here.
    debug_assert!(u32::try_from(s.len()).is_ok(), "handle string field longer than u32::MAX");
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes a payload in wire format v2 under `tag` (infallible).
pub fn encode(tag: BackendTag, p: &HandlePayload) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENCODED_CAPACITY_BYTES);
    out.extend_from_slice(&[MAGIC_V2, WIRE_VERSION_V2, tag.wire_byte()]);
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

/// A bounds-checked cursor over untrusted bytes; every read is `get`-based, so none can panic.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], HandleDecodeError> {
        let bytes: &'a [u8] = self.bytes;
        let slice = self.pos.checked_add(n).and_then(|end| bytes.get(self.pos..end));
        let Some(slice) = slice else {
            return Err(HandleDecodeError::Truncated { needed: n, at: self.pos, have: bytes.len() });
        };
        self.pos += slice.len();
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], HandleDecodeError> {
        let at = self.pos;
        let slice = self.take(N)?;
        <[u8; N]>::try_from(slice).map_err(|_| HandleDecodeError::Truncated {
            needed: N,
            at,
            have: self.bytes.len(),
        })
    }

    fn u8(&mut self) -> Result<u8, HandleDecodeError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, HandleDecodeError> {
        self.array::<4>().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, HandleDecodeError> {
        self.array::<8>().map(u64::from_le_bytes)
    }

    fn string(&mut self, field: &'static str) -> Result<&'a str, HandleDecodeError> {
        // A length that does not fit usize cannot fit the input either: report it as truncation.
        let len = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        let raw = self.take(len)?;
        std::str::from_utf8(raw).map_err(|_| HandleDecodeError::InvalidUtf8 { field })
    }

    fn finish(&self) -> Result<(), HandleDecodeError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(HandleDecodeError::TrailingBytes { pos: self.pos, len: self.bytes.len() })
        }
    }
}

/// Maps an id parser's error to `ParseField` for `field`.
fn parse_field<T, E: fmt::Display>(field: &'static str, r: Result<T, E>) -> Result<T, HandleDecodeError> {
    r.map_err(|e| HandleDecodeError::ParseField { field, detail: e.to_string() })
}

/// Reads the v2 header (magic, version, tag) or the v1 marker, yielding the embedded tag.
fn decode_header(r: &mut Reader<'_>) -> Result<BackendTag, HandleDecodeError> {
    match r.u8()? {
        MAGIC_V2 => {
            let version = r.u8()?;
            if version != WIRE_VERSION_V2 {
                return Err(HandleDecodeError::BadWireVersion { got: version });
            }
            let tag = r.u8()?;
            BackendTag::from_wire_byte(tag).ok_or(HandleDecodeError::BadBackendTag { got: tag })
        }
        MARKER_V1 => Ok(BackendTag::Valkey),
        got => Err(HandleDecodeError::BadV1Version { got }),
    }
}

/// Reads the eight fields in spec 04 §1.3 order.
fn decode_fields(r: &mut Reader<'_>) -> Result<HandlePayload, HandleDecodeError> {
    let execution_id = parse_field("execution_id", ExecutionId::parse(r.string("execution_id")?))?;
    let attempt_index = r.u32()?;
    let attempt_id = parse_field("attempt_id", AttemptId::parse(r.string("attempt_id")?))?;
    let lease_id = parse_field("lease_id", LeaseId::parse(r.string("lease_id")?))?;
    let lease_epoch = r.u64()?;
    let lease_ttl_ms = r.u64()?;
    let lane_id = LaneId::new(r.string("lane_id")?);
    let worker_instance_id = WorkerInstanceId::new(r.string("worker_instance_id")?);
    Ok(HandlePayload {
        execution_id,
        attempt_index,
        attempt_id,
        lease_id,
        lease_epoch,
        lease_ttl_ms,
        lane_id,
        worker_instance_id,
    })
}

/// Decodes wire format v2, or legacy v1 (which decodes as `Valkey`), consuming every byte.
/// Errors: any [`HandleDecodeError`]; never panics, whatever the input.
pub fn decode(bytes: &[u8]) -> Result<(BackendTag, HandlePayload), HandleDecodeError> {
    let mut r = Reader::new(bytes);
    let tag = decode_header(&mut r)?;
    let payload = decode_fields(&mut r)?;
    r.finish()?;
    Ok((tag, payload))
}

/// An attempt cookie: which backend minted it, in which stage, and the encoded payload.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Handle {
    /// The backend that minted the handle.
    pub backend: BackendTag,
    /// The lifecycle stage the handle was minted in.
    pub kind: HandleKind,
    /// The backend-private payload (wire format v2); callers never build or parse it.
    pub opaque: Vec<u8>,
}

impl fmt::Debug for Handle {
    // The opaque bytes carry the lease id; logs get only their length.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("backend", &self.backend)
            .field("kind", &self.kind)
            .field("opaque_len", &self.opaque.len())
            .finish()
    }
}

impl Handle {
    /// Mints a handle by encoding `p` under `tag` (infallible).
    pub fn mint(tag: BackendTag, kind: HandleKind, p: &HandlePayload) -> Self {
        Self { backend: tag, kind, opaque: encode(tag, p) }
    }

    /// Builds a handle from raw parts, unchecked (codecs and tamper tests outside this crate).
    pub fn from_parts(backend: BackendTag, kind: HandleKind, opaque: Vec<u8>) -> Self {
        Self { backend, kind, opaque }
    }

    /// Checks the outer tag, decodes, then checks the embedded tag (spec 04 §1.5 steps 3–5).
    /// Errors: `Validation(HandleFromOtherBackend)` on a tag mismatch, `Validation(Corruption)` on bad bytes.
    pub fn decode_for(&self, expected: BackendTag) -> Result<HandlePayload, EngineError> {
        if self.backend != expected {
            return Err(EngineError::Validation {
                kind: ValidationKind::HandleFromOtherBackend,
                detail: format!("expected={} actual={}", expected.as_str(), self.backend.as_str()),
            });
        }
        let (embedded, payload) = decode(&self.opaque).map_err(|e| EngineError::Validation {
            kind: ValidationKind::Corruption,
            detail: format!("handle_codec: {e}"),
        })?;
        // A relabelled handle: right outer tag, opaque minted by another backend.
        if embedded != expected {
            return Err(EngineError::Validation {
                kind: ValidationKind::HandleFromOtherBackend,
                detail: format!("expected={} actual={} (embedded tag)", expected.as_str(), embedded.as_str()),
            });
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    const ALL_TAGS: [BackendTag; 4] =
        [BackendTag::Valkey, BackendTag::Postgres, BackendTag::Sqlite, BackendTag::Memory];
    const ALL_KINDS: [HandleKind; 4] =
        [HandleKind::Fresh, HandleKind::Resumed, HandleKind::Suspended, HandleKind::Reclaimed];
    /// Names of the five string fields, in wire order.
    const STRING_FIELDS: [&str; 5] =
        ["execution_id", "attempt_id", "lease_id", "lane_id", "worker_instance_id"];

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

    /// An independent encoder written from the spec's table, with every field corruptible.
    #[derive(Clone)]
    struct Raw {
        strings: [Vec<u8>; 5],
        attempt_index: u32,
        lease_epoch: u64,
        lease_ttl_ms: u64,
    }

    fn put(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }

    impl Raw {
        fn of(p: &HandlePayload) -> Self {
            Self {
                strings: [
                    p.execution_id.as_str().as_bytes().to_vec(),
                    p.attempt_id.to_string().into_bytes(),
                    p.lease_id.to_string().into_bytes(),
                    p.lane_id.as_str().as_bytes().to_vec(),
                    p.worker_instance_id.as_str().as_bytes().to_vec(),
                ],
                attempt_index: p.attempt_index,
                lease_epoch: p.lease_epoch,
                lease_ttl_ms: p.lease_ttl_ms,
            }
        }

        fn with_string(mut self, index: usize, bytes: &[u8]) -> Self {
            self.strings[index] = bytes.to_vec();
            self
        }

        fn fields(&self) -> Vec<u8> {
            let [eid, attempt_id, lease_id, lane, worker] = &self.strings;
            let mut out = Vec::new();
            put(&mut out, eid);
            out.extend_from_slice(&self.attempt_index.to_le_bytes());
            put(&mut out, attempt_id);
            put(&mut out, lease_id);
            out.extend_from_slice(&self.lease_epoch.to_le_bytes());
            out.extend_from_slice(&self.lease_ttl_ms.to_le_bytes());
            put(&mut out, lane);
            put(&mut out, worker);
            out
        }

        fn v2(&self, tag_byte: u8) -> Vec<u8> {
            [vec![0x02, 0x01, tag_byte], self.fields()].concat()
        }

        fn v1(&self) -> Vec<u8> {
            [vec![0x01], self.fields()].concat()
        }
    }

    /// Asserts `bytes` fails to decode with exactly `expected`.
    fn check_err(bytes: &[u8], expected: HandleDecodeError) {
        assert_eq!(decode(bytes), Err(expected), "input {bytes:02x?}");
    }

    /// Unpacks a `Validation` error into its kind and detail.
    fn validation(e: EngineError) -> (ValidationKind, String) {
        match e {
            EngineError::Validation { kind, detail } => (kind, detail),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn tag_wire_bytes_and_names() {
        for b in 0..=u8::MAX {
            if let Some(tag) = BackendTag::from_wire_byte(b) {
                assert_eq!(tag.wire_byte(), b);
            }
        }
        let bytes: Vec<u8> = ALL_TAGS.iter().map(|t| t.wire_byte()).collect();
        assert_eq!(bytes, [0x01, 0x02, 0x03, 0x04]);
        let names: Vec<&str> = ALL_TAGS.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, ["valkey", "postgres", "sqlite", "memory"]);
        assert_eq!(BackendTag::from_wire_byte(0x00), None);
        assert_eq!(BackendTag::from_wire_byte(0x05), None);
    }

    #[test]
    fn round_trip_every_tag_and_kind() {
        for tag in ALL_TAGS {
            let bytes = encode(tag, &payload());
            assert_eq!(bytes, Raw::of(&payload()).v2(tag.wire_byte()), "encoder disagrees with spec table");
            assert_eq!(decode(&bytes), Ok((tag, payload())));
            for kind in ALL_KINDS {
                let h = Handle::mint(tag, kind, &payload());
                assert_eq!((h.backend, h.kind), (tag, kind));
                assert_eq!(h.decode_for(tag).unwrap(), payload());
            }
        }
    }

    #[test]
    fn v2_sqlite_layout() {
        let p = payload();
        let bytes = encode(BackendTag::Sqlite, &p);
        let eid = p.execution_id.as_str().as_bytes();
        let eid_end = 7 + eid.len();
        assert_eq!(&bytes[..3], &[0x02, 0x01, 0x03]);
        assert_eq!(&bytes[3..7], &(eid.len() as u32).to_le_bytes());
        assert_eq!(&bytes[7..eid_end], eid);
        assert_eq!(&bytes[eid_end..eid_end + 4], &3u32.to_le_bytes());
    }

    #[test]
    fn v1_legacy_decodes_as_valkey() {
        let v1 = Raw::of(&payload()).v1();
        assert_eq!(v1[0], 0x01);
        assert_eq!(decode(&v1), Ok((BackendTag::Valkey, payload())));
        // A v1 opaque inside a Valkey handle is accepted like a v2 one.
        let h = Handle::from_parts(BackendTag::Valkey, HandleKind::Fresh, v1);
        assert_eq!(h.decode_for(BackendTag::Valkey).unwrap(), payload());
    }

    #[test]
    fn header_errors() {
        use HandleDecodeError::*;
        check_err(&[], Truncated { needed: 1, at: 0, have: 0 });
        check_err(&[0x02], Truncated { needed: 1, at: 1, have: 1 });
        check_err(&[0x02, 0x01], Truncated { needed: 1, at: 2, have: 2 });
        check_err(&[0x01], Truncated { needed: 4, at: 1, have: 1 });
        check_err(&[0x02, 0x00], BadWireVersion { got: 0x00 });
        check_err(&[0x02, 0x02, 0x03], BadWireVersion { got: 0x02 });
        check_err(&[0x00], BadV1Version { got: 0x00 });
        check_err(&[0x03, 0x01, 0x03], BadV1Version { got: 0x03 });
        check_err(&[0xff], BadV1Version { got: 0xff });
        check_err(&[0x02, 0x01, 0x00], BadBackendTag { got: 0x00 });
        // The tag is checked before any field is read.
        check_err(&Raw::of(&payload()).v2(0x05), BadBackendTag { got: 0x05 });
    }

    #[test]
    fn field_errors() {
        for (index, field) in STRING_FIELDS.into_iter().enumerate() {
            let bad = Raw::of(&payload()).with_string(index, &[0xff, 0xfe]);
            check_err(&bad.v2(0x04), HandleDecodeError::InvalidUtf8 { field });
            check_err(&bad.v1(), HandleDecodeError::InvalidUtf8 { field });
        }
        for (index, field) in STRING_FIELDS.into_iter().enumerate().take(3) {
            let bad = Raw::of(&payload()).with_string(index, b"nope");
            match decode(&bad.v2(0x04)) {
                Err(HandleDecodeError::ParseField { field: got, detail }) => {
                    assert_eq!(got, field);
                    assert!(!detail.is_empty());
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        // A bare UUID is not an execution id.
        let bare = Raw::of(&payload()).with_string(0, Uuid::nil().to_string().as_bytes());
        assert!(matches!(
            decode(&bare.v2(0x01)),
            Err(HandleDecodeError::ParseField { field: "execution_id", .. })
        ));
        // Lane and instance are free-form UTF-8.
        let empty = Raw::of(&payload()).with_string(3, b"").with_string(4, b"");
        assert!(decode(&empty.v2(0x01)).is_ok());
    }

    #[test]
    fn huge_length_is_truncation_not_allocation() {
        let bytes = [0x02, 0x01, 0x04, 0xff, 0xff, 0xff, 0xff, b'x'];
        check_err(&bytes, HandleDecodeError::Truncated { needed: u32::MAX as usize, at: 7, have: 8 });
    }

    #[test]
    fn every_prefix_is_truncated() {
        let mut encodings: Vec<Vec<u8>> = ALL_TAGS.iter().map(|t| encode(*t, &payload())).collect();
        encodings.push(Raw::of(&payload()).v1());
        for full in &encodings {
            for cut in 0..full.len() {
                match decode(&full[..cut]) {
                    Err(HandleDecodeError::Truncated { have, .. }) => assert_eq!(have, cut),
                    other => panic!("prefix {cut} of {}: {other:?}", full.len()),
                }
            }
        }
    }

    #[test]
    fn trailing_bytes_rejected() {
        for full in [encode(BackendTag::Memory, &payload()), Raw::of(&payload()).v1()] {
            let len = full.len();
            let mut long = full;
            long.push(0x00);
            check_err(&long, HandleDecodeError::TrailingBytes { pos: len, len: len + 1 });
        }
    }

    #[test]
    fn single_byte_corruption_never_panics() {
        let good = encode(BackendTag::Sqlite, &payload());
        for i in 0..good.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = decode(&bad);
            }
        }
    }

    #[test]
    fn display_reads_as_a_sentence() {
        assert_eq!(
            HandleDecodeError::BadBackendTag { got: 5 }.to_string(),
            "handle backend tag 0x05 is unknown"
        );
        assert_eq!(
            HandleDecodeError::InvalidUtf8 { field: "lane_id" }.to_string(),
            "handle field lane_id is not valid UTF-8"
        );
    }

    #[test]
    fn decode_for_foreign_outer_tag() {
        let h = Handle::mint(BackendTag::Sqlite, HandleKind::Fresh, &payload());
        let (kind, detail) = validation(h.decode_for(BackendTag::Memory).unwrap_err());
        assert_eq!(kind, ValidationKind::HandleFromOtherBackend);
        assert_eq!(detail, "expected=memory actual=sqlite");
    }

    #[test]
    fn decode_for_relabelled_handle() {
        let sqlite = Handle::mint(BackendTag::Sqlite, HandleKind::Fresh, &payload());
        let relabelled = Handle::from_parts(BackendTag::Memory, HandleKind::Fresh, sqlite.opaque);
        let (kind, detail) = validation(relabelled.decode_for(BackendTag::Memory).unwrap_err());
        assert_eq!(kind, ValidationKind::HandleFromOtherBackend);
        assert_eq!(detail, "expected=memory actual=sqlite (embedded tag)");
        // A v1 opaque is Valkey, so it is foreign inside a Memory handle.
        let v1 = Handle::from_parts(BackendTag::Memory, HandleKind::Fresh, Raw::of(&payload()).v1());
        let (kind, detail) = validation(v1.decode_for(BackendTag::Memory).unwrap_err());
        assert_eq!(kind, ValidationKind::HandleFromOtherBackend);
        assert_eq!(detail, "expected=memory actual=valkey (embedded tag)");
    }

    #[test]
    fn decode_for_corrupt_opaque() {
        // The stub handle: right tag, empty opaque.
        let stub = Handle::from_parts(BackendTag::Valkey, HandleKind::Fresh, Vec::new());
        let (kind, detail) = validation(stub.decode_for(BackendTag::Valkey).unwrap_err());
        assert_eq!(kind, ValidationKind::Corruption);
        assert!(detail.starts_with("handle_codec: handle is truncated"), "{detail}");
    }

    #[test]
    fn debug_hides_opaque_and_serde_round_trips() {
        let p = payload();
        let h = Handle::mint(BackendTag::Memory, HandleKind::Resumed, &p);
        let shown = format!("{h:?}");
        assert!(shown.contains("Memory") && shown.contains("Resumed"), "{shown}");
        assert!(shown.contains(&format!("opaque_len: {}", h.opaque.len())), "{shown}");
        assert!(!shown.contains(&p.lease_id.to_string()), "{shown}");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Handle>(&json).unwrap(), h);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn arbitrary_fields_after_v2_header_never_panic(
            tag in 0u8..=5,
            rest in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let bytes = [vec![0x02, 0x01, tag], rest].concat();
            let _ = decode(&bytes);
        }

        #[test]
        fn arbitrary_payload_round_trips(
            partition in any::<u16>(),
            ids in any::<[u8; 16]>(),
            attempt_index in any::<u32>(),
            lease_epoch in any::<u64>(),
            lease_ttl_ms in any::<u64>(),
            lane in "\\PC{0,24}",
            worker in "\\PC{0,24}",
            tag_index in 0usize..4,
        ) {
            let uuid = Uuid::from_bytes(ids);
            let p = HandlePayload {
                execution_id: ExecutionId::from_parts(partition, uuid),
                attempt_index,
                attempt_id: AttemptId::from_uuid(uuid),
                lease_id: LeaseId::from_uuid(uuid),
                lease_epoch,
                lease_ttl_ms,
                lane_id: LaneId::new(lane),
                worker_instance_id: WorkerInstanceId::new(worker),
            };
            let tag = ALL_TAGS[tag_index];
            prop_assert_eq!(decode(&encode(tag, &p)), Ok((tag, p)));
        }
    }
}
