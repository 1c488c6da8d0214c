//! `FlowFabricAdminClient`: the REST API over a hyper 1 HTTP/1.1 client with a
//! pluggable transport (spec 03 §9.6).
//!
//! Every exchange opens one stream through a [`Connector`], runs
//! `hyper::client::conn::http1::handshake` over it and sends one request. The
//! transport is a trait so a simulation can hand in its own TCP streams.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ff_core::contracts::CreateExecutionArgs;
use ff_core::contracts::CreateExecutionOutcome;
use ff_core::suspension::{DeliverSignalArgs, DeliverSignalOutcome};
use ff_core::{ExecutionId, PublicState, WaitpointId};
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::check_identifier;
use crate::error::SdkError;
use crate::wire::*;

/// Whole-exchange timeout of one admin call, in ms.
pub const ADMIN_TIMEOUT_MS: u64 = 130_000;
/// Largest response body the client reads, in bytes.
pub const RESPONSE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Grant TTL ceiling accepted by the claim and reclaim routes, in ms.
pub const GRANT_TTL_MS_MAX: u64 = 60_000;

const CTX: &str = "admin_client";

/// A byte stream the HTTP client can run over.
pub trait IoStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> IoStream for T {}

/// A boxed transport stream.
pub type BoxedIo = Box<dyn IoStream>;
/// The future a [`Connector`] returns.
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxedIo>> + Send + 'a>>;

/// Opens one transport stream to `host:port` per HTTP exchange.
pub trait Connector: Send + Sync + 'static {
    /// Connects; errors are reported as `SdkError::Http{context: "connect"}`.
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> ConnectFuture<'a>;
}

/// The default transport: a tokio `TcpStream` to the URL's host and port.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> ConnectFuture<'a> {
        Box::pin(async move {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let stream = tokio::net::TcpStream::connect((host, port)).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxedIo)
        })
    }
}

/// A client of the FlowFabric REST API.
#[derive(Clone)]
pub struct FlowFabricAdminClient {
    host: String,
    port: u16,
    authority: String,
    bearer: Option<HeaderValue>,
    connector: Arc<dyn Connector>,
    timeout: Duration,
}

impl std::fmt::Debug for FlowFabricAdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowFabricAdminClient")
            .field("authority", &self.authority)
            .field("auth", &self.bearer.is_some())
            .finish_non_exhaustive()
    }
}

/// One HTTP answer: status and body bytes.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

