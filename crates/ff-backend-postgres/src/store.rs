//! `Store` over PostgreSQL tables; records are typed rows (JSON text for the wide ones).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::time::Duration;

use ff_core::contracts::{CompletionEvent, LeaseHistoryEntry};
use ff_core::error::{BackendErrorKind, ValidationKind};
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
use postgres::types::{FromSql, ToSql};
use postgres::{Client, NoTls, Row, Statement};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{OpenError, schema};

/// Attempts at starting a contract's transaction (connect, `BEGIN`, `LOCK`)
/// before the contract runs; the contract itself runs at most once.
const BEGIN_ATTEMPTS_MAX: u32 = 4;
/// Pause before the first re-attempt; doubles each time.
const BEGIN_BACKOFF_MS: u64 = 20;
/// Longest a contract waits for the writer lock before its attempt fails.
const LOCK_TIMEOUT_MS: u64 = 10_000;

/// Starts a contract: the writer lock first, so the repeatable-read snapshot,
/// taken by the first query after it, includes every earlier contract's commit.
const BEGIN_SQL: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ; LOCK TABLE ff_meta IN EXCLUSIVE MODE";

/// Param list shorthand.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Whether starting a transaction may succeed if tried again: serialization
/// failure, deadlock, lock timeout, or a connection that went away.
fn begin_retryable(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::LOCK_NOT_AVAILABLE
    })
}

/// A server error, described with its SQLSTATE and message (the client's own
/// `Display` says only "db error").
#[derive(Debug, thiserror::Error)]
#[error("{code} {message}")]
pub struct ServerError {
    /// SQLSTATE.
    pub code: String,
    /// The server's message.
    pub message: String,
}

fn pg_error(e: postgres::Error) -> EngineError {
    let kind = if e.is_closed() { BackendErrorKind::Transport } else { BackendErrorKind::Other };
    match e.as_db_error() {
        Some(db) => EngineError::transport(
            "postgres",
            kind,
            Box::new(ServerError { code: db.code().code().to_owned(), message: db.message().to_owned() }),
        ),
        None => EngineError::transport("postgres", kind, Box::new(e)),
    }
}

/// Where and how to (re)connect.
pub(crate) struct Session {
    pub(crate) config: postgres::Config,
    pub(crate) schema: String,
}

impl Session {
    /// Connects and points the session at the schema.
    pub(crate) fn connect(&self) -> Result<Client, postgres::Error> {
        let mut client = self.config.connect(NoTls)?;
        client.batch_execute(&format!(
            "SET search_path TO \"{}\"; SET lock_timeout = {LOCK_TIMEOUT_MS}; SET TIME ZONE 'UTC'",
            self.schema
        ))?;
        Ok(client)
    }
}

/// The connection, its prepared statements and the fault flag of the running transaction.
pub struct PostgresStore {
    session: Session,
    client: RefCell<Client>,
    /// Prepared statements by SQL text; cleared when the connection is replaced.
    statements: RefCell<HashMap<&'static str, Statement>>,
    cfg: PartitionConfig,
    /// Set when any statement failed inside the running transaction: it rolls back.
    faulted: Cell<bool>,
}

impl PostgresStore {
    /// Connects, migrates and checks the partition counts.
    pub(crate) fn open(session: Session, cfg: PartitionConfig) -> Result<Self, OpenError> {
        let mut client = session.connect().map_err(OpenError::Connect)?;
        schema::migrate(&mut client, &session.schema, &cfg)?;
        Ok(Self {
            session,
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
            cfg,
            faulted: Cell::new(false),
        })
    }

    fn fail(&self, e: impl std::error::Error + Send + Sync + 'static) -> EngineError {
        self.faulted.set(true);
        EngineError::transport("postgres", BackendErrorKind::Other, Box::new(e))
    }

    fn pg<T>(&self, r: Result<T, postgres::Error>) -> StoreResult<T> {
        r.map_err(|e| {
            self.faulted.set(true);
            pg_error(e)
        })
    }

