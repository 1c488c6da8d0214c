//! Golden scenarios: step lists run through the harness, compared with a
//! backend-independent transcript (ids and times normalised) snapshotted with insta.

use ff_core::contracts::*;
use ff_core::state::BlockingReason;
use ff_core::{LaneId, Namespace};

use crate::cases::assert_invariants;
use crate::{Case, Ctx, Group, Harness, case};

fn harness(ctx: &Ctx) -> Harness {
    Harness::new(&ctx.fixture)
}

const RETRY_2: &str = r#"{"retry_policy":{"max_retries":2,"backoff":{"type":"exponential","initial_delay_ms":1000,"max_delay_ms":60000,"multiplier":2.0}}}"#;

async fn create_grant_claim_complete(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.create("e1").await;
    h.show("e1").await;
    h.grant("e1", "w1", &[]).await.unwrap();
    h.grant("e1", "w2", &[]).await.unwrap_err();
    h.claim("e1", "w2").await.unwrap_err();
    h.claim("e1", "w1").await.unwrap();
    h.show("e1").await;
    h.claim("e1", "w1").await.unwrap_err();
    h.advance(1000).await;
    h.renew_nth("e1", None).await.unwrap();
    h.complete("e1").await.unwrap();
    h.complete("e1").await.unwrap_err();
    h.show("e1").await;
    let result = h.b.get_execution_result(&h.id("e1")).await.unwrap();
    assert_eq!(result.as_deref(), Some(&b"done"[..]));
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!(stringify!(create_grant_claim_complete), h.transcript());
}