impl FlowFabricAdminClient {
    /// A client for `http://host:port` without auth; errors: `Config` for a bad URL.
    pub fn new(base_url: &str) -> Result<Self, SdkError> {
        let uri: Uri = base_url
            .trim_end_matches('/')
            .parse()
            .map_err(|e| SdkError::config(CTX, Some("base_url"), format!("{e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(SdkError::config(CTX, Some("base_url"), "only http:// URLs are supported"));
        }
        let host = uri.host().ok_or_else(|| SdkError::config(CTX, Some("base_url"), "missing host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path();
        if !(path.is_empty() || path == "/") {
            return Err(SdkError::config(CTX, Some("base_url"), "must not carry a path"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            authority: format!("{host}:{port}"),
            bearer: None,
            connector: Arc::new(TcpConnector),
            timeout: Duration::from_millis(ADMIN_TIMEOUT_MS),
        })
    }

    /// A client sending `Authorization: Bearer <token>`; errors: `Config{field: bearer_token}`
    /// for an empty, all-whitespace or header-invalid token.
    pub fn with_token(base_url: &str, token: &str) -> Result<Self, SdkError> {
        if token.trim().is_empty() {
            return Err(SdkError::config(
                CTX,
                Some("bearer_token"),
                "is empty or all-whitespace; pass a real token or use `new` for no auth",
            ));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            SdkError::config(CTX, Some("bearer_token"), "contains characters invalid in a header")
        })?;
        value.set_sensitive(true);
        let mut client = Self::new(base_url)?;
        client.bearer = Some(value);
        Ok(client)
    }

    /// The same client over another transport (e.g. a simulated network).
    pub fn with_connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = connector;
        self
    }

    /// The same client with another whole-exchange timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Asks the scheduler for a claim grant; `Ok(None)` on 204 (no work).
    ///
    /// Errors: `Config` for invalid ids, lane or TTL (nothing is sent); `Http`; `Api`.
    pub async fn claim_for_worker(
        &self,
        request: ClaimForWorkerRequest,
    ) -> Result<Option<ClaimForWorkerResponse>, SdkError> {
        check_identifier(CTX, "worker_id", &request.worker_id)?;
        check_identifier(CTX, "worker_instance_id", &request.worker_instance_id)?;
        check_lane(&request.lane_id)?;
        check_grant_ttl(request.grant_ttl_ms)?;
        let path = format!("/v1/workers/{}/claim", encode_path_segment(&request.worker_id));
        let body = ClaimForWorkerBody {
            lane_id: request.lane_id,
            worker_instance_id: request.worker_instance_id,
            capabilities: request.capabilities,
            grant_ttl_ms: request.grant_ttl_ms,
        };
        let answer = self.exchange(Method::POST, &path, Some(json_bytes(&body)?)).await?;
        if answer.status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        decode_ok(answer).map(Some)
    }

    /// Rotates the waitpoint HMAC secret on every partition.
    ///
    /// Errors: `Config` for an empty kid, a kid with `:` or a non-hex secret; `Http`; `Api`.
    pub async fn rotate_waitpoint_secret(
        &self,
        request: RotateWaitpointSecretRequest,
    ) -> Result<RotateWaitpointSecretResponse, SdkError> {
        if request.new_kid.is_empty() || request.new_kid.contains(':') {
            return Err(SdkError::config(CTX, Some("new_kid"), "must be non-empty and contain no ':'"));
        }
        if !is_even_hex(&request.new_secret_hex) {
            return Err(SdkError::config(CTX, Some("new_secret_hex"), "must be non-empty, even-length hex"));
        }
        let answer = self
            .exchange(Method::POST, "/v1/admin/rotate-waitpoint-secret", Some(json_bytes(&request)?))
            .await?;
        decode_ok(answer)
    }

    /// Issues a reclaim grant for an execution whose lease expired or was revoked.
    ///
    /// Errors: `Config` for invalid ids, lane or TTL; `Http`; `Api`.
    pub async fn issue_reclaim_grant(
        &self,
        execution_id: &ExecutionId,
        request: IssueReclaimGrantRequest,
    ) -> Result<IssueReclaimGrantResponse, SdkError> {
        check_identifier(CTX, "worker_id", &request.worker_id)?;
        check_identifier(CTX, "worker_instance_id", &request.worker_instance_id)?;
        check_lane(&request.lane_id)?;
        check_grant_ttl(request.grant_ttl_ms)?;
        let path = format!("/v1/executions/{}/reclaim", encode_path_segment(execution_id.as_str()));
        let answer = self.exchange(Method::POST, &path, Some(json_bytes(&request)?)).await?;
        decode_ok(answer)
    }

    /// Submits an execution; errors: `Http`; `Api` (e.g. 400 on invalid args).
    pub async fn create_execution(
        &self,
        args: &CreateExecutionArgs,
    ) -> Result<CreateExecutionOutcome, SdkError> {
        let answer = self.exchange(Method::POST, "/v1/executions", Some(json_bytes(args)?)).await?;
        decode_ok(answer)
    }

    /// The execution's read model; `Ok(None)` on 404. Errors: `Http`; `Api`.
    pub async fn describe_execution(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Option<ExecutionInfo>, SdkError> {
        let path = format!("/v1/executions/{}", encode_path_segment(execution_id.as_str()));
        let answer = self.exchange(Method::GET, &path, None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        decode_ok(answer).map(Some)
    }

    /// The execution's public state; `Ok(None)` on 404. Errors: `Http`; `Api`.
    pub async fn execution_state(&self, execution_id: &ExecutionId) -> Result<Option<PublicState>, SdkError> {
        let path = format!("/v1/executions/{}/state", encode_path_segment(execution_id.as_str()));
        let answer = self.exchange(Method::GET, &path, None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        decode_ok(answer).map(Some)
    }

    /// The stored result bytes; `Ok(None)` on 404. Errors: `Http`; `Api`.
    pub async fn execution_result(&self, execution_id: &ExecutionId) -> Result<Option<Vec<u8>>, SdkError> {
        let path = format!("/v1/executions/{}/result", encode_path_segment(execution_id.as_str()));
        let answer = self.exchange(Method::GET, &path, None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(api_error(answer));
        }
        Ok(Some(answer.body.to_vec()))
    }

    /// Cancels an execution as an operator; errors: `Http`; `Api`.
    pub async fn cancel_execution(
        &self,
        execution_id: &ExecutionId,
        reason: &str,
    ) -> Result<CancelExecutionResponse, SdkError> {
        let path = format!("/v1/executions/{}/cancel", encode_path_segment(execution_id.as_str()));
        let body = CancelExecutionRequest {
            execution_id: execution_id.to_string(),
            reason: reason.to_owned(),
            source: None,
            lease_id: None,
            lease_epoch: None,
        };
        let answer = self.exchange(Method::POST, &path, Some(json_bytes(&body)?)).await?;
        decode_ok(answer)
    }

    /// Delivers a signal with its waitpoint token; errors: `Http`; `Api` (400 `invalid_token`, …).
    pub async fn deliver_signal(&self, args: &DeliverSignalArgs) -> Result<DeliverSignalOutcome, SdkError> {
        let path = format!("/v1/executions/{}/signal", encode_path_segment(args.execution_id.as_str()));
        let answer = self.exchange(Method::POST, &path, Some(json_bytes(args)?)).await?;
        decode_ok(answer)
    }

    /// A waitpoint's stored token; `Ok(None)` on 404. Errors: `Http`; `Api`.
    pub async fn read_waitpoint_token(
        &self,
        execution_id: &ExecutionId,
        waitpoint_id: &WaitpointId,
    ) -> Result<Option<String>, SdkError> {
        let path = format!(
            "/v1/executions/{}/waitpoints/{}/token",
            encode_path_segment(execution_id.as_str()),
            waitpoint_id
        );
        let answer = self.exchange(Method::GET, &path, None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        decode_ok::<WaitpointTokenResponse>(answer).map(|r| Some(r.token))
    }

    /// One page of execution ids of a partition, after `cursor`; errors: `Http`; `Api`.
    pub async fn list_executions(
        &self,
        partition: u16,
        cursor: Option<&ExecutionId>,
        limit: usize,
    ) -> Result<ListExecutionsResponse, SdkError> {
        let mut path = format!("/v1/executions?partition={partition}&limit={limit}");
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={}", encode_path_segment(c.as_str())));
        }
        decode_ok(self.exchange(Method::GET, &path, None).await?)
    }

    /// An inclusive range of an attempt's stream (`start`, `end` or `<ms>[-<seq>]` cursors).
    ///
    /// Errors: `Http`; `Api` (400 on bad cursors or a limit outside 1..=1000).
    pub async fn read_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: u32,
        from: &str,
        to: &str,
        limit: u64,
    ) -> Result<StreamPage, SdkError> {
        let path = format!(
            "/v1/executions/{}/attempts/{attempt_index}/stream?from={}&to={}&limit={limit}",
            encode_path_segment(execution_id.as_str()),
            encode_path_segment(from),
            encode_path_segment(to),
        );
        decode_ok(self.exchange(Method::GET, &path, None).await?)
    }

    /// `GET /healthz`; errors: `Http`; `Api`.
    pub async fn health(&self) -> Result<HealthResponse, SdkError> {
        decode_ok(self.exchange(Method::GET, "/healthz", None).await?)
    }

    /// Sends any request and returns the raw status and body (no status mapping); errors: `Http`.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), SdkError> {
        let answer = self.exchange(method, path, body.map(Bytes::from)).await?;
        Ok((answer.status.as_u16(), answer.body.to_vec()))
    }

    /// One request over a fresh stream, bounded by the client timeout.
    async fn exchange(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<Answer, SdkError> {
        match tokio::time::timeout(self.timeout, self.exchange_inner(method, path, body)).await {
            Ok(result) => result,
            Err(elapsed) => Err(http_error("timeout", true, elapsed)),
        }
    }

    async fn exchange_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, SdkError> {
        let stream = self
            .connector
            .connect(&self.host, self.port)
            .await
            .map_err(|e| http_error("connect", true, e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http_error("handshake", false, e))?;
        // The connection future drives the socket; it ends when the sender is dropped.
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "admin client connection ended with an error");
            }
        });
        let mut builder = Request::builder().method(method).uri(path).header(HOST, self.authority.as_str());
        if let Some(bearer) = &self.bearer {
            builder = builder.header(AUTHORIZATION, bearer.clone());
        }
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| SdkError::config(CTX, Some("request"), e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| http_error("send", false, e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| SdkError::Http { context: "read body".into(), retryable: false, source: e })?
            .to_bytes();
        drop(sender);
        driver.abort();
        Ok(Answer { status, body })
    }
}

fn http_error(context: &str, retryable: bool, e: impl std::error::Error + Send + Sync + 'static) -> SdkError {
    SdkError::Http { context: context.to_owned(), retryable, source: Box::new(e) }
}

fn json_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, SdkError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| SdkError::config(CTX, Some("request body"), e.to_string()))
}

/// Decodes a 2xx JSON body; non-2xx → `Api`.
fn decode_ok<T: DeserializeOwned>(answer: Answer) -> Result<T, SdkError> {
    if !answer.status.is_success() {
        return Err(api_error(answer));
    }
    serde_json::from_slice(&answer.body).map_err(|e| SdkError::Api {
        status: answer.status.as_u16(),
        code: Some("malformed_response".into()),
        message: e.to_string(),
        retryable: Some(false),
        raw_body: String::from_utf8_lossy(&answer.body).into_owned(),
    })
}

/// A non-2xx answer as `Api`, using the JSON error body when there is one.
fn api_error(answer: Answer) -> SdkError {
    let raw_body = String::from_utf8_lossy(&answer.body).into_owned();
    let parsed = serde_json::from_slice::<ErrorBody>(&answer.body).ok();
    SdkError::Api {
        status: answer.status.as_u16(),
        code: parsed.as_ref().and_then(|b| b.kind.clone()),
        message: parsed.as_ref().map_or_else(|| raw_body.clone(), |b| b.error.clone()),
        retryable: parsed.and_then(|b| b.retryable),
        raw_body,
    }
}

fn check_lane(lane: &str) -> Result<(), SdkError> {
    ff_core::LaneId::try_new(lane)
        .map(|_| ())
        .map_err(|e| SdkError::config(CTX, Some("lane_id"), e.to_string()))
}

fn check_grant_ttl(ttl_ms: u64) -> Result<(), SdkError> {
    if ttl_ms == 0 || ttl_ms > GRANT_TTL_MS_MAX {
        return Err(SdkError::config(
            CTX,
            Some("grant_ttl_ms"),
            format!("must be in 1..={GRANT_TTL_MS_MAX}"),
        ));
    }
    Ok(())
}

/// Whether `s` is non-empty, even-length hex.
pub fn is_even_hex(s: &str) -> bool {
    !s.is_empty() && s.len() & 1 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
