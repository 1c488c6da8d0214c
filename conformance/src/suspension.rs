//! Suspension, waitpoints, signals and HMAC tokens (spec 02 §2–§9).

use ff_core::contracts::ScannerKind;
use ff_core::hmac_token::RotateOutcome;
use ff_core::suspension::*;
use ff_core::{ContractFamily, EngineError, LeaseFence, PublicState, SignalId, SuspensionId, WaitpointId};
use uuid::Uuid;

use crate::cases::assert_invariants;
use crate::{Case, Ctx, Group, Harness, case, rejects, rejects_with_write, untimed};

/// A 32-byte secret in hex.
pub const SECRET_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// Another one.
pub const SECRET_B: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn harness(ctx: &Ctx) -> Harness {
    Harness::new(&ctx.fixture)
}

fn wp(n: u64) -> WaitpointId {
    WaitpointId::from_uuid(Uuid::from_u64_pair(0x3a17, n))
}

fn sid(n: u64) -> SignalId {
    SignalId::from_uuid(Uuid::from_u64_pair(0x5160, n))
}

fn susp(n: u64) -> SuspensionId {
    SuspensionId::from_uuid(Uuid::from_u64_pair(0x5055, n))
}

fn fresh(n: u64, key: &str) -> WaitpointBinding {
    WaitpointBinding::Fresh { waitpoint_id: wp(n), waitpoint_key: key.into() }
}

fn on(key: &str, matcher: SignalMatcher) -> ResumeCondition {
    ResumeCondition::Single { waitpoint_key: key.into(), matcher }
}

fn by_name(n: &str) -> SignalMatcher {
    SignalMatcher::ByName(n.into())
}

/// Seeds the keystore and leases `name` to `w1`.
async fn leased(h: &mut Harness, name: &str) {
    let _ = h.b.seed_waitpoint_hmac_secret("k1", SECRET_A).await;
    h.create(name).await;
    h.grant_claim(name, "w1").await;
}

/// Suspends `name` on one fresh waitpoint; returns its token.
async fn suspend_on(
    h: &mut Harness,
    name: &str,
    n: u64,
    key: &str,
    c: ResumeCondition,
) -> Result<SuspendOutcome, EngineError> {
    let args = SuspendArgs::new(susp(n), fresh(n, key), c, SuspensionReasonCode::WaitingForSignal);
    let handle = h.last_claim(name).handle;
    let r = h.b.suspend(&handle, args).await;
    let line = match &r {
        Ok(SuspendOutcome::Suspended { .. }) => format!("suspend {name} on {key} -> suspended"),
        Ok(other) => format!("suspend {name} on {key} -> {other:?}"),
        Err(e) => format!("suspend {name} on {key} -> {}", h.err(e)),
    };
    h.say(line);
    r
}

fn token_of(o: &SuspendOutcome) -> String {
    match o {
        SuspendOutcome::Suspended { details, .. } | SuspendOutcome::AlreadySatisfied { details } => {
            details.primary.waitpoint_token.clone()
        }
        _ => String::new(),
    }
}

fn signal(h: &Harness, name: &str, w: u64, n: u64, signal_name: &str, token: &str) -> DeliverSignalArgs {
    DeliverSignalArgs {
        signal_category: "test".into(),
        source_type: "tester".into(),
        source_identity: format!("src-{n}"),
        payload: Some(format!("payload {n}").into_bytes()),
        ..DeliverSignalArgs::new(h.id(name), wp(w), sid(n), signal_name, token)
    }
}

async fn send(
    h: &mut Harness,
    name: &str,
    args: DeliverSignalArgs,
) -> Result<DeliverSignalOutcome, EngineError> {
    let label = format!("signal {} to {name}", args.signal_name);
    let r = h.b.deliver_signal(args).await;
    let line = match &r {
        Ok(DeliverSignalOutcome::Accepted { effect, .. }) => format!("{label} -> {effect}"),
        Ok(other) => format!("{label} -> {other:?}"),
        Err(e) => format!("{label} -> {}", h.err(e)),
    };
    h.say(line);
    r
}

