//! Attempt streams: append, read and the durable summary (spec 02 §12).

use std::collections::BTreeMap;

use ff_core::contracts::{AppendFrameArgs, Validate};
use ff_core::error::{StateKind, ValidationKind};
use ff_core::state::{LifecyclePhase, OwnershipState};
use ff_core::stream::*;
use ff_core::{AttemptIndex, EngineError, ExecutionId, TimestampMs};
use serde_json::Value;

use crate::records::{StoredEntry, StreamMeta, SummaryRecord};
use crate::store::{Store, StoreResult};

fn stale() -> EngineError {
    EngineError::State(StateKind::StaleOwnerCannotAppend)
}

fn closed() -> EngineError {
    EngineError::State(StateKind::StreamClosed)
}

/// The holder check of append (spec 01 §6.11 last row): no expiry marking.
fn check_holder(store: &dyn Store, args: &AppendFrameArgs, now: TimestampMs) -> StoreResult<()> {
    let Some(core) = store.get_exec(&args.execution_id)? else { return Err(closed()) };
    if core.state.lifecycle_phase != LifecyclePhase::Active {
        return Err(closed());
    }
    if matches!(
        core.state.ownership_state,
        OwnershipState::LeaseExpiredReclaimable | OwnershipState::LeaseRevoked
    ) || core.lease_expires_at.unwrap_or(0) <= now
        || core.current_attempt_index != Some(args.attempt_index)
        || core.current_lease_id != Some(args.lease_id)
        || core.current_lease_epoch != args.lease_epoch
    {
        return Err(stale());
    }
    Ok(())
}

/// `ff_append_frame` (spec 02 §12.2).
pub fn append_frame(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &AppendFrameArgs,
) -> StoreResult<AppendFrameOutcome> {
    args.validate()?;
    check_holder(store, args, now)?;
    let (id, idx) = (&args.execution_id, args.attempt_index);
    let mut meta = match store.get_stream_meta(id, idx)? {
        Some(m) => m,
        None => StreamMeta {
            attempt_id: args.attempt_id.map(|a| a.to_string()),
            created_at: now,
            retention_maxlen: args.retention_maxlen,
            ..StreamMeta::default()
        },
    };
    if meta.closed_at.is_some() {
        return Err(closed());
    }
    let summary = match &args.frame.mode {
        StreamMode::DurableSummary { .. } => Some(next_summary(store, id, idx, &args.frame.bytes, now)?),
        _ => None,
    };
    // Best-effort data that outlived its TTL is gone before the new entry lands.
    if meta.data_expires_at.is_some_and(|t| now > t) {
        store.stream_trim(id, idx, 0)?;
        meta.data_expires_at = None;
    }
    let entry = entry_for(args, now, &meta, summary.as_ref().map(|s| s.version));
    let entry_id = entry.id;
    store.stream_append(id, idx, &entry)?;
    meta.frame_count += 1;
    meta.total_bytes += args.frame.bytes.len() as u64;
    meta.last_sequence = Some(entry_id);
    meta.last_frame_at = now;
    if !matches!(args.frame.mode, StreamMode::BestEffortLive { .. }) {
        meta.has_durable_frame = true;
        meta.data_expires_at = None;
    }
    trim(store, id, idx, &args.frame.mode, &mut meta, now)?;
    if let Some(s) = &summary {
        store.put_summary(id, idx, s)?;
    }
    store.put_stream_meta(id, idx, &meta)?;
    Ok(AppendFrameOutcome {
        stream_id: entry_id.to_string(),
        frame_count: meta.frame_count,
        summary_version: summary.map(|s| s.version),
    })
}

fn entry_for(
    args: &AppendFrameArgs,
    now: TimestampMs,
    meta: &StreamMeta,
    version: Option<u64>,
) -> StoredEntry {
    let f = &args.frame;
    let mut fields = BTreeMap::from([
        ("frame_type".to_owned(), f.stored_type().to_owned()),
        ("ts".to_owned(), now.to_string()),
        ("payload".to_owned(), String::from_utf8_lossy(&f.bytes).into_owned()),
        ("encoding".to_owned(), "utf8".to_owned()),
        ("source".to_owned(), "worker".to_owned()),
        ("mode".to_owned(), f.mode.wire_str().to_owned()),
    ]);
    if let Some(c) = f.correlation_id.as_ref().filter(|c| !c.is_empty()) {
        fields.insert("correlation_id".into(), c.clone());
    }
    if let Some(v) = version {
        fields.insert("summary_version".into(), v.to_string());
    }
    if let StreamMode::BestEffortLive { config } = &f.mode
        && config.ttl_ms > 0
    {
        fields.insert("ttl_ms".into(), config.ttl_ms.to_string());
    }
    StoredEntry { id: EntryId::next_after(meta.last_sequence, now), fields }
}

