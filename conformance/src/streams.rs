//! Attempt streams (spec 02 §12): append rules and codes, reads and tails with
//! cursors, trimming, the terminal marker, and the durable summary as the fold
//! of its merge patches.

use ff_core::contracts::*;
use ff_core::stream::*;
use ff_core::{ContractFamily, EngineError};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Value, json};

use crate::cases::assert_invariants;
use crate::{Case, Ctx, Group, Harness, case, rejects, simulated_only, untimed};

fn harness(ctx: &Ctx) -> Harness {
    Harness::new(&ctx.fixture)
}

fn args(h: &Harness, name: &str, frame: Frame) -> AppendFrameArgs {
    let c = h.last_claim(name);
    AppendFrameArgs {
        execution_id: c.execution_id,
        attempt_index: c.attempt_index,
        lease_id: c.lease_id,
        lease_epoch: c.lease_epoch,
        attempt_id: Some(c.attempt_id),
        frame,
        retention_maxlen: 0,
        max_payload_bytes: FRAME_PAYLOAD_BYTES_DEFAULT,
    }
}

fn text(s: &str) -> Frame {
    Frame::new(s.as_bytes().to_vec(), FrameKind::Stdout)
}

fn patch(v: Value) -> Frame {
    Frame::new(v.to_string().into_bytes(), FrameKind::Event).with_mode(StreamMode::durable_summary())
}

fn payloads(f: &StreamFrames) -> Vec<String> {
    f.frames.iter().map(|x| x.fields.get("payload").cloned().unwrap_or_default()).collect()
}

async fn append_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.create("e1").await;
    h.grant_claim("e1", "w1").await;
    let b = h.b.clone();
    let mut big = args(&h, "e1", Frame::new(vec![b'x'; 65_537], FrameKind::Blob));
    rejects!(h, b.append_stream_frame(big.clone()), "retention_limit_exceeded");
    big.max_payload_bytes = 70_000;
    b.append_stream_frame(big).await.expect("a larger cap admits the frame");
    let mut stale = args(&h, "e1", text("x"));
    stale.lease_epoch += 1;
    rejects!(h, b.append_stream_frame(stale), "stale_owner_cannot_append");
    let mut wrong_attempt = args(&h, "e1", text("x"));
    wrong_attempt.attempt_index += 1;
    rejects!(h, b.append_stream_frame(wrong_attempt), "stale_owner_cannot_append");
    for (bad, why) in [
        (Frame::new(b"{nope".to_vec(), FrameKind::Event), "patch payload is not valid JSON"),
        (Frame::new(b"[]".to_vec(), FrameKind::Event), "patch must be a JSON object"),
        (Frame::new(b"7".to_vec(), FrameKind::Event), "patch must be a JSON object"),
    ] {
        let a = args(&h, "e1", bad.with_mode(StreamMode::durable_summary()));
        let before = h.dump().await;
        match b.append_stream_frame(a).await {
            Err(EngineError::Validation { detail, .. }) => assert_eq!(detail, why),
            other => panic!("expected invalid_input ({why}), got {other:?}"),
        }
        assert_eq!(before, h.dump().await, "a refused summary patch wrote");
    }
    let mut deep = json!({"leaf": 1});
    for _ in 0..16 {
        deep = json!({ "n": deep });
    }
    b.append_stream_frame(args(&h, "e1", patch(deep.clone()))).await.expect("17 nested objects are accepted");
    rejects!(h, b.append_stream_frame(args(&h, "e1", patch(json!({ "n": deep })))), "invalid_input");
    // An expired lease cannot append, and the append does not mark it.
    h.shorten_lease("e1", 10_000).await;
    h.advance(10_000).await;
    let a = args(&h, "e1", text("late"));
    rejects!(h, b.append_stream_frame(a), "stale_owner_cannot_append");
    // Not active (waiting, unknown) → stream_closed.
    h.create("e2").await;
    let mut waiting = args(&h, "e1", text("x"));
    waiting.execution_id = h.id("e2");
    rejects!(h, b.append_stream_frame(waiting), "stream_closed");
    assert_invariants(&h, &ctx).await;
}