async fn hmac_tokens(ctx: Ctx) {
    let mut h = harness(&ctx);
    let b = h.b.clone();
    let bad_seed = b.seed_waitpoint_hmac_secret("k1", "abc").await;
    assert!(matches!(bad_seed, Err(EngineError::Validation { .. })), "{bad_seed:?}");
    leased(&mut h, "e1").await;
    let again = b.seed_waitpoint_hmac_secret("k1", SECRET_A).await.expect("re-seed");
    assert_eq!(
        again,
        ff_core::hmac_token::SeedOutcome::AlreadySeeded { kid: "k1".into(), same_secret: true }
    );
    let out = suspend_on(&mut h, "e1", 1, "wk", on("wk", by_name("go"))).await.expect("suspend");
    let token = token_of(&out);
    assert!(token.starts_with("k1:") && token.len() == 3 + 40, "{token}");
    let forged = format!("k1:{}", "0".repeat(40));
    let truncated = token[..token.len() - 1].to_owned();
    let upper = token.to_uppercase().replacen("K1", "k1", 1);
    let unknown = format!("k9:{}", &token[3..]);
    for bad in [String::new(), forged, truncated, upper, unknown, "nocolon".into()] {
        let a = signal(&h, "e1", 1, 1, "go", &bad);
        h.advance(1).await;
        rejects_with_write!(h, b.deliver_signal(a), "invalid_token");
    }
    // Rotation: the old kid verifies inside its grace window, not after.
    let grace = h.hold(1_000);
    match b.rotate_waitpoint_hmac_secret_all("k2", SECRET_B, grace).await.expect("rotate").first() {
        Some((_, Ok(RotateOutcome::Rotated { previous_kid, .. }))) => {
            assert_eq!(previous_kid.as_deref(), Some("k1"))
        }
        other => panic!("rotation: {other:?}"),
    }
    let reuse = b.rotate_waitpoint_hmac_secret_all("k1", SECRET_B, grace).await.expect("rotate call");
    assert!(
        matches!(reuse.first(), Some((_, Err(EngineError::Conflict(_))))),
        "kid reuse must conflict: {reuse:?}"
    );
    let (current, verifying) = b.list_waitpoint_hmac_kids().await.expect("kids");
    assert_eq!(current.as_deref(), Some("k2"));
    assert_eq!(verifying.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["k1"]);
    h.advance(1_000).await;
    let ok = {
        let a = signal(&h, "e1", 1, 2, "wait", &token);
        send(&mut h, "e1", a).await
    }
    .expect("inside grace");
    assert!(matches!(ok, DeliverSignalOutcome::Accepted { .. }));
    if h.real_time() {
        // A real grace held long enough for "inside" cannot also close here.
        old_kid_refused_after_its_grace(&ctx).await;
    } else {
        h.advance(1).await;
        let late = signal(&h, "e1", 1, 3, "go", &token);
        rejects_with_write!(h, b.deliver_signal(late), "invalid_token");
    }
    assert_invariants(&h, &ctx).await;
}

/// Real-TTL mode's "not after" side of the grace window, on a fresh fixture:
/// a rotation with a short grace, a wait past it, the old kid's token refused.
async fn old_kid_refused_after_its_grace(ctx: &Ctx) {
    let fixture = ctx.factory.make().await;
    let mut h = Harness::new(&fixture);
    let b = h.b.clone();
    leased(&mut h, "e1").await;
    let out = suspend_on(&mut h, "e1", 1, "wk", on("wk", by_name("go"))).await.expect("suspend");
    let token = token_of(&out);
    let rotated = b.rotate_waitpoint_hmac_secret_all("k2", SECRET_B, h.ms(1_000)).await.expect("rotate");
    assert!(matches!(rotated.first(), Some((_, Ok(RotateOutcome::Rotated { .. })))), "{rotated:?}");
    h.advance(1_001).await;
    let late = signal(&h, "e1", 1, 3, "go", &token);
    rejects_with_write!(h, b.deliver_signal(late), "invalid_token");
}

