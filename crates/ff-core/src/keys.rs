//! Valkey key names (spec 01 §3, 02, 03 §1, 04), as pure string builders.
//!
//! `T` is a hash tag such as `{fp:7}`, `{b:3}` or `{q:1}`; `E` is a full execution id,
//! which itself starts with its `{fp:N}` tag, so execution keys carry the tag twice
//! (`ff:exec:{fp:7}:{fp:7}:<uuid>:core`). Valkey hashes only the first `{…}`, so every
//! key built from one tag lands in the same cluster slot and one script may touch them
//! all. Ids arrive as `&str` so this module depends on nothing else in the crate; other
//! backends key their tables the same way.

/// Pub/sub channel of flow-member completions (JSON `{execution_id, flow_id, outcome}`).
pub const DAG_COMPLETIONS_CHANNEL: &str = "ff:dag:completions";
/// Global hash of partition counts (fields as in `PartitionConfig::fields`).
pub const PARTITION_CONFIG_KEY: &str = "ff:config:partitions";
/// Global set of registered lanes.
pub const LANES_INDEX_KEY: &str = "ff:idx:lanes";

/// Debug-only check that a tag looks like `{…}`; callers pass `Partition::hash_tag()`.
fn debug_assert_tag(tag: &str) {
    debug_assert!(tag.starts_with('{') && tag.ends_with('}'), "hash tag must be wrapped in braces: {tag:?}");
}

/// Keys of one execution (§3.2) and of its attempts (§3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecKeys<'a> {
    tag: &'a str,
    eid: &'a str,
}

impl<'a> ExecKeys<'a> {
    /// Keys of execution `eid` (the full id text) on partition `tag` (`{fp:N}`).
    pub fn new(tag: &'a str, eid: &'a str) -> Self {
        debug_assert_tag(tag);
        Self { tag, eid }
    }

    /// The hash tag these keys carry.
    pub fn tag(&self) -> &'a str {
        self.tag
    }

    /// The execution id these keys belong to.
    pub fn eid(&self) -> &'a str {
        self.eid
    }

    /// `ff:exec:T:E:<suffix>`.
    fn exec(&self, suffix: &str) -> String {
        format!("ff:exec:{}:{}:{suffix}", self.tag, self.eid)
    }

    /// `ff:exec:T:E:core`, the authoritative exec_core hash.
    pub fn core(&self) -> String {
        self.exec("core")
    }

    /// `ff:exec:T:E:payload`, the input payload string.
    pub fn payload(&self) -> String {
        self.exec("payload")
    }

    /// `ff:exec:T:E:result`, the completion result string.
    pub fn result(&self) -> String {
        self.exec("result")
    }

    /// `ff:exec:T:E:policy`, the execution policy JSON as submitted.
    pub fn policy(&self) -> String {
        self.exec("policy")
    }

    /// `ff:exec:T:E:tags`, the caller tags hash.
    pub fn tags(&self) -> String {
        self.exec("tags")
    }

    /// `ff:exec:T:E:lease:current`, the current lease hash.
    pub fn lease_current(&self) -> String {
        self.exec("lease:current")
    }

    /// `ff:exec:T:E:lease:history`, the lease lifecycle event stream.
    pub fn lease_history(&self) -> String {
        self.exec("lease:history")
    }

    /// `ff:exec:T:E:claim_grant`, the single pending claim/resume/reclaim grant.
    pub fn claim_grant(&self) -> String {
        self.exec("claim_grant")
    }

    /// `ff:exec:T:E:attempts`, attempt indexes scored by creation ms.
    pub fn attempts(&self) -> String {
        self.exec("attempts")
    }

    /// `ff:exec:T:E:suspension:current`, the current suspension episode.
    pub fn suspension_current(&self) -> String {
        self.exec("suspension:current")
    }

    /// `ff:exec:T:E:suspension:current:satisfied_set`, composite satisfier tokens.
    pub fn satisfied_set(&self) -> String {
        self.exec("suspension:current:satisfied_set")
    }

    /// `ff:exec:T:E:suspension:current:satisfied_set:signals`, satisfier signal ids.
    pub fn satisfied_signals(&self) -> String {
        self.exec("suspension:current:satisfied_set:signals")
    }

    /// `ff:exec:T:E:suspension:current:member_map`, the composite member map.
    pub fn member_map(&self) -> String {
        self.exec("suspension:current:member_map")
    }

    /// `ff:exec:T:E:waitpoints`, every waitpoint id ever created for the execution.
    pub fn waitpoints(&self) -> String {
        self.exec("waitpoints")
    }

    /// `ff:exec:T:E:signals`, signal ids scored by acceptance ms.
    pub fn signals(&self) -> String {
        self.exec("signals")
    }

    /// `ff:exec:T:E:deps:meta`, dependency counters.
    pub fn deps_meta(&self) -> String {
        self.exec("deps:meta")
    }

    /// `ff:exec:T:E:dep:<edge_id>`, one inbound edge's state.
    pub fn dep(&self, edge_id: &str) -> String {
        format!("ff:exec:{}:{}:dep:{edge_id}", self.tag, self.eid)
    }

    /// `ff:exec:T:E:deps:unresolved`, unresolved edge ids.
    pub fn deps_unresolved(&self) -> String {
        self.exec("deps:unresolved")
    }

    /// `ff:exec:T:E:deps:all_edges`, every applied edge id.
    pub fn deps_all_edges(&self) -> String {
        self.exec("deps:all_edges")
    }

    /// `ff:dedup:suspend:T:E:<idem_key>`, the stored suspend outcome for an idempotency key.
    pub fn dedup_suspend(&self, idem_key: &str) -> String {
        format!("ff:dedup:suspend:{}:{}:{idem_key}", self.tag, self.eid)
    }

    /// `ff:attempt:T:E:I`, the attempt record.
    pub fn attempt(&self, attempt_index: u32) -> String {
        format!("ff:attempt:{}:{}:{attempt_index}", self.tag, self.eid)
    }

    /// `ff:attempt:T:E:I:usage`, the attempt's usage counters.
    pub fn attempt_usage(&self, attempt_index: u32) -> String {
        format!("ff:attempt:{}:{}:{attempt_index}:usage", self.tag, self.eid)
    }

    /// `ff:attempt:T:E:I:policy`, the frozen attempt policy.
    pub fn attempt_policy(&self, attempt_index: u32) -> String {
        format!("ff:attempt:{}:{}:{attempt_index}:policy", self.tag, self.eid)
    }

    /// `ff:attempt:T:E:I:summary`, the durable stream summary.
    pub fn attempt_summary(&self, attempt_index: u32) -> String {
        format!("ff:attempt:{}:{}:{attempt_index}:summary", self.tag, self.eid)
    }

    /// `ff:stream:T:E:I`, the attempt's output frames.
    pub fn stream(&self, attempt_index: u32) -> String {
        format!("ff:stream:{}:{}:{attempt_index}", self.tag, self.eid)
    }

    /// `ff:stream:T:E:I:meta`, the attempt stream's meta hash.
    pub fn stream_meta(&self, attempt_index: u32) -> String {
        format!("ff:stream:{}:{}:{attempt_index}:meta", self.tag, self.eid)
    }
}