/// Trims after an append and sets the best-effort TTL (spec 02 §12.5).
fn trim(
    store: &mut dyn Store,
    id: &ExecutionId,
    idx: AttemptIndex,
    mode: &StreamMode,
    meta: &mut StreamMeta,
    now: TimestampMs,
) -> StoreResult<()> {
    let keep = match mode {
        StreamMode::Durable => {
            if meta.retention_maxlen == 0 {
                DURABLE_RETENTION_DEFAULT
            } else {
                meta.retention_maxlen
            }
        }
        StreamMode::DurableSummary { .. } => SUMMARY_STREAM_RETENTION,
        StreamMode::BestEffortLive { config } => {
            let k = best_effort_len(config, meta, now);
            if config.ttl_ms > 0 && !meta.has_durable_frame {
                meta.data_expires_at = Some(now.saturating_add(2 * i64::from(config.ttl_ms)));
            }
            k
        }
    };
    store.stream_trim(id, idx, keep)
}

/// The adaptive best-effort trim length K.
fn best_effort_len(c: &BestEffortLiveConfig, meta: &mut StreamMeta, now: TimestampMs) -> u64 {
    let floor = if c.maxlen_floor == 0 { 64 } else { c.maxlen_floor };
    let ceiling = if c.maxlen_ceiling == 0 { 16_384 } else { c.maxlen_ceiling }.max(floor);
    let alpha = if c.ema_alpha <= 0.0 || c.ema_alpha > 1.0 { 0.2 } else { c.ema_alpha };
    let ttl_s = f64::from(c.ttl_ms.max(1)) / 1000.0;
    let rate = match (meta.ema_rate_hz, meta.last_append_ts_ms) {
        (Some(prev), Some(last)) => {
            let dt = (now - last).max(1) as f64;
            alpha * (1000.0 / dt) + (1.0 - alpha) * prev
        }
        _ => f64::from(floor) / (2.0 * ttl_s),
    };
    let k = (rate * ttl_s * 2.0).ceil().clamp(f64::from(floor), f64::from(ceiling)) as u64;
    meta.ema_rate_hz = Some(rate);
    meta.last_append_ts_ms = Some(now);
    meta.maxlen_applied_last = Some(k);
    k
}

/// Validates a merge patch and folds it into the stored summary (spec 02 §12.4).
fn next_summary(
    store: &dyn Store,
    id: &ExecutionId,
    idx: AttemptIndex,
    payload: &[u8],
    now: TimestampMs,
) -> StoreResult<SummaryRecord> {
    let current = store.get_summary(id, idx)?;
    let document = merge_summary_document(current.as_ref().map(|c| c.document.as_str()), payload)?;
    let version = current.as_ref().map_or(0, |c| c.version) + 1;
    Ok(SummaryRecord {
        document,
        version,
        last_updated_ms: now,
        first_applied_ms: current.map_or(now, |c| if c.version == 0 { now } else { c.first_applied_ms }),
    })
}

/// The summary document after a merge patch (RFC 7396, the null sentinel, the depth cap)
/// over the stored one (`None` or empty: none yet).
///
/// Errors: `invalid_input` for a patch that is not JSON, not an object or too deep;
/// `corruption` for a stored document that does not decode.
pub fn merge_summary_document(stored: Option<&str>, payload: &[u8]) -> Result<String, EngineError> {
    let patch: Value = serde_json::from_slice(payload)
        .map_err(|_| EngineError::invalid_input("patch payload is not valid JSON"))?;
    if !patch.is_object() {
        return Err(EngineError::invalid_input("patch must be a JSON object"));
    }
    if object_depth(&patch) > MERGE_PATCH_DEPTH_MAX + 1 {
        return Err(EngineError::invalid_input("patch_depth_exceeded"));
    }
    let mut doc: Value = match stored {
        None | Some("") => Value::Object(Default::default()),
        Some(text) => serde_json::from_str(text).map_err(|_| {
            EngineError::validation(ValidationKind::Corruption, "stored summary document not decodeable")
        })?,
    };
    json_patch::merge(&mut doc, &patch);
    rewrite_sentinel(&mut doc, 0);
    Ok(doc.to_string())
}

