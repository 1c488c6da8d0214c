//! The flows family over `lua/flow.lua` (spec 03 §2).
//!
//! A flow lives in its `{fp:N}` slot (`ff_core::partition::flow_partition`) with
//! its members (the client refuses a member of another partition, as the
//! engine does), so every flow contract, and the completion cascade inside a
//! member's terminal transition, is one FCALL on one slot.

use ff_core::contracts::is_strict_tag_key;
use ff_core::flow::*;
use ff_core::partition::flow_partition;
use ff_core::state::TerminalOutcome;
use ff_core::{EdgeId, EngineError, ExecutionId, FlowId, Namespace};

use crate::wire::{self, num, protocol, slot};
use crate::{ValkeyBackend, arg};

/// Outbox events one read of the completion feed takes from a partition.
const RELAY_EVENTS_PER_PARTITION_MAX: usize = 1_000;
/// Outbox events one relay call carries (the rest wait for the next read).
const RELAY_EVENTS_PER_CALL_MAX: usize = 10_000;

/// Largest cancel grace period, in ms (2^53 − 1).
const CANCEL_GRACE_MS_MAX: u64 = (1 << 53) - 1;

fn exec_id(s: &str) -> Result<ExecutionId, EngineError> {
    ExecutionId::parse(s).map_err(|e| protocol(format!("execution id {s:?}: {e}")))
}

fn policy_args(p: &EdgeDependencyPolicy) -> [Vec<u8>; 3] {
    let on = |o: &OnSatisfied| match o {
        OnSatisfied::CancelRemaining => "cancel_remaining",
        OnSatisfied::LetRun => "let_run",
    };
    match p {
        EdgeDependencyPolicy::AllOf => [arg("all_of"), arg(0), Vec::new()],
        EdgeDependencyPolicy::AnyOf { on_satisfied } => [arg("any_of"), arg(1), arg(on(on_satisfied))],
        EdgeDependencyPolicy::Quorum { k, on_satisfied } => [arg("quorum"), arg(k), arg(on(on_satisfied))],
    }
}

fn policy_of(kind: &str, k: &str, on: &str) -> Result<EdgeDependencyPolicy, EngineError> {
    let on_satisfied = match on {
        "cancel_remaining" => OnSatisfied::CancelRemaining,
        _ => OnSatisfied::LetRun,
    };
    match kind {
        "all_of" => Ok(EdgeDependencyPolicy::AllOf),
        "any_of" => Ok(EdgeDependencyPolicy::AnyOf { on_satisfied }),
        "quorum" => Ok(EdgeDependencyPolicy::Quorum {
            k: k.parse().map_err(|_| protocol(format!("quorum k {k:?}")))?,
            on_satisfied,
        }),
        other => Err(protocol(format!("edge group policy {other:?}"))),
    }
}

fn group_state(s: &str) -> Result<GroupState, EngineError> {
    match s {
        "pending" => Ok(GroupState::Pending),
        "satisfied" => Ok(GroupState::Satisfied),
        "impossible" => Ok(GroupState::Impossible),
        other => Err(protocol(format!("group state {other:?}"))),
    }
}

impl ValkeyBackend {
    /// Calls a flow function (KEYS[1] = the flow key, on the flow's slot).
    async fn flow_call(
        &self,
        function: &str,
        flow_id: &FlowId,
        extra: Vec<Vec<u8>>,
        read_only: bool,
    ) -> Result<ferriskey::Value, EngineError> {
        let tag = flow_partition(&flow_id.uuid(), &self.cfg.partitions).hash_tag();
        let key = format!("{}ff:flow:{tag}:{flow_id}:core", self.cfg.key_prefix);
        let mut args = vec![
            self.now_arg(),
            self.cfg.key_prefix.clone().into_bytes(),
            tag.into_bytes(),
            flow_id.to_string().into_bytes(),
        ];
        args.extend(extra);
        args.push(self.version.clone().into_bytes());
        let keys = [key];
        let r = if read_only {
            self.client.fcall_readonly(function, &keys, &args).await
        } else {
            self.client.fcall(function, &keys, &args).await
        };
        r.map_err(wire::engine_error)
    }

