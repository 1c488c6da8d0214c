//! The in-memory reference backend: ordered maps behind one lock, any [`Clock`].
//!
//! Every contract runs under one `parking_lot` mutex, so each is atomic.
//! Results never depend on hash iteration order: every ordered read goes
//! through a `BTreeSet`/`BTreeMap`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use ff_core::contracts::{CompletionEvent, LeaseHistoryEntry};
use ff_core::stream::EntryId;
use ff_core::{
    AttemptIndex, BackendTag, Clock, EngineError, ExecutionId, Namespace, PartitionConfig, SimClock,
    SystemClock, TimestampMs, WorkerInstanceId,
};
use ff_engine::common::LEASE_HISTORY_LEN_MAX;
use ff_engine::records::{
    AttemptRecord, BlobKind, ExecCore, GrantRecord, IndexKey, LeaseRecord, RecordKind, StoredEntry,
    StreamMeta, SummaryRecord, WorkerRecord,
};
use ff_engine::{Engine, RunnerInfo, Store, StoreResult, StoreRunner};
use parking_lot::Mutex;

/// Completion events kept in memory.
pub const COMPLETIONS_LEN_MAX: usize = 100_000;

/// The memory backend: `Engine` over [`MemoryRunner`].
pub type MemoryBackend = Engine<MemoryRunner>;

/// Builds a memory backend on the wall clock.
pub fn new_memory_backend() -> MemoryBackend {
    Engine::new(MemoryRunner::new(Arc::new(SystemClock), PartitionConfig::default()))
}

/// Builds a memory backend on a simulated clock.
pub fn new_sim_backend(clock: SimClock, cfg: PartitionConfig) -> MemoryBackend {
    Engine::new(MemoryRunner::new(Arc::new(clock), cfg))
}

/// Runs contracts against a [`MemStore`] under one lock.
#[derive(Debug, Clone)]
pub struct MemoryRunner {
    store: Arc<Mutex<MemStore>>,
    info: RunnerInfo,
}

impl MemoryRunner {
    /// A runner over an empty store.
    pub fn new(clock: Arc<dyn Clock>, cfg: PartitionConfig) -> Self {
        let info = RunnerInfo::new(BackendTag::Memory, "memory", env!("CARGO_PKG_VERSION"), clock, cfg);
        Self { store: Arc::new(Mutex::new(MemStore::new(cfg))), info }
    }

    /// A deterministic dump of the whole store (for snapshots and differential checks).
    pub fn dump(&self) -> String {
        self.store.lock().dump()
    }
}

#[async_trait]
impl StoreRunner for MemoryRunner {
    fn info(&self) -> &RunnerInfo {
        &self.info
    }

    async fn run<R, F>(&self, f: F) -> Result<R, EngineError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Store) -> Result<R, EngineError> + Send + 'static,
    {
        let mut guard = self.store.lock();
        f(&mut *guard)
    }
}

/// An ordered set of `(score, member)` with O(1) score lookup.
#[derive(Debug, Default, Clone)]
struct OrderedIndex {
    scores: HashMap<String, i64>,
    order: BTreeSet<(i64, String)>,
}

/// One execution's lease history.
#[derive(Debug, Default, Clone)]
struct History {
    next_seq: u64,
    events: VecDeque<LeaseHistoryEntry>,
}

/// Every record of the memory backend.
#[derive(Debug)]
pub struct MemStore {
    cfg: PartitionConfig,
    execs: HashMap<ExecutionId, ExecCore>,
    blobs: HashMap<(ExecutionId, BlobKind), Vec<u8>>,
    tags: HashMap<ExecutionId, BTreeMap<String, String>>,
    attempts: HashMap<(ExecutionId, AttemptIndex), AttemptRecord>,
    leases: HashMap<ExecutionId, LeaseRecord>,
    grants: HashMap<ExecutionId, GrantRecord>,
    stream_meta: HashMap<(ExecutionId, AttemptIndex), StreamMeta>,
    streams: HashMap<(ExecutionId, AttemptIndex), BTreeMap<EntryId, BTreeMap<String, String>>>,
    summaries: HashMap<(ExecutionId, AttemptIndex), SummaryRecord>,
    records: BTreeMap<(RecordKind, String), String>,
    idem: HashMap<(Namespace, String), (ExecutionId, TimestampMs)>,
    indexes: HashMap<IndexKey, OrderedIndex>,
    history: HashMap<ExecutionId, History>,
    completions: VecDeque<CompletionEvent>,
    next_completion_id: u64,
    workers: BTreeMap<(Namespace, WorkerInstanceId), WorkerRecord>,
}

