//! One table per [`RecordKind`] (schema migration 4).
//!
//! `Store::put_record` hands over a record's JSON. Each kind has its own table
//! keyed by the record key, with the identifying fields copied into typed
//! columns (the JSON in `record` stays authoritative, as in `executions`).
//! The naturally tabular parts of four kinds are child rows instead of JSON:
//! a flow's edges, members and edge groups; a budget's per-dimension limits
//! and usage and its per-execution ledgers; a quota policy's admission
//! guards; an execution's applied dependencies. A write decodes the record,
//! stores the parent row without those parts and writes only the child rows
//! that changed; a read reassembles the same record.
//!
//! A flow's `outgoing`/`incoming` adjacency is not stored: it is derived from
//! the edge rows on read, and a write whose adjacency is not so derivable is
//! refused as corruption.

use std::collections::{BTreeMap, BTreeSet};

use ff_core::flow::EdgeSnapshot;
use ff_core::{EdgeId, ExecutionId};
use ff_engine::admission::{BudgetRecord, QuotaRecord};
use ff_engine::flow::{DepRecord, DepsRecord, EdgeGroup, FlowRecord};
use ff_engine::records::RecordKind;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why a record could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A statement failed.
    #[error("sqlite: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The record (or a stored row of it) does not have the shape its kind needs.
    #[error("{kind} {key}: {reason}")]
    Corrupt {
        /// Record kind.
        kind: &'static str,
        /// Record key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

type RecordResult<T> = Result<T, RecordError>;

/// Every record kind, for mapping the stored kind names of the legacy table.
pub const KINDS: [RecordKind; 11] = [
    RecordKind::Waitpoint,
    RecordKind::Suspension,
    RecordKind::Signal,
    RecordKind::SignalDedup,
    RecordKind::SuspendDedup,
    RecordKind::HmacKeystore,
    RecordKind::Budget,
    RecordKind::UsageDedup,
    RecordKind::QuotaPolicy,
    RecordKind::Flow,
    RecordKind::Dependencies,
];

/// The table of one record kind: one row per record.
struct Parent {
    name: &'static str,
    /// Key columns; two columns mean the record key is `<first>|<second>`, split at the first `|`.
    keys: &'static [&'static str],
    /// Typed columns copied from the record, in [`Split::columns`] order.
    columns: &'static [&'static str],
    /// Child tables holding parts of the record.
    children: &'static [&'static Child],
}

/// A child table: rows keyed by the parent's key plus `keys`.
struct Child {
    name: &'static str,
    /// The column holding the parent record's key.
    parent: &'static str,
    keys: &'static [&'static str],
    values: &'static [&'static str],
}

const WAITPOINTS: Parent = Parent {
    name: "waitpoints",
    keys: &["waitpoint_id"],
    columns: &["execution_id", "attempt_index", "suspension_id", "state", "expires_at"],
    children: &[],
};
const SUSPENSIONS: Parent = Parent {
    name: "suspensions",
    keys: &["execution_id"],
    columns: &["suspension_id", "attempt_index", "waitpoint_id", "timeout_at"],
    children: &[],
};
const SIGNALS: Parent = Parent {
    name: "signals",
    keys: &["signal_id"],
    columns: &["execution_id", "waitpoint_id", "signal_name", "accepted_at"],
    children: &[],
};
const SIGNAL_DEDUP: Parent = Parent {
    name: "signal_dedup",
    keys: &["waitpoint_id", "idempotency_key"],
    columns: &["signal_id", "expires_at"],
    children: &[],
};
const SUSPEND_DEDUP: Parent = Parent {
    name: "suspend_dedup",
    keys: &["execution_id", "idempotency_key"],
    columns: &["expires_at"],
    children: &[],
};
const HMAC_KEYSTORES: Parent =
    Parent { name: "hmac_keystores", keys: &["name"], columns: &[], children: &[] };
const BUDGETS: Parent = Parent {
    name: "budgets",
    keys: &["budget_id"],
    columns: &["scope_type", "scope_id", "next_reset_at"],
    children: &[&BUDGET_DIMENSIONS, &BUDGET_LEDGERS],
};
const BUDGET_DIMENSIONS: Child = Child {
    name: "budget_dimensions",
    parent: "budget_id",
    keys: &["dimension"],
    values: &["hard_limit", "soft_limit", "usage"],
};
const BUDGET_LEDGERS: Child =
    Child { name: "budget_ledgers", parent: "budget_id", keys: &["execution_id"], values: &["spend"] };
