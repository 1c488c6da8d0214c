//! `Store` over SQLite tables; records are typed rows (JSON for the wide ones);
//! the `RecordKind` records go through `records`, one table per kind.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use ff_core::contracts::{CompletionEvent, LeaseHistoryEntry};
use ff_core::error::BackendErrorKind;
use ff_core::stream::EntryId;
use ff_core::{
    AttemptIndex, EngineError, ExecutionId, Namespace, PartitionConfig, TimestampMs, WorkerInstanceId,
};
use ff_engine::common::LEASE_HISTORY_LEN_MAX;
use ff_engine::records::{
    AttemptRecord, BlobKind, ExecCore, GrantRecord, IndexKey, LeaseRecord, RecordKind, StoredEntry,
    StreamMeta, SummaryRecord, WorkerRecord,
};
use ff_engine::store_support::{
    entry_id_from_sql, entry_id_to_sql, entry_range_to_sql, int_to_sql, rolled_back, uint_from_sql,
};
use ff_engine::{Store, StoreResult};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{OpenError, records, schema};

/// Prepared statements kept per connection.
const STATEMENT_CACHE_CAPACITY: usize = 192;

/// The connection and the fault flag of the running transaction.
pub struct SqliteStore {
    conn: Connection,
    cfg: PartitionConfig,
    /// Set when any statement failed inside the running transaction: it rolls back.
    faulted: Cell<bool>,
}

impl SqliteStore {
    /// Opens a file (or `:memory:`), sets WAL and FULL sync, migrates, checks partitions.
    pub fn open(
        path: &Path,
        path_text: &str,
        cfg: PartitionConfig,
        durability: crate::Durability,
    ) -> Result<Self, OpenError> {
        let mut conn = Connection::open(path)?;
        let sync = match durability {
            crate::Durability::Full => "FULL",
            crate::Durability::Normal => "NORMAL",
        };
        let pragmas = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = OFF; PRAGMA busy_timeout = 5000;"
        );
        conn.execute_batch(&pragmas)
            .map_err(|e| OpenError::Corrupt { path: path_text.to_owned(), reason: e.to_string() })?;
        schema::migrate(&mut conn, path_text)?;
        schema::check_partitions(&conn, &cfg)?;
        // Room for every statement the store and the record tables prepare
        // (about 120), so the hot paths never re-prepare.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        Ok(Self { conn, cfg, faulted: Cell::new(false) })
    }

    fn fail(&self, e: impl std::error::Error + Send + Sync + 'static) -> EngineError {
        self.faulted.set(true);
        EngineError::transport("sqlite", BackendErrorKind::Other, Box::new(e))
    }

    /// A record-table failure: a storage fault, or a record of the wrong shape (corruption).
    fn record_fault(&self, e: records::RecordError) -> EngineError {
        match e {
            records::RecordError::Sql(e) => self.fail(e),
            corrupt @ records::RecordError::Corrupt { .. } => {
                self.faulted.set(true);
                EngineError::validation(
                    ff_core::error::ValidationKind::Corruption,
                    format!("sqlite: {corrupt}"),
                )
            }
        }
    }

    fn sql<T>(&self, r: rusqlite::Result<T>) -> StoreResult<T> {
        r.map_err(|e| self.fail(e))
    }

    fn encode<T: Serialize>(&self, v: &T) -> StoreResult<String> {
        serde_json::to_string(v).map_err(|e| self.fail(e))
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, s: &str) -> StoreResult<T> {
        serde_json::from_str(s).map_err(|e| {
            self.faulted.set(true);
            EngineError::validation(
                ff_core::error::ValidationKind::Corruption,
                format!("sqlite: {what}: {e}"),
            )
        })
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        p: impl rusqlite::Params,
    ) -> StoreResult<Option<T>> {
        let row: Option<String> = {
            let mut stmt = self.sql(self.conn.prepare_cached(sql))?;
            self.sql(stmt.query_row(p, |r| r.get(0)).optional())?
        };
        row.map(|s| self.decode(what, &s)).transpose()
    }

    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> StoreResult<usize> {
        let mut stmt = self.sql(self.conn.prepare_cached(sql))?;
        self.sql(stmt.execute(p))
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction: commits its writes (an `Err`
    /// from `f` keeps the spec's intentional writes), rolls back on a storage fault.
    pub fn transaction<R>(
        &mut self,
        f: impl FnOnce(&mut dyn Store) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            return Err(EngineError::transport("sqlite", BackendErrorKind::Transport, Box::new(e)));
        }
        self.faulted.set(false);
        let r = f(self);
        if self.faulted.get() {
            let _ = self.conn.execute_batch("ROLLBACK");
            return rolled_back("sqlite", r);
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(EngineError::transport("sqlite", BackendErrorKind::Other, Box::new(e)));
        }
        r
    }

    /// `PRAGMA integrity_check`.
    pub fn integrity_check(&mut self) -> Result<String, EngineError> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .map_err(|e| EngineError::transport("sqlite", BackendErrorKind::Other, Box::new(e)))
    }

    /// A deterministic dump of every table, ordered by key.
    pub fn dump(&mut self) -> String {
        let mut out = String::new();
        let tables = [
            ("executions", "SELECT id, core FROM executions ORDER BY id"),
            (
                "attempts",
                "SELECT execution_id || '#' || attempt_index, record FROM attempts ORDER BY execution_id, attempt_index",
            ),
            ("leases", "SELECT execution_id, record FROM leases ORDER BY execution_id"),
            ("grants", "SELECT execution_id, record FROM grants ORDER BY execution_id"),
            (
                "blobs",
                "SELECT execution_id || '#' || kind, hex(bytes) FROM blobs ORDER BY execution_id, kind",
            ),
            ("tags", "SELECT execution_id || '#' || key, value FROM tags ORDER BY execution_id, key"),
            ("idx", "SELECT name || ' ' || member, score FROM idx ORDER BY name, score, member"),
            (
                "workers",
                "SELECT namespace || '/' || instance_id, record FROM workers ORDER BY namespace, instance_id",
            ),
            (
                "idempotency",
                "SELECT namespace || '/' || key, execution_id || ' ' || expires_at FROM idempotency ORDER BY namespace, key",
            ),
            (
                "stream_meta",
                "SELECT execution_id || '#' || attempt_index, record FROM stream_meta ORDER BY execution_id, attempt_index",
            ),
            (
                "summaries",
                "SELECT execution_id || '#' || attempt_index, record FROM summaries ORDER BY execution_id, attempt_index",
            ),
        ];
        let tables =
            tables.into_iter().map(|(name, sql)| (name, sql.to_owned())).chain(records::dump_queries());
        for (name, sql) in tables {
            let rows = self.conn.prepare(&sql).and_then(|mut s| {
                s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, rusqlite::types::Value>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()
            });
            match rows {
                Ok(rows) => {
                    for (k, v) in rows {
                        let _ = writeln!(out, "{name} {k} {v:?}");
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "{name}: unreadable: {e}");
                }
            }
        }
        out
    }
}

