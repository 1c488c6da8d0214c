//! Every error code spec 01 lists for each contract, reached through the
//! trait; failed calls leave the store unchanged unless the spec lists the
//! write (§5.6).

use ff_core::contracts::*;
use ff_core::state::BlockingReason;
use ff_core::{
    AttemptId, CancelSource, ContractFamily, LaneId, LeaseFence, LeaseId, Namespace, WorkerId,
    WorkerInstanceId,
};
use uuid::Uuid;

use crate::{Case, Ctx, Group, Harness, case, rejects, rejects_with_write, untimed};

/// A harness over the case's fixture (cases that need it are clock-gated).
fn harness(ctx: &Ctx) -> Harness {
    Harness::new(&ctx.fixture)
}

/// Asserts the generic and (when offered) the backend's own invariants.
pub async fn assert_invariants(h: &Harness, ctx: &Ctx) {
    let ids: Vec<ff_core::ExecutionId> = h.ids.values().cloned().collect();
    let mut v = crate::snapshot::check_invariants(h.b.as_ref(), &ids).await;
    if let Some(deep) = &ctx.fixture.deep_check {
        v.extend(deep());
    }
    assert!(v.is_empty(), "invariants violated: {v:?}");
}

pub fn missing() -> ff_core::ExecutionId {
    ff_core::ExecutionId::from_parts(1, Uuid::from_u64_pair(0xdead, 1))
}

fn wrong_fence() -> Option<LeaseFence> {
    Some(LeaseFence {
        lease_id: LeaseId::from_uuid(Uuid::nil()),
        lease_epoch: 1,
        attempt_id: AttemptId::from_uuid(Uuid::nil()),
    })
}

fn complete_args(
    h: &Harness,
    name: &str,
    fence: Option<LeaseFence>,
    source: CancelSource,
) -> CompleteExecutionArgs {
    CompleteExecutionArgs { execution_id: h.id(name), fence, result_payload: None, source }
}

/// An execution named `name` leased by `w1`.
async fn leased(h: &mut Harness, name: &str) {
    h.create(name).await;
    h.grant_claim(name, "w1").await;
}