    /// The cached prepared statement for `sql`, preparing it on first use.
    fn statement(&self, sql: &'static str) -> StoreResult<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = self.pg(self.client.borrow_mut().prepare(sql))?;
        self.statements.borrow_mut().insert(sql, stmt.clone());
        Ok(stmt)
    }

    fn query(&self, sql: &'static str, params: Params<'_>) -> StoreResult<Vec<Row>> {
        let stmt = self.statement(sql)?;
        self.pg(self.client.borrow_mut().query(&stmt, params))
    }

    fn query_opt(&self, sql: &'static str, params: Params<'_>) -> StoreResult<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    fn exec(&self, sql: &'static str, params: Params<'_>) -> StoreResult<u64> {
        let stmt = self.statement(sql)?;
        self.pg(self.client.borrow_mut().execute(&stmt, params))
    }

    /// A column, typed; a type mismatch is a fault, not a panic.
    fn col<'a, T: FromSql<'a>>(&self, row: &'a Row, idx: usize) -> StoreResult<T> {
        self.pg(row.try_get(idx))
    }

    fn encode<T: Serialize>(&self, v: &T) -> StoreResult<String> {
        serde_json::to_string(v).map_err(|e| self.fail(e))
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, s: &str) -> StoreResult<T> {
        serde_json::from_str(s).map_err(|e| {
            self.faulted.set(true);
            EngineError::validation(ValidationKind::Corruption, format!("postgres: {what}: {e}"))
        })
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        what: &str,
        sql: &'static str,
        params: Params<'_>,
    ) -> StoreResult<Option<T>> {
        match self.query_opt(sql, params)? {
            None => Ok(None),
            Some(row) => {
                let text: String = self.col(&row, 0)?;
                self.decode(what, &text).map(Some)
            }
        }
    }

    fn parse_id(&self, text: &str) -> StoreResult<ExecutionId> {
        ExecutionId::parse(text).map_err(|e| {
            self.faulted.set(true);
            EngineError::validation(ValidationKind::Corruption, format!("postgres: execution id: {e}"))
        })
    }

    /// Replaces a closed connection (the prepared statements go with it).
    fn reconnect(&mut self) -> Result<(), postgres::Error> {
        let client = self.session.connect()?;
        self.statements.get_mut().clear();
        *self.client.get_mut() = client;
        Ok(())
    }

    /// Opens the contract's transaction, retrying a bounded number of times.
    /// Nothing of the contract has run yet, so a retry cannot repeat a write.
    fn begin(&mut self) -> StoreResult<()> {
        let mut backoff_ms = BEGIN_BACKOFF_MS;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = if self.client.get_mut().is_closed() {
                self.reconnect().and_then(|()| self.client.get_mut().batch_execute(BEGIN_SQL))
            } else {
                self.client.get_mut().batch_execute(BEGIN_SQL)
            };
            let e = match started {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if !self.client.get_mut().is_closed() {
                let _ = self.client.get_mut().batch_execute("ROLLBACK");
            }
            if attempt >= BEGIN_ATTEMPTS_MAX || !begin_retryable(&e) {
                return Err(pg_error(e));
            }
            std::thread::sleep(Duration::from_millis(backoff_ms));
            backoff_ms *= 2;
        }
    }

    /// Runs `f` in one repeatable-read transaction holding the writer lock: commits
    /// its writes (an `Err` from `f` keeps the spec's intentional writes), rolls
    /// back on a storage fault. `f` runs at most once; a failed commit is
    /// reported (the transaction rolled back), never replayed.
    pub fn transaction<R>(
        &mut self,
        f: impl FnOnce(&mut dyn Store) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        self.begin()?;
        self.faulted.set(false);
        let r = f(self);
        let client = self.client.get_mut();
        if self.faulted.get() {
            let _ = client.batch_execute("ROLLBACK");
            return rolled_back("postgres", r);
        }
        if let Err(e) = client.batch_execute("COMMIT") {
            if !client.is_closed() {
                let _ = client.batch_execute("ROLLBACK");
            }
            return Err(pg_error(e));
        }
        r
    }

