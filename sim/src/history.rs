//! The lease history of a turmoil run: every lease the server granted, every injected fault and
//! every stale operation the server refused, stamped with the server's simulated clock (the clock
//! the lease fence reasons in), and the invariants checked over it.
//!
//! A lease is live from its grant to the earliest of its release (complete or fail), its reclaim
//! and its expiry. A holder that gets an operation accepted after that point acted as owner at
//! that instant, so its *ownership* runs until just past that operation: with correct fencing the
//! two intervals coincide, and two ownership intervals of one execution must never overlap.

use std::collections::BTreeMap;

use ff_core::{ExecutionId, LeaseEpoch, TimestampMs};
use serde::Serialize;

use crate::budgets::{UsageReply, UsageReport};

/// Overlaps reported per run at most (the rest are counted, not listed).
const OVERLAPS_LISTED_MAX: usize = 8;

/// How the server granted a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseGrant {
    /// A fresh claim: a new attempt.
    Claim,
    /// A reclaim of an expired lease: a new attempt.
    Reclaim,
    /// The claim of a resumed execution: the suspended attempt continues under a new lease.
    Resume,
}

/// How a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseEnd {
    /// Released by an accepted complete.
    Complete,
    /// Released by an accepted fail (retry scheduled or terminal).
    Fail,
    /// Released by an accepted suspend.
    Suspend,
    /// Ran out its TTL.
    Expiry,
    /// Another worker reclaimed the execution.
    Reclaim,
    /// Taken away: an operation under another lease ended the execution.
    Revoke,
}

/// The operation that released a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Release {
    /// An accepted complete.
    Complete,
    /// An accepted fail.
    Fail,
    /// An accepted suspend.
    Suspend,
}

/// One lease the server granted.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseRecord {
    /// The leased execution.
    pub execution_id: ExecutionId,
    /// The worker that claimed it.
    pub worker: String,
    /// The lease epoch.
    pub epoch: LeaseEpoch,
    /// How it was granted.
    pub grant: LeaseGrant,
    /// Grant time, server ms.
    pub start_ms: TimestampMs,
    /// Latest expiry (renewals extend it), server ms.
    pub expires_at_ms: TimestampMs,
    /// When a reclaim replaced it, server ms.
    pub reclaimed_at_ms: Option<TimestampMs>,
    /// When an operation under another lease took it away, server ms.
    pub revoked_at_ms: Option<TimestampMs>,
    /// When and by what it was released.
    pub released: Option<(TimestampMs, Release)>,
    /// The latest operation the server accepted under it (the grant included), server ms.
    pub last_op_ms: TimestampMs,
}

impl LeaseRecord {
    /// When the lease's right ended: the earliest of its expiry, its reclaim and its revocation.
    pub fn live_until_ms(&self) -> TimestampMs {
        [self.reclaimed_at_ms, self.revoked_at_ms]
            .into_iter()
            .flatten()
            .fold(self.expires_at_ms, TimestampMs::min)
    }

    /// When and how the lease ended: the earliest of its release, reclaim, revocation and expiry.
    pub fn end(&self) -> (TimestampMs, LeaseEnd) {
        let mut end = (self.expires_at_ms, LeaseEnd::Expiry);
        if let Some(at) = self.reclaimed_at_ms.filter(|&at| at < end.0) {
            end = (at, LeaseEnd::Reclaim);
        }
        if let Some(at) = self.revoked_at_ms.filter(|&at| at < end.0) {
            end = (at, LeaseEnd::Revoke);
        }
        match self.released {
            Some((at, Release::Complete)) if at < end.0 => (at, LeaseEnd::Complete),
            Some((at, Release::Fail)) if at < end.0 => (at, LeaseEnd::Fail),
            Some((at, Release::Suspend)) if at < end.0 => (at, LeaseEnd::Suspend),
            _ => end,
        }
    }

    /// Whether the server accepted an operation under the lease at or after its right ended.
    pub fn overstayed(&self) -> bool {
        self.last_op_ms >= self.live_until_ms()
    }

    /// End of the interval in which the holder acted as owner: the lease's end, or just past the
    /// last accepted operation when that came after the right ended.
    pub fn owned_until_ms(&self) -> TimestampMs {
        let end = self.end().0;
        if self.overstayed() { end.max(self.last_op_ms + 1) } else { end }
    }
}

/// What kind of fault was injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A worker host crashed (and later bounced).
    Crash,
    /// A worker↔server link dropped messages.
    Partition,
    /// A worker↔server link queued messages.
    Hold,
    /// The server clock jumped forward over `[start, end)`.
    ClockJump,
    /// A worker stalled past its lease without renewing.
    Stall,
}

