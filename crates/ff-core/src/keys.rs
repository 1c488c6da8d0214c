//! Valkey key names (spec 01 §3, 02 §3.4, 03), as pure string builders.
//!
//! `T` is a hash tag such as `{fp:7}`; `E` is a full execution id (which itself
//! starts with the tag, so execution keys carry the tag twice).

/// Pub/sub channel of flow-member completions.
pub const DAG_COMPLETIONS_CHANNEL: &str = "ff:dag:completions";
/// Global hash of partition counts.
pub const CONFIG_PARTITIONS: &str = "ff:config:partitions";
/// Global lane registry.
pub const LANES: &str = "ff:idx:lanes";

/// Keys of one execution.
#[derive(Debug, Clone, Copy)]
pub struct ExecKeys<'a> {
    tag: &'a str,
    eid: &'a str,
}

impl<'a> ExecKeys<'a> {
    /// Keys of execution `eid` on partition `tag`.
    pub fn new(tag: &'a str, eid: &'a str) -> Self {
        Self { tag, eid }
    }

    fn k(&self, suffix: &str) -> String {
        format!("ff:exec:{}:{}:{suffix}", self.tag, self.eid)
    }

    /// `exec_core` hash.
    pub fn core(&self) -> String {
        self.k("core")
    }
    /// Input payload.
    pub fn payload(&self) -> String {
        self.k("payload")
    }
    /// Result payload.
    pub fn result(&self) -> String {
        self.k("result")
    }
    /// Policy JSON.
    pub fn policy(&self) -> String {
        self.k("policy")
    }
    /// Tags hash.
    pub fn tags(&self) -> String {
        self.k("tags")
    }
    /// Current lease hash.
    pub fn lease_current(&self) -> String {
        self.k("lease:current")
    }
    /// Lease history stream.
    pub fn lease_history(&self) -> String {
        self.k("lease:history")
    }
    /// Claim grant hash.
    pub fn claim_grant(&self) -> String {
        self.k("claim_grant")
    }
    /// Attempts zset.
    pub fn attempts(&self) -> String {
        self.k("attempts")
    }
    /// Current suspension hash.
    pub fn suspension_current(&self) -> String {
        self.k("suspension:current")
    }
    /// Composite satisfier tokens.
    pub fn satisfied_set(&self) -> String {
        self.k("suspension:current:satisfied_set")
    }
    /// Composite satisfier signal ids.
    pub fn satisfied_signals(&self) -> String {
        self.k("suspension:current:satisfied_set:signals")
    }
    /// Composite member map.
    pub fn member_map(&self) -> String {
        self.k("suspension:current:member_map")
    }
    /// Every waitpoint of the execution.
    pub fn waitpoints(&self) -> String {
        self.k("waitpoints")
    }
    /// Signals zset.
    pub fn signals(&self) -> String {
        self.k("signals")
    }
    /// Dependency counters.
    pub fn deps_meta(&self) -> String {
        self.k("deps:meta")
    }
    /// One inbound edge's state.
    pub fn dep(&self, edge_id: &str) -> String {
        self.k(&format!("dep:{edge_id}"))
    }
    /// Unresolved edge ids.
    pub fn deps_unresolved(&self) -> String {
        self.k("deps:unresolved")
    }
    /// Every applied edge id.
    pub fn deps_all_edges(&self) -> String {
        self.k("deps:all_edges")
    }
    /// Stored suspend outcome for an idempotency key.
    pub fn dedup_suspend(&self, idem_key: &str) -> String {
        format!("ff:dedup:suspend:{}:{}:{idem_key}", self.tag, self.eid)
    }
    /// Attempt hash.
    pub fn attempt(&self, i: u32) -> String {
        format!("ff:attempt:{}:{}:{i}", self.tag, self.eid)
    }
    /// Attempt usage hash.
    pub fn attempt_usage(&self, i: u32) -> String {
        format!("{}:usage", self.attempt(i))
    }
    /// Frozen attempt policy hash.
    pub fn attempt_policy(&self, i: u32) -> String {
        format!("{}:policy", self.attempt(i))
    }
    /// Durable stream summary hash.
    pub fn attempt_summary(&self, i: u32) -> String {
        format!("{}:summary", self.attempt(i))
    }
    /// Attempt output stream.
    pub fn stream(&self, i: u32) -> String {
        format!("ff:stream:{}:{}:{i}", self.tag, self.eid)
    }
    /// Attempt stream meta hash.
    pub fn stream_meta(&self, i: u32) -> String {
        format!("{}:meta", self.stream(i))
    }
}

/// Per-partition index and record keys.
#[derive(Debug, Clone, Copy)]
pub struct PartitionKeys<'a> {
    tag: &'a str,
}

impl<'a> PartitionKeys<'a> {
    /// Keys of partition `tag`.
    pub fn new(tag: &'a str) -> Self {
        Self { tag }
    }

    fn idx(&self, suffix: &str) -> String {
        format!("ff:idx:{}:{suffix}", self.tag)
    }