impl Store for SqliteStore {
    fn partition_config(&self) -> PartitionConfig {
        self.cfg
    }

    fn get_exec(&self, id: &ExecutionId) -> StoreResult<Option<ExecCore>> {
        self.get_json("exec_core", "SELECT core FROM executions WHERE id = ?1", params![id.as_str()])
    }

    fn put_exec(&mut self, core: &ExecCore) -> StoreResult<()> {
        let json = self.encode(core)?;
        self.exec(
            "INSERT INTO executions (id, partition, lane, public_state, core) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET public_state = excluded.public_state, core = excluded.core",
            params![
                core.execution_id.as_str(),
                core.execution_id.partition_index(),
                core.lane_id.as_str(),
                core.state.public_state.as_str(),
                json
            ],
        )
        .map(|_| ())
    }

    fn get_blob(&self, id: &ExecutionId, kind: BlobKind) -> StoreResult<Option<Vec<u8>>> {
        let mut stmt = self
            .sql(self.conn.prepare_cached("SELECT bytes FROM blobs WHERE execution_id = ?1 AND kind = ?2"))?;
        self.sql(stmt.query_row(params![id.as_str(), kind.code()], |r| r.get(0)).optional())
    }

    fn put_blob(&mut self, id: &ExecutionId, kind: BlobKind, bytes: &[u8]) -> StoreResult<()> {
        self.exec(
            "INSERT INTO blobs (execution_id, kind, bytes) VALUES (?1, ?2, ?3)
             ON CONFLICT (execution_id, kind) DO UPDATE SET bytes = excluded.bytes",
            params![id.as_str(), kind.code(), bytes],
        )
        .map(|_| ())
    }

