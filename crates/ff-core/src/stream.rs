//! Attempt streams: frames, modes, cursors, reads and the durable summary (spec 02 §12).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::EngineError;
use crate::ids::TimestampMs;

/// Most entries one read or tail returns.
pub const STREAM_READ_COUNT_MAX: u64 = 10_000;
/// Longest a tail may block, in ms.
pub const TAIL_BLOCK_MS_MAX: u64 = 30_000;
/// String value rewritten to JSON `null` in summaries.
pub const SUMMARY_NULL_SENTINEL: &str = "__ff_null__";
/// Default largest frame payload, in bytes.
pub const FRAME_PAYLOAD_BYTES_DEFAULT: u32 = 65_536;
/// Durable trim length when `retention_maxlen` is 0.
pub const DURABLE_RETENTION_DEFAULT: u64 = 10_000;
/// Retention the backends send for durable frames.
pub const DURABLE_RETENTION_SENT: u64 = 10_000;
/// Trim length after a summary append.
pub const SUMMARY_STREAM_RETENTION: u64 = 64;
/// Deepest merge-patch object nesting below the root.
pub const MERGE_PATCH_DEPTH_MAX: usize = 16;
/// Deepest level the null sentinel is rewritten at.
pub const NULL_SENTINEL_DEPTH_MAX: usize = 32;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A structured event.
    Event,
    /// Opaque bytes.
    Blob,
}

impl FrameKind {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Event => "event",
            Self::Blob => "blob",
        }
    }
}

/// The only summary patch format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum PatchKind {
    /// RFC 7396 JSON Merge Patch.
    #[default]
    #[serde(rename = "json-merge-patch")]
    JsonMergePatch,
}

impl PatchKind {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        "json-merge-patch"
    }
}

/// Best-effort live frames: trimmed by an adaptive length and expiring.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BestEffortLiveConfig {
    /// Time to live of the stream data while it holds only best-effort frames.
    pub ttl_ms: u32,
    /// Smallest trim length.
    pub maxlen_floor: u32,
    /// Largest trim length.
    pub maxlen_ceiling: u32,
    /// Smoothing factor of the append-rate estimate.
    pub ema_alpha: f64,
}

impl BestEffortLiveConfig {
    /// Defaults with a TTL.
    pub fn new(ttl_ms: u32) -> Self {
        Self { ttl_ms, maxlen_floor: 64, maxlen_ceiling: 16_384, ema_alpha: 0.2 }
    }
}

/// How a frame is kept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum StreamMode {
    /// Kept up to the retention length.
    #[default]
    Durable,
    /// A merge patch folded into the attempt's summary.
    DurableSummary {
        /// Patch format.
        patch_kind: PatchKind,
    },
    /// Live-only, adaptively trimmed and expiring.
    BestEffortLive {
        /// Trim and TTL settings.
        config: BestEffortLiveConfig,
    },
}

impl StreamMode {
    /// The wire string.
    pub fn wire_str(&self) -> &'static str {
        match self {
            Self::Durable => "durable",
            Self::DurableSummary { .. } => "summary",
            Self::BestEffortLive { .. } => "best_effort",
        }
    }

    /// A durable-summary mode.
    pub fn durable_summary() -> Self {
        Self::DurableSummary { patch_kind: PatchKind::JsonMergePatch }
    }

    /// A best-effort mode with default trims.
    pub fn best_effort_live(ttl_ms: u32) -> Self {
        Self::BestEffortLive { config: BestEffortLiveConfig::new(ttl_ms) }
    }
}

/// One frame to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Payload bytes (stored as text, lossily).
    pub bytes: Vec<u8>,
    /// Kind (the stored `frame_type` when `frame_type` is empty).
    pub kind: FrameKind,
    /// Accepted and ignored: ids are assigned by the store.
    #[serde(default)]
    pub seq: Option<u64>,
    /// Free-form type (`delta`, `log`, …).
    #[serde(default)]
    pub frame_type: String,
    /// Stored when present.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// How the frame is kept.
    #[serde(default)]
    pub mode: StreamMode,
}

impl Frame {
    /// A durable frame.
    pub fn new(bytes: impl Into<Vec<u8>>, kind: FrameKind) -> Self {
        Self {
            bytes: bytes.into(),
            kind,
            seq: None,
            frame_type: String::new(),
            correlation_id: None,
            mode: StreamMode::Durable,
        }
    }

