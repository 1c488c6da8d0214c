//! The raw-Valkey baseline: the same scenario shapes as plain lists, pushed
//! with `RPUSH`/`LPUSH` and popped with `BLMPOP … LEFT COUNT 1`, through
//! ferriskey with no engine code. Completion is an `INCR`. Each worker owns
//! its connection, because a blocking pop holds a multiplexed connection.

use std::sync::Arc;
use std::time::Instant;

use ferriskey::{Client, Value};

use super::capability_routed::{CapMode, task_caps, worker_caps};
use super::{Progress, RunOptions, WorkerTally, join_workers, payload};
use crate::backends::{BenchError, fresh_prefix, purge_prefix, raw_client};
use crate::report::Measured;

/// Server-side timeout of a blocking pop, in seconds (workers re-check the run between pops).
const POP_TIMEOUT_SECS: f64 = 0.2;
/// Elements per seeding `RPUSH`.
const SEED_CHUNK_LEN_MAX: usize = 500;

/// A baseline's server and key prefix.
#[derive(Debug, Clone)]
pub struct Raw {
    host: String,
    port: u16,
    prefix: String,
}

impl Raw {
    /// A baseline on a fresh prefix of `host:port`.
    pub fn new(host: &str, port: u16, scenario: &str) -> Self {
        Self { host: host.to_owned(), port, prefix: fresh_prefix(&format!("raw-{scenario}")) }
    }

    /// A key under the prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A new connection; errors: the server is unreachable.
    pub async fn client(&self) -> Result<Client, BenchError> {
        raw_client(&self.host, self.port).await
    }

    /// Deletes the baseline's keys (failures are reported, not fatal).
    pub async fn cleanup(&self) {
        if let Err(e) = purge_prefix(&self.host, self.port, &self.prefix).await {
            eprintln!("ff-bench: could not purge {}*: {e}", self.prefix);
        }
    }
}

/// Pops one element from the first non-empty key, waiting up to [`POP_TIMEOUT_SECS`].
///
/// Errors: a failed command or a reply that is neither nil nor a popped element.
pub async fn pop(client: &Client, keys: &[String]) -> Result<Option<Vec<u8>>, BenchError> {
    let mut cmd = client.cmd("BLMPOP").arg(POP_TIMEOUT_SECS).arg(keys.len());
    for k in keys {
        cmd = cmd.arg(k.as_str());
    }
    let reply: Value = cmd
        .arg("LEFT")
        .arg("COUNT")
        .arg(1u64)
        .execute()
        .await
        .map_err(|e| BenchError::context("BLMPOP", e))?;
    match reply {
        Value::Nil => Ok(None),
        other => popped_element(other).map(Some).ok_or_else(|| BenchError("BLMPOP: unexpected reply".into())),
    }
}