async fn create_execution_codes(ctx: Ctx) {
    let h = harness(&ctx);
    let make = |policy: &str| {
        let mut a = CreateExecutionArgs::new(missing(), "ns", LaneId::new("default"), "k");
        a.policy_json = policy.to_owned();
        a
    };
    rejects!(h, h.b.create_execution(make("{not json")), "invalid_policy_json");
    rejects!(h, h.b.create_execution(make(r#"{"routing_requirements":null}"#)), "invalid_policy_json");
    for (req, _) in [
        (r#"{"routing_requirements":{"required_capabilities":"gpu"}}"#, "required:not_array"),
        (r#"{"routing_requirements":{"required_capabilities":[1]}}"#, "required:non_string_token"),
        (r#"{"routing_requirements":{"required_capabilities":[""]}}"#, "required:empty_token"),
        (r#"{"routing_requirements":{"required_capabilities":["a,b"]}}"#, "required:comma_in_token"),
        (r#"{"routing_requirements":{"required_capabilities":["a b"]}}"#, "required:control_or_whitespace"),
    ] {
        rejects!(h, h.b.create_execution(make(req)), "invalid_capabilities");
    }
    let many: Vec<String> = (0..257).map(|i| format!("\"t{i}\"")).collect();
    let too_many = format!(r#"{{"routing_requirements":{{"required_capabilities":[{}]}}}}"#, many.join(","));
    rejects!(h, h.b.create_execution(make(&too_many)), "invalid_capabilities");
    let mut bad_lane = make("");
    bad_lane.lane_id = LaneId::new("");
    rejects!(h, h.b.create_execution(bad_lane), "invalid_input");
    let mut big = make("");
    big.input_payload = vec![0; PAYLOAD_BYTES_MAX + 1];
    rejects!(h, h.b.create_execution(big), "payload_too_large");
    let mut bad_time = make("");
    bad_time.delay_until = Some(-1);
    rejects!(h, h.b.create_execution(bad_time), "invalid_input");
    // Duplicates by id and by idempotency key write nothing.
    let mut a = make("");
    a.idempotency_key = Some("k1".into());
    assert!(matches!(h.b.create_execution(a.clone()).await.unwrap(), CreateExecutionOutcome::Created { .. }));
    let before = h.dump().await;
    assert!(matches!(
        h.b.create_execution(a.clone()).await.unwrap(),
        CreateExecutionOutcome::Duplicate { .. }
    ));
    a.execution_id = ff_core::ExecutionId::from_parts(2, Uuid::from_u64_pair(3, 3));
    match h.b.create_execution(a).await.unwrap() {
        CreateExecutionOutcome::Duplicate { execution_id } => assert_eq!(execution_id, missing()),
        other => panic!("{other:?}"),
    }
    assert_eq!(before, h.dump().await);
}

async fn claim_execution_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let args = |h: &Harness, name: Option<&str>, w: &str| ClaimExecutionArgs {
        execution_id: name.map(|n| h.id(n)).unwrap_or_else(missing),
        worker_id: WorkerId::new(w),
        worker_instance_id: WorkerInstanceId::new(format!("{w}-1")),
        lane_id: LaneId::new("default"),
        lease_id: LeaseId::from_uuid(Uuid::from_u64_pair(5, 5)),
        lease_ttl_ms: 1000,
        attempt_id: AttemptId::from_uuid(Uuid::from_u64_pair(6, 6)),
        attempt_policy_json: String::new(),
        attempt_timeout_ms: None,
        execution_deadline_at: None,
    };
    rejects!(h, h.b.claim_execution(args(&h, None, "w1")), "execution_not_found");
    h.create("e1").await;
    let mut zero = args(&h, Some("e1"), "w1");
    zero.lease_ttl_ms = 0;
    rejects!(h, h.b.claim_execution(zero), "invalid_input");
    let mut bad_policy = args(&h, Some("e1"), "w1");
    bad_policy.attempt_policy_json = "[1]".into();
    rejects!(h, h.b.claim_execution(bad_policy), "invalid_input");
    rejects!(h, h.b.claim_execution(args(&h, Some("e1"), "w1")), "invalid_claim_grant");
    // A grant meant to expire; the wrong worker is refused either way.
    h.grant_ttl_ms = h.ms(5_000);
    h.grant("e1", "w1", &[]).await.unwrap();
    h.grant_ttl_ms = h.hold(5_000);
    rejects!(h, h.b.claim_execution(args(&h, Some("e1"), "w2")), "invalid_claim_grant");
    h.advance(5_001).await;
    rejects!(h, h.b.claim_execution(args(&h, Some("e1"), "w1")), "invalid_claim_grant");
    h.grant_claim("e1", "w1").await;
    rejects!(h, h.b.claim_execution(args(&h, Some("e1"), "w1")), "execution_not_leaseable");
    // e1's delay is meant to pass; e2's must not before it is refused.
    let until = h.now().await + h.ms_i(1_000);
    let delayed = h.now().await + h.hold_i(1_000);
    h.create_with("e2", |a| a.delay_until = Some(delayed)).await;
    rejects!(h, h.b.claim_execution(args(&h, Some("e2"), "w1")), "execution_not_leaseable");
    // A self-paused execution needs the resumed path; the grant survives.
    let handle = h.last_claim("e1").handle;
    h.b.delay(&handle, until).await.unwrap();
    h.advance(1_000).await;
    h.scan(ScannerKind::DelayedPromoter).await;
    h.grant("e1", "w1", &[]).await.unwrap();
    rejects!(h, h.b.claim_execution(args(&h, Some("e1"), "w1")), "use_claim_resumed_execution");
    h.claim_resumed("e1", "w1").await.unwrap();
    assert_invariants(&h, &ctx).await;
}

async fn terminal_style_ops_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let none = |_h: &Harness, id| CompleteExecutionArgs {
        execution_id: id,
        fence: None,
        result_payload: None,
        source: CancelSource::LeaseHolder,
    };
    rejects!(h, h.b.complete_execution(none(&h, missing())), "execution_not_found");
    leased(&mut h, "e1").await;
    rejects!(h, h.b.complete_execution(none(&h, h.id("e1"))), "fence_required");
    rejects!(
        h,
        h.b.complete_execution(complete_args(&h, "e1", wrong_fence(), CancelSource::LeaseHolder)),
        "stale_lease"
    );
    let f = |h: &Harness, fence| FailExecutionArgs {
        execution_id: h.id("e1"),
        fence,
        failure_reason: "x".into(),
        failure_category: String::new(),
        retry_policy_json: None,
        source: CancelSource::LeaseHolder,
    };
    rejects!(h, h.b.fail_execution(f(&h, None)), "fence_required");
    rejects!(h, h.b.fail_execution(f(&h, wrong_fence())), "stale_lease");
    let d = |h: &Harness, fence, until| DelayExecutionArgs {
        execution_id: h.id("e1"),
        fence,
        delay_until: until,
        source: CancelSource::LeaseHolder,
    };
    rejects!(h, h.b.delay_execution(d(&h, None, 0)), "fence_required");
    rejects!(h, h.b.delay_execution(d(&h, Some(h.fence("e1", None)), -5)), "invalid_input");
    let w = |h: &Harness, fence| MoveToWaitingChildrenArgs {
        execution_id: h.id("e1"),
        fence,
        source: CancelSource::LeaseHolder,
    };
    rejects!(h, h.b.move_to_waiting_children(w(&h, wrong_fence())), "stale_lease");
    // Revoked lease.
    let revoke = RevokeLeaseArgs { execution_id: h.id("e1"), expected_lease_id: None, reason: "ops".into() };
    h.b.revoke_lease(revoke).await.unwrap();
    let fence = Some(h.fence("e1", None));
    rejects!(
        h,
        h.b.complete_execution(complete_args(&h, "e1", fence.clone(), CancelSource::LeaseHolder)),
        "lease_revoked"
    );
    rejects!(
        h,
        h.b.complete_execution(complete_args(&h, "e1", None, CancelSource::OperatorOverride)),
        "lease_revoked"
    );
    rejects!(h, h.b.fail_execution(f(&h, fence.clone())), "lease_revoked");
    rejects!(h, h.b.move_to_waiting_children(w(&h, fence.clone())), "lease_revoked");
    // Expired lease: marked, then lease_expired (an intentional write).
    leased(&mut h, "e2").await;
    h.shorten_lease("e2", 10_000).await;
    h.advance(10_000).await;
    let fence2 = Some(h.fence("e2", None));
    let args = CompleteExecutionArgs {
        execution_id: h.id("e2"),
        fence: fence2.clone(),
        result_payload: None,
        source: CancelSource::LeaseHolder,
    };
    rejects_with_write!(h, h.b.complete_execution(args.clone()), "lease_expired");
    rejects!(h, h.b.complete_execution(args), "lease_expired");
    // Terminal: execution_not_active with the reconciliation slots.
    leased(&mut h, "e3").await;
    h.complete("e3").await.unwrap();
    let fence3 = Some(h.fence("e3", None));
    let args = CompleteExecutionArgs {
        execution_id: h.id("e3"),
        fence: fence3,
        result_payload: None,
        source: CancelSource::LeaseHolder,
    };
    rejects!(h, h.b.complete_execution(args), "execution_not_active");
    // The handle-based complete reconciles a retried completion.
    let handle = h.last_claim("e3").handle;
    h.b.complete(&handle, None).await.unwrap();
    // Operator override completes a live lease.
    leased(&mut h, "e4").await;
    h.b.complete_execution(complete_args(&h, "e4", None, CancelSource::OperatorOverride)).await.unwrap();
    assert_invariants(&h, &ctx).await;
}

async fn cancel_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let c = |id, source, lease: Option<(LeaseId, u64)>| CancelExecutionArgs {
        execution_id: id,
        reason: "r".into(),
        source,
        lease_id: lease.map(|l| l.0),
        lease_epoch: lease.map(|l| l.1),
    };
    rejects!(
        h,
        h.b.cancel_execution(c(missing(), CancelSource::OperatorOverride, None)),
        "execution_not_found"
    );
    leased(&mut h, "e1").await;
    let claim = h.last_claim("e1");
    let wrong_id = Some((LeaseId::from_uuid(Uuid::nil()), claim.lease_epoch));
    rejects!(h, h.b.cancel_execution(c(h.id("e1"), CancelSource::LeaseHolder, wrong_id)), "stale_lease");
    let wrong_epoch = Some((claim.lease_id, claim.lease_epoch + 7));
    rejects!(h, h.b.cancel_execution(c(h.id("e1"), CancelSource::LeaseHolder, wrong_epoch)), "stale_lease");
    let partial = CancelExecutionArgs {
        lease_epoch: None,
        ..c(h.id("e1"), CancelSource::LeaseHolder, Some((claim.lease_id, 1)))
    };
    rejects!(h, h.b.cancel_execution(partial), "partial_fence_triple");
    let revoke = RevokeLeaseArgs { execution_id: h.id("e1"), expected_lease_id: None, reason: String::new() };
    h.b.revoke_lease(revoke).await.unwrap();
    rejects!(h, h.b.cancel_execution(c(h.id("e1"), CancelSource::LeaseHolder, None)), "lease_revoked");
    h.b.cancel_execution(c(h.id("e1"), CancelSource::OperatorOverride, None)).await.unwrap();
    rejects!(
        h,
        h.b.cancel_execution(c(h.id("e1"), CancelSource::OperatorOverride, None)),
        "execution_not_active"
    );
    assert_invariants(&h, &ctx).await;
}

async fn reclaim_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let r = |_h: &Harness, id, w: &str, ttl| ReclaimExecutionArgs {
        execution_id: id,
        worker_id: WorkerId::new(w),
        worker_instance_id: WorkerInstanceId::new(format!("{w}-1")),
        lane_id: LaneId::new("default"),
        lease_id: LeaseId::from_uuid(Uuid::from_u64_pair(8, 8)),
        lease_ttl_ms: ttl,
        attempt_id: AttemptId::from_uuid(Uuid::from_u64_pair(9, 9)),
        attempt_policy_json: String::new(),
        max_reclaim_count: Some(1),
    };
    let _ = &h;
    rejects!(h, h.b.reclaim_execution(r(&h, missing(), "w2", 1000)), "execution_not_found");
    leased(&mut h, "e1").await;
    rejects!(h, h.b.reclaim_execution(r(&h, h.id("e1"), "w2", 0)), "invalid_input");
    let before = h.dump().await;
    let out = h.b.reclaim_execution(r(&h, h.id("e1"), "w2", 1000)).await.unwrap();
    assert!(matches!(out, ReclaimExecutionOutcome::NotReclaimable { .. }), "{out:?}");
    assert_eq!(before, h.dump().await);
    let g = h.grant_args("e1", "w2", &[]);
    let out = h.b.issue_reclaim_grant(g.clone()).await.unwrap();
    assert!(matches!(out, IssueReclaimGrantOutcome::NotReclaimable { .. }), "{out:?}");
    h.shorten_lease("e1", 10_000).await;
    h.advance(10_000).await;
    h.scan(ScannerKind::LeaseExpiry).await;
    let before = h.dump().await;
    let out = h.b.reclaim_execution(r(&h, h.id("e1"), "w2", 1000)).await.unwrap();
    assert!(matches!(out, ReclaimExecutionOutcome::GrantNotFound { .. }), "{out:?}");
    assert_eq!(before, h.dump().await);
    h.b.issue_reclaim_grant(g.clone()).await.unwrap();
    rejects!(h, h.b.issue_reclaim_grant(g.clone()), "grant_already_exists");
    let out = h.b.reclaim_execution(r(&h, h.id("e1"), "w3", 1000)).await.unwrap();
    assert!(matches!(out, ReclaimExecutionOutcome::GrantNotFound { .. }), "{out:?}");
    // Reclaim succeeds once (with a lease meant to expire), then the cap of 1
    // terminally fails it.
    let out = h.b.reclaim_execution(r(&h, h.id("e1"), "w2", h.ms(1000))).await.unwrap();
    assert!(matches!(out, ReclaimExecutionOutcome::Claimed(_)), "{out:?}");
    h.advance(1_000).await;
    h.scan(ScannerKind::LeaseExpiry).await;
    let out = h.b.reclaim_execution(r(&h, h.id("e1"), "w2", 1000)).await.unwrap();
    assert!(matches!(out, ReclaimExecutionOutcome::ReclaimCapExceeded { reclaim_count: 1, .. }), "{out:?}");
    assert_eq!(h.b.read_execution_state(&h.id("e1")).await.unwrap(), Some(ff_core::PublicState::Failed));
    // Capability mismatch on a reclaim grant stamps the core and reports the missing tokens.
    let policy = r#"{"routing_requirements":{"required_capabilities":["gpu"]}}"#;
    h.create_with("e2", |a| a.policy_json = policy.into()).await;
    let mut g2 = h.grant_args("e2", "w1", &["gpu"]);
    h.b.issue_claim_grant(g2.clone()).await.unwrap();
    h.claim("e2", "w1").await.unwrap();
    h.shorten_lease("e2", 10_000).await;
    h.advance(10_000).await;
    h.scan(ScannerKind::LeaseExpiry).await;
    g2.worker_capabilities = CapabilitySet::new(["cpu"]);
    h.advance(1).await;
    let before = h.dump().await;
    match h.b.issue_reclaim_grant(g2).await.unwrap() {
        IssueReclaimGrantOutcome::NotReclaimable { detail, .. } => {
            assert_eq!(detail, "capability_mismatch: gpu")
        }
        other => panic!("{other:?}"),
    }
    assert_ne!(before, h.dump().await, "mismatch stamps last_capability_mismatch_at");
    assert_invariants(&h, &ctx).await;
}

async fn expire_and_tags_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    assert_eq!(
        h.b.expire_execution(&missing(), ExpirePhase::AttemptTimeout).await.unwrap(),
        ExpireOutcome::NotFoundCleaned
    );
    leased(&mut h, "e1").await;
    let out = h.b.expire_execution(&h.id("e1"), ExpirePhase::ExecutionDeadline).await.unwrap();
    assert!(matches!(out, ExpireOutcome::Expired { .. }));
    assert_eq!(
        h.b.expire_execution(&h.id("e1"), ExpirePhase::AttemptTimeout).await.unwrap(),
        ExpireOutcome::AlreadyTerminal
    );
    let tags = |id, pairs: &[(&str, &str)]| SetExecutionTagsArgs {
        execution_id: id,
        tags: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    rejects!(h, h.b.set_execution_tags(tags(h.id("e1"), &[])), "invalid_input");
    rejects!(h, h.b.set_execution_tags(tags(missing(), &[("a.b", "1")])), "execution_not_found");
    rejects!(h, h.b.set_execution_tags(tags(h.id("e1"), &[("a.b", "1"), ("Bad", "2")])), "invalid_tag_key");
    assert_eq!(h.b.set_execution_tags(tags(h.id("e1"), &[("a.b", "1"), ("a.c", "2")])).await.unwrap(), 2);
    assert_eq!(h.b.get_execution_tag(&h.id("e1"), "a.c").await.unwrap().as_deref(), Some("2"));
    rejects!(h, h.b.set_execution_tag(&h.id("e1"), "app.Key", "v"), "invalid_input");
    assert_invariants(&h, &ctx).await;
}

async fn renew_and_progress_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let renew = |id, idx, fence, ttl| RenewLeaseArgs {
        execution_id: id,
        attempt_index: idx,
        fence,
        lease_ttl_ms: ttl,
        lease_history_grace_ms: 0,
    };
    rejects!(h, h.b.renew_lease(renew(missing(), 0, wrong_fence(), 1000)), "execution_not_found");
    leased(&mut h, "e1").await;
    let fence = Some(h.fence("e1", None));
    rejects!(h, h.b.renew_lease(renew(h.id("e1"), 0, fence.clone(), 0)), "invalid_input");
    rejects!(h, h.b.renew_lease(renew(h.id("e1"), 0, None, 1000)), "fence_required");
    rejects!(h, h.b.renew_lease(renew(h.id("e1"), 1, fence.clone(), 1000)), "stale_lease");
    rejects!(h, h.b.renew_lease(renew(h.id("e1"), 0, wrong_fence(), 1000)), "stale_lease");
    let p = |h: &Harness, lease_id, epoch| UpdateProgressArgs {
        execution_id: h.id("e1"),
        lease_id,
        lease_epoch: epoch,
        progress_pct: Some(50),
        progress_message: None,
    };
    let c = h.last_claim("e1");
    rejects!(h, h.b.update_progress(p(&h, LeaseId::from_uuid(Uuid::nil()), c.lease_epoch)), "stale_lease");
    rejects!(h, h.b.update_progress(p(&h, c.lease_id, c.lease_epoch + 1)), "stale_lease");
    let mut over = p(&h, c.lease_id, c.lease_epoch);
    over.progress_pct = Some(101);
    rejects!(h, h.b.update_progress(over), "invalid_input");
    h.b.update_progress(p(&h, c.lease_id, c.lease_epoch)).await.unwrap();
    h.shorten_lease("e1", 10_000).await;
    h.advance(10_000).await;
    // Progress does not mark; renew does.
    rejects!(h, h.b.update_progress(p(&h, c.lease_id, c.lease_epoch)), "lease_expired");
    rejects_with_write!(h, h.b.renew_lease(renew(h.id("e1"), 0, fence.clone(), 1000)), "lease_expired");
    h.reclaim("e1", "w2", None).await;
    let revoke = RevokeLeaseArgs { execution_id: h.id("e1"), expected_lease_id: None, reason: String::new() };
    h.b.revoke_lease(revoke).await.unwrap();
    let fence = Some(h.fence("e1", None));
    rejects!(h, h.b.renew_lease(renew(h.id("e1"), 1, fence, 1000)), "lease_revoked");
    let c = h.last_claim("e1");
    rejects!(h, h.b.update_progress(p(&h, c.lease_id, c.lease_epoch)), "lease_revoked");
    h.cancel("e1").await.unwrap();
    rejects!(h, h.b.update_progress(p(&h, c.lease_id, c.lease_epoch)), "execution_not_active");
    assert_invariants(&h, &ctx).await;
}

async fn mark_expired_and_revoke_outcomes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let reason = |o: MarkLeaseExpiredOutcome| match o {
        MarkLeaseExpiredOutcome::AlreadySatisfied { reason } => reason,
        MarkLeaseExpiredOutcome::MarkedExpired => "marked_expired".into(),
        other => format!("{other:?}"),
    };
    assert_eq!(reason(h.b.mark_lease_expired_if_due(&missing()).await.unwrap()), "execution_not_found");
    h.create("idle").await;
    assert_eq!(reason(h.b.mark_lease_expired_if_due(&h.id("idle")).await.unwrap()), "not_active");
    leased(&mut h, "e1").await;
    assert_eq!(reason(h.b.mark_lease_expired_if_due(&h.id("e1")).await.unwrap()), "not_yet_expired");
    h.shorten_lease("e1", 10_000).await;
    h.advance(10_000).await;
    assert_eq!(reason(h.b.mark_lease_expired_if_due(&h.id("e1")).await.unwrap()), "marked_expired");
    assert_eq!(reason(h.b.mark_lease_expired_if_due(&h.id("e1")).await.unwrap()), "already_expired");
    let rv = |id, expected| RevokeLeaseArgs {
        execution_id: id,
        expected_lease_id: expected,
        reason: String::new(),
    };
    rejects!(h, h.b.revoke_lease(rv(missing(), None)), "execution_not_found");
    rejects!(h, h.b.revoke_lease(rv(h.id("idle"), None)), "execution_not_active");
    assert_eq!(
        h.b.revoke_lease(rv(h.id("e1"), None)).await.unwrap(),
        RevokeLeaseOutcome::AlreadySatisfied { reason: "already_expired".into() }
    );
    leased(&mut h, "e2").await;
    rejects!(h, h.b.revoke_lease(rv(h.id("e2"), Some(LeaseId::from_uuid(Uuid::nil())))), "stale_lease");
    let out = h.b.revoke_lease(rv(h.id("e2"), Some(h.last_claim("e2").lease_id))).await.unwrap();
    assert!(matches!(out, RevokeLeaseOutcome::Revoked { .. }), "{out:?}");
    assert_eq!(
        h.b.revoke_lease(rv(h.id("e2"), None)).await.unwrap(),
        RevokeLeaseOutcome::AlreadySatisfied { reason: "already_revoked".into() }
    );
    assert_eq!(reason(h.b.mark_lease_expired_if_due(&h.id("e2")).await.unwrap()), "already_revoked");
    assert_invariants(&h, &ctx).await;
}

async fn grant_priority_and_block_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let mut g = h.grant_args_for(missing(), "w1");
    rejects!(h, h.b.issue_claim_grant(g.clone()), "execution_not_found");
    h.create("e1").await;
    g.execution_id = h.id("e1");
    let mut zero = g.clone();
    zero.grant_ttl_ms = 0;
    rejects!(h, h.b.issue_claim_grant(zero), "invalid_input");
    let mut over = g.clone();
    over.grant_ttl_ms = 60_001;
    rejects!(h, h.b.issue_claim_grant(over), "invalid_input");
    let mut many = g.clone();
    many.worker_capabilities = CapabilitySet::new((0..257).map(|i| format!("c{i}")));
    rejects!(h, h.b.issue_claim_grant(many), "invalid_capabilities");
    // A live grant blocks another (held on e0); an expired one does not (e1).
    h.create("e0").await;
    let g0 = IssueClaimGrantArgs { execution_id: h.id("e0"), ..g.clone() };
    h.b.issue_claim_grant(g0.clone()).await.unwrap();
    rejects!(h, h.b.issue_claim_grant(g0), "grant_already_exists");
    let short = IssueClaimGrantArgs { grant_ttl_ms: h.ms(5_000), ..g.clone() };
    h.b.issue_claim_grant(short.clone()).await.unwrap();
    h.advance(5_001).await;
    // Meant to expire before the admission block below.
    h.b.issue_claim_grant(short).await.unwrap();
    let until = h.now().await + h.hold_i(10_000);
    h.create_with("delayed", |a| a.delay_until = Some(until)).await;
    rejects!(h, h.b.issue_claim_grant(h.grant_args("delayed", "w1", &[])), "execution_not_eligible");
    let policy = r#"{"routing_requirements":{"required_capabilities":["gpu","cuda"]}}"#;
    h.create_with("gpu", |a| a.policy_json = policy.into()).await;
    h.advance(1).await;
    let before = h.dump().await;
    let e = h.b.issue_claim_grant(h.grant_args("gpu", "w1", &["gpu"])).await.unwrap_err();
    assert_eq!(e.code(), Some("capability_mismatch"));
    assert!(e.to_string().contains("cuda"), "{e}");
    assert_ne!(before, h.dump().await, "mismatch stamps last_capability_mismatch_at");
    // change_priority.
    let cp = |id, p| ChangePriorityArgs { execution_id: id, new_priority: p };
    rejects!(h, h.b.change_priority(cp(missing(), 1)), "execution_not_found");
    rejects!(h, h.b.change_priority(cp(h.id("delayed"), 1)), "execution_not_eligible");
    // block / unblock.
    let blk = |id, reason| BlockExecutionArgs { execution_id: id, reason, detail: String::new() };
    rejects!(
        h,
        h.b.block_execution_for_admission(blk(missing(), BlockingReason::WaitingForBudget)),
        "execution_not_found"
    );
    rejects!(
        h,
        h.b.block_execution_for_admission(blk(h.id("e1"), BlockingReason::WaitingForWorker)),
        "invalid_blocking_reason"
    );
    let ub = |id, r| UnblockExecutionArgs { execution_id: id, expected_reason: r };
    rejects!(h, h.b.unblock_execution(ub(missing(), None)), "execution_not_found");
    rejects!(h, h.b.unblock_execution(ub(h.id("e1"), None)), "execution_not_eligible");
    // A live grant shields the execution from admission blocks (its holder
    // already passed them); e1's grant is left to expire first.
    h.create("shielded").await;
    h.b.issue_claim_grant(h.grant_args("shielded", "w1", &[])).await.unwrap();
    rejects!(
        h,
        h.b.block_execution_for_admission(blk(h.id("shielded"), BlockingReason::WaitingForQuota)),
        "grant_already_exists"
    );
    h.advance(5_001).await;
    h.b.block_execution_for_admission(blk(h.id("e1"), BlockingReason::WaitingForQuota)).await.unwrap();
    rejects!(
        h,
        h.b.unblock_execution(ub(h.id("e1"), Some(BlockingReason::WaitingForBudget))),
        "execution_not_eligible"
    );
    h.b.unblock_execution(ub(h.id("e1"), Some(BlockingReason::WaitingForQuota))).await.unwrap();
    leased(&mut h, "active").await;
    rejects!(
        h,
        h.b.block_execution_for_admission(blk(h.id("active"), BlockingReason::WaitingForBudget)),
        "execution_not_eligible"
    );
    h.complete("active").await.unwrap();
    rejects!(
        h,
        h.b.block_execution_for_admission(blk(h.id("active"), BlockingReason::WaitingForBudget)),
        "execution_not_active"
    );
    assert_invariants(&h, &ctx).await;
}

async fn resumed_claim_and_grant_and_claim_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let cr = |id, w: &str| ClaimResumedExecutionArgs {
        execution_id: id,
        worker_id: WorkerId::new(w),
        worker_instance_id: WorkerInstanceId::new(format!("{w}-1")),
        lane_id: LaneId::new("default"),
        lease_id: LeaseId::from_uuid(Uuid::from_u64_pair(4, 4)),
        lease_ttl_ms: 1000,
        remaining_attempt_timeout_ms: None,
    };
    rejects!(h, h.b.claim_resumed_execution(cr(missing(), "w1")), "execution_not_found");
    h.create("e1").await;
    rejects!(h, h.b.claim_resumed_execution(cr(h.id("e1"), "w1")), "not_a_resumed_execution");
    h.grant_claim("e1", "w1").await;
    rejects!(h, h.b.claim_resumed_execution(cr(h.id("e1"), "w1")), "execution_not_leaseable");
    let handle = h.last_claim("e1").handle;
    h.b.wait_children(&handle).await.unwrap();
    rejects!(h, h.b.claim_resumed_execution(cr(h.id("e1"), "w1")), "invalid_claim_grant");
    let gc = |id, lane: &str| IssueGrantAndClaimArgs {
        execution_id: id,
        lane_id: LaneId::new(lane),
        lease_duration_ms: 1000,
        lease_id: LeaseId::from_uuid(Uuid::from_u64_pair(7, 7)),
        attempt_id: AttemptId::from_uuid(Uuid::from_u64_pair(7, 8)),
    };
    rejects!(h, h.b.issue_grant_and_claim(gc(missing(), "default")), "execution_not_found");
    rejects!(h, h.b.issue_grant_and_claim(gc(h.id("e1"), "")), "invalid_input");
    // The paused execution is claimed on its same attempt by the operator.
    let out = h.b.issue_grant_and_claim(gc(h.id("e1"), "default")).await.unwrap();
    assert_eq!(out.attempt_index, 0);
    rejects!(h, h.b.issue_grant_and_claim(gc(h.id("e1"), "default")), "execution_not_eligible");
    let until = h.now().await + h.hold_i(10_000);
    h.create_with("delayed", |a| a.delay_until = Some(until)).await;
    rejects!(h, h.b.issue_grant_and_claim(gc(h.id("delayed"), "default")), "execution_not_in_eligible_set");
    h.create("e3").await;
    h.grant("e3", "w1", &[]).await.unwrap();
    rejects!(h, h.b.issue_grant_and_claim(gc(h.id("e3"), "default")), "grant_already_exists");
    assert_invariants(&h, &ctx).await;
}

async fn replay_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    rejects!(h, h.b.replay_execution(&missing()), "execution_not_found");
    h.create_with("e1", |a| a.policy_json = r#"{"max_replay_count":1}"#.into()).await;
    rejects!(h, h.b.replay_execution(&h.id("e1")), "execution_not_terminal");
    h.cancel("e1").await.unwrap();
    h.b.replay_execution(&h.id("e1")).await.unwrap();
    h.cancel("e1").await.unwrap();
    rejects!(h, h.b.replay_execution(&h.id("e1")), "max_replays_exhausted");
    assert_invariants(&h, &ctx).await;
}

async fn worker_registry_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let reg = |w: &str, inst: &str, ttl| RegisterWorkerArgs {
        worker_id: WorkerId::new(w),
        worker_instance_id: WorkerInstanceId::new(inst),
        namespace: Namespace::new("ns"),
        lanes: [LaneId::new("default")].into_iter().collect(),
        capabilities: CapabilitySet::new(["gpu"]),
        liveness_ttl_ms: ttl,
    };
    rejects!(h, h.b.register_worker(reg("w", "i1", 0)), "invalid_input");
    let live = h.hold(1000);
    let registering = h.now().await;
    assert_eq!(h.b.register_worker(reg("w", "i1", live)).await.unwrap(), RegisterWorkerOutcome::Registered);
    let registered = h.now().await;
    h.advance(10).await;
    assert_eq!(h.b.register_worker(reg("w", "i1", live)).await.unwrap(), RegisterWorkerOutcome::Refreshed);
    rejects!(h, h.b.register_worker(reg("other", "i1", live)), "invalid_input");
    let hb = |inst: &str| HeartbeatWorkerArgs {
        worker_instance_id: WorkerInstanceId::new(inst),
        namespace: Namespace::new("ns"),
    };
    assert!(matches!(h.b.heartbeat_worker(hb("i1")).await.unwrap(), HeartbeatOutcome::Refreshed { .. }));
    assert_eq!(h.b.heartbeat_worker(hb("nobody")).await.unwrap(), HeartbeatOutcome::NotRegistered);
    let list = ListWorkersArgs { namespace: Namespace::new("ns"), after: None, limit: 10 };
    let page = h.b.list_workers(list.clone()).await.unwrap();
    assert_eq!(page.workers.len(), 1);
    let at = page.workers[0].registered_at_ms;
    assert!(
        (registering..=registered).contains(&at),
        "registered at {at}, not in [{registering}, {registered}]"
    );
    // A refresh with a liveness TTL meant to lapse.
    if h.real_time() {
        let short = reg("w", "i1", h.ms(1000));
        assert_eq!(h.b.register_worker(short).await.unwrap(), RegisterWorkerOutcome::Refreshed);
    }
    h.advance(2_000).await;
    assert_eq!(h.b.heartbeat_worker(hb("i1")).await.unwrap(), HeartbeatOutcome::NotRegistered);
    assert!(h.b.list_workers(list).await.unwrap().workers.is_empty());
    let dead = |inst: &str, reason: &str| MarkWorkerDeadArgs {
        worker_instance_id: WorkerInstanceId::new(inst),
        namespace: Namespace::new("ns"),
        reason: reason.into(),
    };
    rejects!(h, h.b.mark_worker_dead(dead("i1", "bad\nreason")), "invalid_input");
    rejects!(h, h.b.mark_worker_dead(dead("i1", &"x".repeat(257))), "invalid_input");
    assert_eq!(h.b.mark_worker_dead(dead("i1", "gone")).await.unwrap(), MarkWorkerDeadOutcome::Marked);
    assert_eq!(h.b.mark_worker_dead(dead("i1", "gone")).await.unwrap(), MarkWorkerDeadOutcome::NotRegistered);
    // A different worker id may take an expired instance id.
    assert_eq!(
        h.b.register_worker(reg("other", "i1", live)).await.unwrap(),
        RegisterWorkerOutcome::Registered
    );
}