/// Nesting of non-empty objects (the root counts as 1).
fn object_depth(v: &Value) -> usize {
    match v {
        Value::Object(m) if !m.is_empty() => 1 + m.values().map(object_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Replaces the null sentinel by JSON `null` down to the sentinel depth limit.
fn rewrite_sentinel(v: &mut Value, depth: usize) {
    if depth > NULL_SENTINEL_DEPTH_MAX {
        return;
    }
    match v {
        Value::String(s) if s == SUMMARY_NULL_SENTINEL => *v = Value::Null,
        Value::Object(m) => m.values_mut().for_each(|x| rewrite_sentinel(x, depth + 1)),
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_sentinel(x, depth + 1)),
        _ => {}
    }
}

fn frames_of(entries: Vec<StoredEntry>) -> Vec<StreamFrame> {
    entries.into_iter().map(|e| StreamFrame { id: e.id.to_string(), fields: e.fields }).collect()
}

/// The close marker of a stream and whether its data has lapsed.
fn marker(
    store: &dyn Store,
    id: &ExecutionId,
    idx: AttemptIndex,
    now: TimestampMs,
) -> StoreResult<(StreamFrames, bool)> {
    let meta = store.get_stream_meta(id, idx)?;
    let lapsed = meta.as_ref().and_then(|m| m.data_expires_at).is_some_and(|t| now > t);
    let page = StreamFrames {
        frames: Vec::new(),
        closed_at: meta.as_ref().and_then(|m| m.closed_at),
        closed_reason: meta.and_then(|m| m.closed_reason),
    };
    Ok((page, lapsed))
}

/// `ff_read_attempt_stream` (spec 02 §12.7): inclusive range, oldest first.
pub fn read_stream(
    store: &mut dyn Store,
    now: TimestampMs,
    id: &ExecutionId,
    idx: AttemptIndex,
    from: &StreamCursor,
    to: &StreamCursor,
    count: u64,
) -> StoreResult<StreamFrames> {
    check_count(count)?;
    let (mut page, lapsed) = marker(store, id, idx, now)?;
    if !lapsed {
        let entries = store.stream_range(id, idx, from.lower(), to.upper(), count as usize)?;
        page.frames = frames_of(entries);
    }
    Ok(page)
}

/// One non-blocking tail step (spec 02 §12.8): entries strictly after `after`.
pub fn tail_once(
    store: &mut dyn Store,
    now: TimestampMs,
    id: &ExecutionId,
    idx: AttemptIndex,
    after: &StreamCursor,
    count: u64,
    visibility: TailVisibility,
) -> StoreResult<StreamFrames> {
    check_count(count)?;
    let after = match after {
        StreamCursor::At(s) => {
            EntryId::parse(s, 0).ok_or_else(|| EngineError::invalid_input("after: malformed cursor"))?
        }
        StreamCursor::Start | StreamCursor::End => {
            return Err(EngineError::invalid_input("after must be a concrete cursor"));
        }
    };
    let (mut page, lapsed) = marker(store, id, idx, now)?;
    if lapsed || after == EntryId::MAX {
        return Ok(page);
    }
    let from = after.successor();
    let entries = store.stream_range(id, idx, from, EntryId::MAX, count as usize)?;
    page.frames = frames_of(entries);
    if visibility == TailVisibility::ExcludeBestEffort {
        page.frames.retain(|f| f.fields.get("mode").map(String::as_str) != Some("best_effort"));
    }
    Ok(page)
}

/// `read_summary` (spec 02 §12.10).
pub fn read_summary(
    store: &mut dyn Store,
    id: &ExecutionId,
    idx: AttemptIndex,
) -> StoreResult<Option<SummaryDocument>> {
    let Some(s) = store.get_summary(id, idx)? else { return Ok(None) };
    if s.version == 0 {
        return Ok(None);
    }
    let document = if s.document.is_empty() { "{}".to_owned() } else { s.document };
    Ok(Some(SummaryDocument {
        document_json: document.into_bytes(),
        version: s.version,
        patch_kind: PatchKind::JsonMergePatch,
        last_updated_ms: u64::try_from(s.last_updated_ms).unwrap_or(0),
        first_applied_ms: u64::try_from(s.first_applied_ms).unwrap_or(0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_non_empty_objects() {
        let mut v = serde_json::json!({"x": 1});
        for _ in 0..16 {
            v = serde_json::json!({ "a": v });
        }
        assert_eq!(object_depth(&v), 17);
        assert_eq!(object_depth(&serde_json::json!({"a": {}})), 1);
        assert_eq!(object_depth(&serde_json::json!({"a": [{"b": {"c": 1}}]})), 1);
    }

    #[test]
    fn sentinel_becomes_null_in_objects_and_arrays() {
        let mut v = serde_json::json!({"a": "__ff_null__", "b": ["__ff_null__", 1], "c": {"d": "x"}});
        rewrite_sentinel(&mut v, 0);
        assert_eq!(v, serde_json::json!({"a": null, "b": [null, 1], "c": {"d": "x"}}));
    }
}