    /// Empties every data table (keeping the schema version and partition counts)
    /// under the writer lock, so a test fixture can reuse a schema as a fresh store.
    ///
    /// Errors: `Transport` when a statement fails (nothing is deleted then).
    pub fn reset(&mut self) -> Result<(), EngineError> {
        self.begin()?;
        let client = self.client.get_mut();
        let cleared = client.batch_execute(
            "DELETE FROM executions; DELETE FROM blobs; DELETE FROM tags; DELETE FROM attempts;
             DELETE FROM leases; DELETE FROM grants; DELETE FROM stream_meta; DELETE FROM stream_entries;
             DELETE FROM summaries; DELETE FROM idempotency; DELETE FROM idx; DELETE FROM lease_events;
             DELETE FROM completions; DELETE FROM workers; DELETE FROM records;
             SELECT setval(pg_get_serial_sequence('completions', 'event_id'), 1, false);
             COMMIT",
        );
        if let Err(e) = cleared {
            if !client.is_closed() {
                let _ = client.batch_execute("ROLLBACK");
            }
            return Err(pg_error(e));
        }
        Ok(())
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
                "SELECT execution_id || '#' || kind, encode(bytes, 'hex') FROM blobs ORDER BY execution_id, kind",
            ),
            ("tags", "SELECT execution_id || '#' || key, value FROM tags ORDER BY execution_id, key"),
            ("idx", "SELECT name || ' ' || member, score::text FROM idx ORDER BY name, score, member"),
            (
                "workers",
                "SELECT namespace || '/' || instance_id, record FROM workers ORDER BY namespace, instance_id",
            ),
            (
                "idempotency",
                "SELECT namespace || '/' || key, execution_id || ' ' || expires_at FROM idempotency ORDER BY namespace, key",
            ),
            ("records", "SELECT kind || '/' || key, value FROM records ORDER BY kind, key"),
            (
                "stream_meta",
                "SELECT execution_id || '#' || attempt_index, record FROM stream_meta ORDER BY execution_id, attempt_index",
            ),
            (
                "summaries",
                "SELECT execution_id || '#' || attempt_index, record FROM summaries ORDER BY execution_id, attempt_index",
            ),
        ];
        let client = self.client.get_mut();
        for (name, sql) in tables {
            match client.query(sql, &[]) {
                Ok(rows) => {
                    for row in rows {
                        let k: Result<String, _> = row.try_get(0);
                        let v: Result<String, _> = row.try_get(1);
                        match (k, v) {
                            (Ok(k), Ok(v)) => {
                                let _ = writeln!(out, "{name} {k} {v:?}");
                            }
                            _ => {
                                let _ = writeln!(out, "{name}: undecodable row");
                            }
                        }
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

/// Every execution-keyed table a purge clears, one statement each.
const PURGE_SQL: [&str; 10] = [
    "DELETE FROM executions WHERE id = $1",
    "DELETE FROM blobs WHERE execution_id = $1",
    "DELETE FROM tags WHERE execution_id = $1",
    "DELETE FROM attempts WHERE execution_id = $1",
    "DELETE FROM leases WHERE execution_id = $1",
    "DELETE FROM grants WHERE execution_id = $1",
    "DELETE FROM stream_meta WHERE execution_id = $1",
    "DELETE FROM stream_entries WHERE execution_id = $1",
    "DELETE FROM summaries WHERE execution_id = $1",
    "DELETE FROM lease_events WHERE execution_id = $1",
];

impl Store for PostgresStore {
    fn partition_config(&self) -> PartitionConfig {
        self.cfg
    }

    fn get_exec(&self, id: &ExecutionId) -> StoreResult<Option<ExecCore>> {
        self.get_json("exec_core", "SELECT core FROM executions WHERE id = $1", &[&id.as_str()])
    }

    fn put_exec(&mut self, core: &ExecCore) -> StoreResult<()> {
        let json = self.encode(core)?;
        self.exec(
            "INSERT INTO executions (id, partition, lane, public_state, core) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET public_state = excluded.public_state, core = excluded.core",
            &[
                &core.execution_id.as_str(),
                &i64::from(core.execution_id.partition_index()),
                &core.lane_id.as_str(),
                &core.state.public_state.as_str(),
                &json,
            ],
        )
        .map(|_| ())
    }

    fn get_blob(&self, id: &ExecutionId, kind: BlobKind) -> StoreResult<Option<Vec<u8>>> {
        match self.query_opt(
            "SELECT bytes FROM blobs WHERE execution_id = $1 AND kind = $2",
            &[&id.as_str(), &kind.code()],
        )? {
            None => Ok(None),
            Some(row) => self.col(&row, 0).map(Some),
        }
    }

    fn put_blob(&mut self, id: &ExecutionId, kind: BlobKind, bytes: &[u8]) -> StoreResult<()> {
        self.exec(
            "INSERT INTO blobs (execution_id, kind, bytes) VALUES ($1, $2, $3)
             ON CONFLICT (execution_id, kind) DO UPDATE SET bytes = excluded.bytes",
            &[&id.as_str(), &kind.code(), &bytes],
        )
        .map(|_| ())
    }

    fn get_tags(&self, id: &ExecutionId) -> StoreResult<BTreeMap<String, String>> {
        let rows = self.query("SELECT key, value FROM tags WHERE execution_id = $1", &[&id.as_str()])?;
        let mut out = BTreeMap::new();
        for row in &rows {
            out.insert(self.col(row, 0)?, self.col(row, 1)?);
        }
        Ok(out)
    }

    fn put_tags(&mut self, id: &ExecutionId, pairs: &[(String, String)]) -> StoreResult<()> {
        for (k, v) in pairs {
            self.exec(
                "INSERT INTO tags (execution_id, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (execution_id, key) DO UPDATE SET value = excluded.value",
                &[&id.as_str(), k, v],
            )?;
        }
        Ok(())
    }

    fn get_attempt(&self, id: &ExecutionId, index: AttemptIndex) -> StoreResult<Option<AttemptRecord>> {
        self.get_json(
            "attempt",
            "SELECT record FROM attempts WHERE execution_id = $1 AND attempt_index = $2",
            &[&id.as_str(), &i64::from(index)],
        )
    }

    fn put_attempt(&mut self, rec: &AttemptRecord) -> StoreResult<()> {
        let json = self.encode(rec)?;
        self.exec(
            "INSERT INTO attempts (execution_id, attempt_index, record) VALUES ($1, $2, $3)
             ON CONFLICT (execution_id, attempt_index) DO UPDATE SET record = excluded.record",
            &[&rec.execution_id.as_str(), &i64::from(rec.attempt_index), &json],
        )
        .map(|_| ())
    }

    fn get_lease(&self, id: &ExecutionId) -> StoreResult<Option<LeaseRecord>> {
        self.get_json("lease", "SELECT record FROM leases WHERE execution_id = $1", &[&id.as_str()])
    }

    fn put_lease(&mut self, rec: &LeaseRecord) -> StoreResult<()> {
        let json = self.encode(rec)?;
        self.exec(
            "INSERT INTO leases (execution_id, record) VALUES ($1, $2)
             ON CONFLICT (execution_id) DO UPDATE SET record = excluded.record",
            &[&rec.execution_id.as_str(), &json],
        )
        .map(|_| ())
    }

    fn delete_lease(&mut self, id: &ExecutionId) -> StoreResult<()> {
        self.exec("DELETE FROM leases WHERE execution_id = $1", &[&id.as_str()]).map(|_| ())
    }

    fn purge_execution(&mut self, id: &ExecutionId) -> StoreResult<()> {
        for sql in PURGE_SQL {
            self.exec(sql, &[&id.as_str()])?;
        }
        Ok(())
    }

    fn get_grant(&self, id: &ExecutionId) -> StoreResult<Option<GrantRecord>> {
        self.get_json("grant", "SELECT record FROM grants WHERE execution_id = $1", &[&id.as_str()])
    }

    fn put_grant(&mut self, id: &ExecutionId, rec: &GrantRecord) -> StoreResult<()> {
        let json = self.encode(rec)?;
        self.exec(
            "INSERT INTO grants (execution_id, record) VALUES ($1, $2)
             ON CONFLICT (execution_id) DO UPDATE SET record = excluded.record",
            &[&id.as_str(), &json],
        )
        .map(|_| ())
    }

    fn delete_grant(&mut self, id: &ExecutionId) -> StoreResult<()> {
        self.exec("DELETE FROM grants WHERE execution_id = $1", &[&id.as_str()]).map(|_| ())
    }

    fn get_stream_meta(&self, id: &ExecutionId, index: AttemptIndex) -> StoreResult<Option<StreamMeta>> {
        self.get_json(
            "stream_meta",
            "SELECT record FROM stream_meta WHERE execution_id = $1 AND attempt_index = $2",
            &[&id.as_str(), &i64::from(index)],
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
            "INSERT INTO stream_meta (execution_id, attempt_index, record) VALUES ($1, $2, $3)
             ON CONFLICT (execution_id, attempt_index) DO UPDATE SET record = excluded.record",
            &[&id.as_str(), &i64::from(index), &json],
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
            "INSERT INTO stream_entries (execution_id, attempt_index, ms, seq, fields) VALUES ($1, $2, $3, $4, $5)",
            &[&id.as_str(), &i64::from(index), &ms, &seq, &json],
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
        let rows = self.query(
            "SELECT ms, seq, fields FROM stream_entries WHERE execution_id = $1 AND attempt_index = $2
             AND (ms, seq) >= ($3, $4) AND (ms, seq) <= ($5, $6) ORDER BY ms, seq LIMIT $7",
            &[&id.as_str(), &i64::from(index), &from_ms, &from_seq, &to_ms, &to_seq, &int_to_sql(limit)],
        )?;
        rows.iter()
            .map(|row| {
                let fields: String = self.col(row, 2)?;
                Ok(StoredEntry {
                    id: entry_id_from_sql(self.col(row, 0)?, self.col(row, 1)?),
                    fields: self.decode("stream entry", &fields)?,
                })
            })
            .collect()
    }

    fn stream_trim(&mut self, id: &ExecutionId, index: AttemptIndex, keep: u64) -> StoreResult<()> {
        self.exec(
            "DELETE FROM stream_entries WHERE execution_id = $1 AND attempt_index = $2 AND (ms, seq) NOT IN (
                 SELECT ms, seq FROM stream_entries WHERE execution_id = $1 AND attempt_index = $2
                 ORDER BY ms DESC, seq DESC LIMIT $3)",
            &[&id.as_str(), &i64::from(index), &int_to_sql(keep)],
        )
        .map(|_| ())
    }

    fn get_summary(&self, id: &ExecutionId, index: AttemptIndex) -> StoreResult<Option<SummaryRecord>> {
        self.get_json(
            "summary",
            "SELECT record FROM summaries WHERE execution_id = $1 AND attempt_index = $2",
            &[&id.as_str(), &i64::from(index)],
        )
    }

    fn put_summary(&mut self, id: &ExecutionId, index: AttemptIndex, rec: &SummaryRecord) -> StoreResult<()> {
        let json = self.encode(rec)?;
        self.exec(
            "INSERT INTO summaries (execution_id, attempt_index, record) VALUES ($1, $2, $3)
             ON CONFLICT (execution_id, attempt_index) DO UPDATE SET record = excluded.record",
            &[&id.as_str(), &i64::from(index), &json],
        )
        .map(|_| ())
    }

    fn get_record(&self, kind: RecordKind, key: &str) -> StoreResult<Option<String>> {
        match self
            .query_opt("SELECT value FROM records WHERE kind = $1 AND key = $2", &[&kind.as_str(), &key])?
        {
            None => Ok(None),
            Some(row) => self.col(&row, 0).map(Some),
        }
    }

    fn put_record(&mut self, kind: RecordKind, key: &str, json: &str) -> StoreResult<()> {
        self.exec(
            "INSERT INTO records (kind, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
            &[&kind.as_str(), &key, &json],
        )
        .map(|_| ())
    }

    fn delete_record(&mut self, kind: RecordKind, key: &str) -> StoreResult<bool> {
        self.exec("DELETE FROM records WHERE kind = $1 AND key = $2", &[&kind.as_str(), &key]).map(|n| n > 0)
    }

    fn index_count(&self, key: &IndexKey) -> StoreResult<u64> {
        let rows = self.query("SELECT count(*) FROM idx WHERE name = $1", &[&key.storage_name()])?;
        let n: i64 = match rows.first() {
            Some(row) => self.col(row, 0)?,
            None => 0,
        };
        Ok(uint_from_sql(n))
    }

    fn get_idem(&self, ns: &Namespace, key: &str) -> StoreResult<Option<(ExecutionId, TimestampMs)>> {
        let row = self.query_opt(
            "SELECT execution_id, expires_at FROM idempotency WHERE namespace = $1 AND key = $2",
            &[&ns.as_str(), &key],
        )?;
        match row {
            None => Ok(None),
            Some(row) => {
                let id: String = self.col(&row, 0)?;
                Ok(Some((self.parse_id(&id)?, self.col(&row, 1)?)))
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
            "INSERT INTO idempotency (namespace, key, execution_id, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (namespace, key) DO UPDATE SET execution_id = excluded.execution_id, expires_at = excluded.expires_at",
            &[&ns.as_str(), &key, &id.as_str(), &expires_at],
        )
        .map(|_| ())
    }

    fn index_add(&mut self, key: &IndexKey, member: &str, score: i64) -> StoreResult<()> {
        self.exec(
            "INSERT INTO idx (name, member, score) VALUES ($1, $2, $3)
             ON CONFLICT (name, member) DO UPDATE SET score = excluded.score",
            &[&key.storage_name(), &member, &score],
        )
        .map(|_| ())
    }

    fn index_remove(&mut self, key: &IndexKey, member: &str) -> StoreResult<bool> {
        self.exec("DELETE FROM idx WHERE name = $1 AND member = $2", &[&key.storage_name(), &member])
            .map(|n| n > 0)
    }

    fn index_score(&self, key: &IndexKey, member: &str) -> StoreResult<Option<i64>> {
        match self.query_opt(
            "SELECT score FROM idx WHERE name = $1 AND member = $2",
            &[&key.storage_name(), &member],
        )? {
            None => Ok(None),
            Some(row) => self.col(&row, 0).map(Some),
        }
    }

    fn index_range(
        &self,
        key: &IndexKey,
        after: Option<(i64, &str)>,
        max_score: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, String)>> {
        let name = key.storage_name();
        let limit = int_to_sql(limit);
        let rows = match after {
            Some((score, member)) => self.query(
                "SELECT score, member FROM idx WHERE name = $1 AND score <= $2 AND (score, member) > ($3, $4)
                 ORDER BY score, member LIMIT $5",
                &[&name, &max_score, &score, &member, &limit],
            )?,
            None => self.query(
                "SELECT score, member FROM idx WHERE name = $1 AND score <= $2 ORDER BY score, member LIMIT $3",
                &[&name, &max_score, &limit],
            )?,
        };
        rows.iter().map(|row| Ok((self.col(row, 0)?, self.col(row, 1)?))).collect()
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
        let rows = self.query(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM lease_events WHERE execution_id = $1",
            &[&id.as_str()],
        )?;
        let seq: i64 = match rows.first() {
            Some(row) => self.col(row, 0)?,
            None => 1,
        };
        self.exec(
            "INSERT INTO lease_events (execution_id, seq, event, ts, fields) VALUES ($1, $2, $3, $4, $5)",
            &[&id.as_str(), &seq, &event, &ts, &json],
        )?;
        let keep_from = seq - LEASE_HISTORY_LEN_MAX as i64;
        self.exec(
            "DELETE FROM lease_events WHERE execution_id = $1 AND seq <= $2",
            &[&id.as_str(), &keep_from],
        )
        .map(|_| ())
    }

    fn lease_events(&self, id: &ExecutionId) -> StoreResult<Vec<LeaseHistoryEntry>> {
        let rows = self.query(
            "SELECT seq, event, ts, fields FROM lease_events WHERE execution_id = $1 ORDER BY seq",
            &[&id.as_str()],
        )?;
        rows.iter()
            .map(|row| {
                let seq: i64 = self.col(row, 0)?;
                let fields: String = self.col(row, 3)?;
                Ok(LeaseHistoryEntry {
                    seq: uint_from_sql(seq),
                    event: self.col(row, 1)?,
                    ts: self.col(row, 2)?,
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
            "INSERT INTO completions (execution_id, flow_id, outcome, produced_at) VALUES ($1, $2, $3, $4)",
            &[&id.as_str(), &flow_id, &outcome, &ts],
        )
        .map(|_| ())
    }

    fn completions_after(&self, after: u64, limit: usize) -> StoreResult<Vec<CompletionEvent>> {
        let rows = self.query(
            "SELECT event_id, execution_id, flow_id, outcome, produced_at FROM completions
             WHERE event_id > $1 ORDER BY event_id LIMIT $2",
            &[&int_to_sql(after), &int_to_sql(limit)],
        )?;
        rows.iter()
            .map(|row| {
                let event_id: i64 = self.col(row, 0)?;
                let id: String = self.col(row, 1)?;
                Ok(CompletionEvent {
                    event_id: uint_from_sql(event_id),
                    execution_id: self.parse_id(&id)?,
                    flow_id: self.col(row, 2)?,
                    outcome: self.col(row, 3)?,
                    produced_at_ms: self.col(row, 4)?,
                })
            })
            .collect()
    }

    fn get_worker(&self, ns: &Namespace, inst: &WorkerInstanceId) -> StoreResult<Option<WorkerRecord>> {
        self.get_json(
            "worker",
            "SELECT record FROM workers WHERE namespace = $1 AND instance_id = $2",
            &[&ns.as_str(), &inst.as_str()],
        )
    }

    fn put_worker(&mut self, ns: &Namespace, inst: &WorkerInstanceId, rec: &WorkerRecord) -> StoreResult<()> {
        let json = self.encode(rec)?;
        self.exec(
            "INSERT INTO workers (namespace, instance_id, record) VALUES ($1, $2, $3)
             ON CONFLICT (namespace, instance_id) DO UPDATE SET record = excluded.record",
            &[&ns.as_str(), &inst.as_str(), &json],
        )
        .map(|_| ())
    }

    fn delete_worker(&mut self, ns: &Namespace, inst: &WorkerInstanceId) -> StoreResult<bool> {
        self.exec(
            "DELETE FROM workers WHERE namespace = $1 AND instance_id = $2",
            &[&ns.as_str(), &inst.as_str()],
        )
        .map(|n| n > 0)
    }

    fn list_worker_ids(
        &self,
        ns: &Namespace,
        after: Option<&WorkerInstanceId>,
        limit: usize,
    ) -> StoreResult<Vec<WorkerInstanceId>> {
        let limit = int_to_sql(limit);
        // With no cursor, every id (including "") is listed.
        let rows = match after {
            Some(a) => self.query(
                "SELECT instance_id FROM workers WHERE namespace = $1 AND instance_id > $2 ORDER BY instance_id LIMIT $3",
                &[&ns.as_str(), &a.as_str(), &limit],
            )?,
            None => self.query(
                "SELECT instance_id FROM workers WHERE namespace = $1 ORDER BY instance_id LIMIT $2",
                &[&ns.as_str(), &limit],
            )?,
        };
        rows.iter().map(|row| self.col::<String>(row, 0).map(WorkerInstanceId::new)).collect()
    }
}