async fn paging_of_workers(ctx: Ctx) {
    let h = harness(&ctx);
    for i in 0..7 {
        let args = RegisterWorkerArgs {
            worker_id: WorkerId::new("w"),
            worker_instance_id: WorkerInstanceId::new(format!("i{i}")),
            namespace: Namespace::new("ns"),
            lanes: Default::default(),
            capabilities: CapabilitySet::default(),
            liveness_ttl_ms: h.hold(1000),
        };
        h.b.register_worker(args).await.unwrap();
    }
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let page = h
            .b
            .list_workers(ListWorkersArgs { namespace: Namespace::new("ns"), after: after.clone(), limit: 3 })
            .await
            .unwrap();
        seen.extend(page.workers.iter().map(|w| w.worker_instance_id.to_string()));
        match page.cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("i{i}")).collect::<Vec<_>>());
}

/// The contract cases of spec 01.
pub fn cases() -> Vec<Case> {
    vec![
        untimed(case!(Group::Family(ContractFamily::Execution), create_execution_codes)),
        case!(Group::Family(ContractFamily::Execution), claim_execution_codes),
        case!(Group::Family(ContractFamily::Execution), terminal_style_ops_codes),
        untimed(case!(Group::Family(ContractFamily::Execution), cancel_codes)),
        case!(Group::Family(ContractFamily::Lease), reclaim_codes),
        untimed(case!(Group::Family(ContractFamily::Execution), expire_and_tags_codes)),
        case!(Group::Family(ContractFamily::Lease), renew_and_progress_codes),
        case!(Group::Family(ContractFamily::Lease), mark_expired_and_revoke_outcomes),
        case!(Group::Family(ContractFamily::Scheduling), grant_priority_and_block_codes),
        untimed(case!(Group::Family(ContractFamily::Scheduling), resumed_claim_and_grant_and_claim_codes)),
        untimed(case!(Group::Family(ContractFamily::Execution), replay_codes)),
        case!(Group::Family(ContractFamily::WorkerRegistry), worker_registry_codes),
        untimed(case!(Group::Family(ContractFamily::WorkerRegistry), paging_of_workers)),
    ]
}