/// Why an execution sits in a lane's blocked index (`ff:idx:T:lane:L:blocked:<reason>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockedIndex {
    /// Waiting on upstream flow edges (`blocked:dependencies`).
    Dependencies,
    /// Held by a budget hard limit (`blocked:budget`).
    Budget,
    /// Held by a quota policy (`blocked:quota`).
    Quota,
    /// No worker can take it (`blocked:route`).
    Route,
    /// Held by an operator (`blocked:operator`).
    Operator,
}

impl BlockedIndex {
    /// Every blocked index, in spec order.
    pub const ALL: [Self; 5] = [Self::Dependencies, Self::Budget, Self::Quota, Self::Route, Self::Operator];

    /// The key segment after `blocked:`, e.g. `dependencies`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dependencies => "dependencies",
            Self::Budget => "budget",
            Self::Quota => "quota",
            Self::Route => "route",
            Self::Operator => "operator",
        }
    }
}

/// One of a lane's per-partition index zsets (`ff:idx:T:lane:L:<suffix>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LaneIndex {
    /// Claimable now, scored by priority score.
    Eligible,
    /// Delayed, scored by the time it becomes eligible.
    Delayed,
    /// Leased, scored by lease expiry at acquisition.
    Active,
    /// Terminal, scored by the time it became terminal.
    Terminal,
    /// Suspended, scored by suspension timeout.
    Suspended,
    /// Blocked for the given reason.
    Blocked(BlockedIndex),
}

impl LaneIndex {
    /// Every lane index, in spec order.
    pub const ALL: [Self; 10] = [
        Self::Eligible,
        Self::Delayed,
        Self::Active,
        Self::Terminal,
        Self::Blocked(BlockedIndex::Dependencies),
        Self::Blocked(BlockedIndex::Budget),
        Self::Blocked(BlockedIndex::Quota),
        Self::Blocked(BlockedIndex::Route),
        Self::Blocked(BlockedIndex::Operator),
        Self::Suspended,
    ];