/// One injected fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Kind.
    pub kind: FaultKind,
    /// The hosts it hit.
    pub hosts: Vec<String>,
    /// Start, server ms.
    pub start_ms: TimestampMs,
    /// End (heal), server ms; `None` while it lasts.
    pub end_ms: Option<TimestampMs>,
}

/// An operation the server refused because its lease was gone (a stale holder fenced).
#[derive(Debug, Clone, Serialize)]
pub struct StaleOp {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The worker whose lease it was (`?` when the server never granted that epoch).
    pub worker: String,
    /// The stale lease epoch.
    pub epoch: LeaseEpoch,
    /// `renew`, `complete` or `fail`.
    pub op: String,
    /// Refusal time, server ms.
    pub at_ms: TimestampMs,
}

/// A signal delivered to a suspended execution's waitpoint.
#[derive(Debug, Clone, Serialize)]
pub struct SignalRecord {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Whether this was a duplicate delivery (same idempotency key as an earlier one).
    pub duplicate: bool,
    /// What the server answered: its effect, `duplicate`, or the refusal's code.
    pub outcome: String,
    /// Delivery time, server ms.
    pub at_ms: TimestampMs,
}

/// Two leases of one execution whose ownership intervals overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Overlap {
    /// Index of the earlier lease in [`History::leases`].
    pub first: usize,
    /// Index of the later lease.
    pub second: usize,
    /// Start of the overlap, server ms.
    pub from_ms: TimestampMs,
    /// End of the overlap, server ms.
    pub until_ms: TimestampMs,
}

/// Everything a run recorded about leases, faults and stale operations, in server order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    /// Server time at the start of the run, ms: reports show times relative to it.
    pub origin_ms: TimestampMs,
    /// Every lease granted, in grant order.
    pub leases: Vec<LeaseRecord>,
    /// Every fault injected, in injection order.
    pub faults: Vec<FaultRecord>,
    /// Every stale operation refused, in refusal order.
    pub stale_ops: Vec<StaleOp>,
    /// Every signal delivered, in delivery order.
    pub signals: Vec<SignalRecord>,
    /// Every usage report, recorded before its first send (as `Unknown`) and updated by its reply.
    pub usage: Vec<UsageReport>,
    #[serde(skip)]
    by_lease: BTreeMap<(ExecutionId, LeaseEpoch), usize>,
    #[serde(skip)]
    latest: BTreeMap<ExecutionId, usize>,
}

impl History {
    /// An empty history whose times count from `origin_ms`.
    pub fn starting_at(origin_ms: TimestampMs) -> Self {
        Self { origin_ms, ..Self::default() }
    }

    /// Records a grant; a reclaim ends the execution's previous lease.
    pub(crate) fn granted(
        &mut self,
        execution_id: &ExecutionId,
        worker: &str,
        epoch: LeaseEpoch,
        grant: LeaseGrant,
        now: TimestampMs,
        expires_at_ms: TimestampMs,
    ) {
        if grant == LeaseGrant::Reclaim {
            let previous = self.latest.get(execution_id).and_then(|&i| self.leases.get_mut(i));
            if let Some(previous) = previous {
                previous.reclaimed_at_ms.get_or_insert(now);
            }
        }
        let index = self.leases.len();
        self.leases.push(LeaseRecord {
            execution_id: execution_id.clone(),
            worker: worker.to_owned(),
            epoch,
            grant,
            start_ms: now,
            expires_at_ms,
            reclaimed_at_ms: None,
            revoked_at_ms: None,
            released: None,
            last_op_ms: now,
        });
        self.by_lease.insert((execution_id.clone(), epoch), index);
        self.latest.insert(execution_id.clone(), index);
    }

    fn lease_mut(&mut self, execution_id: &ExecutionId, epoch: LeaseEpoch) -> Option<&mut LeaseRecord> {
        let index = *self.by_lease.get(&(execution_id.clone(), epoch))?;
        self.leases.get_mut(index)
    }

    /// Records an accepted renewal.
    pub(crate) fn renewed(
        &mut self,
        execution_id: &ExecutionId,
        epoch: LeaseEpoch,
        now: TimestampMs,
        expires_at_ms: TimestampMs,
    ) {
        if let Some(lease) = self.lease_mut(execution_id, epoch) {
            lease.last_op_ms = lease.last_op_ms.max(now);
            lease.expires_at_ms = expires_at_ms;
        }
    }

