//! The small typed storage interface the transitions run over.
//!
//! A store holds records, ordered indexes and two append-only feeds. It has no
//! opinion about states: every rule lives in the transition functions. Each
//! contract runs inside one [`StoreRunner::run`] call, which the backend makes
//! atomic (a lock, a transaction).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use ff_core::capabilities::{Capabilities, Version};
use ff_core::contracts::{CompletionEvent, LeaseHistoryEntry};
use ff_core::{
    AttemptIndex, BackendTag, Clock, EngineError, ExecutionId, Namespace, PartitionConfig, TimestampMs,
    WorkerInstanceId,
};

use crate::records::{
    AttemptRecord, BlobKind, ExecCore, GrantRecord, IndexKey, LeaseRecord, RecordKind, StoredEntry,
    StreamMeta, SummaryRecord, WorkerRecord,
};
use ff_core::stream::EntryId;

/// Storage result: errors are infrastructure faults (never domain rejections).
pub type StoreResult<T> = Result<T, EngineError>;

/// Records, indexes and feeds of one backend.
pub trait Store {
    /// The partition counts this store was created with.
    fn partition_config(&self) -> PartitionConfig;

    /// Reads an execution record.
    fn get_exec(&self, id: &ExecutionId) -> StoreResult<Option<ExecCore>>;
    /// Writes an execution record.
    fn put_exec(&mut self, core: &ExecCore) -> StoreResult<()>;

    /// Reads a blob.
    fn get_blob(&self, id: &ExecutionId, kind: BlobKind) -> StoreResult<Option<Vec<u8>>>;
    /// Writes a blob.
    fn put_blob(&mut self, id: &ExecutionId, kind: BlobKind, bytes: &[u8]) -> StoreResult<()>;

    /// Reads all tags.
    fn get_tags(&self, id: &ExecutionId) -> StoreResult<BTreeMap<String, String>>;
    /// Writes tags (overwrite per key).
    fn put_tags(&mut self, id: &ExecutionId, pairs: &[(String, String)]) -> StoreResult<()>;

    /// Reads an attempt.
    fn get_attempt(&self, id: &ExecutionId, index: AttemptIndex) -> StoreResult<Option<AttemptRecord>>;
    /// Writes an attempt.
    fn put_attempt(&mut self, rec: &AttemptRecord) -> StoreResult<()>;

    /// Reads the current lease record.
    fn get_lease(&self, id: &ExecutionId) -> StoreResult<Option<LeaseRecord>>;
    /// Replaces the current lease record.
    fn put_lease(&mut self, rec: &LeaseRecord) -> StoreResult<()>;
    /// Deletes the current lease record.
    fn delete_lease(&mut self, id: &ExecutionId) -> StoreResult<()>;
    /// Deletes every execution-keyed row of an execution: core, blobs, tags,
    /// attempts, lease, grant, stream metadata, entries and summaries, lease
    /// history. Indexes and generic records are the caller's to clear.
    fn purge_execution(&mut self, id: &ExecutionId) -> StoreResult<()>;

    /// Reads the grant record (live or not; callers check expiry).
    fn get_grant(&self, id: &ExecutionId) -> StoreResult<Option<GrantRecord>>;
    /// Writes the grant record.
    fn put_grant(&mut self, id: &ExecutionId, rec: &GrantRecord) -> StoreResult<()>;
    /// Deletes the grant record.
    fn delete_grant(&mut self, id: &ExecutionId) -> StoreResult<()>;

    /// Reads an attempt's stream meta.
    fn get_stream_meta(&self, id: &ExecutionId, index: AttemptIndex) -> StoreResult<Option<StreamMeta>>;
    /// Writes an attempt's stream meta.
    fn put_stream_meta(
        &mut self,
        id: &ExecutionId,
        index: AttemptIndex,
        meta: &StreamMeta,
    ) -> StoreResult<()>;

    /// Appends an entry to an attempt's stream.
    fn stream_append(
        &mut self,
        id: &ExecutionId,
        index: AttemptIndex,
        entry: &StoredEntry,
    ) -> StoreResult<()>;
    /// Entries with `from <= id <= to`, oldest first, at most `limit`.
    fn stream_range(
        &self,
        id: &ExecutionId,
        index: AttemptIndex,
        from: EntryId,
        to: EntryId,
        limit: usize,
    ) -> StoreResult<Vec<StoredEntry>>;
    /// Keeps only the newest `keep` entries.
    fn stream_trim(&mut self, id: &ExecutionId, index: AttemptIndex, keep: u64) -> StoreResult<()>;
    /// Reads an attempt's summary.
    fn get_summary(&self, id: &ExecutionId, index: AttemptIndex) -> StoreResult<Option<SummaryRecord>>;
    /// Writes an attempt's summary.
    fn put_summary(&mut self, id: &ExecutionId, index: AttemptIndex, rec: &SummaryRecord) -> StoreResult<()>;