impl MemStore {
    /// An empty store.
    pub fn new(cfg: PartitionConfig) -> Self {
        Self {
            cfg,
            execs: HashMap::new(),
            blobs: HashMap::new(),
            tags: HashMap::new(),
            attempts: HashMap::new(),
            leases: HashMap::new(),
            grants: HashMap::new(),
            stream_meta: HashMap::new(),
            streams: HashMap::new(),
            summaries: HashMap::new(),
            records: BTreeMap::new(),
            idem: HashMap::new(),
            indexes: HashMap::new(),
            history: HashMap::new(),
            completions: VecDeque::new(),
            next_completion_id: 0,
            workers: BTreeMap::new(),
        }
    }

    /// A deterministic text dump of executions, attempts, leases, grants and indexes.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let sorted = |m: &HashMap<ExecutionId, ExecCore>| {
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>()
        };
        for (id, core) in sorted(&self.execs) {
            out.push_str(&format!("exec {id} {core:?}\n"));
        }
        let attempts: BTreeMap<_, _> = self.attempts.iter().collect();
        for ((id, i), rec) in attempts {
            out.push_str(&format!("attempt {id}#{i} {rec:?}\n"));
        }
        let leases: BTreeMap<_, _> = self.leases.iter().collect();
        for (id, l) in leases {
            out.push_str(&format!("lease {id} {l:?}\n"));
        }
        let grants: BTreeMap<_, _> = self.grants.iter().collect();
        for (id, g) in grants {
            out.push_str(&format!("grant {id} {g:?}\n"));
        }
        let indexes: BTreeMap<_, _> = self.indexes.iter().collect();
        for (k, idx) in indexes {
            if !idx.order.is_empty() {
                out.push_str(&format!("index {k:?} {:?}\n", idx.order));
            }
        }
        for ((ns, inst), w) in &self.workers {
            out.push_str(&format!("worker {ns}/{inst} {w:?}\n"));
        }
        for ((kind, key), json) in &self.records {
            out.push_str(&format!("record {} {key} {json}\n", kind.as_str()));
        }
        out
    }
}

impl Store for MemStore {
    fn partition_config(&self) -> PartitionConfig {
        self.cfg
    }

    fn get_exec(&self, id: &ExecutionId) -> StoreResult<Option<ExecCore>> {
        Ok(self.execs.get(id).cloned())
    }

    fn put_exec(&mut self, core: &ExecCore) -> StoreResult<()> {
        self.execs.insert(core.execution_id.clone(), core.clone());
        Ok(())
    }

