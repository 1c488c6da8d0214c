//! Scenario 4: linear 10-node flows. Every flow is a chain `n0 → n1 → … → n9`
//! built (members added, edges staged and applied) before the clock starts;
//! workers then claim and complete whatever is eligible, and each completion's
//! cascade makes the next node eligible. One operation is one node; the
//! latency is per flow, from its first node's claim to its last completion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ff_core::contracts::CreateExecutionArgs;
use ff_core::flow::{CreateFlowArgs, StageEdgeArgs};
use ff_core::{ContractFamily, EdgeId, EngineBackend, ExecutionId, FlowId, LaneId, Namespace};
use uuid::Uuid;

use super::{NAMESPACE, Progress, RunOptions, WorkerTally, run_tag, worker};
use crate::backends::{BenchError, Opened};
use crate::report::Measured;

/// Scenario name in reports.
pub const SCENARIO: &str = "linear_flow";
/// Flows at scale 1.
pub const FLOWS: usize = 100;
/// Nodes per flow.
pub const NODES: usize = 10;
/// Workers (not scaled).
pub const WORKERS: usize = 16;

/// Why the scenario cannot run on a backend, if it cannot.
pub fn unsupported(opened: &Opened) -> Option<String> {
    let caps = opened.backend.capabilities();
    (!caps.has(ContractFamily::Flows))
        .then(|| format!("the {} backend does not claim the flows family", caps.identity.family))
}

/// The `config` object of the report.
pub fn config(flows: usize) -> serde_json::Value {
    serde_json::json!({ "flows": flows, "nodes_per_flow": NODES, "workers": WORKERS })
}

/// Where each member sits: execution id text → (flow index, node index).
type Members = HashMap<String, (usize, usize)>;

/// First claim start and last completion of each flow.
type Spans = Mutex<Vec<(Option<Instant>, Option<Instant>)>>;

/// Builds `flows` chains, then drains them with [`WORKERS`] workers.
///
/// Errors: a failed flow contract, claim or completion.
pub async fn engine(opened: &Opened, flows: usize, opts: &RunOptions) -> Result<Measured, BenchError> {
    let tag = run_tag();
    let mut members = Members::new();
    for f in 0..flows {
        for (node, id) in build_chain(opened.backend.as_ref(), tag, f).await?.into_iter().enumerate() {
            members.insert(id.as_str().to_owned(), (f, node));
        }
    }
    let members = Arc::new(members);
    let spans: Arc<Spans> = Arc::new(Mutex::new(vec![(None, None); flows]));
    let connections = opened.connections(WORKERS).await?;
    let start = Instant::now();
    let progress = Progress::new((flows * NODES) as u64, start + opts.deadline);
    let mut handles = Vec::with_capacity(WORKERS);
    for (index, backend) in connections.into_iter().enumerate() {
        let (progress, members, spans, poll) =
            (progress.clone(), members.clone(), spans.clone(), opts.poll_interval);
        handles.push(tokio::spawn(async move {
            let worker = worker(backend, index, Vec::new())?;
            let mut tally = WorkerTally::default();
            while !progress.finished() {
                let t0 = Instant::now();
                let Some(task) =
                    worker.claim_next().await.map_err(|e| BenchError::context("claim_next", e))?
                else {
                    tokio::time::sleep(poll).await;
                    continue;
                };
                let place = members.get(task.execution_id().as_str()).copied();
                task.complete(None).await.map_err(|e| BenchError::context("complete", e))?;
                tally.last_done = Some(Instant::now());
                if let Some((flow, node)) = place {
                    record_span(&spans, flow, node, t0);
                }
                progress.record();
            }
            Ok(tally)
        }));
    }
    let mut measured = super::join_workers(start, &progress, handles).await?;
    measured.latencies = flow_latencies(&spans);
    Ok(measured)
}

/// Creates one flow with [`NODES`] members chained by applied edges; returns the members in order.
async fn build_chain(b: &dyn EngineBackend, tag: u64, f: usize) -> Result<Vec<ExecutionId>, BenchError> {
    let ctx = |what: &'static str| {
        move |e: ff_core::EngineError| BenchError::context(format!("flow {f}: {what}"), e)
    };
    let flow_id = FlowId::from_uuid(Uuid::from_u64_pair(tag, f as u64));
    let args = CreateFlowArgs { flow_id, flow_kind: "chain".into(), namespace: Namespace::new(NAMESPACE) };
    b.create_flow(args).await.map_err(ctx("create_flow"))?;
    let cfg = b.partition_config();
    let mut ids = Vec::with_capacity(NODES);
    for node in 0..NODES {
        let id = ExecutionId::for_flow(
            &flow_id,
            &cfg,
            Uuid::from_u64_pair(tag ^ 0x5eed, (f * NODES + node) as u64),
        );
        let args = CreateExecutionArgs::new(id.clone(), NAMESPACE, LaneId::new(super::LANE), "node");
        b.create_execution(args).await.map_err(ctx("create member"))?;
        b.add_execution_to_flow(&flow_id, &id).await.map_err(ctx("add member"))?;
        ids.push(id);
    }
    let snapshot = b.describe_flow(&flow_id).await.map_err(ctx("describe_flow"))?;
    let mut revision =
        snapshot.map(|s| s.graph_revision).ok_or_else(|| BenchError(format!("flow {f} vanished")))?;
    for (node, pair) in ids.windows(2).enumerate() {
        let edge_id = EdgeId::from_uuid(Uuid::from_u64_pair(tag ^ 0xed6e, (f * NODES + node) as u64));
        let args = StageEdgeArgs {
            flow_id,
            edge_id,
            upstream_execution_id: pair[0].clone(),
            downstream_execution_id: pair[1].clone(),
            dependency_kind: None,
            data_passing_ref: None,
            expected_graph_revision: revision,
        };
        revision = b.stage_dependency_edge(args).await.map_err(ctx("stage edge"))?.1;
        b.apply_dependency_to_child(&flow_id, &edge_id).await.map_err(ctx("apply edge"))?;
    }
    Ok(ids)
}

/// Notes a node's claim start (first node) or completion (last node).
fn record_span(spans: &Spans, flow: usize, node: usize, claim_start: Instant) {
    let Ok(mut spans) = spans.lock() else { return };
    let Some(span) = spans.get_mut(flow) else { return };
    if node == 0 {
        span.0 = Some(claim_start);
    }
    if node + 1 == NODES {
        span.1 = Some(Instant::now());
    }
}

/// The end-to-end time of every finished flow.
fn flow_latencies(spans: &Spans) -> Vec<Duration> {
    let Ok(spans) = spans.lock() else { return Vec::new() };
    spans.iter().filter_map(|s| Some(s.1? - s.0?)).collect()
}