    /// The key segment after `lane:L:`, e.g. `eligible` or `blocked:route`.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Eligible => "eligible",
            Self::Delayed => "delayed",
            Self::Active => "active",
            Self::Terminal => "terminal",
            Self::Suspended => "suspended",
            Self::Blocked(BlockedIndex::Dependencies) => "blocked:dependencies",
            Self::Blocked(BlockedIndex::Budget) => "blocked:budget",
            Self::Blocked(BlockedIndex::Quota) => "blocked:quota",
            Self::Blocked(BlockedIndex::Route) => "blocked:route",
            Self::Blocked(BlockedIndex::Operator) => "blocked:operator",
        }
    }
}

/// Keys of one flow/execution partition `{fp:N}`: indexes (§3.5), waitpoints and
/// signals (§3.4), feeds and flow records (03 §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionKeys<'a> {
    tag: &'a str,
}

impl<'a> PartitionKeys<'a> {
    /// Keys of partition `tag` (`{fp:N}`).
    pub fn new(tag: &'a str) -> Self {
        debug_assert_tag(tag);
        Self { tag }
    }

    /// The hash tag these keys carry.
    pub fn tag(&self) -> &'a str {
        self.tag
    }

    /// `ff:idx:T:<suffix>`.
    fn idx(&self, suffix: &str) -> String {
        format!("ff:idx:{}:{suffix}", self.tag)
    }

    /// `ff:flow:T:<flow_id>:<suffix>`.
    fn flow(&self, flow_id: &str, suffix: &str) -> String {
        format!("ff:flow:{}:{flow_id}:{suffix}", self.tag)
    }

    /// `ff:idx:T:lane:L:<index suffix>`, any lane index.
    pub fn lane_index(&self, lane: &str, index: LaneIndex) -> String {
        format!("ff:idx:{}:lane:{lane}:{}", self.tag, index.suffix())
    }

    /// `ff:idx:T:lane:L:eligible`, claimable executions by priority score.
    pub fn lane_eligible(&self, lane: &str) -> String {
        self.lane_index(lane, LaneIndex::Eligible)
    }

    /// `ff:idx:T:lane:L:delayed`, delayed executions by eligible-at ms.
    pub fn lane_delayed(&self, lane: &str) -> String {
        self.lane_index(lane, LaneIndex::Delayed)
    }

    /// `ff:idx:T:lane:L:active`, leased executions by lease expiry at acquisition.
    pub fn lane_active(&self, lane: &str) -> String {
        self.lane_index(lane, LaneIndex::Active)
    }

    /// `ff:idx:T:lane:L:terminal`, terminal executions by terminal ms.
    pub fn lane_terminal(&self, lane: &str) -> String {
        self.lane_index(lane, LaneIndex::Terminal)
    }

    /// `ff:idx:T:lane:L:blocked:<reason>`, blocked executions of one reason.
    pub fn lane_blocked(&self, lane: &str, reason: BlockedIndex) -> String {
        self.lane_index(lane, LaneIndex::Blocked(reason))
    }

    /// `ff:idx:T:lane:L:suspended`, suspended executions by timeout.
    pub fn lane_suspended(&self, lane: &str) -> String {
        self.lane_index(lane, LaneIndex::Suspended)
    }

    /// `ff:idx:T:lease_expiry`, leased executions by current lease expiry.
    pub fn lease_expiry(&self) -> String {
        self.idx("lease_expiry")
    }

    /// `ff:idx:T:worker:W:leases`, executions leased by instance `W` on this partition.
    pub fn worker_leases(&self, worker_instance_id: &str) -> String {
        format!("ff:idx:{}:worker:{worker_instance_id}:leases", self.tag)
    }

    /// `ff:idx:T:suspension_timeout`, suspended executions by timeout.
    pub fn suspension_timeout(&self) -> String {
        self.idx("suspension_timeout")
    }

    /// `ff:idx:T:pending_waitpoint_expiry`, pending waitpoints by expiry.
    pub fn pending_waitpoint_expiry(&self) -> String {
        self.idx("pending_waitpoint_expiry")
    }

    /// `ff:idx:T:attempt_timeout`, running executions by attempt timeout.
    pub fn attempt_timeout(&self) -> String {
        self.idx("attempt_timeout")
    }

    /// `ff:idx:T:execution_deadline`, executions by absolute deadline.
    pub fn execution_deadline(&self) -> String {
        self.idx("execution_deadline")
    }

    /// `ff:idx:T:all_executions`, every execution created on the partition.
    pub fn all_executions(&self) -> String {
        self.idx("all_executions")
    }

    /// `ff:idem:T:<namespace>:<idem_key>`, the execution created under a create idempotency key.
    pub fn idem(&self, namespace: &str, idem_key: &str) -> String {
        format!("ff:idem:{}:{namespace}:{idem_key}", self.tag)
    }

    /// `ff:noop:T`, a placeholder KEYS slot on this tag; never read or written.
    pub fn noop(&self) -> String {
        format!("ff:noop:{}", self.tag)
    }

    /// `ff:wp:T:<wp_id>`, the waitpoint hash.
    pub fn waitpoint(&self, wp_id: &str) -> String {
        format!("ff:wp:{}:{wp_id}", self.tag)
    }

    /// `ff:wp:T:<wp_id>:signals`, the waitpoint's signal stream.
    pub fn waitpoint_signals(&self, wp_id: &str) -> String {
        format!("ff:wp:{}:{wp_id}:signals", self.tag)
    }

    /// `ff:wp:T:<wp_id>:condition`, the waitpoint's condition hash.
    pub fn waitpoint_condition(&self, wp_id: &str) -> String {
        format!("ff:wp:{}:{wp_id}:condition", self.tag)
    }

    /// `ff:wpkey:T:<waitpoint_key>`, a declared helper not written by v0.15.
    pub fn waitpoint_key(&self, waitpoint_key: &str) -> String {
        format!("ff:wpkey:{}:{waitpoint_key}", self.tag)
    }

    /// `ff:signal:T:<signal_id>`, the signal hash.
    pub fn signal(&self, signal_id: &str) -> String {
        format!("ff:signal:{}:{signal_id}", self.tag)
    }

    /// `ff:signal:T:<signal_id>:payload`, the signal payload string.
    pub fn signal_payload(&self, signal_id: &str) -> String {
        format!("ff:signal:{}:{signal_id}:payload", self.tag)
    }

    /// `ff:sigdedup:T:<wp_id>:<idem_key>`, the signal idempotency record.
    pub fn sigdedup(&self, wp_id: &str, idem_key: &str) -> String {
        format!("ff:sigdedup:{}:{wp_id}:{idem_key}", self.tag)
    }

    /// `ff:sec:T:waitpoint_hmac`, the waitpoint HMAC secrets (replicated on every partition).
    pub fn waitpoint_hmac_secrets(&self) -> String {
        format!("ff:sec:{}:waitpoint_hmac", self.tag)
    }

    /// `ff:part:T:signal_delivery`, the partition's signal-delivery feed.
    pub fn signal_delivery(&self) -> String {
        format!("ff:part:{}:signal_delivery", self.tag)
    }

    /// `ff:part:T:lease_history`, the partition's aggregate lease-event feed (04).
    pub fn lease_history_feed(&self) -> String {
        format!("ff:part:{}:lease_history", self.tag)
    }

    /// `ff:flow:T:<flow_id>:core`, the flow record.
    pub fn flow_core(&self, flow_id: &str) -> String {
        self.flow(flow_id, "core")
    }

    /// `ff:flow:T:<flow_id>:members`, member execution ids.
    pub fn flow_members(&self, flow_id: &str) -> String {
        self.flow(flow_id, "members")
    }

    /// `ff:flow:T:<flow_id>:tags`, namespaced flow tags.
    pub fn flow_tags(&self, flow_id: &str) -> String {
        self.flow(flow_id, "tags")
    }

    /// `ff:flow:T:<flow_id>:edge:<edge_id>`, one edge record.
    pub fn flow_edge(&self, flow_id: &str, edge_id: &str) -> String {
        format!("ff:flow:{}:{flow_id}:edge:{edge_id}", self.tag)
    }

    /// `ff:flow:T:<flow_id>:out:<upstream_eid>`, edge ids leaving a node.
    pub fn flow_out(&self, flow_id: &str, upstream_eid: &str) -> String {
        format!("ff:flow:{}:{flow_id}:out:{upstream_eid}", self.tag)
    }

    /// `ff:flow:T:<flow_id>:in:<downstream_eid>`, edge ids entering a node.
    pub fn flow_in(&self, flow_id: &str, downstream_eid: &str) -> String {
        format!("ff:flow:{}:{flow_id}:in:{downstream_eid}", self.tag)
    }

    /// `ff:flow:T:<flow_id>:edgegroup:<downstream_eid>`, a node's inbound edge-group state.
    pub fn flow_edgegroup(&self, flow_id: &str, downstream_eid: &str) -> String {
        format!("ff:flow:{}:{flow_id}:edgegroup:{downstream_eid}", self.tag)
    }

    /// `ff:flow:T:<flow_id>:summary`, the projector's flow summary.
    pub fn flow_summary(&self, flow_id: &str) -> String {
        self.flow(flow_id, "summary")
    }

    /// `ff:flow:T:<flow_id>:grant:<id>`, passed to stage-edge but never read or written.
    pub fn flow_grant(&self, flow_id: &str, mutation_id: &str) -> String {
        format!("ff:flow:{}:{flow_id}:grant:{mutation_id}", self.tag)
    }

    /// `ff:flow:T:<flow_id>:pending_cancels`, members still owed an async cancel.
    pub fn flow_pending_cancels(&self, flow_id: &str) -> String {
        self.flow(flow_id, "pending_cancels")
    }

    /// `ff:flow:T:<flow_id>:member:<eid>`, a declared helper not written by v0.15.
    pub fn flow_member(&self, flow_id: &str, eid: &str) -> String {
        format!("ff:flow:{}:{flow_id}:member:{eid}", self.tag)
    }

    /// `ff:flow:T:<flow_id>:events`, a declared helper not written by v0.15.
    pub fn flow_events(&self, flow_id: &str) -> String {
        self.flow(flow_id, "events")
    }

    /// `ff:idx:T:flow_index`, flow ids living on the partition.
    pub fn flow_index(&self) -> String {
        self.idx("flow_index")
    }

    /// `ff:idx:T:cancel_backlog`, cancelled flows by reconcile-after ms.
    pub fn cancel_backlog(&self) -> String {
        self.idx("cancel_backlog")
    }

    /// `ff:idx:T:pending_cancel_groups`, `<flow_id>|<downstream_eid>` tuples.
    pub fn pending_cancel_groups(&self) -> String {
        self.idx("pending_cancel_groups")
    }
}