    fn get_tags(&self, id: &ExecutionId) -> StoreResult<BTreeMap<String, String>> {
        let mut stmt =
            self.sql(self.conn.prepare_cached("SELECT key, value FROM tags WHERE execution_id = ?1"))?;
        let rows = self.sql(stmt.query_map(params![id.as_str()], |r| Ok((r.get(0)?, r.get(1)?))))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (k, v): (String, String) = self.sql(row)?;
            out.insert(k, v);
        }
        Ok(out)
    }

    fn put_tags(&mut self, id: &ExecutionId, pairs: &[(String, String)]) -> StoreResult<()> {
        for (k, v) in pairs {
            self.exec(
                "INSERT INTO tags (execution_id, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (execution_id, key) DO UPDATE SET value = excluded.value",
                params![id.as_str(), k, v],
            )?;
        }
        Ok(())
    }

    fn get_attempt(&self, id: &ExecutionId, index: AttemptIndex) -> StoreResult<Option<AttemptRecord>> {
        self.get_json(
            "attempt",
            "SELECT record FROM attempts WHERE execution_id = ?1 AND attempt_index = ?2",
            params![id.as_str(), index],
        )
    }

    fn put_attempt(&mut self, rec: &AttemptRecord) -> StoreResult<()> {
        let json = self.encode(rec)?;
        self.exec(
            "INSERT INTO attempts (execution_id, attempt_index, record) VALUES (?1, ?2, ?3)
             ON CONFLICT (execution_id, attempt_index) DO UPDATE SET record = excluded.record",
            params![rec.execution_id.as_str(), rec.attempt_index, json],
        )
        .map(|_| ())
    }

    fn get_lease(&self, id: &ExecutionId) -> StoreResult<Option<LeaseRecord>> {
        self.get_json("lease", "SELECT record FROM leases WHERE execution_id = ?1", params![id.as_str()])
    }

    fn put_lease(&mut self, rec: &LeaseRecord) -> StoreResult<()> {
        let json = self.encode(rec)?;
        self.exec(
            "INSERT INTO leases (execution_id, record) VALUES (?1, ?2)
             ON CONFLICT (execution_id) DO UPDATE SET record = excluded.record",
            params![rec.execution_id.as_str(), json],
        )
        .map(|_| ())
    }

    fn delete_lease(&mut self, id: &ExecutionId) -> StoreResult<()> {
        self.exec("DELETE FROM leases WHERE execution_id = ?1", params![id.as_str()]).map(|_| ())
    }

    fn purge_execution(&mut self, id: &ExecutionId) -> StoreResult<()> {
        self.exec("DELETE FROM executions WHERE id = ?1", params![id.as_str()])?;
        for table in [
            "blobs",
            "tags",
            "attempts",
            "leases",
            "grants",
            "stream_meta",
            "stream_entries",
            "summaries",
            "lease_events",
        ] {
            self.exec(&format!("DELETE FROM {table} WHERE execution_id = ?1"), params![id.as_str()])?;
        }
        Ok(())
    }

    fn get_grant(&self, id: &ExecutionId) -> StoreResult<Option<GrantRecord>> {
        self.get_json("grant", "SELECT record FROM grants WHERE execution_id = ?1", params![id.as_str()])
    }

    fn put_grant(&mut self, id: &ExecutionId, rec: &GrantRecord) -> StoreResult<()> {
        let json = self.encode(rec)?;
        self.exec(
            "INSERT INTO grants (execution_id, record) VALUES (?1, ?2)
             ON CONFLICT (execution_id) DO UPDATE SET record = excluded.record",
            params![id.as_str(), json],
        )
        .map(|_| ())
    }

    fn delete_grant(&mut self, id: &ExecutionId) -> StoreResult<()> {
        self.exec("DELETE FROM grants WHERE execution_id = ?1", params![id.as_str()]).map(|_| ())
    }

    fn get_stream_meta(&self, id: &ExecutionId, index: AttemptIndex) -> StoreResult<Option<StreamMeta>> {
        self.get_json(
            "stream_meta",
            "SELECT record FROM stream_meta WHERE execution_id = ?1 AND attempt_index = ?2",
            params![id.as_str(), index],
        )
    }

    fn put_stream_meta(
        &mut self,
        id: &ExecutionId,
        index: AttemptIndex,
        meta: &StreamMeta,
    ) -> StoreResult<()> {
        let json = self.encode(meta)?;
        self.exec(
            "INSERT INTO stream_meta (execution_id, attempt_index, record) VALUES (?1, ?2, ?3)
             ON CONFLICT (execution_id, attempt_index) DO UPDATE SET record = excluded.record",
            params![id.as_str(), index, json],
        )
        .map(|_| ())
    }

    fn stream_append(
        &mut self,
        id: &ExecutionId,
        index: AttemptIndex,
        entry: &StoredEntry,
    ) -> StoreResult<()> {
        let json = self.encode(&entry.fields)?;
        let (ms, seq) = entry_id_to_sql(entry.id);
        self.exec(
            "INSERT INTO stream_entries (execution_id, attempt_index, ms, seq, fields) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id.as_str(), index, ms, seq, json],
        )
        .map(|_| ())
    }

    fn stream_range(
        &self,
        id: &ExecutionId,
        index: AttemptIndex,
        from: EntryId,
        to: EntryId,
        limit: usize,
    ) -> StoreResult<Vec<StoredEntry>> {
        let Some([from_ms, from_seq, to_ms, to_seq]) = entry_range_to_sql(from, to) else {
            return Ok(Vec::new());
        };
        let mut stmt = self.sql(self.conn.prepare_cached(
            "SELECT ms, seq, fields FROM stream_entries WHERE execution_id = ?1 AND attempt_index = ?2
             AND (ms, seq) >= (?3, ?4) AND (ms, seq) <= (?5, ?6) ORDER BY ms, seq LIMIT ?7",
        ))?;
        let limit = int_to_sql(limit);
        let rows: Vec<(i64, i64, String)> = self.sql(
            stmt.query_map(params![id.as_str(), index, from_ms, from_seq, to_ms, to_seq, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .and_then(|rows| rows.collect()),
        )?;
        rows.into_iter()
            .map(|(ms, seq, fields)| {
                Ok(StoredEntry {
                    id: entry_id_from_sql(ms, seq),
                    fields: self.decode("stream entry", &fields)?,
                })
            })
            .collect()
    }

    fn stream_trim(&mut self, id: &ExecutionId, index: AttemptIndex, keep: u64) -> StoreResult<()> {
        self.exec(
            "DELETE FROM stream_entries WHERE execution_id = ?1 AND attempt_index = ?2 AND (ms, seq) NOT IN (
                 SELECT ms, seq FROM stream_entries WHERE execution_id = ?1 AND attempt_index = ?2
                 ORDER BY ms DESC, seq DESC LIMIT ?3)",
            params![id.as_str(), index, int_to_sql(keep)],
        )
        .map(|_| ())
    }

    fn get_summary(&self, id: &ExecutionId, index: AttemptIndex) -> StoreResult<Option<SummaryRecord>> {
        self.get_json(
            "summary",
            "SELECT record FROM summaries WHERE execution_id = ?1 AND attempt_index = ?2",
            params![id.as_str(), index],
        )
    }

    fn put_summary(&mut self, id: &ExecutionId, index: AttemptIndex, rec: &SummaryRecord) -> StoreResult<()> {
        let json = self.encode(rec)?;
        self.exec(
            "INSERT INTO summaries (execution_id, attempt_index, record) VALUES (?1, ?2, ?3)
             ON CONFLICT (execution_id, attempt_index) DO UPDATE SET record = excluded.record",
            params![id.as_str(), index, json],
        )
        .map(|_| ())
    }

    fn get_record(&self, kind: RecordKind, key: &str) -> StoreResult<Option<String>> {
        records::get(&self.conn, kind, key).map_err(|e| self.record_fault(e))
    }

    fn put_record(&mut self, kind: RecordKind, key: &str, json: &str) -> StoreResult<()> {
        records::put(&self.conn, kind, key, json).map_err(|e| self.record_fault(e))
    }

    fn delete_record(&mut self, kind: RecordKind, key: &str) -> StoreResult<bool> {
        records::delete(&self.conn, kind, key).map_err(|e| self.record_fault(e))
    }

    fn index_count(&self, key: &IndexKey) -> StoreResult<u64> {
        let mut stmt = self.sql(self.conn.prepare_cached("SELECT count(*) FROM idx WHERE name = ?1"))?;
        let n: i64 = self.sql(stmt.query_row(params![key.storage_name()], |r| r.get(0)))?;
        Ok(uint_from_sql(n))
    }

    fn get_idem(&self, ns: &Namespace, key: &str) -> StoreResult<Option<(ExecutionId, TimestampMs)>> {
        let mut stmt = self.sql(self.conn.prepare_cached(
            "SELECT execution_id, expires_at FROM idempotency WHERE namespace = ?1 AND key = ?2",
        ))?;
        let row: Option<(String, i64)> =
            self.sql(stmt.query_row(params![ns.as_str(), key], |r| Ok((r.get(0)?, r.get(1)?))).optional())?;
        match row {
            None => Ok(None),
            Some((id, exp)) => {
                let id = ExecutionId::parse(&id).map_err(|e| self.fail(e))?;
                Ok(Some((id, exp)))
            }
        }
    }

    fn put_idem(
        &mut self,
        ns: &Namespace,
        key: &str,
        id: &ExecutionId,
        expires_at: TimestampMs,
    ) -> StoreResult<()> {
        self.exec(
            "INSERT INTO idempotency (namespace, key, execution_id, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (namespace, key) DO UPDATE SET execution_id = excluded.execution_id, expires_at = excluded.expires_at",
            params![ns.as_str(), key, id.as_str(), expires_at],
        )
        .map(|_| ())
    }

    fn index_add(&mut self, key: &IndexKey, member: &str, score: i64) -> StoreResult<()> {
        self.exec(
            "INSERT INTO idx (name, member, score) VALUES (?1, ?2, ?3)
             ON CONFLICT (name, member) DO UPDATE SET score = excluded.score",
            params![key.storage_name(), member, score],
        )
        .map(|_| ())
    }

    fn index_remove(&mut self, key: &IndexKey, member: &str) -> StoreResult<bool> {
        self.exec("DELETE FROM idx WHERE name = ?1 AND member = ?2", params![key.storage_name(), member])
            .map(|n| n > 0)
    }

    fn index_score(&self, key: &IndexKey, member: &str) -> StoreResult<Option<i64>> {
        let mut stmt =
            self.sql(self.conn.prepare_cached("SELECT score FROM idx WHERE name = ?1 AND member = ?2"))?;
        self.sql(stmt.query_row(params![key.storage_name(), member], |r| r.get(0)).optional())
    }

    fn index_range(
        &self,
        key: &IndexKey,
        after: Option<(i64, &str)>,
        max_score: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, String)>> {
        let limit = int_to_sql(limit);
        let name = key.storage_name();
        let mut out = Vec::new();
        let mut push = |rows: rusqlite::Result<Vec<(i64, String)>>| -> StoreResult<()> {
            out = self.sql(rows)?;
            Ok(())
        };
        match after {
            Some((score, member)) => {
                let mut stmt = self.sql(self.conn.prepare_cached(
                    "SELECT score, member FROM idx WHERE name = ?1 AND score <= ?2 AND (score, member) > (?3, ?4)
                     ORDER BY score, member LIMIT ?5",
                ))?;
                push(
                    stmt.query_map(params![name, max_score, score, member, limit], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .and_then(|rows| rows.collect()),
                )?;
            }
            None => {
                let mut stmt = self.sql(self.conn.prepare_cached(
                    "SELECT score, member FROM idx WHERE name = ?1 AND score <= ?2 ORDER BY score, member LIMIT ?3",
                ))?;
                push(
                    stmt.query_map(params![name, max_score, limit], |r| Ok((r.get(0)?, r.get(1)?)))
                        .and_then(|rows| rows.collect()),
                )?;
            }
        }
        Ok(out)
    }

    fn append_lease_event(
        &mut self,
        id: &ExecutionId,
        event: &str,
        ts: TimestampMs,
        fields: Vec<(&'static str, String)>,
    ) -> StoreResult<()> {
        let map: BTreeMap<&str, String> = fields.into_iter().collect();
        let json = self.encode(&map)?;
        let seq: i64 = {
            let mut stmt = self.sql(self.conn.prepare_cached(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM lease_events WHERE execution_id = ?1",
            ))?;
            self.sql(stmt.query_row(params![id.as_str()], |r| r.get(0)))?
        };
        self.exec(
            "INSERT INTO lease_events (execution_id, seq, event, ts, fields) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id.as_str(), seq, event, ts, json],
        )?;
        let keep_from = seq - LEASE_HISTORY_LEN_MAX as i64;
        self.exec(
            "DELETE FROM lease_events WHERE execution_id = ?1 AND seq <= ?2",
            params![id.as_str(), keep_from],
        )
        .map(|_| ())
    }

    fn lease_events(&self, id: &ExecutionId) -> StoreResult<Vec<LeaseHistoryEntry>> {
        let mut stmt = self.sql(self.conn.prepare_cached(
            "SELECT seq, event, ts, fields FROM lease_events WHERE execution_id = ?1 ORDER BY seq",
        ))?;
        let rows: Vec<(i64, String, i64, String)> = self.sql(
            stmt.query_map(params![id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .and_then(|rows| rows.collect()),
        )?;
        rows.into_iter()
            .map(|(seq, event, ts, fields)| {
                Ok(LeaseHistoryEntry {
                    seq: uint_from_sql(seq),
                    event,
                    ts,
                    fields: self.decode("lease event", &fields)?,
                })
            })
            .collect()
    }

    fn publish_completion(
        &mut self,
        id: &ExecutionId,
        flow_id: &str,
        outcome: &str,
        ts: TimestampMs,
    ) -> StoreResult<()> {
        self.exec(
            "INSERT INTO completions (execution_id, flow_id, outcome, produced_at) VALUES (?1, ?2, ?3, ?4)",
            params![id.as_str(), flow_id, outcome, ts],
        )
        .map(|_| ())
    }

    fn completions_after(&self, after: u64, limit: usize) -> StoreResult<Vec<CompletionEvent>> {
        let mut stmt = self.sql(self.conn.prepare_cached(
            "SELECT event_id, execution_id, flow_id, outcome, produced_at FROM completions
             WHERE event_id > ?1 ORDER BY event_id LIMIT ?2",
        ))?;
        let after = int_to_sql(after);
        let limit = int_to_sql(limit);
        let rows: Vec<(i64, String, String, String, i64)> = self.sql(
            stmt.query_map(params![after, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .and_then(|rows| rows.collect()),
        )?;
        rows.into_iter()
            .map(|(event_id, id, flow_id, outcome, produced_at_ms)| {
                Ok(CompletionEvent {
                    event_id: uint_from_sql(event_id),
                    execution_id: ExecutionId::parse(&id).map_err(|e| self.fail(e))?,
                    flow_id,
                    outcome,
                    produced_at_ms,
                })
            })
            .collect()
    }

    fn get_worker(&self, ns: &Namespace, inst: &WorkerInstanceId) -> StoreResult<Option<WorkerRecord>> {
        self.get_json(
            "worker",
            "SELECT record FROM workers WHERE namespace = ?1 AND instance_id = ?2",
            params![ns.as_str(), inst.as_str()],
        )
    }

    fn put_worker(&mut self, ns: &Namespace, inst: &WorkerInstanceId, rec: &WorkerRecord) -> StoreResult<()> {
        let json = self.encode(rec)?;
        self.exec(
            "INSERT INTO workers (namespace, instance_id, record) VALUES (?1, ?2, ?3)
             ON CONFLICT (namespace, instance_id) DO UPDATE SET record = excluded.record",
            params![ns.as_str(), inst.as_str(), json],
        )
        .map(|_| ())
    }

    fn delete_worker(&mut self, ns: &Namespace, inst: &WorkerInstanceId) -> StoreResult<bool> {
        self.exec(
            "DELETE FROM workers WHERE namespace = ?1 AND instance_id = ?2",
            params![ns.as_str(), inst.as_str()],
        )
        .map(|n| n > 0)
    }

    fn list_worker_ids(
        &self,
        ns: &Namespace,
        after: Option<&WorkerInstanceId>,
        limit: usize,
    ) -> StoreResult<Vec<WorkerInstanceId>> {
        let mut stmt = self.sql(self.conn.prepare_cached(
            "SELECT instance_id FROM workers WHERE namespace = ?1 AND instance_id > ?2 ORDER BY instance_id LIMIT ?3",
        ))?;
        let after = after.map(|a| a.as_str().to_owned());
        let limit = int_to_sql(limit);
        // With no cursor, every id (including "") sorts at or after "": use a value below it.
        let rows: Vec<String> = match after {
            Some(a) => self.sql(
                stmt.query_map(params![ns.as_str(), a, limit], |r| r.get(0)).and_then(|r| r.collect()),
            )?,
            None => {
                let mut all = self.sql(self.conn.prepare_cached(
                    "SELECT instance_id FROM workers WHERE namespace = ?1 ORDER BY instance_id LIMIT ?2",
                ))?;
                self.sql(all.query_map(params![ns.as_str(), limit], |r| r.get(0)).and_then(|r| r.collect()))?
            }
        };
        Ok(rows.into_iter().map(WorkerInstanceId::new).collect())
    }
}