const USAGE_DEDUP: Parent = Parent {
    name: "usage_dedup",
    keys: &["budget_id", "dedup_key"],
    columns: &["expires_at"],
    children: &[],
};
const QUOTA_POLICIES: Parent = Parent {
    name: "quota_policies",
    keys: &["quota_policy_id"],
    columns: &["created_at", "concurrency"],
    children: &[&QUOTA_GUARDS],
};
const QUOTA_GUARDS: Child = Child {
    name: "quota_guards",
    parent: "quota_policy_id",
    keys: &["execution_id"],
    values: &["expires_at"],
};
const FLOWS: Parent = Parent {
    name: "flows",
    keys: &["flow_id"],
    columns: &["namespace", "flow_kind", "public_flow_state", "created_at"],
    children: &[&FLOW_MEMBERS, &FLOW_EDGES, &FLOW_EDGE_GROUPS],
};
const FLOW_MEMBERS: Child =
    Child { name: "flow_members", parent: "flow_id", keys: &["execution_id"], values: &[] };
const FLOW_EDGES: Child = Child {
    name: "flow_edges",
    parent: "flow_id",
    keys: &["edge_id"],
    values: &["upstream_execution_id", "downstream_execution_id", "edge_state", "record"],
};
const FLOW_EDGE_GROUPS: Child = Child {
    name: "flow_edge_groups",
    parent: "flow_id",
    keys: &["downstream_execution_id"],
    values: &["state", "record"],
};
const DEPENDENCIES: Parent = Parent {
    name: "dependencies",
    keys: &["execution_id"],
    columns: &["flow_id", "unsatisfied_required_count", "impossible_required_count"],
    children: &[&DEPENDENCY_EDGES],
};
const DEPENDENCY_EDGES: Child = Child {
    name: "dependency_edges",
    parent: "execution_id",
    keys: &["edge_id"],
    values: &["upstream_execution_id", "state", "record"],
};

fn parent(kind: RecordKind) -> &'static Parent {
    match kind {
        RecordKind::Waitpoint => &WAITPOINTS,
        RecordKind::Suspension => &SUSPENSIONS,
        RecordKind::Signal => &SIGNALS,
        RecordKind::SignalDedup => &SIGNAL_DEDUP,
        RecordKind::SuspendDedup => &SUSPEND_DEDUP,
        RecordKind::HmacKeystore => &HMAC_KEYSTORES,
        RecordKind::Budget => &BUDGETS,
        RecordKind::UsageDedup => &USAGE_DEDUP,
        RecordKind::QuotaPolicy => &QUOTA_POLICIES,
        RecordKind::Flow => &FLOWS,
        RecordKind::Dependencies => &DEPENDENCIES,
    }
}

/// Child rows of one parent: key columns → value columns.
type ChildRows = BTreeMap<Vec<String>, Vec<Value>>;

/// A record split into its parent row and its child rows.
struct Split {
    columns: Vec<Value>,
    record: String,
    children: Vec<(&'static Child, ChildRows)>,
}

/// Writes a record: its parent row, and the child rows that changed.
///
/// Errors: `Corrupt` when the JSON does not decode as its kind or the key does not split.
pub fn put(conn: &Connection, kind: RecordKind, key: &str, json: &str) -> RecordResult<()> {
    let table = parent(kind);
    let Some(key_values) = key_parts(table, key) else {
        return Err(corrupt(kind, key, "the key has no '|' between its two parts"));
    };
    let split = split(kind, key, json)?;
    debug_assert_eq!(split.columns.len(), table.columns.len(), "{}", table.name);
    let names: Vec<&str> = table.keys.iter().chain(table.columns).chain(["record"].iter()).copied().collect();
    let updates: Vec<String> =
        table.columns.iter().chain(["record"].iter()).map(|c| format!("{c} = excluded.{c}")).collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
        table.name,
        names.join(", "),
        placeholders(names.len()),
        table.keys.join(", "),
        updates.join(", ")
    );
    let values =
        key_values.into_iter().map(Value::Text).chain(split.columns).chain([Value::Text(split.record)]);
    conn.prepare_cached(&sql)?.execute(params_from_iter(values))?;
    for (child, rows) in split.children {
        sync_children(conn, child, key, rows)?;
    }
    Ok(())
}