async fn suspend_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    leased(&mut h, "e1").await;
    let b = h.b.clone();
    let c = h.last_claim("e1");
    let args = || {
        SuspendArgs::new(
            susp(1),
            fresh(1, "k"),
            on("k", SignalMatcher::Wildcard),
            SuspensionReasonCode::WaitingForSignal,
        )
    };
    let req = |fence: Option<LeaseFence>, index: u32| SuspendByTripleArgs {
        execution_id: c.execution_id.clone(),
        attempt_index: index,
        fence,
        args: args(),
    };
    let fence = Some(h.fence("e1", None));
    rejects!(h, b.suspend_by_triple(req(None, 0)), "fence_required");
    let stale = Some(LeaseFence { lease_epoch: 9, ..h.fence("e1", None) });
    rejects!(h, b.suspend_by_triple(req(stale, 0)), "stale_lease");
    rejects!(h, b.suspend_by_triple(req(fence.clone(), 3)), "invalid_lease_for_suspend");
    let mut mismatch = req(fence.clone(), 0);
    mismatch.args.resume_condition = on("other", SignalMatcher::Wildcard);
    rejects!(h, b.suspend_by_triple(mismatch), "invalid_input");
    let pending = |w: u64| {
        let mut r = req(fence.clone(), 0);
        r.args.waitpoints = vec![WaitpointBinding::UsePending { waitpoint_id: wp(w) }];
        r
    };
    rejects!(h, b.suspend_by_triple(pending(77)), "waitpoint_not_found");
    // Meant to expire; "already exists" holds for any waitpoint not closed.
    let created = b.create_waitpoint(&c.handle, wp(5), "k", h.ms(500)).await.expect("pending waitpoint");
    assert!(created.hmac_token.starts_with("k1:"));
    rejects!(h, b.create_waitpoint(&c.handle, wp(5), "k", h.ms(500)), "waitpoint_already_exists");
    h.advance(500).await;
    rejects!(h, b.suspend_by_triple(pending(5)), "pending_waitpoint_expired");
    // Suspend for real; a Suspended handle cannot suspend again.
    let out = b.suspend_by_triple(req(fence.clone(), 0)).await.expect("suspend");
    let SuspendOutcome::Suspended { handle: Some(parked), .. } = out else { panic!("{out:?}") };
    rejects!(h, b.suspend(&parked, args()), "already_suspended");
    rejects!(h, b.suspend_by_triple(req(fence.clone(), 0)), "execution_not_active");
    rejects!(h, b.suspend_by_triple(pending(5)), "execution_not_active");
    let snap = b.describe_execution(&h.id("e1")).await.expect("describe").expect("present");
    assert_eq!(snap.public_state, PublicState::Suspended);
    assert!(snap.current_lease.is_none(), "a suspended execution holds no lease");
    // Expired lease: suspend marks it (intentional write) and refuses.
    leased(&mut h, "e2").await;
    h.shorten_lease("e2", 10_000).await;
    h.advance(10_000).await;
    let c2 = h.last_claim("e2");
    let r2 = SuspendByTripleArgs {
        execution_id: c2.execution_id.clone(),
        attempt_index: 0,
        fence: Some(h.fence("e2", None)),
        args: args(),
    };
    rejects_with_write!(h, b.suspend_by_triple(r2), "lease_expired");
    assert_invariants(&h, &ctx).await;
}