async fn reads_tails_and_cursors(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.create("e1").await;
    h.grant_claim("e1", "w1").await;
    let b = h.b.clone();
    let id = h.id("e1");
    let mut ids = Vec::new();
    for i in 0..5 {
        if i == 3 {
            h.advance(1).await;
        }
        let out = b.append_stream_frame(args(&h, "e1", text(&format!("f{i}")))).await.expect("append");
        assert_eq!(out.frame_count, i + 1);
        ids.push(out.stream_id);
    }
    let t0 = (h.now().await - 1).to_string();
    assert_eq!(ids[0], format!("{t0}-0"));
    assert_eq!(ids[2], format!("{t0}-2"));
    assert_eq!(ids[3], format!("{}-0", h.now().await));
    for bad in [0, 10_001] {
        let r = b.read_stream(&id, 0, StreamCursor::Start, StreamCursor::End, bad).await;
        assert!(matches!(r, Err(EngineError::Validation { .. })), "count {bad}: {r:?}");
    }
    let all = b.read_stream(&id, 0, StreamCursor::Start, StreamCursor::End, 100).await.expect("read");
    assert_eq!(payloads(&all), ["f0", "f1", "f2", "f3", "f4"]);
    assert!(!all.is_closed());
    let first_ms =
        b.read_stream(&id, 0, StreamCursor::Start, StreamCursor::At(t0.clone()), 100).await.expect("read");
    assert_eq!(payloads(&first_ms), ["f0", "f1", "f2"], "an incomplete end means <ms>-max");
    let from_1 =
        b.read_stream(&id, 0, StreamCursor::At(ids[1].clone()), StreamCursor::End, 2).await.expect("read");
    assert_eq!(payloads(&from_1), ["f1", "f2"], "inclusive start, count limit");
    let tail = b
        .tail_stream(&id, 0, StreamCursor::At(ids[1].clone()), 0, 100, TailVisibility::All)
        .await
        .expect("tail");
    assert_eq!(payloads(&tail), ["f2", "f3", "f4"], "tail is strictly after");
    let r = b.tail_stream(&id, 0, StreamCursor::Start, 0, 10, TailVisibility::All).await;
    assert!(matches!(r, Err(EngineError::Validation { .. })), "tail needs a concrete cursor: {r:?}");
    // Best-effort frames are hidden by ExcludeBestEffort (after the count).
    let live = text("live").with_mode(StreamMode::best_effort_live(5_000));
    b.append_stream_frame(args(&h, "e1", live)).await.expect("best-effort append");
    let last = StreamCursor::At(ids[4].clone());
    let seen = b.tail_stream(&id, 0, last.clone(), 0, 10, TailVisibility::All).await.expect("tail");
    assert_eq!(payloads(&seen), ["live"]);
    let hidden = b.tail_stream(&id, 0, last, 0, 10, TailVisibility::ExcludeBestEffort).await.expect("tail");
    assert!(hidden.frames.is_empty());
    // A blocked tail wakes on the next append.
    let all = b.read_stream(&id, 0, StreamCursor::Start, StreamCursor::End, 100).await.expect("read");
    let after = StreamCursor::At(all.frames.last().map(|f| f.id.clone()).unwrap_or_default());
    let (b2, id2) = (b.clone(), id.clone());
    let waiter =
        tokio::spawn(async move { b2.tail_stream(&id2, 0, after, 30_000, 10, TailVisibility::All).await });
    b.append_stream_frame(args(&h, "e1", text("wake"))).await.expect("append");
    let woke = waiter.await.expect("tail task").expect("tail");
    assert_eq!(payloads(&woke), ["wake"]);
    // A missing stream reads as empty and open.
    let none = b.read_stream(&h.id("e1"), 7, StreamCursor::Start, StreamCursor::End, 10).await.expect("read");
    assert_eq!(none, StreamFrames::empty_open());
}

