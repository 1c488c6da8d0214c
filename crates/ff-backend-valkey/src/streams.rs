//! The streams family over `lua/streams.lua`: append, read, tail and the
//! durable summary (spec 02 §12).
//!
//! The summary merge (`ff_engine::streams::merge_summary_document`: RFC 7396,
//! the null sentinel, the depth cap) runs here, on the stored document read just before, and the
//! append function applies it only if the summary version is unchanged; a
//! concurrent summary append makes it answer `retry` and the client merges
//! again (at most `SUMMARY_MERGE_ATTEMPTS_MAX` times). Each append is still one
//! atomic FCALL; the merge keeps the reference's exact number and key text,
//! which Lua's cjson cannot (it rounds numbers to 14 digits).

use std::collections::BTreeMap;
use std::time::Duration;

use ff_core::contracts::{AppendFrameArgs, Validate};
use ff_core::stream::*;
use ff_core::{AttemptIndex, EngineError, ExecutionId};

use crate::wire::{self, num, protocol, slot};
use crate::{ValkeyBackend, arg, opt_arg};

/// How often a summary append re-merges after losing a race before giving up.
const SUMMARY_MERGE_ATTEMPTS_MAX: usize = 32;
/// How long a blocked tail sleeps between polls, in ms.
const TAIL_POLL_INTERVAL_MS: u64 = 20;

/// The merged summary to store, or the rejection the append raises after its holder checks.
enum Merged {
    Document { base_version: u64, document: String },
    Rejected { code: &'static str, detail: String },
}

/// Merges a patch onto the stored summary `(document, version)` with the engine's merge.
fn merged(payload: &[u8], stored: Option<(String, u64)>) -> Merged {
    let (text, base_version) = stored.unwrap_or_default();
    match ff_engine::streams::merge_summary_document(Some(&text), payload) {
        Ok(document) => Merged::Document { base_version, document },
        Err(e) => {
            let detail = match e.root() {
                EngineError::Validation { detail, .. } => detail.clone(),
                other => other.to_string(),
            };
            Merged::Rejected { code: e.code().unwrap_or("invalid_input"), detail }
        }
    }
}

/// The inclusive bound of a range as an XRANGE id.
fn xrange_id(id: EntryId) -> String {
    match id {
        EntryId::MIN => "-".to_owned(),
        EntryId::MAX => "+".to_owned(),
        other => other.to_string(),
    }
}

impl ValkeyBackend {
    /// The stored summary `(document, version)` of an attempt, if any.
    async fn stored_summary(
        &self,
        id: &ExecutionId,
        index: AttemptIndex,
    ) -> Result<Option<(String, u64)>, EngineError> {
        let r = wire::texts(self.exec_call("ff_read_summary", id, vec![arg(index)], true).await?)?;
        if r.is_empty() {
            return Ok(None);
        }
        Ok(Some((slot(&r, 0)?.to_owned(), num(&r, 1)?)))
    }