async fn fail_with_retry_until_terminal(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.create_with("e1", |a| a.policy_json = RETRY_2.into()).await;
    for round in 0..3 {
        h.grant_claim("e1", "w1").await;
        h.fail("e1").await.unwrap();
        h.show("e1").await;
        if round < 2 {
            h.claim("e1", "w1").await.unwrap_err();
            h.advance(if round == 0 { 1000 } else { 2000 }).await;
            h.scan(ScannerKind::DelayedPromoter).await;
            h.show("e1").await;
        }
    }
    // max_retries = 0 with a retryable category is terminal at once.
    h.create("e2").await;
    h.grant_claim("e2", "w1").await;
    h.fail_nth("e2", None, Some(r#"{"max_retries":0,"retryable_categories":["transient"]}"#)).await.unwrap();
    h.show("e2").await;
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!(stringify!(fail_with_retry_until_terminal), h.transcript());
}

async fn lease_expiry_then_reclaim_new_attempt(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.create("e1").await;
    h.grant_claim("e1", "w1").await;
    h.advance(10_000).await;
    // No scanner ran: the complete itself notices the expiry and marks it.
    h.complete("e1").await.unwrap_err();
    h.show("e1").await;
    h.renew_nth("e1", None).await.unwrap_err();
    h.reclaim("e1", "w2", None).await;
    h.show("e1").await;
    let claims = &h.claims["e1"];
    assert_eq!(claims[1].attempt_index, claims[0].attempt_index + 1);
    assert_eq!(claims[1].lease_epoch, claims[0].lease_epoch + 1);
    h.complete_nth("e1", Some(0)).await.unwrap_err();
    h.complete("e1").await.unwrap();
    h.show("e1").await;
    let history = h.b.read_lease_history(&h.id("e1")).await.unwrap();
    let events: Vec<&str> = history.iter().map(|e| e.event.as_str()).collect();
    h.say(format!("history: {events:?}"));
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!(stringify!(lease_expiry_then_reclaim_new_attempt), h.transcript());
}

async fn stale_epoch_can_never_complete_fail_or_renew(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.create("e1").await;
    h.grant_claim("e1", "w1").await;
    let revoke = RevokeLeaseArgs { execution_id: h.id("e1"), expected_lease_id: None, reason: String::new() };
    let r = h.b.revoke_lease(revoke).await.unwrap();
    h.say(format!("revoke e1 -> {r:?}"));
    h.renew_nth("e1", Some(0)).await.unwrap_err();
    h.reclaim("e1", "w2", None).await;
    // Every op with the first lease is refused; the state does not move.
    h.complete_nth("e1", Some(0)).await.unwrap_err();
    h.fail_nth("e1", Some(0), None).await.unwrap_err();
    h.renew_nth("e1", Some(0)).await.unwrap_err();
    h.show("e1").await;
    h.renew_nth("e1", Some(1)).await.unwrap();
    h.complete_nth("e1", Some(1)).await.unwrap();
    h.complete_nth("e1", Some(0)).await.unwrap_err();
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!(stringify!(stale_epoch_can_never_complete_fail_or_renew), h.transcript());
}

async fn capability_mismatch_blocks_route_until_capable_worker(ctx: Ctx) {
    let mut h = harness(&ctx);
    let policy = r#"{"routing_requirements":{"required_capabilities":["gpu","cuda"]}}"#;
    h.create_with("e1", |a| a.policy_json = policy.into()).await;
    h.grant("e1", "cpu-worker", &["x86"]).await.unwrap_err();
    let block = BlockExecutionArgs {
        execution_id: h.id("e1"),
        reason: BlockingReason::WaitingForCapableWorker,
        detail: "missing cuda,gpu".into(),
    };
    h.b.block_execution_for_admission(block).await.unwrap();
    h.show("e1").await;
    h.grant("e1", "cpu-worker", &["x86"]).await.unwrap_err();
    let reg = RegisterWorkerArgs {
        worker_id: ff_core::WorkerId::new("gpu-worker"),
        worker_instance_id: ff_core::WorkerInstanceId::new("gpu-worker-1"),
        namespace: Namespace::new("ns"),
        lanes: [LaneId::new("default")].into_iter().collect(),
        capabilities: CapabilitySet::new(["gpu", "cuda", "x86"]),
        liveness_ttl_ms: 30_000,
    };
    let r = h.b.register_worker(reg).await.unwrap();
    h.say(format!("register gpu-worker -> {r:?}"));
    let unblock = UnblockExecutionArgs {
        execution_id: h.id("e1"),
        expected_reason: Some(BlockingReason::WaitingForCapableWorker),
    };
    h.b.unblock_execution(unblock).await.unwrap();
    h.show("e1").await;
    h.grant("e1", "gpu-worker", &["gpu", "cuda", "x86"]).await.unwrap();
    h.claim("e1", "gpu-worker").await.unwrap();
    h.show("e1").await;
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!(
        stringify!(capability_mismatch_blocks_route_until_capable_worker),
        h.transcript()
    );
}

async fn priority_order_and_clamping(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.one_partition = true;
    h.create_with("low", |a| a.priority = -50).await;
    h.advance(1).await;
    h.create_with("mid", |a| a.priority = 10).await;
    h.advance(1).await;
    h.create_with("high", |a| a.priority = 99_999).await;
    h.advance(1).await;
    h.create_with("mid-later", |a| a.priority = 10).await;
    h.eligible().await;
    let snap = h.b.describe_execution(&h.id("high")).await.unwrap().unwrap();
    assert_eq!(snap.priority, 9000);
    let low = h.b.describe_execution(&h.id("low")).await.unwrap().unwrap();
    assert_eq!(low.priority, 0);
    let change = ChangePriorityArgs { execution_id: h.id("low"), new_priority: 9_500 };
    let r = h.b.change_priority(change).await.unwrap();
    h.say(format!("change_priority low -> {r:?}"));
    h.eligible().await;
    h.grant_claim("low", "w1").await;
    let change = ChangePriorityArgs { execution_id: h.id("low"), new_priority: 1 };
    let e = h.b.change_priority(change).await.unwrap_err();
    h.say(format!("change_priority low (active) -> {}", h.err(&e)));
    h.eligible().await;
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!(stringify!(priority_order_and_clamping), h.transcript());
}

async fn delay_then_promotion(ctx: Ctx) {
    let mut h = harness(&ctx);
    let until = h.now().await + 5_000;
    h.create_with("e1", |a| a.delay_until = Some(until)).await;
    h.show("e1").await;
    h.grant("e1", "w1", &[]).await.unwrap_err();
    h.advance(4_999).await;
    h.scan(ScannerKind::DelayedPromoter).await;
    h.show("e1").await;
    h.advance(1).await;
    h.scan(ScannerKind::DelayedPromoter).await;
    h.show("e1").await;
    h.grant_claim("e1", "w1").await;
    // The worker parks itself; only a resumed claim continues the same attempt.
    let until = h.now().await + 2_000;
    let handle = h.last_claim("e1").handle;
    h.b.delay(&handle, until).await.unwrap();
    h.show("e1").await;
    h.advance(2_000).await;
    h.scan(ScannerKind::DelayedPromoter).await;
    h.grant("e1", "w1", &[]).await.unwrap();
    h.claim("e1", "w1").await.unwrap_err();
    h.claim_resumed("e1", "w1").await.unwrap();
    h.show("e1").await;
    h.complete("e1").await.unwrap();
    // A past delay_until is eligible at once (never stranded in the delayed index).
    let past = h.now().await - 1;
    h.create_with("e2", |a| a.delay_until = Some(past)).await;
    h.eligible().await;
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!(stringify!(delay_then_promotion), h.transcript());
}

async fn cancel_from_waiting_and_from_active(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.create("waiting").await;
    h.cancel("waiting").await.unwrap();
    h.show("waiting").await;
    h.cancel("waiting").await.unwrap_err();
    h.create("active").await;
    h.grant_claim("active", "w1").await;
    // A holder-side cancel with a wrong lease is refused; the operator is not.
    let stale = CancelExecutionArgs {
        execution_id: h.id("active"),
        reason: "mine".into(),
        source: ff_core::CancelSource::LeaseHolder,
        lease_id: Some(ff_core::LeaseId::from_uuid(uuid::Uuid::nil())),
        lease_epoch: Some(1),
    };
    let e = h.b.cancel_execution(stale).await.unwrap_err();
    h.say(format!("cancel active (wrong lease) -> {}", h.err(&e)));
    h.cancel("active").await.unwrap();
    h.show("active").await;
    h.complete("active").await.unwrap_err();
    h.eligible().await;
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!(stringify!(cancel_from_waiting_and_from_active), h.transcript());
}

async fn replay_of_terminal_execution(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.create("e1").await;
    let e = h.b.replay_execution(&h.id("e1")).await.unwrap_err();
    h.say(format!("replay e1 (waiting) -> {}", h.err(&e)));
    h.grant_claim("e1", "w1").await;
    h.fail_nth("e1", None, Some("")).await.unwrap();
    h.show("e1").await;
    let r = h.b.replay_execution(&h.id("e1")).await.unwrap();
    h.say(format!("replay e1 -> {r:?}"));
    h.show("e1").await;
    h.grant_claim("e1", "w1").await;
    h.complete("e1").await.unwrap();
    h.show("e1").await;
    let history = h.b.read_lease_history(&h.id("e1")).await.unwrap();
    let events: Vec<&str> = history.iter().map(|e| e.event.as_str()).collect();
    h.say(format!("history: {events:?}"));
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!(stringify!(replay_of_terminal_execution), h.transcript());
}

async fn reclaim_at_the_cap_and_one_past_it(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.create_with("e1", |a| a.policy_json = r#"{"max_reclaim_count":2}"#.into()).await;
    h.grant_claim("e1", "w1").await;
    for (i, w) in ["w2", "w3"].iter().enumerate() {
        h.advance(10_000).await;
        h.scan(ScannerKind::LeaseExpiry).await;
        h.reclaim("e1", w, None).await;
        assert_eq!(h.claims["e1"].len(), i + 2);
    }
    h.show("e1").await;
    h.advance(10_000).await;
    h.scan(ScannerKind::LeaseExpiry).await;
    h.reclaim("e1", "w4", None).await;
    h.show("e1").await;
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!(stringify!(reclaim_at_the_cap_and_one_past_it), h.transcript());
}

async fn started_at_unchanged_across_retry_and_reclaim(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.create_with("e1", |a| a.policy_json = RETRY_2.into()).await;
    h.advance(100).await;
    h.grant_claim("e1", "w1").await;
    let started = h.b.describe_execution(&h.id("e1")).await.unwrap().unwrap().started_at;
    h.fail("e1").await.unwrap();
    h.advance(1_000).await;
    h.scan(ScannerKind::DelayedPromoter).await;
    h.grant_claim("e1", "w2").await;
    h.advance(10_000).await;
    h.scan(ScannerKind::LeaseExpiry).await;
    h.reclaim("e1", "w3", None).await;
    h.show("e1").await;
    let after = h.b.describe_execution(&h.id("e1")).await.unwrap().unwrap().started_at;
    assert_eq!(started, after);
    assert!(started.is_some());
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!(stringify!(started_at_unchanged_across_retry_and_reclaim), h.transcript());
}

async fn many_leases_expiring_in_one_millisecond_page_without_gaps(ctx: Ctx) {
    let mut h = harness(&ctx);
    let names: Vec<String> = (0..23).map(|i| format!("e{i:02}")).collect();
    for n in &names {
        h.create(n).await;
        h.grant_claim(n, "w1").await;
    }
    h.advance(10_000).await;
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let args = ListExpiredLeasesArgs {
            as_of: h.now().await,
            after: after.clone(),
            limit: 4,
            max_partitions_per_call: 8,
        };
        let page = h.b.list_expired_leases(args).await.unwrap();
        pages += 1;
        assert!(page.entries.len() <= 4);
        seen.extend(page.entries.iter().map(|e| e.execution_id.clone()));
        match page.cursor {
            Some(c) => after = Some(c),
            None => break,
        }
        assert!(pages < 50, "paging does not terminate");
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "duplicates");
    assert_eq!(seen.len(), names.len(), "gaps");
    h.say(format!("pages {pages}, entries {}", seen.len()));
    // The scanner in pages of 50 per partition marks each exactly once.
    h.scan(ScannerKind::LeaseExpiry).await;
    h.scan(ScannerKind::LeaseExpiry).await;
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!(
        stringify!(many_leases_expiring_in_one_millisecond_page_without_gaps),
        h.transcript()
    );
}

/// The golden scenarios.
pub fn cases() -> Vec<Case> {
    vec![
        case!(Group::Golden, create_grant_claim_complete),
        case!(Group::Golden, fail_with_retry_until_terminal),
        case!(Group::Golden, lease_expiry_then_reclaim_new_attempt),
        case!(Group::Golden, stale_epoch_can_never_complete_fail_or_renew),
        case!(Group::Golden, capability_mismatch_blocks_route_until_capable_worker),
        case!(Group::Golden, priority_order_and_clamping),
        case!(Group::Golden, delay_then_promotion),
        case!(Group::Golden, cancel_from_waiting_and_from_active),
        case!(Group::Golden, replay_of_terminal_execution),
        case!(Group::Golden, reclaim_at_the_cap_and_one_past_it),
        case!(Group::Golden, started_at_unchanged_across_retry_and_reclaim),
        case!(Group::Golden, many_leases_expiring_in_one_millisecond_page_without_gaps),
    ]
}