/// The `pending_cancel_groups` member for one edge group: `<flow_id>|<downstream_eid>`.
pub fn pending_cancel_group_member(flow_id: &str, downstream_eid: &str) -> String {
    format!("{flow_id}|{downstream_eid}")
}

/// Keys of one budget partition `{b:M}` (03 §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetKeys<'a> {
    tag: &'a str,
}

impl<'a> BudgetKeys<'a> {
    /// Keys of budget partition `tag` (`{b:M}`).
    pub fn new(tag: &'a str) -> Self {
        debug_assert_tag(tag);
        Self { tag }
    }

    /// The hash tag these keys carry.
    pub fn tag(&self) -> &'a str {
        self.tag
    }

    /// `ff:budget:T:<budget_id>`, the budget definition hash.
    pub fn budget(&self, budget_id: &str) -> String {
        format!("ff:budget:{}:{budget_id}", self.tag)
    }

    /// `ff:budget:T:<budget_id>:limits`, `hard:<dim>` / `soft:<dim>` limits.
    pub fn budget_limits(&self, budget_id: &str) -> String {
        format!("ff:budget:{}:{budget_id}:limits", self.tag)
    }

    /// `ff:budget:T:<budget_id>:usage`, usage per dimension.
    pub fn budget_usage(&self, budget_id: &str) -> String {
        format!("ff:budget:{}:{budget_id}:usage", self.tag)
    }

    /// `ff:budget:T:<budget_id>:by_exec:<eid>`, one execution's spend ledger.
    pub fn budget_by_exec(&self, budget_id: &str, eid: &str) -> String {
        format!("ff:budget:{}:{budget_id}:by_exec:{eid}", self.tag)
    }

    /// `ff:budget:T:<budget_id>:by_exec:index`, executions with a ledger.
    pub fn budget_by_exec_index(&self, budget_id: &str) -> String {
        format!("ff:budget:{}:{budget_id}:by_exec:index", self.tag)
    }

    /// `ff:idx:T:budget_resets`, budget ids by next reset ms.
    pub fn budget_resets(&self) -> String {
        format!("ff:idx:{}:budget_resets", self.tag)
    }

    /// `ff:idx:T:budget_policies`, budget ids on the partition.
    pub fn budget_policies(&self) -> String {
        format!("ff:idx:{}:budget_policies", self.tag)
    }

    /// `ff:usagededup:T:<dedup_id>`, a usage-report idempotency marker.
    pub fn usage_dedup(&self, dedup_id: &str) -> String {
        format!("ff:usagededup:{}:{dedup_id}", self.tag)
    }
}