async fn signal_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    leased(&mut h, "e1").await;
    let b = h.b.clone();
    let token = token_of(&suspend_on(&mut h, "e1", 1, "k", on("k", by_name("go"))).await.expect("suspend"));
    let mut missing = signal(&h, "e1", 1, 1, "go", &token);
    missing.execution_id = crate::cases::missing();
    rejects!(h, b.deliver_signal(missing), "execution_not_found");
    let noise = {
        let a = signal(&h, "e1", 1, 1, "noise", &token);
        send(&mut h, "e1", a).await
    }
    .expect("no_op");
    assert!(matches!(noise, DeliverSignalOutcome::Accepted { ref effect, .. } if effect == "no_op"));
    let mut limited = signal(&h, "e1", 1, 2, "go", &token);
    limited.max_signals_per_execution = Some(1);
    rejects!(h, b.deliver_signal(limited), "signal_limit_exceeded");
    let mut keyed = signal(&h, "e1", 1, 3, "other", &token);
    keyed.idempotency_key = Some("once".into());
    send(&mut h, "e1", keyed.clone()).await.expect("first");
    keyed.signal_id = sid(4);
    let dup = b.deliver_signal(keyed).await.expect("duplicate");
    assert_eq!(dup, DeliverSignalOutcome::Duplicate { existing_signal_id: sid(3) });
    let go = {
        let a = signal(&h, "e1", 1, 5, "go", &token);
        send(&mut h, "e1", a).await
    }
    .expect("resume");
    assert!(
        matches!(go, DeliverSignalOutcome::Accepted { ref effect, .. } if effect == "resume_condition_satisfied")
    );
    assert_eq!(b.read_execution_state(&h.id("e1")).await.expect("state"), Some(PublicState::Waiting));
    // Closed now: another signal on the same waitpoint is refused.
    rejects!(h, b.deliver_signal(signal(&h, "e1", 1, 6, "go", &token)), "target_not_signalable");
    let seen = b.observe_execution_signals(&h.id("e1")).await.expect("observe");
    assert_eq!(seen.iter().map(|s| s.signal_id).collect::<Vec<_>>(), [sid(5)]);
    assert_eq!(seen[0].payload.as_deref(), Some(&b"payload 5"[..]));
    h.cancel("e1").await.expect("cancel");
    rejects!(h, b.deliver_signal(signal(&h, "e1", 1, 7, "go", &token)), "target_not_signalable");
    assert_invariants(&h, &ctx).await;
}

async fn composite_and_resume_delay(ctx: Ctx) {
    let mut h = harness(&ctx);
    leased(&mut h, "e1").await;
    let b = h.b.clone();
    let cond = ResumeCondition::all_of_waitpoints(["a", "b"]);
    let mut args = SuspendArgs::new(susp(1), fresh(1, "a"), cond, SuspensionReasonCode::WaitingForCallback);
    args.waitpoints.push(fresh(2, "b"));
    let handle = h.last_claim("e1").handle;
    let out = b.suspend(&handle, args).await.expect("suspend on two waitpoints");
    let SuspendOutcome::Suspended { details, .. } = out else { panic!("{out:?}") };
    let (ta, tb) =
        (details.primary.waitpoint_token.clone(), details.additional_waitpoints[0].waitpoint_token.clone());
    let effect = |o: DeliverSignalOutcome| match o {
        DeliverSignalOutcome::Accepted { effect, .. } => effect,
        other => format!("{other:?}"),
    };
    assert_eq!(
        effect(b.deliver_signal(signal(&h, "e1", 1, 1, "x", &ta)).await.expect("a")),
        "appended_to_waitpoint"
    );
    assert_eq!(
        effect(b.deliver_signal(signal(&h, "e1", 1, 2, "x", &ta)).await.expect("a again")),
        "appended_to_waitpoint_duplicate"
    );
    let mut last = signal(&h, "e1", 2, 3, "x", &tb);
    let delay = h.ms_i(2_000);
    last.resume_delay_ms = Some(h.ms(2_000));
    let signalling = h.now().await;
    assert_eq!(effect(b.deliver_signal(last).await.expect("b")), "resume_condition_satisfied");
    let signalled = h.now().await;
    let snap = b.describe_execution(&h.id("e1")).await.expect("describe").expect("present");
    assert_eq!(snap.public_state, PublicState::Delayed, "resume delay (until the promoter runs)");
    let until = snap.delay_until.unwrap_or(i64::MIN);
    assert!((signalling + delay..=signalled + delay).contains(&until), "delay_until {until}");
    // The primary waitpoint closed with the suspension.
    rejects!(h, b.deliver_signal(signal(&h, "e1", 1, 4, "x", &ta)), "target_not_signalable");
    h.advance(2_000).await;
    h.scan(ScannerKind::DelayedPromoter).await;
    h.grant("e1", "w2", &[]).await.expect("grant");
    h.claim_resumed("e1", "w2").await.expect("claim resumed");
    let c = h.last_claim("e1");
    assert_eq!(c.attempt_index, 0, "a resumed claim continues the same attempt");
    assert_eq!(c.lease_epoch, 2, "and bumps the epoch");
    let seen = b.observe_execution_signals(&h.id("e1")).await.expect("observe");
    assert_eq!(seen.len(), 2, "both satisfiers: {seen:?}");
    assert_invariants(&h, &ctx).await;
}