    /// With a mode.
    pub fn with_mode(mut self, mode: StreamMode) -> Self {
        self.mode = mode;
        self
    }

    /// With a frame type.
    pub fn with_frame_type(mut self, t: impl Into<String>) -> Self {
        self.frame_type = t.into();
        self
    }

    /// With a correlation id.
    pub fn with_correlation_id(mut self, c: impl Into<String>) -> Self {
        self.correlation_id = Some(c.into());
        self
    }

    /// The stored frame type.
    pub fn stored_type(&self) -> &str {
        if self.frame_type.is_empty() { self.kind.as_str() } else { &self.frame_type }
    }
}

/// Result of an append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendFrameOutcome {
    /// The entry id `<ms>-<seq>`.
    pub stream_id: String,
    /// Lifetime appends of the stream.
    pub frame_count: u64,
    /// The summary version after a summary append.
    pub summary_version: Option<u64>,
}

/// Which entries a tail shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TailVisibility {
    /// Everything.
    #[default]
    All,
    /// Drops best-effort entries (after the count limit).
    ExcludeBestEffort,
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFrame {
    /// Entry id `<ms>-<seq>`.
    pub id: String,
    /// Fields in a stable order.
    pub fields: BTreeMap<String, String>,
}

/// A page of entries with the stream's close marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StreamFrames {
    /// Entries, oldest first.
    pub frames: Vec<StreamFrame>,
    /// When the stream was closed.
    pub closed_at: Option<TimestampMs>,
    /// Why.
    pub closed_reason: Option<String>,
}

impl StreamFrames {
    /// An empty, open page.
    pub fn empty_open() -> Self {
        Self::default()
    }

    /// Whether the stream is closed (consumers stop polling).
    pub fn is_closed(&self) -> bool {
        self.closed_at.is_some()
    }
}

/// The rolling summary of an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryDocument {
    /// The JSON document.
    pub document_json: Vec<u8>,
    /// Applied patches.
    pub version: u64,
    /// Patch format.
    pub patch_kind: PatchKind,
    /// Last patch time.
    pub last_updated_ms: u64,
    /// First patch time.
    pub first_applied_ms: u64,
}

/// A stream entry id: `(ms, seq)`, strictly increasing per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct EntryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// The smallest id.
    pub const MIN: EntryId = EntryId { ms: 0, seq: 0 };
    /// The largest id.
    pub const MAX: EntryId = EntryId { ms: u64::MAX, seq: u64::MAX };

    /// The next id after `last` at time `now` (spec 02 §12.6).
    pub fn next_after(last: Option<EntryId>, now: TimestampMs) -> EntryId {
        let now = u64::try_from(now).unwrap_or(0);
        match last {
            None => EntryId { ms: now, seq: 0 },
            Some(l) if now > l.ms => EntryId { ms: now, seq: 0 },
            Some(l) => EntryId { ms: l.ms, seq: l.seq.saturating_add(1) },
        }
    }

    /// The smallest id strictly greater than this one.
    pub fn successor(self) -> EntryId {
        match self.seq.checked_add(1) {
            Some(seq) => EntryId { ms: self.ms, seq },
            None => EntryId { ms: self.ms.saturating_add(1), seq: 0 },
        }
    }

    /// Parses `<ms>` (with `seq_default`) or `<ms>-<seq>`.
    pub fn parse(s: &str, seq_default: u64) -> Option<EntryId> {
        let (ms, seq) = match s.split_once('-') {
            Some((m, q)) => (m, Some(q)),
            None => (s, None),
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || seq.is_some_and(|q| !digits(q)) {
            return None;
        }
        let ms = ms.parse().ok()?;
        let seq = match seq {
            Some(q) => q.parse().ok()?,
            None => seq_default,
        };
        Some(EntryId { ms, seq })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Why a stream cursor failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamCursorError {
    /// Empty input.
    #[error("stream cursor is empty")]
    Empty,
    /// A bare `-` or `+`.
    #[error("bare '-' / '+' are not cursors; use start / end")]
    BareMarkerRejected,
    /// Anything else.
    #[error("malformed stream cursor")]
    Malformed,
}

/// A read/tail cursor: `start`, `end`, or a concrete `<ms>[-<seq>]` (spec 02 §12.9).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamCursor {
    /// Before the first entry.
    Start,
    /// After the last entry.
    End,
    /// A concrete id.
    At(String),
}

impl StreamCursor {
    /// `At("0-0")`: the concrete beginning (valid for tails).
    pub fn from_beginning() -> Self {
        Self::At("0-0".into())
    }

    /// Whether the cursor is a concrete id.
    pub fn is_concrete(&self) -> bool {
        matches!(self, Self::At(_))
    }

    /// The inclusive lower bound of a read.
    pub fn lower(&self) -> EntryId {
        match self {
            Self::Start => EntryId::MIN,
            Self::End => EntryId::MAX,
            Self::At(s) => EntryId::parse(s, 0).unwrap_or(EntryId::MAX),
        }
    }

    /// The inclusive upper bound of a read.
    pub fn upper(&self) -> EntryId {
        match self {
            Self::Start => EntryId::MIN,
            Self::End => EntryId::MAX,
            Self::At(s) => EntryId::parse(s, u64::MAX).unwrap_or(EntryId::MIN),
        }
    }
}

impl FromStr for StreamCursor {
    type Err = StreamCursorError;
    fn from_str(s: &str) -> Result<Self, StreamCursorError> {
        match s {
            "" => Err(StreamCursorError::Empty),
            "-" | "+" => Err(StreamCursorError::BareMarkerRejected),
            "start" => Ok(Self::Start),
            "end" => Ok(Self::End),
            other if EntryId::parse(other, 0).is_some() => Ok(Self::At(other.to_owned())),
            _ => Err(StreamCursorError::Malformed),
        }
    }
}

impl fmt::Display for StreamCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start => f.write_str("start"),
            Self::End => f.write_str("end"),
            Self::At(s) => f.write_str(s),
        }
    }
}