/// Keys of one quota partition `{q:K}` (03 §1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaKeys<'a> {
    tag: &'a str,
}

impl<'a> QuotaKeys<'a> {
    /// Keys of quota partition `tag` (`{q:K}`).
    pub fn new(tag: &'a str) -> Self {
        debug_assert_tag(tag);
        Self { tag }
    }

    /// The hash tag these keys carry.
    pub fn tag(&self) -> &'a str {
        self.tag
    }

    /// `ff:quota:T:<quota_policy_id>`, the quota policy hash.
    pub fn quota(&self, quota_policy_id: &str) -> String {
        format!("ff:quota:{}:{quota_policy_id}", self.tag)
    }

    /// `ff:quota:T:<quota_policy_id>:window:<dimension>`, admissions by admission ms.
    pub fn quota_window(&self, quota_policy_id: &str, dimension: &str) -> String {
        format!("ff:quota:{}:{quota_policy_id}:window:{dimension}", self.tag)
    }

    /// `ff:quota:T:<quota_policy_id>:concurrency`, the active-admission counter.
    pub fn quota_concurrency(&self, quota_policy_id: &str) -> String {
        format!("ff:quota:{}:{quota_policy_id}:concurrency", self.tag)
    }

    /// `ff:quota:T:<quota_policy_id>:admitted:<eid>`, one execution's admission guard.
    pub fn quota_admitted(&self, quota_policy_id: &str, eid: &str) -> String {
        format!("ff:quota:{}:{quota_policy_id}:admitted:{eid}", self.tag)
    }

    /// `ff:quota:T:<quota_policy_id>:admitted_set`, admitted execution ids.
    pub fn quota_admitted_set(&self, quota_policy_id: &str) -> String {
        format!("ff:quota:{}:{quota_policy_id}:admitted_set", self.tag)
    }

    /// `ff:idx:T:quota_policies`, quota policy ids on the partition.
    pub fn quota_policies(&self) -> String {
        format!("ff:idx:{}:quota_policies", self.tag)
    }
}