/// Reads a record back as JSON, reassembled from its child rows.
///
/// Errors: `Corrupt` when a stored row does not decode.
pub fn get(conn: &Connection, kind: RecordKind, key: &str) -> RecordResult<Option<String>> {
    let table = parent(kind);
    let Some(key_values) = key_parts(table, key) else { return Ok(None) };
    let sql = format!("SELECT record FROM {} WHERE {}", table.name, key_match(table.keys, 1));
    let record: Option<String> =
        conn.prepare_cached(&sql)?.query_row(params_from_iter(key_values), |r| r.get(0)).optional()?;
    match record {
        Some(record) if !table.children.is_empty() => assemble(conn, kind, key, &record).map(Some),
        other => Ok(other),
    }
}

/// Deletes a record and its child rows; true if it existed.
pub fn delete(conn: &Connection, kind: RecordKind, key: &str) -> RecordResult<bool> {
    let table = parent(kind);
    let Some(key_values) = key_parts(table, key) else { return Ok(false) };
    for child in table.children {
        let sql = format!("DELETE FROM {} WHERE {} = ?1", child.name, child.parent);
        conn.prepare_cached(&sql)?.execute(params![key])?;
    }
    let sql = format!("DELETE FROM {} WHERE {}", table.name, key_match(table.keys, 1));
    Ok(conn.prepare_cached(&sql)?.execute(params_from_iter(key_values))? > 0)
}

/// Moves every row of the legacy `records(kind, key, value)` table into the
/// per-kind tables, then drops it; returns how many records moved.
///
/// Errors: `Corrupt` for an unknown kind name or a record that does not decode.
pub fn move_legacy_records(conn: &Connection) -> RecordResult<usize> {
    let rows: Vec<(String, String, String)> = {
        let mut stmt = conn.prepare("SELECT kind, key, value FROM records ORDER BY kind, key")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?
    };
    for (name, key, value) in &rows {
        let Some(kind) = KINDS.into_iter().find(|k| k.as_str() == name.as_str()) else {
            return Err(RecordError::Corrupt {
                kind: "records",
                key: format!("{name}/{key}"),
                reason: "unknown record kind".to_owned(),
            });
        };
        put(conn, kind, key, value)?;
    }
    conn.execute_batch("DROP TABLE records")?;
    Ok(rows.len())
}

/// `(table name, query)` pairs dumping every record table in key order; each
/// query yields a text key and one value.
pub fn dump_queries() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for kind in KINDS {
        let table = parent(kind);
        out.push((
            table.name,
            format!(
                "SELECT {}, record FROM {} ORDER BY {}",
                table.keys.join(" || '|' || "),
                table.name,
                table.keys.join(", ")
            ),
        ));
        for child in table.children {
            let keys: Vec<&str> = std::iter::once(child.parent).chain(child.keys.iter().copied()).collect();
            let value = match child.values {
                [] => "''".to_owned(),
                [one] => (*one).to_owned(),
                many => many.iter().map(|c| format!("quote({c})")).collect::<Vec<_>>().join(" || ' ' || "),
            };
            out.push((
                child.name,
                format!(
                    "SELECT {}, {value} FROM {} ORDER BY {}",
                    keys.join(" || '#' || "),
                    child.name,
                    keys.join(", ")
                ),
            ));
        }
    }
    out
}

fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

/// `a = ?first AND b = ?first+1 …`
fn key_match(columns: &[&str], first: usize) -> String {
    columns.iter().enumerate().map(|(i, c)| format!("{c} = ?{}", first + i)).collect::<Vec<_>>().join(" AND ")
}

/// The key column values of a record key; `None` for a composite key without `|`.
fn key_parts(table: &Parent, key: &str) -> Option<Vec<String>> {
    match table.keys.len() {
        1 => Some(vec![key.to_owned()]),
        _ => key.split_once('|').map(|(a, b)| vec![a.to_owned(), b.to_owned()]),
    }
}

