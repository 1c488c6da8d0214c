//! The suspension family over `lua/suspension.lua`: waitpoints, suspend,
//! signals, operator resume, the suspension timeout and the HMAC keystore.
//!
//! Tokens are minted and verified inside the Lua functions (HMAC-SHA1 from
//! `redis.sha1hex`), so each contract stays one atomic FCALL that reads the
//! keystore it needs. The keystore is replicated on every partition
//! (`ff:sec:{fp:N}:waitpoint_hmac`); seed and rotate visit each partition.

use ff_core::EngineError;
use ff_core::handle::BackendTag;
use ff_core::hmac_token::{HmacKeystore, KidInfo, RotateOutcome, SeedKeystoreOutcome, SeedOutcome};
use ff_core::ids::{ExecutionId, LaneId, SignalId, SuspensionId, WaitpointId};
use ff_core::state::PublicState;
use ff_core::suspension::*;

use crate::wire::{self, num, protocol, slot};
use crate::{ValkeyBackend, arg, opt_arg};

/// Where a waitpoint record lives.
struct WaitpointHome {
    partition: u16,
    token: String,
    state: String,
}

/// Largest page of `list_pending_waitpoints` (as the engine's).
const PENDING_WAITPOINTS_PAGE_MAX: usize = 1000;

fn parse_uuid_id<T>(
    what: &str,
    s: &str,
    parse: impl Fn(&str) -> Result<T, ff_core::ids::IdError>,
) -> Result<T, EngineError> {
    parse(s).map_err(|e| protocol(format!("{what} {s:?}: {e}")))
}