async fn idempotent_suspend_replays_the_outcome(ctx: Ctx) {
    let mut h = harness(&ctx);
    leased(&mut h, "e1").await;
    let b = h.b.clone();
    let mut args = SuspendArgs::new(
        susp(1),
        fresh(1, "k"),
        on("k", SignalMatcher::Wildcard),
        SuspensionReasonCode::WaitingForSignal,
    );
    args.idempotency_key = Some("retry-1".into());
    let handle = h.last_claim("e1").handle;
    let first = b.suspend(&handle, args.clone()).await.expect("first");
    let before = h.dump().await;
    let second = b.suspend(&handle, args).await.expect("replayed");
    assert_eq!(token_of(&first), token_of(&second));
    assert_eq!(before, h.dump().await, "a replayed suspend writes nothing");
}

/// Every timeout behaviour does what spec 02 §9.2 says at the deadline.
async fn suspension_timeout_behaviours(ctx: Ctx) {
    let mut h = harness(&ctx);
    let behaviours = [
        TimeoutBehavior::Fail,
        TimeoutBehavior::Cancel,
        TimeoutBehavior::Expire,
        TimeoutBehavior::AutoResumeWithTimeoutSignal,
        TimeoutBehavior::Escalate,
    ];
    for (i, beh) in behaviours.iter().enumerate() {
        let name = format!("e-{}", beh.as_str());
        leased(&mut h, &name).await;
        let at = h.now().await + 1_000;
        let args = SuspendArgs::new(
            susp(i as u64),
            fresh(10 + i as u64, "k"),
            ResumeCondition::TimeoutOnly,
            SuspensionReasonCode::WaitingForApproval,
        )
        .with_timeout(at, *beh);
        let handle = h.last_claim(&name).handle;
        h.b.suspend(&handle, args).await.expect("suspend with timeout");
        h.say(format!("suspend {name} until t+{} ({})", at - h.now().await + 1_000 - 1_000, beh.as_str()));
    }
    h.advance(999).await;
    h.scan(ScannerKind::SuspensionTimeout).await;
    h.advance(1).await;
    h.scan(ScannerKind::SuspensionTimeout).await;
    for beh in behaviours {
        h.show(&format!("e-{}", beh.as_str())).await;
    }
    h.scan(ScannerKind::SuspensionTimeout).await;
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!("suspension_timeout_behaviours", h.transcript());
}