    /// A lane index: `eligible`, `delayed`, `active`, `terminal`, `suspended`,
    /// `blocked:dependencies|budget|quota|route|operator`.
    pub fn lane(&self, lane: &str, which: &str) -> String {
        self.idx(&format!("lane:{lane}:{which}"))
    }
    /// Leases by expiry.
    pub fn lease_expiry(&self) -> String {
        self.idx("lease_expiry")
    }
    /// Executions leased by an instance.
    pub fn worker_leases(&self, instance: &str) -> String {
        self.idx(&format!("worker:{instance}:leases"))
    }
    /// Suspensions by timeout.
    pub fn suspension_timeout(&self) -> String {
        self.idx("suspension_timeout")
    }
    /// Pending waitpoints by expiry.
    pub fn pending_waitpoint_expiry(&self) -> String {
        self.idx("pending_waitpoint_expiry")
    }
    /// Attempts by timeout.
    pub fn attempt_timeout(&self) -> String {
        self.idx("attempt_timeout")
    }
    /// Executions by deadline.
    pub fn execution_deadline(&self) -> String {
        self.idx("execution_deadline")
    }
    /// Every execution of the partition.
    pub fn all_executions(&self) -> String {
        self.idx("all_executions")
    }
    /// Create idempotency key.
    pub fn idem(&self, namespace: &str, key: &str) -> String {
        format!("ff:idem:{}:{namespace}:{key}", self.tag)
    }
    /// Placeholder KEYS slot on this tag.
    pub fn noop(&self) -> String {
        format!("ff:noop:{}", self.tag)
    }
    /// Waitpoint hash.
    pub fn waitpoint(&self, wp: &str) -> String {
        format!("ff:wp:{}:{wp}", self.tag)
    }
    /// Waitpoint signal stream.
    pub fn waitpoint_signals(&self, wp: &str) -> String {
        format!("{}:signals", self.waitpoint(wp))
    }
    /// Waitpoint condition hash.
    pub fn waitpoint_condition(&self, wp: &str) -> String {
        format!("{}:condition", self.waitpoint(wp))
    }
    /// Signal hash.
    pub fn signal(&self, signal_id: &str) -> String {
        format!("ff:signal:{}:{signal_id}", self.tag)
    }
    /// Signal payload.
    pub fn signal_payload(&self, signal_id: &str) -> String {
        format!("{}:payload", self.signal(signal_id))
    }
    /// Signal dedup key.
    pub fn sigdedup(&self, wp: &str, idem_key: &str) -> String {
        format!("ff:sigdedup:{}:{wp}:{idem_key}", self.tag)
    }
    /// Waitpoint HMAC secrets.
    pub fn waitpoint_hmac(&self) -> String {
        format!("ff:sec:{}:waitpoint_hmac", self.tag)
    }
    /// Signal-delivery feed.
    pub fn signal_delivery(&self) -> String {
        format!("ff:part:{}:signal_delivery", self.tag)
    }
    /// Lease-history feed.
    pub fn lease_history_feed(&self) -> String {
        format!("ff:part:{}:lease_history", self.tag)
    }
    /// Flow key with a suffix (`core`, `members`, `tags`, `summary`, `pending_cancels`,
    /// `edge:<id>`, `out:<eid>`, `in:<eid>`, `edgegroup:<eid>`, `grant:<mutation>`).
    pub fn flow(&self, flow_id: &str, suffix: &str) -> String {
        format!("ff:flow:{}:{flow_id}:{suffix}", self.tag)
    }
    /// Flow index.
    pub fn flow_index(&self) -> String {
        self.idx("flow_index")
    }
    /// Cancel backlog.
    pub fn cancel_backlog(&self) -> String {
        self.idx("cancel_backlog")
    }
    /// Pending cancel groups.
    pub fn pending_cancel_groups(&self) -> String {
        self.idx("pending_cancel_groups")
    }
}

/// Liveness key of a worker instance.
pub fn worker_alive(namespace: &str, instance: &str) -> String {
    format!("ff:worker:{namespace}:{instance}:alive")
}

/// Registration record of a worker instance.
pub fn worker_caps(namespace: &str, instance: &str) -> String {
    format!("ff:worker:{namespace}:{instance}:caps")
}

/// Instance ids registered in a namespace.
pub fn workers_index(namespace: &str) -> String {
    format!("ff:idx:{namespace}:workers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_keys_carry_the_tag_twice() {
        let eid = "{fp:7}:0b9c0000-0000-0000-0000-000000000000";
        let k = ExecKeys::new("{fp:7}", eid);
        assert_eq!(k.core(), format!("ff:exec:{{fp:7}}:{eid}:core"));
        assert_eq!(k.attempt(2), format!("ff:attempt:{{fp:7}}:{eid}:2"));
        assert_eq!(k.stream_meta(0), format!("ff:stream:{{fp:7}}:{eid}:0:meta"));
        let p = PartitionKeys::new("{fp:7}");
        assert_eq!(p.lane("default", "eligible"), "ff:idx:{fp:7}:lane:default:eligible");
        assert_eq!(p.worker_leases("w1"), "ff:idx:{fp:7}:worker:w1:leases");
        assert_eq!(worker_alive("ns", "i"), "ff:worker:ns:i:alive");
    }
}