async fn trimming_and_terminal_marker(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.create("e1").await;
    h.grant_claim("e1", "w1").await;
    let b = h.b.clone();
    let id = h.id("e1");
    for i in 0..8 {
        let mut a = args(&h, "e1", text(&format!("d{i}")));
        a.retention_maxlen = 5;
        b.append_stream_frame(a).await.expect("append");
    }
    let kept = b.read_stream(&id, 0, StreamCursor::Start, StreamCursor::End, 100).await.expect("read");
    assert_eq!(payloads(&kept), ["d3", "d4", "d5", "d6", "d7"], "exact trim to retention_maxlen");
    for i in 0..70 {
        b.append_stream_frame(args(&h, "e1", patch(json!({ "n": i })))).await.expect("summary append");
    }
    let kept = b.read_stream(&id, 0, StreamCursor::Start, StreamCursor::End, 1000).await.expect("read");
    assert!(
        kept.frames.len() >= SUMMARY_STREAM_RETENTION as usize && kept.frames.len() <= 70,
        "{}",
        kept.frames.len()
    );
    let summary = b.read_summary(&id, 0).await.expect("summary").expect("present");
    assert_eq!(summary.version, 70);
    // Completing closes the stream: tails see the terminal marker, appends are refused.
    let last = StreamCursor::At(kept.frames.last().map(|f| f.id.clone()).unwrap_or_default());
    let a = args(&h, "e1", text("after"));
    h.complete("e1").await.expect("complete");
    let page = b.tail_stream(&id, 0, last, 30_000, 10, TailVisibility::All).await.expect("tail");
    assert!(page.is_closed(), "a terminal stream must not block its tail");
    assert_eq!(page.closed_reason.as_deref(), Some("attempt_success"));
    rejects!(h, b.append_stream_frame(a), "stream_closed");
    // Best-effort-only streams lapse after twice their TTL.
    h.create("e2").await;
    h.grant_claim("e2", "w1").await;
    let ttl = |ms: u64| u32::try_from(ms).unwrap_or(u32::MAX);
    let live = text("live").with_mode(StreamMode::best_effort_live(ttl(h.hold(1_000))));
    b.append_stream_frame(args(&h, "e2", live)).await.expect("append");
    let e2 = h.id("e2");
    let read = |b: std::sync::Arc<dyn ff_core::EngineBackend>, e: ff_core::ExecutionId| async move {
        b.read_stream(&e, 0, StreamCursor::Start, StreamCursor::End, 10).await.expect("read")
    };
    assert_eq!(payloads(&read(b.clone(), e2.clone()).await), ["live"]);
    // In real-TTL mode the frame meant to lapse is a second, short-lived one.
    let lapsing = if h.real_time() {
        h.create("e3").await;
        h.grant_claim("e3", "w1").await;
        let short = text("short").with_mode(StreamMode::best_effort_live(ttl(h.ms(1_000))));
        b.append_stream_frame(args(&h, "e3", short)).await.expect("append");
        h.id("e3")
    } else {
        e2
    };
    h.advance(2_001).await;
    assert!(read(b.clone(), lapsing).await.frames.is_empty(), "best-effort data outlived its TTL");
    assert_invariants(&h, &ctx).await;
}

/// The RFC 7396 fold a summary must equal, with the null sentinel applied.
fn fold(patches: &[Value]) -> Value {
    let mut doc = json!({});
    for p in patches {
        json_patch::merge(&mut doc, p);
        rewrite(&mut doc);
    }
    doc
}

fn rewrite(v: &mut Value) {
    match v {
        Value::String(s) if s == SUMMARY_NULL_SENTINEL => *v = Value::Null,
        Value::Object(m) => m.values_mut().for_each(rewrite),
        Value::Array(a) => a.iter_mut().for_each(rewrite),
        _ => {}
    }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(SUMMARY_NULL_SENTINEL)),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-c]{0,2}".prop_map(Value::String),
        Just(json!([])),
        Just(json!([1, "x", []])),
        Just(json!({})),
    ]
}

fn patch_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![Just("a"), Just("b"), Just("c")];
    let value = leaf().prop_recursive(3, 12, 3, move |inner| {
        proptest::collection::btree_map(prop_oneof![Just("a"), Just("b")], inner, 0..3)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    });
    proptest::collection::btree_map(key, value, 1..4)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