async fn suspend_signal_resume_claim_complete(ctx: Ctx) {
    let mut h = harness(&ctx);
    leased(&mut h, "e1").await;
    let token = token_of(
        &suspend_on(&mut h, "e1", 1, "approval", on("approval", by_name("approved"))).await.expect("suspend"),
    );
    h.show("e1").await;
    {
        let a = signal(&h, "e1", 1, 1, "rejected", &token);
        send(&mut h, "e1", a).await
    }
    .expect("no_op");
    {
        let a = signal(&h, "e1", 1, 2, "approved", &token);
        send(&mut h, "e1", a).await
    }
    .expect("resume");
    h.show("e1").await;
    h.grant("e1", "w2", &[]).await.expect("grant");
    h.claim("e1", "w2").await.expect_err("an interrupted attempt needs the resumed claim");
    h.claim_resumed("e1", "w2").await.expect("claim resumed");
    h.complete("e1").await.expect("complete");
    h.show("e1").await;
    let old = h.claims["e1"][0].handle.clone();
    let r = h.b.complete(&old, None).await;
    h.say(format!(
        "complete with the pre-suspend handle -> {}",
        r.map(|_| "ok".to_owned()).unwrap_or_else(|e| h.err(&e))
    ));
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!("suspend_signal_resume_claim_complete", h.transcript());
}

async fn buffered_signal_consumed_by_suspend(ctx: Ctx) {
    let mut h = harness(&ctx);
    leased(&mut h, "e1").await;
    let b = h.b.clone();
    let handle = h.last_claim("e1").handle;
    let pending = b.create_waitpoint(&handle, wp(1), "callback", 60_000).await.expect("pending");
    h.say("create pending waitpoint callback".into());
    {
        let a = signal(&h, "e1", 1, 1, "done", &pending.hmac_token);
        send(&mut h, "e1", a).await
    }
    .expect("buffered");
    let mut args = SuspendArgs::new(
        susp(1),
        WaitpointBinding::UsePending { waitpoint_id: wp(1) },
        on("callback", by_name("done")),
        SuspensionReasonCode::WaitingForCallback,
    );
    args.timeout_at = None;
    let out = b.suspend(&handle, args).await.expect("suspend on pending");
    h.say(format!(
        "suspend e1 on pending callback -> {}",
        match out {
            SuspendOutcome::AlreadySatisfied { .. } => "already satisfied",
            _ => "suspended",
        }
    ));
    h.show("e1").await;
    h.complete("e1").await.expect("the lease survived an already-satisfied suspend");
    // A second pending waitpoint whose buffered signal does not satisfy: suspend parks.
    leased(&mut h, "e2").await;
    let handle = h.last_claim("e2").handle;
    let p2 = b.create_waitpoint(&handle, wp(2), "callback2", 60_000).await.expect("pending");
    {
        let a = signal(&h, "e2", 2, 2, "noise", &p2.hmac_token);
        send(&mut h, "e2", a).await
    }
    .expect("buffered");
    let args = SuspendArgs::new(
        susp(2),
        WaitpointBinding::UsePending { waitpoint_id: wp(2) },
        on("callback2", by_name("done")),
        SuspensionReasonCode::WaitingForCallback,
    );
    b.suspend(&handle, args).await.expect("suspend");
    h.show("e2").await;
    {
        let a = signal(&h, "e2", 2, 3, "done", &p2.hmac_token);
        send(&mut h, "e2", a).await
    }
    .expect("resume");
    h.show("e2").await;
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!("buffered_signal_consumed_by_suspend", h.transcript());
}