    /// Records an accepted complete or fail under a lease; when that lease is not the execution's
    /// latest (a stale holder got through), the latest lease is revoked by it.
    pub(crate) fn released(
        &mut self,
        execution_id: &ExecutionId,
        epoch: LeaseEpoch,
        now: TimestampMs,
        how: Release,
    ) {
        let index = self.by_lease.get(&(execution_id.clone(), epoch)).copied();
        if let Some(lease) = index.and_then(|i| self.leases.get_mut(i)) {
            lease.last_op_ms = lease.last_op_ms.max(now);
            lease.released.get_or_insert((now, how));
        }
        let latest = self.latest.get(execution_id).copied();
        let other = latest.filter(|&l| Some(l) != index).and_then(|l| self.leases.get_mut(l));
        if let Some(latest) = other.filter(|l| l.end().0 > now) {
            latest.revoked_at_ms.get_or_insert(now);
        }
    }

    /// Records a stale operation the server refused.
    pub(crate) fn refused(
        &mut self,
        execution_id: &ExecutionId,
        epoch: LeaseEpoch,
        op: &str,
        now: TimestampMs,
    ) {
        let worker = self
            .by_lease
            .get(&(execution_id.clone(), epoch))
            .and_then(|&i| self.leases.get(i))
            .map_or_else(|| "?".to_owned(), |l| l.worker.clone());
        self.stale_ops.push(StaleOp {
            execution_id: execution_id.clone(),
            worker,
            epoch,
            op: op.to_owned(),
            at_ms: now,
        });
    }

    /// Records a usage report about to be sent; returns its index for [`History::usage_answered`].
    pub(crate) fn usage_sent(&mut self, report: UsageReport) -> usize {
        self.usage.push(report);
        self.usage.len() - 1
    }

    /// Records a usage report's sends so far and its latest reply.
    pub(crate) fn usage_answered(&mut self, index: usize, sends: u32, reply: UsageReply, now: TimestampMs) {
        if let Some(report) = self.usage.get_mut(index) {
            report.sends = sends;
            report.reply = reply;
            report.at_ms = now;
        }
    }

    /// Records a fault's start; returns its index for [`History::fault_ended`].
    pub(crate) fn fault_started(
        &mut self,
        kind: FaultKind,
        hosts: Vec<String>,
        start_ms: TimestampMs,
        end_ms: Option<TimestampMs>,
    ) -> usize {
        self.faults.push(FaultRecord { kind, hosts, start_ms, end_ms });
        self.faults.len() - 1
    }

    /// Records a fault's heal.
    pub(crate) fn fault_ended(&mut self, index: usize, now: TimestampMs) {
        if let Some(fault) = self.faults.get_mut(index) {
            fault.end_ms.get_or_insert(now);
        }
    }

    /// Leases per execution, in grant order.
    pub fn leases_by_execution(&self) -> BTreeMap<&ExecutionId, Vec<usize>> {
        let mut by = BTreeMap::<&ExecutionId, Vec<usize>>::new();
        for (i, lease) in self.leases.iter().enumerate() {
            by.entry(&lease.execution_id).or_default().push(i);
        }
        by
    }

    /// Every pair of leases of one execution whose ownership intervals overlap (double ownership).
    pub fn overlaps(&self) -> Vec<Overlap> {
        let mut out = Vec::new();
        for indices in self.leases_by_execution().values() {
            for (k, &i) in indices.iter().enumerate() {
                for &j in &indices[k + 1..] {
                    let (a, b) = (&self.leases[i], &self.leases[j]);
                    let from_ms = a.start_ms.max(b.start_ms);
                    let until_ms = a.owned_until_ms().min(b.owned_until_ms());
                    if from_ms < until_ms {
                        out.push(Overlap { first: i, second: j, from_ms, until_ms });
                    }
                }
            }
        }
        out
    }