fn wire_enum<T>(what: &str, s: &str, all: &[T], as_str: fn(T) -> &'static str) -> Result<T, EngineError>
where
    T: Copy,
{
    all.iter().copied().find(|v| as_str(*v) == s).ok_or_else(|| protocol(format!("{what} {s:?}")))
}

const BEHAVIORS: [TimeoutBehavior; 5] = [
    TimeoutBehavior::Fail,
    TimeoutBehavior::Cancel,
    TimeoutBehavior::Expire,
    TimeoutBehavior::AutoResumeWithTimeoutSignal,
    TimeoutBehavior::Escalate,
];

impl ValkeyBackend {
    /// `seed_waitpoint_hmac_secret` on every partition's keystore.
    pub(crate) async fn seed_hmac(&self, kid: &str, secret_hex: &str) -> Result<SeedOutcome, EngineError> {
        // Validation needs no stored state: seeding an empty keystore checks it.
        HmacKeystore::new().seed(kid, secret_hex)?;
        let mut outcomes = Vec::new();
        for p in 0..self.cfg.partitions.num_flow_partitions {
            let v =
                self.partition_call("ff_seed_hmac_secret", p, vec![arg(kid), arg(secret_hex)], false).await?;
            let r = wire::texts(v)?;
            outcomes.push(match slot(&r, 0)? {
                "installed" => SeedKeystoreOutcome::Installed,
                "matched" => SeedKeystoreOutcome::Matched,
                "same_kid_different_secret" => SeedKeystoreOutcome::SameKidDifferentSecret,
                "different_kid" => SeedKeystoreOutcome::DifferentKid,
                other => return Err(protocol(format!("seed reply {other:?}"))),
            });
        }
        SeedOutcome::aggregate(kid, &outcomes)
    }

    /// `rotate_waitpoint_hmac_secret_all`: one rotation per partition's keystore.
    pub(crate) async fn rotate_hmac(
        &self,
        new_kid: &str,
        new_secret_hex: &str,
        grace_ms: u64,
    ) -> Result<Vec<(u16, Result<RotateOutcome, EngineError>)>, EngineError> {
        if let Err(e) = HmacKeystore::new().rotate(new_kid, new_secret_hex, grace_ms, 0) {
            return Ok(vec![(0, Err(e))]);
        }
        let mut out = Vec::new();
        for p in 0..self.cfg.partitions.num_flow_partitions {
            let extra = vec![arg(new_kid), arg(new_secret_hex), arg(grace_ms)];
            let r = match self.partition_call("ff_rotate_hmac_secret", p, extra, false).await {
                Err(e @ EngineError::Transport { .. }) => return Err(e),
                Err(e) => Err(e),
                Ok(v) => rotate_outcome(&wire::texts(v)?),
            };
            out.push((p, r));
        }
        Ok(out)
    }

    /// `list_waitpoint_hmac_kids` from partition 0's keystore (every partition holds the same).
    pub(crate) async fn list_hmac_kids(&self) -> Result<(Option<String>, Vec<KidInfo>), EngineError> {
        let r = wire::texts(self.partition_call("ff_list_hmac_kids", 0, Vec::new(), true).await?)?;
        let current = slot(&r, 0)?;
        let mut kids = Vec::new();
        for i in (1..r.len()).step_by(2) {
            kids.push(KidInfo { kid: slot(&r, i)?.to_owned(), expires_at_ms: num(&r, i + 1)? });
        }
        kids.sort_by(|a, b| (a.expires_at_ms, &a.kid).cmp(&(b.expires_at_ms, &b.kid)));
        Ok(((!current.is_empty()).then(|| current.to_owned()), kids))
    }

    /// `create_pending_waitpoint` (spec 02 §3.2).
    pub(crate) async fn create_waitpoint_call(
        &self,
        args: CreateWaitpointArgs,
    ) -> Result<PendingWaitpoint, EngineError> {
        if args.waitpoint_key.len() > ff_core::contracts::NAME_BYTES_MAX {
            return Err(EngineError::invalid_input("waitpoint_key: longer than 256 bytes"));
        }
        // Waitpoint ids are global: an open one on another partition is a duplicate too.
        let home = args.execution_id.partition_index();
        let open_elsewhere = match self.waitpoint_home(&args.waitpoint_id).await? {
            Some(w) => w.partition != home && w.state != "closed",
            None => false,
        };
        let f = &args.fence;
        let extra = vec![
            arg(args.attempt_index),
            arg(f.lease_id),
            arg(f.lease_epoch),
            arg(f.attempt_id),
            arg(args.waitpoint_id),
            arg(&args.waitpoint_key),
            arg(args.expires_in_ms.min(i64::MAX as u64 / 2)),
            crate::flag(open_elsewhere),
        ];
        let v = self.exec_call("ff_create_pending_waitpoint", &args.execution_id, extra, false).await?;
        let r = wire::texts(v)?;
        Ok(PendingWaitpoint { waitpoint_id: args.waitpoint_id, hmac_token: slot(&r, 0)?.to_owned() })
    }

    /// `close_waitpoint` (spec 02 §3.4).
    pub(crate) async fn close_waitpoint_call(
        &self,
        execution_id: &ExecutionId,
        waitpoint_id: &WaitpointId,
        reason: &str,
    ) -> Result<bool, EngineError> {
        let extra = vec![arg(waitpoint_id), arg(reason)];
        let r = wire::texts(self.exec_call("ff_close_waitpoint", execution_id, extra, false).await?)?;
        Ok(slot(&r, 0)? == "1")
    }

    /// `suspend_by_triple` (spec 02 §6).
    pub(crate) async fn suspend_call(&self, req: SuspendByTripleArgs) -> Result<SuspendOutcome, EngineError> {
        // `timeout_at_in_past` needs `now`, so the function checks it; the rest is pure.
        req.args.validate(i64::MIN)?;
        let a = &req.args;
        let json = |v: Result<String, serde_json::Error>| v.map_err(|e| protocol(format!("encode: {e}")));
        let mut extra = vec![arg(req.attempt_index)];
        extra.extend(crate::backend::fence_args(&req.fence));
        extra.extend([
            arg(a.suspension_id),
            arg(a.reason_code.as_str()),
            arg(a.reason_code.blocking_reason().as_str()),
            arg(a.requested_by.as_str()),
            opt_arg(a.timeout_at),
            arg(a.timeout_behavior.as_str()),
            opt_arg(a.continuation_metadata_pointer.as_ref()),
            opt_arg(a.idempotency_key.as_ref()),
            arg(json(serde_json::to_string(&a.resume_condition))?),
            arg(json(serde_json::to_string(&a.resume_policy))?),
        ]);
        let Some(primary) = a.waitpoints.first() else {
            return Err(EngineError::invalid_input("waitpoints_empty"));
        };
        match primary {
            WaitpointBinding::Fresh { waitpoint_id, waitpoint_key } => {
                extra.extend([arg("fresh"), arg(waitpoint_id), arg(waitpoint_key)])
            }
            WaitpointBinding::UsePending { waitpoint_id } => {
                // Waitpoint ids are global but stored on their execution's partition: one
                // held elsewhere belongs to another execution (checked in order by the function).
                let home = req.execution_id.partition_index();
                let elsewhere = match self.waitpoint_home(waitpoint_id).await? {
                    Some(w) if w.partition != home && w.state == "pending" => "elsewhere_pending",
                    Some(w) if w.partition != home => "elsewhere_not_pending",
                    _ => "",
                };
                extra.extend([arg("pending"), arg(waitpoint_id), arg(elsewhere)])
            }
        }
        let extras: Vec<(&WaitpointId, &String)> = a
            .waitpoints
            .iter()
            .skip(1)
            .filter_map(|b| match b {
                WaitpointBinding::Fresh { waitpoint_id, waitpoint_key } => {
                    Some((waitpoint_id, waitpoint_key))
                }
                WaitpointBinding::UsePending { .. } => None,
            })
            .collect();
        extra.push(arg(extras.len()));
        for (id, key) in extras {
            extra.push(arg(id));
            extra.push(arg(key));
        }
        let r = wire::texts(self.exec_call("ff_suspend_execution", &req.execution_id, extra, false).await?)?;
        self.suspend_outcome(&req, &r)
    }

    fn suspend_outcome(
        &self,
        req: &SuspendByTripleArgs,
        r: &[String],
    ) -> Result<SuspendOutcome, EngineError> {
        let bound = |i: usize| -> Result<BoundWaitpoint, EngineError> {
            Ok(BoundWaitpoint {
                waitpoint_id: parse_uuid_id("waitpoint id", slot(r, i)?, WaitpointId::parse)?,
                waitpoint_key: slot(r, i + 1)?.to_owned(),
                waitpoint_token: slot(r, i + 2)?.to_owned(),
            })
        };
        let mut additional_waitpoints = Vec::new();
        for i in (6..r.len()).step_by(3) {
            additional_waitpoints.push(bound(i)?);
        }
        let details = SuspendOutcomeDetails {
            suspension_id: parse_uuid_id("suspension id", slot(r, 1)?, SuspensionId::parse)?,
            primary: bound(3)?,
            additional_waitpoints,
        };
        match slot(r, 0)? {
            "already_satisfied" => Ok(SuspendOutcome::AlreadySatisfied { details }),
            "suspended" => {
                let lane = LaneId::new(slot(r, 2).unwrap_or_default());
                let handle = req
                    .fence
                    .as_ref()
                    .map(|f| ff_engine::suspension::suspended_handle(BackendTag::Valkey, req, f, lane));
                Ok(SuspendOutcome::Suspended { details, handle })
            }
            other => Err(protocol(format!("suspend reply {other:?}"))),
        }
    }

    /// `deliver_signal` (spec 02 §7–§8).
    pub(crate) async fn deliver_call(
        &self,
        a: DeliverSignalArgs,
    ) -> Result<DeliverSignalOutcome, EngineError> {
        a.validate()?;
        let extra = vec![
            arg(a.waitpoint_id),
            arg(a.signal_id),
            arg(&a.signal_name),
            arg(&a.signal_category),
            arg(&a.source_type),
            arg(&a.source_identity),
            crate::flag(a.payload.as_ref().is_some_and(|p| !p.is_empty())),
            a.payload.clone().unwrap_or_default(),
            opt_arg(a.payload_encoding.as_ref()),
            opt_arg(a.correlation_id.as_ref()),
            opt_arg(a.idempotency_key.as_ref()),
            opt_arg(a.created_at),
            opt_arg(a.dedup_ttl_ms.map(|t| t.min(i64::MAX as u64 / 2))),
            opt_arg(a.resume_delay_ms),
            opt_arg(a.max_signals_per_execution),
            opt_arg(a.signal_maxlen),
            arg(&a.waitpoint_token),
        ];
        let r = wire::texts(self.exec_call("ff_deliver_signal", &a.execution_id, extra, false).await?)?;
        match slot(&r, 0)? {
            "accepted" => {
                Ok(DeliverSignalOutcome::Accepted { signal_id: a.signal_id, effect: slot(&r, 1)?.to_owned() })
            }
            "duplicate" => Ok(DeliverSignalOutcome::Duplicate {
                existing_signal_id: parse_uuid_id("signal id", slot(&r, 1)?, SignalId::parse)?,
            }),
            other => Err(protocol(format!("deliver reply {other:?}"))),
        }
    }

    /// `resume_execution` (spec 02 §9.1).
    pub(crate) async fn resume_call(&self, args: ResumeExecutionArgs) -> Result<ResumeOutcome, EngineError> {
        if args.resume_delay_ms > ff_core::contracts::LEASE_TTL_MS_MAX {
            return Err(EngineError::invalid_input("resume_delay_ms: over 24 h"));
        }
        let extra = vec![arg(args.resume_delay_ms)];
        let r = wire::texts(self.exec_call("ff_resume_execution", &args.execution_id, extra, false).await?)?;
        Ok(ResumeOutcome { public_state: public_state(slot(&r, 0)?)? })
    }

    /// `expire_suspension` (spec 02 §9.2).
    pub(crate) async fn expire_suspension_call(
        &self,
        id: &ExecutionId,
    ) -> Result<ExpireSuspensionOutcome, EngineError> {
        let r = wire::texts(self.exec_call("ff_expire_suspension", id, Vec::new(), false).await?)?;
        match slot(&r, 0)? {
            "expired" => Ok(ExpireSuspensionOutcome::Expired {
                behavior_applied: wire_enum(
                    "timeout behaviour",
                    slot(&r, 1)?,
                    &BEHAVIORS,
                    TimeoutBehavior::as_str,
                )?,
                public_state: public_state(slot(&r, 2)?)?,
            }),
            "already_satisfied" => {
                Ok(ExpireSuspensionOutcome::AlreadySatisfied { reason: slot(&r, 1)?.to_owned() })
            }
            other => Err(protocol(format!("expire suspension reply {other:?}"))),
        }
    }

    /// Where a waitpoint lives, looked up on every partition (ids are global, records are not).
    async fn waitpoint_home(&self, id: &WaitpointId) -> Result<Option<WaitpointHome>, EngineError> {
        for p in 0..self.cfg.partitions.num_flow_partitions {
            let v = self.partition_call("ff_read_waitpoint_token", p, vec![arg(id)], true).await?;
            let r = wire::texts(v)?;
            if !r.is_empty() {
                let (token, state) = (slot(&r, 0)?.to_owned(), slot(&r, 1)?.to_owned());
                return Ok(Some(WaitpointHome { partition: p, token, state }));
            }
        }
        Ok(None)
    }

    /// `read_waitpoint_token`: the stored token, wherever the waitpoint lives.
    pub(crate) async fn read_token_call(&self, id: &WaitpointId) -> Result<Option<String>, EngineError> {
        Ok(self.waitpoint_home(id).await?.map(|w| w.token).filter(|t| !t.is_empty()))
    }

    /// `observe_execution_signals` (spec 02 §11.1).
    pub(crate) async fn observe_call(&self, id: &ExecutionId) -> Result<Vec<ResumeSignal>, EngineError> {
        let v = self.exec_call("ff_observe_signals", id, Vec::new(), true).await?;
        let mut out = Vec::new();
        for row in wire::array(v)? {
            let mut cells = wire::array(row)?;
            let payload = if cells.len() == 9 { Some(wire::bytes(cells.remove(8))?) } else { None };
            let r: Vec<String> = cells.into_iter().map(wire::text).collect::<Result<_, _>>()?;
            out.push(ResumeSignal {
                signal_id: parse_uuid_id("signal id", slot(&r, 0)?, SignalId::parse)?,
                signal_name: slot(&r, 1)?.to_owned(),
                signal_category: slot(&r, 2)?.to_owned(),
                source_type: slot(&r, 3)?.to_owned(),
                source_identity: slot(&r, 4)?.to_owned(),
                correlation_id: slot(&r, 5)?.to_owned(),
                accepted_at: num(&r, 6)?,
                payload: if slot(&r, 7)? == "1" { payload } else { None },
            });
        }
        out.sort_by_key(|s| (s.accepted_at, s.signal_id));
        Ok(out)
    }

    /// `list_pending_waitpoints` (spec 02 §3.6).
    pub(crate) async fn list_pending_call(
        &self,
        id: &ExecutionId,
        after: Option<WaitpointId>,
        limit: usize,
    ) -> Result<(Vec<PendingWaitpointInfo>, Option<WaitpointId>), EngineError> {
        let limit = limit.clamp(1, PENDING_WAITPOINTS_PAGE_MAX);
        let extra = vec![opt_arg(after), arg(limit)];
        let mut items =
            wire::array(self.exec_call("ff_list_pending_waitpoints", id, extra, true).await?)?.into_iter();
        let has_more = match items.next() {
            Some(v) => wire::text(v)? == "1",
            None => return Err(protocol("list_pending_waitpoints reply is empty")),
        };
        let mut entries = Vec::new();
        for row in items {
            let r = wire::texts(row)?;
            let opt_num = |i: usize| -> Result<Option<i64>, EngineError> {
                if slot(&r, i)?.is_empty() { Ok(None) } else { num(&r, i).map(Some) }
            };
            let name = slot(&r, 3)?;
            entries.push(PendingWaitpointInfo {
                waitpoint_id: parse_uuid_id("waitpoint id", slot(&r, 0)?, WaitpointId::parse)?,
                waitpoint_key: slot(&r, 1)?.to_owned(),
                state: match slot(&r, 2)? {
                    "pending" => WaitpointState::Pending,
                    "active" => WaitpointState::Active,
                    other => return Err(protocol(format!("waitpoint state {other:?}"))),
                },
                required_signal_names: if name.is_empty() { Vec::new() } else { vec![name.to_owned()] },
                created_at: num(&r, 4)?,
                activated_at: opt_num(5)?,
                expires_at: opt_num(6)?,
                execution_id: id.clone(),
                token_kid: slot(&r, 7)?.to_owned(),
                token_fingerprint: slot(&r, 8)?.to_owned(),
            });
        }
        let next = if has_more { entries.last().map(|e| e.waitpoint_id) } else { None };
        Ok((entries, next))
    }

    /// `list_suspended` (spec 02 §11.5).
    pub(crate) async fn list_suspended_call(
        &self,
        partition: u16,
        after: Option<ExecutionId>,
        limit: usize,
    ) -> Result<(Vec<SuspendedExecutionEntry>, Option<ExecutionId>), EngineError> {
        if limit == 0 {
            return Ok((Vec::new(), None));
        }
        let limit = limit.min(ff_core::contracts::LIST_LIMIT_MAX);
        let extra = vec![opt_arg(after.as_ref().map(ExecutionId::as_str)), arg(limit)];
        let v = self.partition_call("ff_list_suspended", partition, extra, true).await?;
        let mut rows = Vec::new();
        for row in wire::array(v)? {
            let r = wire::texts(row)?;
            rows.push(SuspendedExecutionEntry {
                execution_id: parse_uuid_id("execution id", slot(&r, 0)?, ExecutionId::parse)?,
                suspended_at_ms: num(&r, 1)?,
                reason: slot(&r, 2)?.to_owned(),
            });
        }
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more { rows.last().map(|r| r.execution_id.clone()) } else { None };
        Ok((rows, next))
    }
}

fn public_state(s: &str) -> Result<PublicState, EngineError> {
    PublicState::parse(s).ok_or_else(|| protocol(format!("public state {s:?}")))
}

fn rotate_outcome(r: &[String]) -> Result<RotateOutcome, EngineError> {
    match slot(r, 0)? {
        "rotated" => {
            let previous = slot(r, 1)?;
            Ok(RotateOutcome::Rotated {
                previous_kid: (!previous.is_empty()).then(|| previous.to_owned()),
                new_kid: slot(r, 2)?.to_owned(),
                gc_count: num(r, 3)?,
            })
        }
        "noop" => Ok(RotateOutcome::Noop { kid: slot(r, 1)?.to_owned() }),
        other => Err(protocol(format!("rotate reply {other:?}"))),
    }
}