    async fn flow_texts(
        &self,
        function: &str,
        flow_id: &FlowId,
        extra: Vec<Vec<u8>>,
    ) -> Result<Vec<String>, EngineError> {
        wire::texts(self.flow_call(function, flow_id, extra, false).await?)
    }

    /// `create_flow` (spec 03 §2.3.1).
    pub(crate) async fn create_flow_call(&self, a: CreateFlowArgs) -> Result<CreateFlowOutcome, EngineError> {
        if a.flow_kind.len() > ff_core::contracts::NAME_BYTES_MAX
            || a.namespace.as_str().len() > ff_core::contracts::NAME_BYTES_MAX
        {
            return Err(EngineError::invalid_input("flow_kind/namespace: longer than 256 bytes"));
        }
        let r =
            self.flow_texts("ff_create_flow", &a.flow_id, vec![arg(&a.flow_kind), arg(&a.namespace)]).await?;
        match slot(&r, 0)? {
            "created" => Ok(CreateFlowOutcome::Created { flow_id: a.flow_id }),
            "already_satisfied" => Ok(CreateFlowOutcome::AlreadySatisfied { flow_id: a.flow_id }),
            other => Err(protocol(format!("create flow reply {other:?}"))),
        }
    }

    /// `add_execution_to_flow` (spec 03 §2.3.2).
    pub(crate) async fn add_to_flow_call(
        &self,
        f: &FlowId,
        e: &ExecutionId,
    ) -> Result<AddToFlowOutcome, EngineError> {
        let fp = flow_partition(&f.uuid(), &self.cfg.partitions).index;
        if e.partition_index() != fp {
            return Err(EngineError::invalid_input(format!(
                "add_execution_to_flow: execution_id's partition {} != flow_id's partition {fp}",
                e.partition_index()
            )));
        }
        let r = self.flow_texts("ff_add_execution_to_flow", f, vec![arg(e.as_str())]).await?;
        match slot(&r, 0)? {
            "added" => Ok(AddToFlowOutcome::Added { execution_id: e.clone(), new_node_count: num(&r, 1)? }),
            "already_member" => {
                Ok(AddToFlowOutcome::AlreadyMember { execution_id: e.clone(), node_count: num(&r, 1)? })
            }
            other => Err(protocol(format!("add to flow reply {other:?}"))),
        }
    }

    /// `stage_dependency_edge` (spec 03 §2.3.5).
    pub(crate) async fn stage_edge_call(&self, a: StageEdgeArgs) -> Result<(EdgeId, u64), EngineError> {
        let extra = vec![
            arg(a.edge_id),
            arg(a.upstream_execution_id.as_str()),
            arg(a.downstream_execution_id.as_str()),
            arg(a.dependency_kind.as_deref().unwrap_or_default()),
            arg(a.data_passing_ref.as_deref().unwrap_or_default()),
            arg(a.expected_graph_revision),
        ];
        let r = self.flow_texts("ff_stage_dependency_edge", &a.flow_id, extra).await?;
        Ok((a.edge_id, num(&r, 1)?))
    }

    /// `set_edge_group_policy` (spec 03 §2.3.6).
    pub(crate) async fn set_group_policy_call(
        &self,
        f: &FlowId,
        downstream: &ExecutionId,
        policy: EdgeDependencyPolicy,
    ) -> Result<bool, EngineError> {
        policy.validate()?;
        let mut extra = vec![arg(downstream.as_str())];
        extra.extend(policy_args(&policy));
        let r = self.flow_texts("ff_set_edge_group_policy", f, extra).await?;
        Ok(slot(&r, 0)? == "1")
    }

