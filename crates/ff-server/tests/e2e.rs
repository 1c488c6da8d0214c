//! End-to-end scenarios over real HTTP on loopback, on the memory, SQLite and Valkey backends.

mod common;

use common::{KINDS, LEASE_TTL_MS, World};
use ff_core::PublicState;
use ff_core::suspension::{
    DeliverSignalOutcome, ResumeCondition, ResumePolicy, SignalMatcher, SuspensionReasonCode,
};
use ff_sdk::wire::{IssueReclaimGrantRequest, RotateWaitpointSecretRequest};
use ff_sdk::{ReclaimClaim, SdkError, SuspendedTask};

fn approval() -> ResumeCondition {
    ResumeCondition::Single { waitpoint_key: "approval".into(), matcher: SignalMatcher::ByName("go".into()) }
}

async fn suspend_on_approval(world: &World) -> (ff_core::ExecutionId, SuspendedTask) {
    let id = world.submit(1, b"input").await;
    let task = world.claim_via_server().await;
    assert_eq!(task.execution_id(), &id);
    let suspended = task
        .suspend(SuspensionReasonCode::WaitingForSignal, approval(), None, ResumePolicy::default())
        .await
        .expect("suspend");
    assert_eq!(world.state(&id).await, PublicState::Suspended);
    (id, suspended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_claim_via_server_complete() {
    for kind in KINDS {
        let world = World::new(kind).await;
        assert_eq!(world.admin.health().await.expect("healthz").status, "ok");
        let id = world.submit(2, b"hello").await;
        assert_eq!(world.state(&id).await, PublicState::Waiting);
        let task = world.claim_via_server().await;
        assert_eq!((task.execution_id(), task.input_payload()), (&id, &b"hello"[..]), "{kind:?}");
        assert_eq!(world.state(&id).await, PublicState::Active);
        task.complete(Some(b"done".to_vec())).await.expect("complete");
        assert_eq!(world.state(&id).await, PublicState::Completed);
        let result = world.admin.execution_result(&id).await.expect("result over HTTP");
        assert_eq!(result.as_deref(), Some(&b"done"[..]));
        assert!(world.grant().await.is_none(), "{kind:?}: nothing left to claim → 204");
        let info = world.admin.describe_execution(&id).await.expect("describe").expect("exists");
        assert_eq!((info.public_state, info.current_attempt_index), (PublicState::Completed, Some(0)));
        world.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_signal_with_token_resume_and_complete() {
    for kind in KINDS {
        let world = World::new(kind).await;
        let (id, suspended) = suspend_on_approval(&world).await;
        let primary = suspended.details.primary;
        let forged = format!("{}:{}", "k1", "0".repeat(40));
        let refused = world.signal(&id, primary.waitpoint_id, "go", &forged).await;
        let invalid_token = |m: &str| m.starts_with("invalid_token");
        assert!(
            matches!(&refused, Err(SdkError::Api { status: 400, message, .. }) if invalid_token(message)),
            "{kind:?}: {refused:?}"
        );
        let token = world
            .admin
            .read_waitpoint_token(&id, &primary.waitpoint_id)
            .await
            .expect("token over HTTP")
            .expect("token exists");
        assert_eq!(token, primary.waitpoint_token);
        let outcome = world.signal(&id, primary.waitpoint_id, "go", &token).await.expect("signal");
        let resumes = |e: &str| e == "resume_condition_satisfied";
        assert!(
            matches!(&outcome, DeliverSignalOutcome::Accepted { effect, .. } if resumes(effect)),
            "{kind:?}: {outcome:?}"
        );
        assert_eq!(world.state(&id).await, PublicState::Waiting);
        let consumed = world.admin.read_waitpoint_token(&id, &primary.waitpoint_id).await.expect("http");
        assert_eq!(consumed, None, "{kind:?}: a closed waitpoint no longer hands out its token");
        let resumed = world.claim_via_server().await;
        assert_eq!((resumed.execution_id(), resumed.attempt_index()), (&id, 0), "{kind:?}: same attempt");
        assert_eq!(resumed.resume_signals().await.expect("signals").len(), 1);
        resumed.complete(None).await.expect("complete resumed");
        assert_eq!(world.state(&id).await, PublicState::Completed);
        world.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_reclaim_grant_and_complete() {
    for kind in KINDS {
        let world = World::new(kind).await;
        let id = world.submit(3, b"x").await;
        let lost = world.claim_via_server().await;
        // The worker dies: its renewal stops, and simulated time passes the lease TTL.
        drop(lost);
        world.clock.advance(LEASE_TTL_MS + 1);
        world.await_lease_expired(&id).await;
        let request = IssueReclaimGrantRequest {
            worker_id: "worker-1".into(),
            worker_instance_id: "worker-1-instance".into(),
            lane_id: common::LANE.into(),
            capability_hash: None,
            grant_ttl_ms: 5_000,
            route_snapshot_json: None,
            admission_summary: None,
            worker_capabilities: Vec::new(),
        };
        let response = world.admin.issue_reclaim_grant(&id, request).await.expect("reclaim over HTTP");
        let grant = response.into_grant().expect("granted");
        let claim = world.worker.claim_from_reclaim_grant(grant).await.expect("reclaim");
        let ReclaimClaim::Claimed(task) = claim else { panic!("{kind:?}: not claimed: {claim:?}") };
        assert_eq!((task.execution_id(), task.attempt_index()), (&id, 1), "{kind:?}: new attempt");
        task.complete(Some(b"recovered".to_vec())).await.expect("complete reclaimed");
        assert_eq!(world.state(&id).await, PublicState::Completed);
        world.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_outstanding_tokens_valid_within_grace() {
    for kind in KINDS {
        let world = World::new(kind).await;
        let (id, suspended) = suspend_on_approval(&world).await;
        let old_token = suspended.details.primary.waitpoint_token.clone();
        assert!(old_token.starts_with("k1:"), "{old_token}");
        let request = RotateWaitpointSecretRequest { new_kid: "k2".into(), new_secret_hex: "ab".repeat(32) };
        let rotated = world.admin.rotate_waitpoint_secret(request).await.expect("rotate over HTTP");
        assert!(rotated.rotated >= 1 && rotated.failed.is_empty(), "{kind:?}: {rotated:?}");
        assert_eq!(rotated.new_kid, "k2");
        let outcome = world
            .signal(&id, suspended.details.primary.waitpoint_id, "go", &old_token)
            .await
            .expect("old token still verifies within the grace period");
        assert!(matches!(outcome, DeliverSignalOutcome::Accepted { .. }), "{kind:?}: {outcome:?}");
        // New suspensions are signed with the new kid.
        let resumed = world.claim_via_server().await;
        let again = resumed
            .suspend(SuspensionReasonCode::WaitingForSignal, approval(), None, ResumePolicy::default())
            .await
            .expect("suspend again");
        assert!(again.details.primary.waitpoint_token.starts_with("k2:"), "{kind:?}");
        let bad = RotateWaitpointSecretRequest { new_kid: "k:3".into(), new_secret_hex: "ab".repeat(32) };
        assert!(matches!(world.admin.rotate_waitpoint_secret(bad).await, Err(SdkError::Config { .. })));
        world.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_auth_guards_every_route_but_healthz() {
    for kind in KINDS {
        let world = World::with_token(kind, Some("s3cret-token")).await;
        let base = world.server.as_ref().expect("running").base_url();
        let anonymous = ff_sdk::FlowFabricAdminClient::new(&base).expect("client");
        assert_eq!(anonymous.health().await.expect("healthz needs no token").status, "ok");
        let id = world.submit(0, b"").await;
        let expect_401 = |r: Result<Option<PublicState>, SdkError>| match r {
            Err(SdkError::Api { status: 401, message, .. }) => {
                assert_eq!(message, "missing or invalid Authorization header")
            }
            other => panic!("{kind:?}: expected 401, got {other:?}"),
        };
        expect_401(anonymous.execution_state(&id).await);
        let wrong = ff_sdk::FlowFabricAdminClient::with_token(&base, "s3cret-tokeX").expect("client");
        expect_401(wrong.execution_state(&id).await);
        let longer =
            ff_sdk::FlowFabricAdminClient::with_token(&base, "s3cret-token-and-more").expect("client");
        expect_401(longer.execution_state(&id).await);
        assert_eq!(world.state(&id).await, PublicState::Waiting);
        assert!(matches!(
            ff_sdk::FlowFabricAdminClient::with_token(&base, "  "),
            Err(SdkError::Config { field: Some("bearer_token"), .. })
        ));
        world.stop().await;
    }
}

/// One bad request and the answer it must get: status and the start of `error`.
struct BadRequest {
    method: hyper::Method,
    path: String,
    body: Option<Vec<u8>>,
    status: u16,
    error_prefix: &'static str,
}

/// Sends each request and checks its status and JSON error body; returns the bodies.
async fn expect_errors(world: &World, cases: Vec<BadRequest>) -> Vec<serde_json::Value> {
    let mut bodies = Vec::new();
    for case in cases {
        let (status, raw) = world.admin.raw(case.method, &case.path, case.body).await.expect("http");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let json: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
        let error = json["error"].as_str().unwrap_or_default();
        assert_eq!(status, case.status, "{:?} {}: {text}", world.kind, case.path);
        assert!(error.starts_with(case.error_prefix), "{:?} {}: {text}", world.kind, case.path);
        bodies.push(json);
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_a_400_with_a_json_body() {
    use hyper::Method;
    let bad = |method: Method, path: &str, body: Option<&[u8]>, status: u16, error_prefix: &'static str| {
        BadRequest { method, path: path.to_owned(), body: body.map(<[u8]>::to_vec), status, error_prefix }
    };
    for kind in KINDS {
        let world = World::new(kind).await;
        let id = world.submit(1, b"").await;
        let cancel = format!("/v1/executions/{}/cancel", ff_sdk::wire::encode_path_segment(id.as_str()));
        let oversized = vec![b' '; ff_server::BODY_BYTES_MAX_CONTROL + 1];
        let other_id = br#"{"execution_id":"{fp:1}:00000000-0000-0000-0000-000000000abc"}"#;
        let cases = vec![
            bad(Method::GET, "/v1/executions/not-an-id", None, 400, "invalid execution_id"),
            bad(
                Method::GET,
                "/v1/executions/%7Bfp:9999%7D:00000000-0000-0000-0000-000000000001",
                None,
                400,
                "invalid execution_id",
            ),
            bad(
                Method::GET,
                "/v1/executions/%7Bfp:1%7D:00000000-0000-0000-0000-0000000000ff",
                None,
                404,
                "execution not found",
            ),
            bad(Method::POST, "/v1/executions", Some(b"{not json"), 400, "invalid JSON"),
            bad(
                Method::POST,
                "/v1/workers/w/claim",
                Some(br#"{"lane_id":"","worker_instance_id":"i","grant_ttl_ms":1}"#),
                400,
                "lane_id",
            ),
            bad(
                Method::POST,
                "/v1/workers/w/claim",
                Some(br#"{"lane_id":"default","worker_instance_id":"i","grant_ttl_ms":60001}"#),
                400,
                "grant_ttl_ms",
            ),
            bad(
                Method::POST,
                "/v1/workers/w%20x/claim",
                Some(br#"{"lane_id":"default","worker_instance_id":"i","grant_ttl_ms":1}"#),
                400,
                "worker_id",
            ),
            bad(Method::POST, &cancel, Some(other_id), 400, "path execution_id does not match"),
            BadRequest {
                method: Method::POST,
                path: cancel.clone(),
                body: Some(oversized),
                status: 413,
                error_prefix: "payload_too_large",
            },
        ];
        let bodies = expect_errors(&world, cases).await;
        let too_large = bodies.last().cloned().unwrap_or_default();
        assert_eq!(too_large["route"], "/v1/executions/{id}/cancel", "{kind:?}: {too_large}");
        assert_eq!(too_large["limit_bytes"], ff_server::BODY_BYTES_MAX_CONTROL, "{kind:?}");
        let cancelled = world.admin.cancel_execution(&id, "operator says no").await.expect("cancel");
        assert!(matches!(cancelled, ff_sdk::wire::CancelExecutionResponse::Cancelled { .. }));
        assert_eq!(world.state(&id).await, PublicState::Cancelled);
        let again = world.admin.cancel_execution(&id, "twice").await;
        assert!(matches!(again, Err(SdkError::Api { status: 409, .. })), "{kind:?}: {again:?}");
        world.stop().await;
    }
}