    /// `append_stream_frame` (spec 02 §12.2).
    pub(crate) async fn append_call(&self, a: AppendFrameArgs) -> Result<AppendFrameOutcome, EngineError> {
        a.validate()?;
        let f = &a.frame;
        let (ttl, floor, ceiling, alpha) = match &f.mode {
            StreamMode::BestEffortLive { config: c } => {
                (c.ttl_ms, c.maxlen_floor, c.maxlen_ceiling, c.ema_alpha)
            }
            _ => (0, 0, 0, 0.0),
        };
        let base = vec![
            arg(a.attempt_index),
            arg(a.lease_id),
            arg(a.lease_epoch),
            opt_arg(a.attempt_id),
            arg(a.retention_maxlen),
            arg(f.mode.wire_str()),
            arg(ttl),
            arg(floor),
            arg(ceiling),
            arg(alpha),
            arg(f.stored_type()),
            arg(String::from_utf8_lossy(&f.bytes)),
            arg(f.correlation_id.as_deref().unwrap_or_default()),
            arg(f.bytes.len()),
        ];
        for _ in 0..SUMMARY_MERGE_ATTEMPTS_MAX {
            let mut extra = base.clone();
            match &f.mode {
                StreamMode::DurableSummary { .. } => {
                    let stored = self.stored_summary(&a.execution_id, a.attempt_index).await?;
                    match merged(&f.bytes, stored) {
                        Merged::Document { base_version, document } => {
                            extra.extend([arg(base_version), arg(document), Vec::new(), Vec::new()])
                        }
                        Merged::Rejected { code, detail } => {
                            extra.extend([arg(0), Vec::new(), arg(code), arg(detail)])
                        }
                    }
                }
                _ => extra.extend([arg(0), Vec::new(), Vec::new(), Vec::new()]),
            }
            let v = self.exec_call("ff_append_frame", &a.execution_id, extra, false).await?;
            let r = wire::texts(v)?;
            match slot(&r, 0)? {
                "retry" => continue,
                "appended" => {
                    let version = slot(&r, 3)?;
                    return Ok(AppendFrameOutcome {
                        stream_id: slot(&r, 1)?.to_owned(),
                        frame_count: num(&r, 2)?,
                        summary_version: if version.is_empty() { None } else { Some(num(&r, 3)?) },
                    });
                }
                other => return Err(protocol(format!("append reply {other:?}"))),
            }
        }
        Err(EngineError::transport(
            wire::BACKEND,
            ff_core::error::BackendErrorKind::Other,
            "summary append lost every merge race".into(),
        ))
    }

    /// One read of the inclusive range `[lower, upper]` with the stream's close marker.
    async fn range(
        &self,
        id: &ExecutionId,
        index: AttemptIndex,
        lower: EntryId,
        upper: EntryId,
        count: u64,
    ) -> Result<StreamFrames, EngineError> {
        let extra = vec![arg(index), arg(xrange_id(lower)), arg(xrange_id(upper)), arg(count)];
        let mut items = wire::array(self.exec_call("ff_read_stream", id, extra, true).await?)?.into_iter();
        let (Some(closed_at), Some(reason)) = (items.next(), items.next()) else {
            return Err(protocol("read_stream reply has no marker"));
        };
        let (closed_at, reason) = (wire::text(closed_at)?, wire::text(reason)?);
        let mut frames = Vec::new();
        for entry in items {
            let mut parts = wire::array(entry)?.into_iter();
            let (Some(entry_id), Some(fields)) = (parts.next(), parts.next()) else {
                return Err(protocol("stream entry is not {id, fields}"));
            };
            let fields: BTreeMap<String, String> = wire::pairs(fields)?.into_iter().collect();
            frames.push(StreamFrame { id: wire::text(entry_id)?, fields });
        }
        Ok(StreamFrames {
            frames,
            closed_at: if closed_at.is_empty() {
                None
            } else {
                Some(closed_at.parse().map_err(|_| protocol(format!("closed_at {closed_at:?}")))?)
            },
            closed_reason: (!reason.is_empty()).then_some(reason),
        })
    }

    /// `read_stream` (spec 02 §12.7).
    pub(crate) async fn read_stream_call(
        &self,
        id: &ExecutionId,
        index: AttemptIndex,
        from: &StreamCursor,
        to: &StreamCursor,
        count: u64,
    ) -> Result<StreamFrames, EngineError> {
        check_count(count)?;
        self.range(id, index, from.lower(), to.upper(), count).await
    }

    /// One non-blocking tail step (spec 02 §12.8): entries strictly after `after`.
    async fn tail_once(
        &self,
        id: &ExecutionId,
        index: AttemptIndex,
        after: EntryId,
        count: u64,
        visibility: TailVisibility,
    ) -> Result<StreamFrames, EngineError> {
        if after == EntryId::MAX {
            // Nothing can follow: the marker alone (an empty range read).
            return self.range(id, index, EntryId::MAX, EntryId::MIN, 1).await;
        }
        let mut page = self.range(id, index, after.successor(), EntryId::MAX, count).await?;
        if visibility == TailVisibility::ExcludeBestEffort {
            page.frames.retain(|f| f.fields.get("mode").map(String::as_str) != Some("best_effort"));
        }
        Ok(page)
    }