    /// `apply_dependency_to_child` (spec 03 §2.3.7).
    pub(crate) async fn apply_dependency_call(
        &self,
        f: &FlowId,
        edge: &EdgeId,
    ) -> Result<Option<u64>, EngineError> {
        let r = self.flow_texts("ff_apply_dependency_to_child", f, vec![arg(edge)]).await?;
        if r.is_empty() { Ok(None) } else { num(&r, 0).map(Some) }
    }

    /// `resolve_dependency` (spec 03 §2.3.8).
    pub(crate) async fn resolve_dependency_call(
        &self,
        f: &FlowId,
        edge: &EdgeId,
        outcome: TerminalOutcome,
    ) -> Result<ResolveDependencyOutcome, EngineError> {
        let r = self.flow_texts("ff_resolve_dependency", f, vec![arg(edge), arg(outcome.as_str())]).await?;
        match slot(&r, 0)? {
            "satisfied" => Ok(ResolveDependencyOutcome::Satisfied { data_injected: slot(&r, 1)? == "1" }),
            "impossible" => Ok(ResolveDependencyOutcome::Impossible { child_skipped: slot(&r, 1)? == "1" }),
            "pending" => Ok(ResolveDependencyOutcome::Pending),
            "already_fired" => Ok(ResolveDependencyOutcome::AlreadyFired),
            "already_resolved" => Ok(ResolveDependencyOutcome::AlreadyResolved),
            other => Err(protocol(format!("resolve reply {other:?}"))),
        }
    }

    /// `cancel_flow_header` (spec 03 §2.3.3).
    pub(crate) async fn cancel_flow_header_call(
        &self,
        f: &FlowId,
        reason: &str,
        policy: CancelFlowPolicy,
        grace_ms: u64,
    ) -> Result<CancelFlowHeader, EngineError> {
        if grace_ms > CANCEL_GRACE_MS_MAX {
            return Err(EngineError::validation(ff_core::error::ValidationKind::InvalidGraceMs, ""));
        }
        let extra = vec![arg(reason), arg(policy.as_str()), arg(grace_ms)];
        let r = self.flow_texts("ff_cancel_flow_header", f, extra).await?;
        let members = r.iter().skip(3).map(|m| exec_id(m)).collect::<Result<Vec<_>, _>>()?;
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        match slot(&r, 0)? {
            "cancelled" => Ok(CancelFlowHeader::Cancelled {
                cancellation_policy: slot(&r, 1)?.to_owned(),
                member_execution_ids: members,
            }),
            "already_terminal" => Ok(CancelFlowHeader::AlreadyTerminal {
                stored_cancellation_policy: opt(slot(&r, 1)?),
                stored_cancel_reason: opt(slot(&r, 2)?),
                member_execution_ids: members,
            }),
            other => Err(protocol(format!("cancel flow reply {other:?}"))),
        }
    }

    /// `ack_cancel_member` (spec 03 §2.3.4).
    pub(crate) async fn ack_cancel_call(&self, f: &FlowId, e: &ExecutionId) -> Result<(), EngineError> {
        self.flow_texts("ff_ack_cancel_member", f, vec![arg(e.as_str())]).await?;
        Ok(())
    }

    /// `set_flow_tags` with the strict key rule (spec 03 §2.7).
    pub(crate) async fn set_flow_tags_call(
        &self,
        f: &FlowId,
        tags: Vec<(String, String)>,
    ) -> Result<usize, EngineError> {
        if tags.is_empty() {
            return Err(EngineError::invalid_input("tags must be non-empty even-length key/value pairs"));
        }
        if let Some((k, _)) = tags.iter().find(|(k, _)| !is_strict_tag_key(k)) {
            return Err(EngineError::invalid_input(format!("invalid tag key: {k}")));
        }
        let mut extra = vec![arg(tags.len())];
        for (k, v) in &tags {
            extra.extend([arg(k), arg(v)]);
        }
        let r = self.flow_texts("ff_set_flow_tags", f, extra).await?;
        num(&r, 0)
    }