/// Replaces the child rows of one parent with `rows`, writing only the differences.
fn sync_children(conn: &Connection, child: &Child, parent_key: &str, rows: ChildRows) -> RecordResult<()> {
    let old = load_children(conn, child, parent_key)?;
    let names: Vec<&str> = std::iter::once(child.parent)
        .chain(child.keys.iter().copied())
        .chain(child.values.iter().copied())
        .collect();
    let conflict: Vec<&str> = std::iter::once(child.parent).chain(child.keys.iter().copied()).collect();
    let on_conflict = match child.values {
        [] => "DO NOTHING".to_owned(),
        values => format!(
            "DO UPDATE SET {}",
            values.iter().map(|c| format!("{c} = excluded.{c}")).collect::<Vec<_>>().join(", ")
        ),
    };
    let upsert = format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {on_conflict}",
        child.name,
        names.join(", "),
        placeholders(names.len()),
        conflict.join(", ")
    );
    for (keys, values) in &rows {
        if old.get(keys) == Some(values) {
            continue;
        }
        let all = std::iter::once(Value::Text(parent_key.to_owned()))
            .chain(keys.iter().cloned().map(Value::Text))
            .chain(values.iter().cloned());
        conn.prepare_cached(&upsert)?.execute(params_from_iter(all))?;
    }
    let remove = format!("DELETE FROM {} WHERE {}", child.name, key_match(&conflict, 1));
    for keys in old.keys().filter(|k| !rows.contains_key(*k)) {
        let all = std::iter::once(parent_key.to_owned()).chain(keys.iter().cloned());
        conn.prepare_cached(&remove)?.execute(params_from_iter(all))?;
    }
    Ok(())
}

/// The child rows of one parent, in key order.
fn load_children(conn: &Connection, child: &Child, parent_key: &str) -> RecordResult<ChildRows> {
    let columns: Vec<&str> = child.keys.iter().chain(child.values).copied().collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = ?1 ORDER BY {}",
        columns.join(", "),
        child.name,
        child.parent,
        child.keys.join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let n_keys = child.keys.len();
    let rows = stmt.query_map(params![parent_key], |r| {
        let mut keys = Vec::with_capacity(n_keys);
        for i in 0..n_keys {
            keys.push(r.get::<_, String>(i)?);
        }
        let mut values = Vec::with_capacity(columns.len() - n_keys);
        for i in n_keys..columns.len() {
            values.push(r.get::<_, Value>(i)?);
        }
        Ok((keys, values))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn corrupt(kind: RecordKind, key: &str, reason: impl std::fmt::Display) -> RecordError {
    RecordError::Corrupt { kind: kind.as_str(), key: key.to_owned(), reason: reason.to_string() }
}

fn decode<T: DeserializeOwned>(kind: RecordKind, key: &str, json: &str) -> RecordResult<T> {
    serde_json::from_str(json).map_err(|e| corrupt(kind, key, e))
}

fn encode<T: Serialize>(kind: RecordKind, key: &str, v: &T) -> RecordResult<String> {
    serde_json::to_string(v).map_err(|e| corrupt(kind, key, e))
}

/// A unit enum's wire name (`"satisfied"`), for a state column.
fn wire_name<T: Serialize>(kind: RecordKind, key: &str, v: &T) -> RecordResult<String> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => Ok(other.to_string()),
        Err(e) => Err(corrupt(kind, key, e)),
    }
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

fn opt_int(v: Option<i64>) -> Value {
    v.map_or(Value::Null, Value::Integer)
}

/// A u64 as a SQLite integer: its two's-complement bits, so every value
/// round-trips; values above `i64::MAX` read as negative in plain SQL (limits
/// and deltas are validated to at most 2^53 − 1, so only saturated sums get there).
fn u64_int(v: u64) -> Value {
    Value::Integer(v as i64)
}

fn int_u64(v: i64) -> u64 {
    v as u64
}

/// The key of a child row of a table with one key column.
fn only_key<'a>(kind: RecordKind, key: &str, keys: &'a [String]) -> RecordResult<&'a str> {
    match keys {
        [one] => Ok(one),
        _ => Err(corrupt(kind, key, format!("a child row keyed by {} columns", keys.len()))),
    }
}

fn text_at<'a>(kind: RecordKind, key: &str, values: &'a [Value], i: usize) -> RecordResult<&'a str> {
    match values.get(i) {
        Some(Value::Text(s)) => Ok(s),
        other => Err(corrupt(kind, key, format!("column {i}: expected text, found {other:?}"))),
    }
}