/// `ff:worker:NS:W:alive`, a registered worker instance's liveness marker.
pub fn worker_alive(namespace: &str, worker_instance_id: &str) -> String {
    format!("ff:worker:{namespace}:{worker_instance_id}:alive")
}

/// `ff:worker:NS:W:caps`, a registered worker instance's registration record.
pub fn worker_caps(namespace: &str, worker_instance_id: &str) -> String {
    format!("ff:worker:{namespace}:{worker_instance_id}:caps")
}

/// `ff:idx:NS:workers`, registered worker instance ids of a namespace.
pub fn workers_index(namespace: &str) -> String {
    format!("ff:idx:{namespace}:workers")
}

/// `ff:lane:L:config`, a declared helper not written by v0.15.
pub fn lane_config(lane: &str) -> String {
    format!("ff:lane:{lane}:config")
}

/// `ff:lane:L:counts`, a declared helper not written by v0.15.
pub fn lane_counts(lane: &str) -> String {
    format!("ff:lane:{lane}:counts")
}

/// `ff:idx:workers:cap:<k>:<v>`, a declared helper not written by v0.15.
pub fn workers_by_capability(key: &str, value: &str) -> String {
    format!("ff:idx:workers:cap:{key}:{value}")
}

/// `ff:ns:NS:executions`, a declared helper not written by v0.15.
pub fn namespace_executions(namespace: &str) -> String {
    format!("ff:ns:{namespace}:executions")
}