async fn operator_resume_and_cancel_while_suspended(ctx: Ctx) {
    let mut h = harness(&ctx);
    leased(&mut h, "e1").await;
    let b = h.b.clone();
    let token =
        token_of(&suspend_on(&mut h, "e1", 1, "k", ResumeCondition::OperatorOnly).await.expect("suspend"));
    let named = {
        let a = signal(&h, "e1", 1, 1, "__operator_only__", &token);
        send(&mut h, "e1", a).await
    }
    .expect("recorded");
    assert!(
        matches!(named, DeliverSignalOutcome::Accepted { ref effect, .. } if effect == "no_op"),
        "operator-only is not signal-satisfiable"
    );
    let out = b
        .resume_execution(ResumeExecutionArgs { execution_id: h.id("e1"), resume_delay_ms: 0 })
        .await
        .expect("resume");
    assert_eq!(out.public_state, PublicState::Waiting);
    rejects!(
        h,
        b.resume_execution(ResumeExecutionArgs { execution_id: h.id("e1"), resume_delay_ms: 0 }),
        "execution_not_suspended"
    );
    rejects!(h, b.deliver_signal(signal(&h, "e1", 1, 2, "x", &token)), "target_not_signalable");
    leased(&mut h, "e2").await;
    let t2 =
        token_of(&suspend_on(&mut h, "e2", 2, "k", on("k", SignalMatcher::Wildcard)).await.expect("suspend"));
    h.cancel("e2").await.expect("cancel a suspended execution");
    rejects!(h, b.deliver_signal(signal(&h, "e2", 2, 3, "x", &t2)), "target_not_signalable");
    assert_invariants(&h, &ctx).await;
}

/// Spec 02 §19 fixes, pinned: pending waitpoints are listed (1), closing an active
/// waitpoint closes its condition (3), a token for another execution is refused (5),
/// a retried keyed delivery after resume is a duplicate (7).
async fn reference_defects_stay_fixed(ctx: Ctx) {
    let mut h = harness(&ctx);
    leased(&mut h, "e1").await;
    let b = h.b.clone();
    let handle = h.last_claim("e1").handle;
    let pending = b.create_waitpoint(&handle, wp(1), "pk", 60_000).await.expect("pending");
    let (listed, _) = b.list_pending_waitpoints(&h.id("e1"), None, 10).await.expect("list");
    assert_eq!(
        listed.iter().map(|w| w.waitpoint_id).collect::<Vec<_>>(),
        [wp(1)],
        "a pending waitpoint is listed"
    );
    assert_eq!(listed[0].state, WaitpointState::Pending);
    assert_eq!(listed[0].token_kid, "k1");
    assert_eq!(listed[0].token_fingerprint, pending.hmac_token[3..19]);
    // (5) a token of e1's waitpoint cannot act on e2.
    leased(&mut h, "e2").await;
    let mut foreign = signal(&h, "e1", 1, 1, "x", &pending.hmac_token);
    foreign.execution_id = h.id("e2");
    rejects_with_write!(h, b.deliver_signal(foreign), "invalid_token");
    // (7) keyed delivery, resume, then the same key again → Duplicate.
    let t2 =
        token_of(&suspend_on(&mut h, "e2", 2, "k", on("k", SignalMatcher::Wildcard)).await.expect("suspend"));
    let mut keyed = signal(&h, "e2", 2, 2, "x", &t2);
    keyed.idempotency_key = Some("retry".into());
    send(&mut h, "e2", keyed.clone()).await.expect("resumes");
    let again = b.deliver_signal(keyed).await.expect("retried delivery");
    assert_eq!(again, DeliverSignalOutcome::Duplicate { existing_signal_id: sid(2) });
    // (3) closing an active waitpoint closes its condition: signals are refused.
    leased(&mut h, "e3").await;
    let t3 = token_of(&suspend_on(&mut h, "e3", 3, "k", on("k", by_name("go"))).await.expect("suspend"));
    assert!(b.close_waitpoint(&h.id("e3"), &wp(3), "").await.expect("close"));
    assert!(!b.close_waitpoint(&h.id("e3"), &wp(3), "").await.expect("close again"), "already closed");
    rejects!(h, b.deliver_signal(signal(&h, "e3", 3, 3, "go", &t3)), "waitpoint_closed");
    let (page, next) =
        b.list_suspended(h.id("e3").partition_index(), None, 10).await.expect("list suspended");
    assert!(
        page.iter().any(|e| e.execution_id == h.id("e3") && e.reason == "waiting_for_signal"),
        "{page:?}"
    );
    assert!(next.is_none());
    // Approval signals use the stored token and check the lane.
    let approval = DeliverApprovalSignalArgs {
        execution_id: h.id("e3"),
        lane_id: ff_core::LaneId::new("elsewhere"),
        waitpoint_id: wp(3),
        signal_id: sid(9),
        signal_name: "approved".into(),
        idempotency_suffix: "1".into(),
        signal_dedup_ttl_ms: None,
        maxlen: None,
        max_signals_per_execution: None,
    };
    rejects!(h, b.deliver_approval_signal(approval), "invalid_input");
    assert_invariants(&h, &ctx).await;
}