fn int_at(kind: RecordKind, key: &str, values: &[Value], i: usize) -> RecordResult<Option<i64>> {
    match values.get(i) {
        Some(Value::Integer(v)) => Ok(Some(*v)),
        Some(Value::Null) => Ok(None),
        other => Err(corrupt(kind, key, format!("column {i}: expected an integer, found {other:?}"))),
    }
}

/// The identifying fields of the kinds stored whole.
#[derive(Deserialize)]
struct WaitpointColumns {
    execution_id: String,
    attempt_index: u32,
    suspension_id: Option<String>,
    state: String,
    expires_at: Option<i64>,
}

#[derive(Deserialize)]
struct SuspensionColumns {
    suspension_id: String,
    attempt_index: u32,
    waitpoint_id: String,
    timeout_at: Option<i64>,
}

#[derive(Deserialize)]
struct SignalColumns {
    execution_id: String,
    waitpoint_id: String,
    signal_name: String,
    accepted_at: i64,
}

#[derive(Deserialize)]
struct SignalDedupColumns {
    signal_id: String,
    expires_at: i64,
}

#[derive(Deserialize)]
struct ExpiryColumns {
    expires_at: i64,
}

/// Splits a record into typed columns, the stored JSON and its child rows.
fn split(kind: RecordKind, key: &str, json: &str) -> RecordResult<Split> {
    let whole = |columns: Vec<Value>| Split { columns, record: json.to_owned(), children: Vec::new() };
    match kind {
        RecordKind::Waitpoint => {
            let w: WaitpointColumns = decode(kind, key, json)?;
            Ok(whole(vec![
                text(w.execution_id),
                Value::Integer(i64::from(w.attempt_index)),
                w.suspension_id.map_or(Value::Null, text),
                text(w.state),
                opt_int(w.expires_at),
            ]))
        }
        RecordKind::Suspension => {
            let s: SuspensionColumns = decode(kind, key, json)?;
            Ok(whole(vec![
                text(s.suspension_id),
                Value::Integer(i64::from(s.attempt_index)),
                text(s.waitpoint_id),
                opt_int(s.timeout_at),
            ]))
        }
        RecordKind::Signal => {
            let s: SignalColumns = decode(kind, key, json)?;
            Ok(whole(vec![
                text(s.execution_id),
                text(s.waitpoint_id),
                text(s.signal_name),
                Value::Integer(s.accepted_at),
            ]))
        }
        RecordKind::SignalDedup => {
            let d: SignalDedupColumns = decode(kind, key, json)?;
            Ok(whole(vec![text(d.signal_id), Value::Integer(d.expires_at)]))
        }
        RecordKind::SuspendDedup | RecordKind::UsageDedup => {
            let d: ExpiryColumns = decode(kind, key, json)?;
            Ok(whole(vec![Value::Integer(d.expires_at)]))
        }
        RecordKind::HmacKeystore => {
            // Decoded only to refuse a malformed keystore at write time.
            decode::<ff_core::hmac_token::HmacKeystore>(kind, key, json)?;
            Ok(whole(Vec::new()))
        }
        RecordKind::Budget => split_budget(key, json),
        RecordKind::QuotaPolicy => split_quota(key, json),
        RecordKind::Flow => split_flow(key, json),
        RecordKind::Dependencies => split_dependencies(key, json),
    }
}

/// Reassembles a record with child tables from its parent JSON and child rows.
fn assemble(conn: &Connection, kind: RecordKind, key: &str, record: &str) -> RecordResult<String> {
    match kind {
        RecordKind::Budget => assemble_budget(conn, key, record),
        RecordKind::QuotaPolicy => assemble_quota(conn, key, record),
        RecordKind::Flow => assemble_flow(conn, key, record),
        RecordKind::Dependencies => assemble_dependencies(conn, key, record),
        _ => Ok(record.to_owned()),
    }
}

type Adjacency = BTreeMap<ExecutionId, BTreeSet<EdgeId>>;