    /// `tail_stream` (spec 02 §12.8): polls every `TAIL_POLL_INTERVAL_MS` until a frame,
    /// the close marker, or `block_ms` of wall time.
    pub(crate) async fn tail_call(
        &self,
        id: &ExecutionId,
        index: AttemptIndex,
        after: &StreamCursor,
        block_ms: u64,
        count: u64,
        visibility: TailVisibility,
    ) -> Result<StreamFrames, EngineError> {
        if block_ms > TAIL_BLOCK_MS_MAX {
            return Err(EngineError::invalid_input("block_ms over 30000"));
        }
        check_count(count)?;
        let after = match after {
            StreamCursor::At(s) => {
                EntryId::parse(s, 0).ok_or_else(|| EngineError::invalid_input("after: malformed cursor"))?
            }
            StreamCursor::Start | StreamCursor::End => {
                return Err(EngineError::invalid_input("after must be a concrete cursor"));
            }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(block_ms);
        loop {
            let page = self.tail_once(id, index, after, count, visibility).await?;
            let now = tokio::time::Instant::now();
            if !page.frames.is_empty() || page.is_closed() || now >= deadline {
                return Ok(page);
            }
            let wait = Duration::from_millis(TAIL_POLL_INTERVAL_MS).min(deadline - now);
            tokio::time::sleep(wait).await;
        }
    }

    /// `read_summary` (spec 02 §12.10).
    pub(crate) async fn read_summary_call(
        &self,
        id: &ExecutionId,
        index: AttemptIndex,
    ) -> Result<Option<SummaryDocument>, EngineError> {
        let r = wire::texts(self.exec_call("ff_read_summary", id, vec![arg(index)], true).await?)?;
        if r.is_empty() || num::<u64>(&r, 1)? == 0 {
            return Ok(None);
        }
        let document = match slot(&r, 0)? {
            "" => "{}".to_owned(),
            d => d.to_owned(),
        };
        Ok(Some(SummaryDocument {
            document_json: document.into_bytes(),
            version: num(&r, 1)?,
            patch_kind: PatchKind::JsonMergePatch,
            last_updated_ms: num(&r, 2)?,
            first_applied_ms: num(&r, 3)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn doc(payloads: &[Value]) -> String {
        let mut stored: Option<(String, u64)> = None;
        for p in payloads {
            let Merged::Document { base_version, document } =
                merged(p.to_string().as_bytes(), stored.clone())
            else {
                panic!("refused {p}");
            };
            stored = Some((document, base_version + 1));
        }
        stored.map(|(d, _)| d).unwrap_or_default()
    }

    #[test]
    fn merge_is_rfc_7396_with_the_sentinel() {
        let d = doc(&[
            json!({"a": {"b": 1, "c": 2}, "n": 12345678901234567_u64, "l": [1, {"x": null}]}),
            json!({"a": {"b": null}, "s": "__ff_null__", "l": []}),
        ]);
        let d: Value = serde_json::from_str(&d).unwrap_or_default();
        assert_eq!(d, json!({"a": {"c": 2}, "l": [], "n": 12345678901234567_u64, "s": null}));
    }

    #[test]
    fn refused_patches_name_the_reference_detail() {
        for (p, why) in
            [(&b"{x"[..], "patch payload is not valid JSON"), (b"[]", "patch must be a JSON object")]
        {
            match merged(p, None) {
                Merged::Rejected { code: "invalid_input", detail } => assert_eq!(detail, why),
                _ => panic!("accepted {p:?}"),
            }
        }
        let mut deep = json!({"leaf": 1});
        for _ in 0..17 {
            deep = json!({ "n": deep });
        }
        assert!(matches!(merged(deep.to_string().as_bytes(), None), Merged::Rejected { .. }));
    }
}