    /// Reads a JSON record.
    fn get_record(&self, kind: RecordKind, key: &str) -> StoreResult<Option<String>>;
    /// Writes a JSON record.
    fn put_record(&mut self, kind: RecordKind, key: &str, json: &str) -> StoreResult<()>;
    /// Deletes a record; true if it existed.
    fn delete_record(&mut self, kind: RecordKind, key: &str) -> StoreResult<bool>;
    /// Members of an index.
    fn index_count(&self, key: &IndexKey) -> StoreResult<u64>;

    /// Reads a create-idempotency entry `(execution id, expires_at)`.
    fn get_idem(&self, ns: &Namespace, key: &str) -> StoreResult<Option<(ExecutionId, TimestampMs)>>;
    /// Writes a create-idempotency entry.
    fn put_idem(
        &mut self,
        ns: &Namespace,
        key: &str,
        id: &ExecutionId,
        expires_at: TimestampMs,
    ) -> StoreResult<()>;

    /// Adds or re-scores a member.
    fn index_add(&mut self, key: &IndexKey, member: &str, score: i64) -> StoreResult<()>;
    /// Removes a member; true if it was present.
    fn index_remove(&mut self, key: &IndexKey, member: &str) -> StoreResult<bool>;
    /// A member's score.
    fn index_score(&self, key: &IndexKey, member: &str) -> StoreResult<Option<i64>>;
    /// Members with score ≤ `max_score`, ordered by `(score, member)`, strictly after `after`.
    fn index_range(
        &self,
        key: &IndexKey,
        after: Option<(i64, &str)>,
        max_score: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, String)>>;

    /// Appends a lease-history event (bounded to at least the last 1000).
    fn append_lease_event(
        &mut self,
        id: &ExecutionId,
        event: &str,
        ts: TimestampMs,
        fields: Vec<(&'static str, String)>,
    ) -> StoreResult<()>;
    /// The lease history, oldest first.
    fn lease_events(&self, id: &ExecutionId) -> StoreResult<Vec<LeaseHistoryEntry>>;

    /// Appends a completion event to the feed.
    fn publish_completion(
        &mut self,
        id: &ExecutionId,
        flow_id: &str,
        outcome: &str,
        ts: TimestampMs,
    ) -> StoreResult<()>;
    /// Completion events after a cursor.
    fn completions_after(&self, after: u64, limit: usize) -> StoreResult<Vec<CompletionEvent>>;

    /// Reads a worker registration.
    fn get_worker(&self, ns: &Namespace, inst: &WorkerInstanceId) -> StoreResult<Option<WorkerRecord>>;
    /// Writes a worker registration.
    fn put_worker(&mut self, ns: &Namespace, inst: &WorkerInstanceId, rec: &WorkerRecord) -> StoreResult<()>;
    /// Deletes a worker registration; true if it existed.
    fn delete_worker(&mut self, ns: &Namespace, inst: &WorkerInstanceId) -> StoreResult<bool>;
    /// Instance ids of a namespace after a cursor, sorted.
    fn list_worker_ids(
        &self,
        ns: &Namespace,
        after: Option<&WorkerInstanceId>,
        limit: usize,
    ) -> StoreResult<Vec<WorkerInstanceId>>;
}

/// What a runner reports about itself: tag, family and version, clock, partition counts.
#[derive(Debug, Clone)]
pub struct RunnerInfo {
    /// The backend tag minted into handles.
    pub tag: BackendTag,
    /// The family named in the capability report (`memory`, `sqlite`, …).
    pub family: &'static str,
    /// The backend crate's version.
    pub version: Version,
    /// The injected clock.
    pub clock: Arc<dyn Clock>,
    /// The partition counts of the store.
    pub partitions: PartitionConfig,
}

impl RunnerInfo {
    /// Info for a backend whose crate version is `version_text` (its `CARGO_PKG_VERSION`).
    pub fn new(
        tag: BackendTag,
        family: &'static str,
        version_text: &str,
        clock: Arc<dyn Clock>,
        partitions: PartitionConfig,
    ) -> Self {
        Self { tag, family, version: Version::parse_lenient(version_text), clock, partitions }
    }
}

/// Runs one contract atomically against a store; implemented by each backend.
#[async_trait]
pub trait StoreRunner: Send + Sync + 'static {
    /// The runner's tag, family, version, clock and partition counts.
    fn info(&self) -> &RunnerInfo;
    /// The backend tag minted into handles.
    fn tag(&self) -> BackendTag {
        self.info().tag
    }
    /// The injected clock.
    fn clock(&self) -> &Arc<dyn Clock> {
        &self.info().clock
    }
    /// The capability report: every contract family, simulated time when the clock is simulated.
    fn capabilities(&self) -> Capabilities {
        let info = self.info();
        Capabilities::complete(info.family, info.version, info.clock.as_sim().is_some())
    }
    /// The partition counts of the store.
    fn partition_config(&self) -> PartitionConfig {
        self.info().partitions
    }
    /// Runs `f` as one atomic step. Writes made before an `Err` are kept
    /// (transitions only write before an error where the spec says so).
    async fn run<R, F>(&self, f: F) -> Result<R, EngineError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Store) -> Result<R, EngineError> + Send + 'static;
}