async fn binding_and_keystore_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let b = h.b.clone();
    // No keystore yet: minting fails before any write.
    h.create("e0").await;
    h.grant_claim("e0", "w1").await;
    let c0 = h.last_claim("e0");
    let plain = SuspendArgs::new(
        susp(0),
        fresh(50, "k"),
        on("k", SignalMatcher::Wildcard),
        SuspensionReasonCode::WaitingForSignal,
    );
    rejects!(h, b.suspend(&c0.handle, plain), "invalid_input");
    rejects!(h, b.create_waitpoint(&c0.handle, wp(51), "k", 1_000), "invalid_input");
    leased(&mut h, "e1").await;
    leased(&mut h, "e2").await;
    let c1 = h.last_claim("e1");
    let c2 = h.last_claim("e2");
    // Depth cap: rejected before any state change.
    let mut deep = on("k", SignalMatcher::Wildcard);
    for _ in 0..5 {
        deep = ResumeCondition::Composite(CompositeBody::AllOf { members: vec![deep] });
    }
    let too_deep = SuspendArgs::new(susp(1), fresh(1, "k"), deep, SuspensionReasonCode::WaitingForSignal);
    rejects!(h, b.suspend(&c1.handle, too_deep), "invalid_input");
    // A pending waitpoint of e1 cannot be activated by e2.
    b.create_waitpoint(&c1.handle, wp(2), "p", 60_000).await.expect("pending");
    let use_pending = |n| {
        SuspendArgs::new(
            susp(n),
            WaitpointBinding::UsePending { waitpoint_id: wp(2) },
            on("p", SignalMatcher::Wildcard),
            SuspensionReasonCode::WaitingForSignal,
        )
    };
    rejects!(h, b.suspend(&c2.handle, use_pending(2)), "invalid_waitpoint_for_execution");
    // Once active it is no longer pending.
    b.suspend(&c1.handle, use_pending(3)).await.expect("activate");
    leased(&mut h, "e3").await;
    let c3 = h.last_claim("e3");
    rejects!(h, b.suspend(&c3.handle, use_pending(4)), "waitpoint_not_pending");
    rejects!(
        h,
        b.resume_execution(ResumeExecutionArgs { execution_id: h.id("e3"), resume_delay_ms: 0 }),
        "execution_not_suspended"
    );
    assert_invariants(&h, &ctx).await;
}

/// The suspension cases.
pub fn cases() -> Vec<Case> {
    let g = Group::Family(ContractFamily::Suspension);
    let golden = |c: Case| Case { requires: ContractFamily::Suspension, ..c };
    vec![
        case!(g, hmac_tokens),
        case!(g, suspend_codes),
        untimed(case!(g, signal_codes)),
        case!(g, composite_and_resume_delay),
        untimed(case!(g, idempotent_suspend_replays_the_outcome)),
        untimed(case!(g, operator_resume_and_cancel_while_suspended)),
        untimed(case!(g, reference_defects_stay_fixed)),
        untimed(case!(g, binding_and_keystore_codes)),
        golden(case!(Group::Golden, suspension_timeout_behaviours)),
        golden(case!(Group::Golden, suspend_signal_resume_claim_complete)),
        golden(case!(Group::Golden, buffered_signal_consumed_by_suspend)),
    ]
}