impl Serialize for StreamCursor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for StreamCursor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a read/tail count.
pub fn check_count(count: u64) -> Result<(), EngineError> {
    if count < 1 {
        return Err(EngineError::invalid_input("count_limit must be >= 1"));
    }
    if count > STREAM_READ_COUNT_MAX {
        return Err(EngineError::invalid_input("count_limit_exceeds_hard_cap"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_grammar() {
        assert_eq!("".parse::<StreamCursor>(), Err(StreamCursorError::Empty));
        assert_eq!("-".parse::<StreamCursor>(), Err(StreamCursorError::BareMarkerRejected));
        assert_eq!("+".parse::<StreamCursor>(), Err(StreamCursorError::BareMarkerRejected));
        assert_eq!("start".parse::<StreamCursor>(), Ok(StreamCursor::Start));
        assert_eq!("end".parse::<StreamCursor>(), Ok(StreamCursor::End));
        assert_eq!("12".parse::<StreamCursor>(), Ok(StreamCursor::At("12".into())));
        assert_eq!("12-3".parse::<StreamCursor>(), Ok(StreamCursor::At("12-3".into())));
        for bad in ["12-", "-3", "a-1", "1-2-3", "é", "99999999999999999999999"] {
            assert_eq!(bad.parse::<StreamCursor>(), Err(StreamCursorError::Malformed), "{bad}");
        }
        assert_eq!(StreamCursor::At("5".into()).lower(), EntryId { ms: 5, seq: 0 });
        assert_eq!(StreamCursor::At("5".into()).upper(), EntryId { ms: 5, seq: u64::MAX });
        assert_eq!(StreamCursor::from_beginning().to_string(), "0-0");
    }

    #[test]
    fn entry_ids_strictly_increase() {
        let a = EntryId::next_after(None, 100);
        let b = EntryId::next_after(Some(a), 100);
        let c = EntryId::next_after(Some(b), 90);
        let d = EntryId::next_after(Some(c), 101);
        assert_eq!(
            (a.to_string(), b.to_string(), c.to_string(), d.to_string()),
            ("100-0".into(), "100-1".into(), "100-2".into(), "101-0".into())
        );
    }

    #[test]
    fn counts() {
        assert!(check_count(0).is_err());
        assert!(check_count(1).is_ok());
        assert!(check_count(10_000).is_ok());
        assert!(check_count(10_001).is_err());
    }
}