    /// `describe_flow` (spec 03 §2.8).
    pub(crate) async fn describe_flow_call(&self, f: &FlowId) -> Result<Option<FlowSnapshot>, EngineError> {
        let mut parts =
            wire::array(self.flow_call("ff_describe_flow", f, Vec::new(), true).await?)?.into_iter();
        let (Some(header), Some(tags), Some(groups), Some(states)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let h = wire::texts(header)?;
        let opt = |i: usize| -> Result<Option<String>, EngineError> {
            Ok((!slot(&h, i)?.is_empty()).then(|| slot(&h, i).unwrap_or_default().to_owned()))
        };
        let mut edge_groups = Vec::new();
        for g in wire::array(groups)? {
            let g = wire::texts(g)?;
            let (n, ok, failed, skipped): (u64, u64, u64, u64) =
                (num(&g, 4)?, num(&g, 5)?, num(&g, 6)?, num(&g, 7)?);
            edge_groups.push(EdgeGroupSnapshot {
                downstream_execution_id: exec_id(slot(&g, 0)?)?,
                policy: policy_of(slot(&g, 1)?, slot(&g, 2)?, slot(&g, 3)?)?,
                total_deps: n,
                satisfied_count: ok,
                failed_count: failed,
                skipped_count: skipped,
                running_count: n.saturating_sub(ok + failed + skipped),
                group_state: group_state(slot(&g, 8)?)?,
            });
        }
        let states = wire::texts(states)?;
        Ok(Some(FlowSnapshot {
            flow_id: *f,
            flow_kind: slot(&h, 0)?.to_owned(),
            namespace: Namespace::new(slot(&h, 1)?),
            public_flow_state: slot(&h, 2)?.to_owned(),
            graph_revision: num(&h, 3)?,
            node_count: num(&h, 4)?,
            edge_count: num(&h, 5)?,
            created_at: num(&h, 6)?,
            last_mutation_at: num(&h, 7)?,
            cancelled_at: opt(8)?
                .map(|t| t.parse().map_err(|_| protocol(format!("cancelled_at {t:?}"))))
                .transpose()?,
            cancel_reason: opt(9)?,
            cancellation_policy: opt(10)?,
            tags: wire::pairs(tags)?.into_iter().collect(),
            edge_groups,
            summary: FlowSummary::derive(states.iter().map(String::as_str)),
        }))
    }

    /// `promote_blocked_to_eligible` (spec 03 §2.3.12).
    pub(crate) async fn promote_blocked_call(&self, e: &ExecutionId) -> Result<(), EngineError> {
        wire::texts(self.exec_call("ff_promote_blocked_to_eligible", e, Vec::new(), false).await?)?;
        Ok(())
    }

    /// `evaluate_flow_eligibility` (spec 03 §2.3.11).
    pub(crate) async fn flow_eligibility_call(
        &self,
        e: &ExecutionId,
    ) -> Result<FlowEligibility, EngineError> {
        let r = wire::texts(self.exec_call("ff_evaluate_flow_eligibility", e, Vec::new(), true).await?)?;
        Ok(match slot(&r, 0)? {
            "not_found" => FlowEligibility::NotFound,
            "not_runnable" => FlowEligibility::NotRunnable,
            "owned" => FlowEligibility::Owned,
            "terminal" => FlowEligibility::Terminal,
            "impossible" => FlowEligibility::Impossible,
            "blocked_by_dependencies" => FlowEligibility::BlockedByDependencies,
            "eligible" => FlowEligibility::Eligible,
            other => return Err(protocol(format!("flow eligibility {other:?}"))),
        })
    }

    /// `read_completions`: completion events after `after`, oldest first. Relays the
    /// partitions' outboxes into the feed first (see `lua/flow.lua`): one read of the
    /// feed's marks, one pipelined drain of every partition, one relay call that
    /// appends what is new and replies the page.
    pub(crate) async fn read_completions_call(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ff_core::contracts::CompletionEvent>, EngineError> {
        let limit = limit.clamp(1, ff_core::contracts::LIST_LIMIT_MAX);
        let feed = format!("{}ff:completions:{{feed}}", self.cfg.key_prefix);
        let marks = self.completion_marks(&feed).await?;
        let per_partition = limit.min(RELAY_EVENTS_PER_PARTITION_MAX);
        let drained = self.drain_outboxes(&marks, per_partition).await?;
        let mut args = vec![arg(after), arg(limit)];
        let mut relayed = 0;
        for (partition, events) in drained {
            if events.is_empty() || relayed >= RELAY_EVENTS_PER_CALL_MAX {
                continue;
            }
            relayed += events.len();
            args.push(arg(partition));
            args.push(arg(events.len()));
            args.extend(events);
        }
        args.push(self.version.clone().into_bytes());
        let v = self
            .client
            .fcall::<ferriskey::Value>("ff_relay_completions", &[feed], &args)
            .await
            .map_err(wire::engine_error)?;
        let mut out = Vec::new();
        for raw in wire::texts(v)? {
            let e: serde_json::Value =
                serde_json::from_str(&raw).map_err(|e| protocol(format!("completion event: {e}")))?;
            let text = |f: &str| e.get(f).and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
            let (id_text, ts_text) = (text("event_id"), text("ts"));
            out.push(ff_core::contracts::CompletionEvent {
                event_id: id_text
                    .parse()
                    .map_err(|_| protocol(format!("completion event_id {id_text:?}")))?,
                execution_id: exec_id(&text("execution_id"))?,
                flow_id: text("flow_id"),
                outcome: text("outcome"),
                produced_at_ms: ts_text
                    .parse()
                    .map_err(|_| protocol(format!("completion ts {ts_text:?}")))?,
            });
        }
        Ok(out)
    }

    /// The feed's relayed-through outbox seq per partition (absent = 0).
    async fn completion_marks(&self, feed: &str) -> Result<Vec<u64>, EngineError> {
        let v = self
            .client
            .fcall_readonly::<ferriskey::Value>("ff_completion_marks", &[feed], &[self.version.as_str()])
            .await
            .map_err(wire::engine_error)?;
        let mut marks = vec![0; usize::from(self.cfg.partitions.num_flow_partitions)];
        for (p, seq) in wire::pairs(v)? {
            let p: usize = p.parse().map_err(|_| protocol(format!("completion mark partition {p:?}")))?;
            let seq: u64 = seq.parse().map_err(|_| protocol(format!("completion mark seq {seq:?}")))?;
            if let Some(m) = marks.get_mut(p) {
                *m = seq;
            }
        }
        Ok(marks)
    }

    /// Every partition's outbox events past its mark (at most `max` each), as one
    /// pipeline (split per primary on a cluster).
    async fn drain_outboxes(
        &self,
        marks: &[u64],
        max: usize,
    ) -> Result<Vec<(u16, Vec<Vec<u8>>)>, EngineError> {
        let mut pipe = self.client.pipeline();
        let mut slots = Vec::with_capacity(marks.len());
        for (partition, through) in (0..self.cfg.partitions.num_flow_partitions).zip(marks) {
            let tag = format!("{{fp:{partition}}}");
            let args = vec![
                self.now_arg(),
                self.cfg.key_prefix.clone().into_bytes(),
                tag.into_bytes(),
                arg(through),
                arg(max),
                self.version.clone().into_bytes(),
            ];
            let keys = [self.partition_key(partition)];
            slots.push((partition, pipe.fcall::<ferriskey::Value>("ff_drain_completions", &keys, &args)));
        }
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        pipe.execute().await.map_err(wire::engine_error)?;
        let mut out = Vec::with_capacity(slots.len());
        for (partition, slot) in slots {
            let events = wire::array(slot.value().map_err(wire::engine_error)?)?;
            out.push((partition, events.into_iter().map(wire::bytes).collect::<Result<_, _>>()?));
        }
        Ok(out)
    }
}