    fn get_blob(&self, id: &ExecutionId, kind: BlobKind) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.blobs.get(&(id.clone(), kind)).cloned())
    }

    fn put_blob(&mut self, id: &ExecutionId, kind: BlobKind, bytes: &[u8]) -> StoreResult<()> {
        self.blobs.insert((id.clone(), kind), bytes.to_vec());
        Ok(())
    }

    fn get_tags(&self, id: &ExecutionId) -> StoreResult<BTreeMap<String, String>> {
        Ok(self.tags.get(id).cloned().unwrap_or_default())
    }

    fn put_tags(&mut self, id: &ExecutionId, pairs: &[(String, String)]) -> StoreResult<()> {
        let tags = self.tags.entry(id.clone()).or_default();
        for (k, v) in pairs {
            tags.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    fn get_attempt(&self, id: &ExecutionId, index: AttemptIndex) -> StoreResult<Option<AttemptRecord>> {
        Ok(self.attempts.get(&(id.clone(), index)).cloned())
    }

    fn put_attempt(&mut self, rec: &AttemptRecord) -> StoreResult<()> {
        self.attempts.insert((rec.execution_id.clone(), rec.attempt_index), rec.clone());
        Ok(())
    }

    fn get_lease(&self, id: &ExecutionId) -> StoreResult<Option<LeaseRecord>> {
        Ok(self.leases.get(id).cloned())
    }

    fn put_lease(&mut self, rec: &LeaseRecord) -> StoreResult<()> {
        self.leases.insert(rec.execution_id.clone(), rec.clone());
        Ok(())
    }

    fn delete_lease(&mut self, id: &ExecutionId) -> StoreResult<()> {
        self.leases.remove(id);
        Ok(())
    }

    fn purge_execution(&mut self, id: &ExecutionId) -> StoreResult<()> {
        self.execs.remove(id);
        self.blobs.retain(|(e, _), _| e != id);
        self.tags.remove(id);
        self.attempts.retain(|(e, _), _| e != id);
        self.leases.remove(id);
        self.grants.remove(id);
        self.stream_meta.retain(|(e, _), _| e != id);
        self.streams.retain(|(e, _), _| e != id);
        self.summaries.retain(|(e, _), _| e != id);
        self.history.remove(id);
        Ok(())
    }

    fn get_grant(&self, id: &ExecutionId) -> StoreResult<Option<GrantRecord>> {
        Ok(self.grants.get(id).cloned())
    }

    fn put_grant(&mut self, id: &ExecutionId, rec: &GrantRecord) -> StoreResult<()> {
        self.grants.insert(id.clone(), rec.clone());
        Ok(())
    }

    fn delete_grant(&mut self, id: &ExecutionId) -> StoreResult<()> {
        self.grants.remove(id);
        Ok(())
    }

    fn get_stream_meta(&self, id: &ExecutionId, index: AttemptIndex) -> StoreResult<Option<StreamMeta>> {
        Ok(self.stream_meta.get(&(id.clone(), index)).cloned())
    }

    fn put_stream_meta(
        &mut self,
        id: &ExecutionId,
        index: AttemptIndex,
        meta: &StreamMeta,
    ) -> StoreResult<()> {
        self.stream_meta.insert((id.clone(), index), meta.clone());
        Ok(())
    }

    fn stream_append(
        &mut self,
        id: &ExecutionId,
        index: AttemptIndex,
        entry: &StoredEntry,
    ) -> StoreResult<()> {
        self.streams.entry((id.clone(), index)).or_default().insert(entry.id, entry.fields.clone());
        Ok(())
    }

    fn stream_range(
        &self,
        id: &ExecutionId,
        index: AttemptIndex,
        from: EntryId,
        to: EntryId,
        limit: usize,
    ) -> StoreResult<Vec<StoredEntry>> {
        let Some(s) = self.streams.get(&(id.clone(), index)) else { return Ok(Vec::new()) };
        if from > to {
            return Ok(Vec::new());
        }
        Ok(s.range(from..=to).take(limit).map(|(k, v)| StoredEntry { id: *k, fields: v.clone() }).collect())
    }

    fn stream_trim(&mut self, id: &ExecutionId, index: AttemptIndex, keep: u64) -> StoreResult<()> {
        if let Some(s) = self.streams.get_mut(&(id.clone(), index)) {
            let keep = usize::try_from(keep).unwrap_or(usize::MAX);
            while s.len() > keep {
                s.pop_first();
            }
        }
        Ok(())
    }

    fn get_summary(&self, id: &ExecutionId, index: AttemptIndex) -> StoreResult<Option<SummaryRecord>> {
        Ok(self.summaries.get(&(id.clone(), index)).cloned())
    }

    fn put_summary(&mut self, id: &ExecutionId, index: AttemptIndex, rec: &SummaryRecord) -> StoreResult<()> {
        self.summaries.insert((id.clone(), index), rec.clone());
        Ok(())
    }

    fn get_record(&self, kind: RecordKind, key: &str) -> StoreResult<Option<String>> {
        Ok(self.records.get(&(kind, key.to_owned())).cloned())
    }

    fn put_record(&mut self, kind: RecordKind, key: &str, json: &str) -> StoreResult<()> {
        self.records.insert((kind, key.to_owned()), json.to_owned());
        Ok(())
    }

    fn delete_record(&mut self, kind: RecordKind, key: &str) -> StoreResult<bool> {
        Ok(self.records.remove(&(kind, key.to_owned())).is_some())
    }

    fn index_count(&self, key: &IndexKey) -> StoreResult<u64> {
        Ok(self.indexes.get(key).map_or(0, |i| i.scores.len() as u64))
    }

    fn get_idem(&self, ns: &Namespace, key: &str) -> StoreResult<Option<(ExecutionId, TimestampMs)>> {
        Ok(self.idem.get(&(ns.clone(), key.to_owned())).cloned())
    }

    fn put_idem(
        &mut self,
        ns: &Namespace,
        key: &str,
        id: &ExecutionId,
        expires_at: TimestampMs,
    ) -> StoreResult<()> {
        self.idem.insert((ns.clone(), key.to_owned()), (id.clone(), expires_at));
        Ok(())
    }

    fn index_add(&mut self, key: &IndexKey, member: &str, score: i64) -> StoreResult<()> {
        let idx = match self.indexes.get_mut(key) {
            Some(idx) => idx,
            None => self.indexes.entry(key.clone()).or_default(),
        };
        if let Some(old) = idx.scores.insert(member.to_owned(), score) {
            if old == score {
                return Ok(());
            }
            idx.order.remove(&(old, member.to_owned()));
        }
        idx.order.insert((score, member.to_owned()));
        Ok(())
    }

    fn index_remove(&mut self, key: &IndexKey, member: &str) -> StoreResult<bool> {
        let Some(idx) = self.indexes.get_mut(key) else { return Ok(false) };
        match idx.scores.remove(member) {
            Some(score) => {
                idx.order.remove(&(score, member.to_owned()));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn index_score(&self, key: &IndexKey, member: &str) -> StoreResult<Option<i64>> {
        Ok(self.indexes.get(key).and_then(|idx| idx.scores.get(member).copied()))
    }

    fn index_range(
        &self,
        key: &IndexKey,
        after: Option<(i64, &str)>,
        max_score: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, String)>> {
        let Some(idx) = self.indexes.get(key) else { return Ok(Vec::new()) };
        let iter: Box<dyn Iterator<Item = &(i64, String)>> = match after {
            Some((score, member)) => {
                let start = (score, member.to_owned());
                Box::new(idx.order.range(start..).skip_while(move |e| e.0 == score && e.1 == member))
            }
            None => Box::new(idx.order.iter()),
        };
        Ok(iter.take_while(|(s, _)| *s <= max_score).take(limit).cloned().collect())
    }

    fn append_lease_event(
        &mut self,
        id: &ExecutionId,
        event: &str,
        ts: TimestampMs,
        fields: Vec<(&'static str, String)>,
    ) -> StoreResult<()> {
        let h = self.history.entry(id.clone()).or_default();
        h.next_seq += 1;
        let fields = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        h.events.push_back(LeaseHistoryEntry { seq: h.next_seq, event: event.to_owned(), ts, fields });
        while h.events.len() > LEASE_HISTORY_LEN_MAX {
            h.events.pop_front();
        }
        Ok(())
    }

    fn lease_events(&self, id: &ExecutionId) -> StoreResult<Vec<LeaseHistoryEntry>> {
        Ok(self.history.get(id).map(|h| h.events.iter().cloned().collect()).unwrap_or_default())
    }

    fn publish_completion(
        &mut self,
        id: &ExecutionId,
        flow_id: &str,
        outcome: &str,
        ts: TimestampMs,
    ) -> StoreResult<()> {
        self.next_completion_id += 1;
        self.completions.push_back(CompletionEvent {
            event_id: self.next_completion_id,
            execution_id: id.clone(),
            flow_id: flow_id.to_owned(),
            outcome: outcome.to_owned(),
            produced_at_ms: ts,
        });
        while self.completions.len() > COMPLETIONS_LEN_MAX {
            self.completions.pop_front();
        }
        Ok(())
    }

    fn completions_after(&self, after: u64, limit: usize) -> StoreResult<Vec<CompletionEvent>> {
        Ok(self.completions.iter().filter(|e| e.event_id > after).take(limit).cloned().collect())
    }

    fn get_worker(&self, ns: &Namespace, inst: &WorkerInstanceId) -> StoreResult<Option<WorkerRecord>> {
        Ok(self.workers.get(&(ns.clone(), inst.clone())).cloned())
    }

    fn put_worker(&mut self, ns: &Namespace, inst: &WorkerInstanceId, rec: &WorkerRecord) -> StoreResult<()> {
        self.workers.insert((ns.clone(), inst.clone()), rec.clone());
        Ok(())
    }

    fn delete_worker(&mut self, ns: &Namespace, inst: &WorkerInstanceId) -> StoreResult<bool> {
        Ok(self.workers.remove(&(ns.clone(), inst.clone())).is_some())
    }

    fn list_worker_ids(
        &self,
        ns: &Namespace,
        after: Option<&WorkerInstanceId>,
        limit: usize,
    ) -> StoreResult<Vec<WorkerInstanceId>> {
        let start = (ns.clone(), after.cloned().unwrap_or_default());
        Ok(self
            .workers
            .range(start..)
            .take_while(|((n, _), _)| n == ns)
            .filter(|((_, i), _)| after.is_none_or(|a| i > a))
            .take(limit)
            .map(|((_, i), _)| i.clone())
            .collect())
    }
}

impl MemoryRunner {
    /// Every violated state invariant (spec 01 §4.4–4.5), empty when all hold.
    pub fn invariant_violations(&self) -> Vec<String> {
        ff_engine::invariants::check_store(&*self.store.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_range_orders_by_score_then_member_and_pages_exclusively() {
        let mut s = MemStore::new(PartitionConfig::default());
        let k = IndexKey::LeaseExpiry(0);
        for (m, score) in [("b", 5), ("a", 5), ("c", 1), ("d", 9)] {
            s.index_add(&k, m, score).unwrap_or_default();
        }
        let all = s.index_range(&k, None, i64::MAX, 10).unwrap_or_default();
        let names: Vec<&str> = all.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(names, ["c", "a", "b", "d"]);
        let page = s.index_range(&k, Some((5, "a")), 8, 10).unwrap_or_default();
        assert_eq!(page, vec![(5, "b".to_owned())]);
        s.index_add(&k, "c", 20).unwrap_or_default();
        let rescored = s.index_range(&k, None, i64::MAX, 1).unwrap_or_default();
        assert_eq!(rescored, vec![(5, "a".to_owned())]);
        assert!(s.index_remove(&k, "a").unwrap_or(false));
        assert!(!s.index_remove(&k, "a").unwrap_or(true));
    }

    #[test]
    fn lease_history_is_bounded() {
        let mut s = MemStore::new(PartitionConfig::default());
        let id = ExecutionId::from_parts(0, ff_core::AttemptId::default().uuid());
        for i in 0..(LEASE_HISTORY_LEN_MAX + 10) {
            s.append_lease_event(&id, "acquired", i as i64, Vec::new()).unwrap_or_default();
        }
        let events = s.lease_events(&id).unwrap_or_default();
        assert_eq!(events.len(), LEASE_HISTORY_LEN_MAX);
        assert_eq!(events.first().map(|e| e.seq), Some(11));
    }
}