    /// The invariants over the history, as violation texts: at most one owner per execution at
    /// any instant, and attempts within the retry policy (`retries_max` retries after failures,
    /// `reclaims_max` reclaims).
    pub fn violations(&self, retries_max: u32, reclaims_max: u32) -> Vec<String> {
        let overlaps = self.overlaps();
        let mut out: Vec<String> = overlaps
            .iter()
            .take(OVERLAPS_LISTED_MAX)
            .map(|o| {
                let (a, b) = (&self.leases[o.first], &self.leases[o.second]);
                format!(
                    "double ownership of {}: e{} ({}) and e{} ({}) both owned it over [{}, {}) ms",
                    a.execution_id,
                    a.epoch,
                    a.worker,
                    b.epoch,
                    b.worker,
                    o.from_ms - self.origin_ms,
                    o.until_ms - self.origin_ms
                )
            })
            .collect();
        if overlaps.len() > OVERLAPS_LISTED_MAX {
            out.push(format!("{} more double ownerships", overlaps.len() - OVERLAPS_LISTED_MAX));
        }
        for (id, indices) in self.leases_by_execution() {
            let leases = indices.iter().map(|&i| &self.leases[i]);
            let fresh = leases.clone().filter(|l| l.grant == LeaseGrant::Claim).count();
            let reclaims = leases.clone().filter(|l| l.grant == LeaseGrant::Reclaim).count();
            let fails = leases.filter(|l| matches!(l.released, Some((_, Release::Fail)))).count();
            let attempts_max = retries_max as usize + 1;
            if fresh > attempts_max || fails > attempts_max {
                out.push(format!(
                    "{id}: {fresh} claimed attempts and {fails} failures exceed the retry policy ({retries_max} retries)"
                ));
            }
            let resumes = indices.iter().filter(|&&i| self.leases[i].grant == LeaseGrant::Resume).count();
            let suspends = indices
                .iter()
                .filter(|&&i| matches!(self.leases[i].released, Some((_, Release::Suspend))))
                .count();
            if resumes > suspends {
                out.push(format!("{id}: {resumes} resumed claims after {suspends} suspensions"));
            }
            if reclaims > reclaims_max as usize {
                out.push(format!("{id}: {reclaims} reclaims exceed the cap of {reclaims_max}"));
            }
        }
        out
    }

    /// Attempts the server opened for an execution: every lease but a resumed one.
    pub fn attempt_count(&self, execution_id: &ExecutionId) -> usize {
        self.by_lease
            .range((execution_id.clone(), 0)..=(execution_id.clone(), LeaseEpoch::MAX))
            .filter(|&(_, &i)| self.leases.get(i).is_some_and(|l| l.grant != LeaseGrant::Resume))
            .count()
    }

    /// Whether a lease was released by an accepted complete.
    pub fn completed_under(&self, execution_id: &ExecutionId, epoch: LeaseEpoch) -> bool {
        self.by_lease
            .get(&(execution_id.clone(), epoch))
            .and_then(|&i| self.leases.get(i))
            .is_some_and(|l| matches!(l.released, Some((_, Release::Complete))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> ExecutionId {
        ExecutionId::from_parts(0, uuid::Uuid::from_u64_pair(7, n))
    }

    #[test]
    fn a_reclaim_after_expiry_is_not_double_ownership() {
        let mut h = History::default();
        h.granted(&id(1), "worker0", 1, LeaseGrant::Claim, 0, 3_000);
        h.granted(&id(1), "worker1", 2, LeaseGrant::Reclaim, 3_500, 6_500);
        h.released(&id(1), 2, 4_000, Release::Complete);
        assert!(h.overlaps().is_empty());
        assert_eq!(h.leases[0].end(), (3_000, LeaseEnd::Expiry));
        assert_eq!(h.leases[1].end(), (4_000, LeaseEnd::Complete));
    }

    #[test]
    fn a_complete_accepted_after_a_reclaim_is_double_ownership() {
        let mut h = History::default();
        h.granted(&id(1), "worker0", 1, LeaseGrant::Claim, 0, 3_000);
        h.granted(&id(1), "worker1", 2, LeaseGrant::Reclaim, 3_500, 6_500);
        h.released(&id(1), 1, 5_000, Release::Complete);
        let overlaps = h.overlaps();
        assert_eq!(overlaps, vec![Overlap { first: 0, second: 1, from_ms: 3_500, until_ms: 5_000 }]);
        assert_eq!(h.leases[1].end(), (5_000, LeaseEnd::Revoke));
        assert_eq!(h.leases[0].end(), (3_000, LeaseEnd::Expiry));
        assert!(h.leases[0].overstayed());
        assert!(h.violations(2, 50)[0].starts_with("double ownership"));
    }

    #[test]
    fn a_claim_while_a_lease_is_live_is_double_ownership() {
        let mut h = History::default();
        h.granted(&id(1), "worker0", 1, LeaseGrant::Claim, 0, 3_000);
        h.granted(&id(1), "worker1", 2, LeaseGrant::Claim, 1_000, 4_000);
        assert_eq!(h.overlaps().len(), 1);
    }

    #[test]
    fn attempts_past_the_policy_are_violations() {
        let mut h = History::default();
        for e in 1..=4 {
            let t = i64::try_from(e).unwrap_or(0) * 10_000;
            h.granted(&id(1), "worker0", e, LeaseGrant::Claim, t, t + 3_000);
            h.released(&id(1), e, t + 1_000, Release::Fail);
        }
        let v = h.violations(2, 50);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("exceed the retry policy"));
        assert_eq!(h.attempt_count(&id(1)), 4);
        assert_eq!(h.attempt_count(&id(2)), 0);
    }
}