/// A flow's `(outgoing, incoming)` edge ids per member, derived from its edges.
fn adjacency(edges: &BTreeMap<EdgeId, EdgeSnapshot>) -> (Adjacency, Adjacency) {
    let mut outgoing = Adjacency::new();
    let mut incoming = Adjacency::new();
    for (id, e) in edges {
        outgoing.entry(e.upstream_execution_id.clone()).or_default().insert(*id);
        incoming.entry(e.downstream_execution_id.clone()).or_default().insert(*id);
    }
    (outgoing, incoming)
}

fn split_flow(key: &str, json: &str) -> RecordResult<Split> {
    let kind = RecordKind::Flow;
    let mut f: FlowRecord = decode(kind, key, json)?;
    let edges = std::mem::take(&mut f.edges);
    let (outgoing, incoming) = adjacency(&edges);
    if outgoing != f.outgoing || incoming != f.incoming {
        return Err(corrupt(kind, key, "outgoing/incoming do not match the edges"));
    }
    f.outgoing.clear();
    f.incoming.clear();
    let members = std::mem::take(&mut f.members);
    let groups = std::mem::take(&mut f.groups);
    let mut edge_rows = ChildRows::new();
    for (id, e) in &edges {
        edge_rows.insert(
            vec![id.to_string()],
            vec![
                text(e.upstream_execution_id.as_str()),
                text(e.downstream_execution_id.as_str()),
                text(e.edge_state.as_str()),
                text(encode(kind, key, e)?),
            ],
        );
    }
    let member_rows: ChildRows = members.iter().map(|m| (vec![m.as_str().to_owned()], Vec::new())).collect();
    let mut group_rows = ChildRows::new();
    for (downstream, g) in &groups {
        group_rows.insert(
            vec![downstream.as_str().to_owned()],
            vec![text(wire_name(kind, key, &g.state)?), text(encode(kind, key, g)?)],
        );
    }
    Ok(Split {
        columns: vec![
            text(f.namespace.as_str()),
            text(f.flow_kind.as_str()),
            text(f.public_flow_state.as_str()),
            Value::Integer(f.created_at),
        ],
        record: encode(kind, key, &f)?,
        children: vec![
            (&FLOW_MEMBERS, member_rows),
            (&FLOW_EDGES, edge_rows),
            (&FLOW_EDGE_GROUPS, group_rows),
        ],
    })
}

fn assemble_flow(conn: &Connection, key: &str, record: &str) -> RecordResult<String> {
    let kind = RecordKind::Flow;
    let mut f: FlowRecord = decode(kind, key, record)?;
    for (_, values) in load_children(conn, &FLOW_EDGES, key)? {
        let e: EdgeSnapshot = decode(kind, key, text_at(kind, key, &values, 3)?)?;
        f.edges.insert(e.edge_id, e);
    }
    (f.outgoing, f.incoming) = adjacency(&f.edges);
    for (keys, _) in load_children(conn, &FLOW_MEMBERS, key)? {
        f.members.insert(parse_execution_id(kind, key, only_key(kind, key, &keys)?)?);
    }
    for (keys, values) in load_children(conn, &FLOW_EDGE_GROUPS, key)? {
        let g: EdgeGroup = decode(kind, key, text_at(kind, key, &values, 1)?)?;
        f.groups.insert(parse_execution_id(kind, key, only_key(kind, key, &keys)?)?, g);
    }
    encode(kind, key, &f)
}

fn parse_execution_id(kind: RecordKind, key: &str, s: &str) -> RecordResult<ExecutionId> {
    ExecutionId::parse(s).map_err(|e| corrupt(kind, key, e))
}

fn split_budget(key: &str, json: &str) -> RecordResult<Split> {
    let kind = RecordKind::Budget;
    let mut b: BudgetRecord = decode(kind, key, json)?;
    let hard = std::mem::take(&mut b.hard_limits);
    let soft = std::mem::take(&mut b.soft_limits);
    let usage = std::mem::take(&mut b.usage);
    let ledgers = std::mem::take(&mut b.ledgers);
    let dimensions: BTreeSet<&String> = hard.keys().chain(soft.keys()).chain(usage.keys()).collect();
    let cell = |m: &BTreeMap<String, u64>, d: &String| m.get(d).map_or(Value::Null, |v| u64_int(*v));
    let dimension_rows: ChildRows = dimensions
        .into_iter()
        .map(|d| (vec![d.clone()], vec![cell(&hard, d), cell(&soft, d), cell(&usage, d)]))
        .collect();
    let mut ledger_rows = ChildRows::new();
    for (execution, spend) in &ledgers {
        ledger_rows.insert(vec![execution.clone()], vec![text(encode(kind, key, spend)?)]);
    }
    Ok(Split {
        columns: vec![text(b.scope_type.as_str()), text(b.scope_id.as_str()), opt_int(b.next_reset_at)],
        record: encode(kind, key, &b)?,
        children: vec![(&BUDGET_DIMENSIONS, dimension_rows), (&BUDGET_LEDGERS, ledger_rows)],
    })
}