/// The first element of a `BLMPOP` reply (`{key: [elements]}` or `[key, [elements]]`).
fn popped_element(v: Value) -> Option<Vec<u8>> {
    let elements = match v {
        Value::Map(pairs) => pairs.into_iter().next()?.1,
        Value::Array(parts) => parts.into_iter().nth(1)?.ok()?,
        _ => return None,
    };
    let Value::Array(items) = elements else { return None };
    match items.into_iter().next()?.ok()? {
        Value::BulkString(b) => Some(b.to_vec()),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

/// `RPUSH`es `elements` to `key` in bounded chunks; errors: a failed command.
async fn seed(client: &Client, key: &str, elements: &[Vec<u8>]) -> Result<(), BenchError> {
    for chunk in elements.chunks(SEED_CHUNK_LEN_MAX) {
        let _: i64 = client.rpush(key, chunk).await.map_err(|e| BenchError::context("RPUSH", e))?;
    }
    Ok(())
}

/// Scenario 1: `tasks` payloads in one list, `workers` popping and counting.
///
/// Errors: a failed command.
pub async fn submit_claim_complete(
    raw: &Raw,
    tasks: usize,
    workers: usize,
    payload_bytes: usize,
    opts: &RunOptions,
) -> Result<Measured, BenchError> {
    let queue = raw.key("q");
    let body = payload(payload_bytes);
    seed(&raw.client().await?, &queue, &vec![body; tasks]).await?;
    let keys = Arc::new(vec![queue]);
    drain_queues(raw, tasks, (0..workers).map(|_| keys.clone()).collect(), opts, single).await
}

/// What finishing one element leads to.
struct Step {
    /// An element to push (list, element).
    follow_up: Option<(String, Vec<u8>)>,
    /// Where this element's latency sample starts, if it closes one.
    sample_from: Option<Instant>,
}

/// What a popped element leads to, given the start of the pop that found it.
type Next = fn(&Raw, &[u8], Instant) -> Step;

/// An independent element: no follow-up, one sample from its pop.
fn single(_: &Raw, _: &[u8], claim_start: Instant) -> Step {
    Step { follow_up: None, sample_from: Some(claim_start) }
}

/// Pops from `keys` per worker, `INCR`s a counter per element, and pushes the follow-up
/// `next` returns. The wall clock starts after every connection is open.
async fn drain_queues(
    raw: &Raw,
    target: usize,
    keys_per_worker: Vec<Arc<Vec<String>>>,
    opts: &RunOptions,
    next: Next,
) -> Result<Measured, BenchError> {
    let mut clients = Vec::with_capacity(keys_per_worker.len());
    for _ in 0..keys_per_worker.len() {
        clients.push(raw.client().await?);
    }
    let start = Instant::now();
    let progress = Progress::new(target as u64, start + opts.deadline);
    let mut handles = Vec::with_capacity(clients.len());
    for (client, keys) in clients.into_iter().zip(keys_per_worker) {
        let (progress, raw, done_key) = (progress.clone(), raw.clone(), raw.key("done"));
        handles.push(tokio::spawn(async move {
            let mut tally = WorkerTally::default();
            while !progress.finished() {
                let t0 = Instant::now();
                let Some(element) = pop(&client, &keys).await? else { continue };
                let step = next(&raw, &element, t0);
                if let Some((list, follow_up)) = step.follow_up {
                    let _: i64 = client
                        .lpush(list, &[follow_up])
                        .await
                        .map_err(|e| BenchError::context("LPUSH", e))?;
                }
                let _: i64 =
                    client.incr(done_key.as_str()).await.map_err(|e| BenchError::context("INCR", e))?;
                match step.sample_from {
                    Some(from) => tally.sample(from),
                    None => tally.last_done = Some(Instant::now()),
                }
                progress.record();
            }
            Ok(tally)
        }));
    }
    join_workers(start, &progress, handles).await
}

/// Scenario 2: per cycle, claim a task from a list, then the signaller pushes to the
/// task's signal list and the worker pops it (the resume). Latency: push → pop.
///
/// Errors: a failed command.
pub async fn suspend_signal_resume(
    raw: &Raw,
    cycles: usize,
    opts: &RunOptions,
) -> Result<Measured, BenchError> {
    let (worker, signaller) = (raw.client().await?, raw.client().await?);
    let queue = vec![raw.key("q")];
    let start = Instant::now();
    let deadline = start + opts.deadline;
    let mut latencies = Vec::with_capacity(cycles);
    for n in 0..cycles {
        if Instant::now() >= deadline {
            break;
        }
        let _: i64 = signaller
            .lpush(queue[0].as_str(), &[n.to_string()])
            .await
            .map_err(|e| BenchError::context("LPUSH", e))?;
        pop_one(&worker, &queue).await?;
        let signal = vec![raw.key(&format!("sig:{n}"))];
        let t0 = Instant::now();
        let _: i64 = signaller
            .lpush(signal[0].as_str(), &["go"])
            .await
            .map_err(|e| BenchError::context("LPUSH", e))?;
        pop_one(&worker, &signal).await?;
        latencies.push(t0.elapsed());
        let _: i64 = worker.incr(raw.key("done")).await.map_err(|e| BenchError::context("INCR", e))?;
    }
    let done = latencies.len();
    let notes = (done < cycles).then(|| format!("deadline reached: {done} of {cycles} cycles finished"));
    Ok(Measured { completed_ops: done as u64, wall: start.elapsed(), latencies, notes })
}

/// Pops until an element arrives; errors: a failed command.
async fn pop_one(client: &Client, keys: &[String]) -> Result<Vec<u8>, BenchError> {
    loop {
        if let Some(e) = pop(client, keys).await? {
            return Ok(e);
        }
    }
}

/// Scenario 4: each flow is a chain of `nodes` list elements; finishing one pushes the
/// next. One operation is one node; one latency sample per flow, from its first node's pop
/// to its last node's count, like the engine run.
///
/// Errors: a failed command.
pub async fn linear_flow(
    raw: &Raw,
    flows: usize,
    nodes: usize,
    workers: usize,
    opts: &RunOptions,
) -> Result<Measured, BenchError> {
    // Fix the origin before any element can be popped.
    let _ = epoch();
    let queue = raw.key("q");
    // Elements are `flow:index:len:start_us`: the chain carries its own state, so `next`
    // needs no shared map.
    let heads: Vec<Vec<u8>> = (0..flows).map(|f| format!("{f}:0:{nodes}:0").into_bytes()).collect();
    seed(&raw.client().await?, &queue, &heads).await?;
    let keys = Arc::new(vec![queue]);
    drain_queues(raw, flows * nodes, (0..workers).map(|_| keys.clone()).collect(), opts, next_node).await
}

/// The origin chain elements measure their start from.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The follow-up of a chain element, and the flow's sample when it is the last node.
fn next_node(raw: &Raw, element: &[u8], claim_start: Instant) -> Step {
    let parsed = std::str::from_utf8(element).ok().and_then(|text| {
        let mut parts = text.split(':').map(|p| p.parse::<u64>().ok());
        Some((parts.next()??, parts.next()??, parts.next()??, parts.next()??))
    });
    let Some((flow, index, len, start_us)) = parsed else {
        return Step { follow_up: None, sample_from: None };
    };
    let start = if index == 0 { claim_start } else { epoch() + std::time::Duration::from_micros(start_us) };
    if index + 1 >= len {
        return Step { follow_up: None, sample_from: Some(start) };
    }
    let start_us = u64::try_from((start - epoch()).as_micros()).unwrap_or(u64::MAX);
    let follow_up = format!("{flow}:{}:{len}:{start_us}", index + 1).into_bytes();
    Step { follow_up: Some((raw.key("q"), follow_up)), sample_from: None }
}

/// Scenario 5: one list per capability; each task goes to the list of its first required
/// capability and each worker pops from the lists of the capabilities it holds.
///
/// Errors: a failed command.
pub async fn capability_routed(
    raw: &Raw,
    mode: CapMode,
    tasks: usize,
    workers: usize,
    opts: &RunOptions,
) -> Result<Measured, BenchError> {
    let client = raw.client().await?;
    for t in 0..tasks {
        let caps = task_caps(mode, t);
        let Some(first) = caps.first() else { continue };
        let _: i64 = client
            .rpush(raw.key(&format!("cap:{first}")), &[t.to_string()])
            .await
            .map_err(|e| BenchError::context("RPUSH", e))?;
    }
    let keys: Vec<Arc<Vec<String>>> = (0..workers)
        .map(|w| Arc::new(worker_caps(mode, w).iter().map(|c| raw.key(&format!("cap:{c}"))).collect()))
        .collect();
    drain_queues(raw, tasks, keys, opts, single).await
}