async fn summary_is_the_fold_of_its_patches(ctx: Ctx) {
    let seed = ctx.options.seed;
    let cases = (ctx.options.cases / 8).max(8);
    let factory = ctx.factory.clone();
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.wrapping_add(7).to_le_bytes());
        let config = Config { cases, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
        runner
            .run(&proptest::collection::vec(patch_value(), 1..12), |patches| {
                let f = factory.clone();
                handle
                    .block_on(async move {
                        let fixture = f.make().await;
                        let mut h = Harness::new(&fixture);
                        h.create("e").await;
                        h.grant_claim("e", "w").await;
                        for p in &patches {
                            h.b.append_stream_frame(args(&h, "e", patch(p.clone())))
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        let got = h.b.read_summary(&h.id("e"), 0).await.map_err(|e| e.to_string())?;
                        let got = got.ok_or("summary missing")?;
                        let doc: Value =
                            serde_json::from_slice(&got.document_json).map_err(|e| e.to_string())?;
                        let want = fold(&patches);
                        if doc != want || got.version != patches.len() as u64 {
                            return Err(format!(
                                "summary {doc} (v{}) != fold {want} (v{})",
                                got.version,
                                patches.len()
                            ));
                        }
                        Ok(())
                    })
                    .map_err(TestCaseError::fail)
            })
            .map_err(|e| format!("{e:?}"))
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("summary fold (seed {seed}): {e}"),
        Err(e) => panic!("summary runner crashed: {e}"),
    }
}

async fn stream_append_read_tail_summary(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.create("e1").await;
    h.grant_claim("e1", "w1").await;
    let b = h.b.clone();
    let id = h.id("e1");
    for i in 0..4 {
        let mut a = args(&h, "e1", text(&format!("line {i}")));
        a.retention_maxlen = 3;
        let out = b.append_stream_frame(a).await.expect("append");
        h.say(format!("append line {i} -> {} frames", out.frame_count));
        h.advance(10).await;
    }
    let page = b.read_stream(&id, 0, StreamCursor::Start, StreamCursor::End, 10).await.expect("read");
    h.say(format!("read start..end -> {:?}", payloads(&page)));
    for p in [
        json!({"status": "running", "steps": [], "meta": {"a": 1, "b": 2}}),
        json!({"meta": {"b": null, "c": [1, 2]}, "progress": 0.5}),
        json!({"status": "__ff_null__", "steps": ["x"]}),
    ] {
        let out = b.append_stream_frame(args(&h, "e1", patch(p.clone()))).await.expect("patch");
        h.say(format!("patch {p} -> version {:?}", out.summary_version));
    }
    let s = b.read_summary(&id, 0).await.expect("summary").expect("present");
    let doc: Value = serde_json::from_slice(&s.document_json).expect("summary json");
    h.say(format!("summary v{} {doc}", s.version));
    let tail_from = StreamCursor::At(page.frames.last().map(|f| f.id.clone()).unwrap_or_default());
    let tail = b.tail_stream(&id, 0, tail_from, 0, 10, TailVisibility::All).await.expect("tail");
    let modes: Vec<String> =
        tail.frames.iter().map(|f| f.fields.get("mode").cloned().unwrap_or_default()).collect();
    h.say(format!("tail after last line -> {} frames {modes:?}", tail.frames.len()));
    h.complete("e1").await.expect("complete");
    let closed = b.read_stream(&id, 0, StreamCursor::Start, StreamCursor::End, 10).await.expect("read");
    h.say(format!("after complete: closed={} reason={:?}", closed.is_closed(), closed.closed_reason));
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!("stream_append_read_tail_summary", h.transcript());
}

/// The stream cases.
pub fn cases() -> Vec<Case> {
    let g = Group::Family(ContractFamily::Streams);
    vec![
        case!(g, append_codes),
        simulated_only(
            case!(g, reads_tails_and_cursors),
            "stream ids pin frames to exact milliseconds (several frames in one, then the next)",
        ),
        case!(g, trimming_and_terminal_marker),
        untimed(case!(g, summary_is_the_fold_of_its_patches)),
        Case { requires: ContractFamily::Streams, ..case!(Group::Golden, stream_append_read_tail_summary) },
    ]
}