fn assemble_budget(conn: &Connection, key: &str, record: &str) -> RecordResult<String> {
    let kind = RecordKind::Budget;
    let mut b: BudgetRecord = decode(kind, key, record)?;
    for (keys, values) in load_children(conn, &BUDGET_DIMENSIONS, key)? {
        let dimension = only_key(kind, key, &keys)?;
        let maps = [&mut b.hard_limits, &mut b.soft_limits, &mut b.usage];
        for (i, map) in maps.into_iter().enumerate() {
            if let Some(v) = int_at(kind, key, &values, i)? {
                map.insert(dimension.to_owned(), int_u64(v));
            }
        }
    }
    for (keys, values) in load_children(conn, &BUDGET_LEDGERS, key)? {
        let spend: BTreeMap<String, u64> = decode(kind, key, text_at(kind, key, &values, 0)?)?;
        b.ledgers.insert(only_key(kind, key, &keys)?.to_owned(), spend);
    }
    encode(kind, key, &b)
}

fn split_quota(key: &str, json: &str) -> RecordResult<Split> {
    let kind = RecordKind::QuotaPolicy;
    let mut q: QuotaRecord = decode(kind, key, json)?;
    let guards = std::mem::take(&mut q.guards);
    let guard_rows: ChildRows = guards
        .into_iter()
        .map(|(execution, expires_at)| (vec![execution], vec![Value::Integer(expires_at)]))
        .collect();
    Ok(Split {
        columns: vec![opt_int(q.created_at), u64_int(q.concurrency)],
        record: encode(kind, key, &q)?,
        children: vec![(&QUOTA_GUARDS, guard_rows)],
    })
}

fn assemble_quota(conn: &Connection, key: &str, record: &str) -> RecordResult<String> {
    let kind = RecordKind::QuotaPolicy;
    let mut q: QuotaRecord = decode(kind, key, record)?;
    for (keys, values) in load_children(conn, &QUOTA_GUARDS, key)? {
        let Some(expires_at) = int_at(kind, key, &values, 0)? else {
            return Err(corrupt(kind, key, "a guard without an expiry"));
        };
        q.guards.insert(only_key(kind, key, &keys)?.to_owned(), expires_at);
    }
    encode(kind, key, &q)
}

fn split_dependencies(key: &str, json: &str) -> RecordResult<Split> {
    let kind = RecordKind::Dependencies;
    let mut d: DepsRecord = decode(kind, key, json)?;
    let deps = std::mem::take(&mut d.deps);
    let mut rows = ChildRows::new();
    for (edge, dep) in &deps {
        rows.insert(
            vec![edge.to_string()],
            vec![text(dep.upstream.as_str()), text(dep.state.as_str()), text(encode(kind, key, dep)?)],
        );
    }
    Ok(Split {
        columns: vec![
            d.flow_id.map_or(Value::Null, |f| text(f.to_string())),
            u64_int(d.unsatisfied_required_count),
            u64_int(d.impossible_required_count),
        ],
        record: encode(kind, key, &d)?,
        children: vec![(&DEPENDENCY_EDGES, rows)],
    })
}

fn assemble_dependencies(conn: &Connection, key: &str, record: &str) -> RecordResult<String> {
    let kind = RecordKind::Dependencies;
    let mut d: DepsRecord = decode(kind, key, record)?;
    for (keys, values) in load_children(conn, &DEPENDENCY_EDGES, key)? {
        let edge = EdgeId::parse(only_key(kind, key, &keys)?).map_err(|e| corrupt(kind, key, e))?;
        let dep: DepRecord = decode(kind, key, text_at(kind, key, &values, 2)?)?;
        d.deps.insert(edge, dep);
    }
    encode(kind, key, &d)
}