/// `ff:tag:NS:<k>:<v>`, a declared helper not written by v0.15.
pub fn namespace_tag(namespace: &str, key: &str, value: &str) -> String {
    format!("ff:tag:{namespace}:{key}:{value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "{fp:7}";
    const EID: &str = "{fp:7}:0b9c2f4e-5d6a-4b7c-8d9e-0f1a2b3c4d5e";

    /// Compares each built key with its expected text, naming the first mismatch.
    fn check<S: AsRef<str>>(cases: &[(String, S)]) {
        for (actual, expected) in cases {
            assert_eq!(actual.as_str(), expected.as_ref());
        }
    }

    #[test]
    fn execution_keys_carry_the_tag_twice() {
        let k = ExecKeys::new(TAG, EID);
        let e = "{fp:7}:{fp:7}:0b9c2f4e-5d6a-4b7c-8d9e-0f1a2b3c4d5e";
        check(&[
            (k.core(), format!("ff:exec:{e}:core")),
            (k.payload(), format!("ff:exec:{e}:payload")),
            (k.result(), format!("ff:exec:{e}:result")),
            (k.policy(), format!("ff:exec:{e}:policy")),
            (k.tags(), format!("ff:exec:{e}:tags")),
            (k.lease_current(), format!("ff:exec:{e}:lease:current")),
            (k.lease_history(), format!("ff:exec:{e}:lease:history")),
            (k.claim_grant(), format!("ff:exec:{e}:claim_grant")),
            (k.attempts(), format!("ff:exec:{e}:attempts")),
            (k.suspension_current(), format!("ff:exec:{e}:suspension:current")),
            (k.satisfied_set(), format!("ff:exec:{e}:suspension:current:satisfied_set")),
            (k.satisfied_signals(), format!("ff:exec:{e}:suspension:current:satisfied_set:signals")),
            (k.member_map(), format!("ff:exec:{e}:suspension:current:member_map")),
            (k.waitpoints(), format!("ff:exec:{e}:waitpoints")),
            (k.signals(), format!("ff:exec:{e}:signals")),
            (k.deps_meta(), format!("ff:exec:{e}:deps:meta")),
            (k.dep("edge-1"), format!("ff:exec:{e}:dep:edge-1")),
            (k.deps_unresolved(), format!("ff:exec:{e}:deps:unresolved")),
            (k.deps_all_edges(), format!("ff:exec:{e}:deps:all_edges")),
            (k.dedup_suspend("idem"), format!("ff:dedup:suspend:{e}:idem")),
            (k.attempt(2), format!("ff:attempt:{e}:2")),
            (k.attempt_usage(2), format!("ff:attempt:{e}:2:usage")),
            (k.attempt_policy(2), format!("ff:attempt:{e}:2:policy")),
            (k.attempt_summary(2), format!("ff:attempt:{e}:2:summary")),
            (k.stream(0), format!("ff:stream:{e}:0")),
            (k.stream_meta(0), format!("ff:stream:{e}:0:meta")),
        ]);
        assert_eq!(k.core(), "ff:exec:{fp:7}:{fp:7}:0b9c2f4e-5d6a-4b7c-8d9e-0f1a2b3c4d5e:core");
        assert_eq!((k.tag(), k.eid()), (TAG, EID));
    }

    #[test]
    fn partition_index_keys() {
        let p = PartitionKeys::new(TAG);
        check(&[
            (p.lane_eligible("default"), "ff:idx:{fp:7}:lane:default:eligible"),
            (p.lane_delayed("default"), "ff:idx:{fp:7}:lane:default:delayed"),
            (p.lane_active("default"), "ff:idx:{fp:7}:lane:default:active"),
            (p.lane_terminal("default"), "ff:idx:{fp:7}:lane:default:terminal"),
            (p.lane_suspended("default"), "ff:idx:{fp:7}:lane:default:suspended"),
            (
                p.lane_blocked("default", BlockedIndex::Dependencies),
                "ff:idx:{fp:7}:lane:default:blocked:dependencies",
            ),
            (p.lane_blocked("default", BlockedIndex::Budget), "ff:idx:{fp:7}:lane:default:blocked:budget"),
            (p.lane_blocked("default", BlockedIndex::Quota), "ff:idx:{fp:7}:lane:default:blocked:quota"),
            (p.lane_blocked("default", BlockedIndex::Route), "ff:idx:{fp:7}:lane:default:blocked:route"),
            (
                p.lane_blocked("default", BlockedIndex::Operator),
                "ff:idx:{fp:7}:lane:default:blocked:operator",
            ),
            (p.lease_expiry(), "ff:idx:{fp:7}:lease_expiry"),
            (p.worker_leases("w1"), "ff:idx:{fp:7}:worker:w1:leases"),
            (p.suspension_timeout(), "ff:idx:{fp:7}:suspension_timeout"),
            (p.pending_waitpoint_expiry(), "ff:idx:{fp:7}:pending_waitpoint_expiry"),
            (p.attempt_timeout(), "ff:idx:{fp:7}:attempt_timeout"),
            (p.execution_deadline(), "ff:idx:{fp:7}:execution_deadline"),
            (p.all_executions(), "ff:idx:{fp:7}:all_executions"),
            (p.idem("ns", "k1"), "ff:idem:{fp:7}:ns:k1"),
            (p.noop(), "ff:noop:{fp:7}"),
        ]);
    }

    #[test]
    fn lane_index_suffixes_are_distinct_and_match_blocked_names() {
        let p = PartitionKeys::new(TAG);
        let mut unique: Vec<String> = LaneIndex::ALL.iter().map(|&i| p.lane_index("l", i)).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), LaneIndex::ALL.len());
        for reason in BlockedIndex::ALL {
            assert_eq!(LaneIndex::Blocked(reason).suffix(), format!("blocked:{}", reason.as_str()));
        }
    }

    #[test]
    fn waitpoint_signal_and_feed_keys() {
        let p = PartitionKeys::new(TAG);
        check(&[
            (p.waitpoint("wp1"), "ff:wp:{fp:7}:wp1"),
            (p.waitpoint_signals("wp1"), "ff:wp:{fp:7}:wp1:signals"),
            (p.waitpoint_condition("wp1"), "ff:wp:{fp:7}:wp1:condition"),
            (p.waitpoint_key("key1"), "ff:wpkey:{fp:7}:key1"),
            (p.signal("s1"), "ff:signal:{fp:7}:s1"),
            (p.signal_payload("s1"), "ff:signal:{fp:7}:s1:payload"),
            (p.sigdedup("wp1", "k"), "ff:sigdedup:{fp:7}:wp1:k"),
            (p.waitpoint_hmac_secrets(), "ff:sec:{fp:7}:waitpoint_hmac"),
            (p.signal_delivery(), "ff:part:{fp:7}:signal_delivery"),
            (p.lease_history_feed(), "ff:part:{fp:7}:lease_history"),
        ]);
    }

    #[test]
    fn flow_keys() {
        let p = PartitionKeys::new(TAG);
        let f = "f1";
        check(&[
            (p.flow_core(f), "ff:flow:{fp:7}:f1:core"),
            (p.flow_members(f), "ff:flow:{fp:7}:f1:members"),
            (p.flow_tags(f), "ff:flow:{fp:7}:f1:tags"),
            (p.flow_edge(f, "e1"), "ff:flow:{fp:7}:f1:edge:e1"),
            (p.flow_out(f, "x"), "ff:flow:{fp:7}:f1:out:x"),
            (p.flow_in(f, "y"), "ff:flow:{fp:7}:f1:in:y"),
            (p.flow_edgegroup(f, "y"), "ff:flow:{fp:7}:f1:edgegroup:y"),
            (p.flow_summary(f), "ff:flow:{fp:7}:f1:summary"),
            (p.flow_grant(f, "m1"), "ff:flow:{fp:7}:f1:grant:m1"),
            (p.flow_pending_cancels(f), "ff:flow:{fp:7}:f1:pending_cancels"),
            (p.flow_member(f, "x"), "ff:flow:{fp:7}:f1:member:x"),
            (p.flow_events(f), "ff:flow:{fp:7}:f1:events"),
            (p.flow_index(), "ff:idx:{fp:7}:flow_index"),
            (p.cancel_backlog(), "ff:idx:{fp:7}:cancel_backlog"),
            (p.pending_cancel_groups(), "ff:idx:{fp:7}:pending_cancel_groups"),
            (pending_cancel_group_member(f, "y"), "f1|y"),
        ]);
    }

    #[test]
    fn budget_and_quota_keys() {
        let b = BudgetKeys::new("{b:3}");
        let q = QuotaKeys::new("{q:1}");
        check(&[
            (b.budget("b1"), "ff:budget:{b:3}:b1"),
            (b.budget_limits("b1"), "ff:budget:{b:3}:b1:limits"),
            (b.budget_usage("b1"), "ff:budget:{b:3}:b1:usage"),
            (
                b.budget_by_exec("b1", EID),
                "ff:budget:{b:3}:b1:by_exec:{fp:7}:0b9c2f4e-5d6a-4b7c-8d9e-0f1a2b3c4d5e",
            ),
            (b.budget_by_exec_index("b1"), "ff:budget:{b:3}:b1:by_exec:index"),
            (b.budget_resets(), "ff:idx:{b:3}:budget_resets"),
            (b.budget_policies(), "ff:idx:{b:3}:budget_policies"),
            (b.usage_dedup("d1"), "ff:usagededup:{b:3}:d1"),
            (q.quota("q1"), "ff:quota:{q:1}:q1"),
            (q.quota_window("q1", "requests"), "ff:quota:{q:1}:q1:window:requests"),
            (q.quota_concurrency("q1"), "ff:quota:{q:1}:q1:concurrency"),
            (q.quota_admitted("q1", "x"), "ff:quota:{q:1}:q1:admitted:x"),
            (q.quota_admitted_set("q1"), "ff:quota:{q:1}:q1:admitted_set"),
            (q.quota_policies(), "ff:idx:{q:1}:quota_policies"),
        ]);
    }

    #[test]
    fn global_keys() {
        check(&[
            (PARTITION_CONFIG_KEY.to_owned(), "ff:config:partitions"),
            (LANES_INDEX_KEY.to_owned(), "ff:idx:lanes"),
            (DAG_COMPLETIONS_CHANNEL.to_owned(), "ff:dag:completions"),
            (worker_alive("ns", "i1"), "ff:worker:ns:i1:alive"),
            (worker_caps("ns", "i1"), "ff:worker:ns:i1:caps"),
            (workers_index("ns"), "ff:idx:ns:workers"),
            (lane_config("default"), "ff:lane:default:config"),
            (lane_counts("default"), "ff:lane:default:counts"),
            (workers_by_capability("gpu", "a100"), "ff:idx:workers:cap:gpu:a100"),
            (namespace_executions("ns"), "ff:ns:ns:executions"),
            (namespace_tag("ns", "team", "x"), "ff:tag:ns:team:x"),
        ]);
    }
}
