//! A minimal blocking RESP client for tooling outside the async runtime: the
//! conformance kit's synchronous state dump, test housekeeping, and the local
//! server and cluster the tests start.

use std::io::{BufRead, Write};
use std::net::TcpStream;

/// Largest bulk reply read (Valkey's own `proto-max-bulk-len` default).
const BULK_BYTES_MAX: usize = 512 * 1024 * 1024;

/// One RESP reply, as far as these tools need it.
#[derive(Debug)]
pub enum Resp {
    /// A bulk string; `None` is the null bulk.
    Bulk(Option<Vec<u8>>),
    /// An array.
    Array(Vec<Resp>),
    /// Any other reply line (status, error, integer), verbatim.
    Other(String),
}

/// A blocking connection: buffered reads, direct writes.
pub struct Conn {
    reader: std::io::BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> std::io::Result<Self> {
        Ok(Self { reader: std::io::BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// Connects to `host:port`.
    pub fn connect(host: &str, port: u16) -> std::io::Result<Self> {
        Self::new(TcpStream::connect((host, port))?)
    }

    /// Sends one command and reads its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> std::io::Result<Resp> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend(format!("${}\r\n", a.len()).into_bytes());
            out.extend_from_slice(a);
            out.extend(b"\r\n");
        }
        self.writer.write_all(&out)?;
        self.writer.flush()?;
        read_resp(&mut self.reader)
    }
}

/// Sends one command on `conn` and reads its reply.
pub fn command(conn: &mut Conn, args: &[&[u8]]) -> std::io::Result<Resp> {
    conn.command(args)
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

fn read_resp(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let n: i64 = rest.parse().unwrap_or(-1);
    match kind {
        "$" if n < 0 => Ok(Resp::Bulk(None)),
        "$" => {
            let len = usize::try_from(n).unwrap_or(0);
            if len > BULK_BYTES_MAX {
                return Err(std::io::Error::other(format!("bulk reply of {len} bytes")));
            }
            let mut buf = vec![0; len + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(len);
            Ok(Resp::Bulk(Some(buf)))
        }
        "*" => (0..n.max(0)).map(|_| read_resp(r)).collect::<Result<_, _>>().map(Resp::Array),
        _ => Ok(Resp::Other(line)),
    }
}

/// A deterministic dump of every key under `prefix` (`DUMP` of each, sorted by key),
/// over a blocking connection so a synchronous inspect hook can call it.
pub fn dump_prefix(host: &str, port: u16, prefix: &str) -> String {
    dump_prefix_nodes(&[(host.to_owned(), port)], prefix)
}

/// `dump_prefix` over several nodes (every primary of a cluster: `KEYS` only sees the
/// node's own slots), merged and sorted by key.
pub fn dump_prefix_nodes(nodes: &[(String, u16)], prefix: &str) -> String {
    let run = || -> std::io::Result<String> {
        let mut lines = Vec::new();
        for (host, port) in nodes {
            lines.extend(dump_node(&mut Conn::connect(host, *port)?, prefix)?);
        }
        lines.sort();
        Ok(lines.into_iter().map(|(k, v)| format!("{} {v}\n", String::from_utf8_lossy(&k))).collect())
    };
    run().unwrap_or_else(|e| format!("dump failed: {e}"))
}

/// `(key, hex DUMP)` of every key under `prefix` on one node.
fn dump_node(conn: &mut Conn, prefix: &str) -> std::io::Result<Vec<(Vec<u8>, String)>> {
    let pattern = format!("{prefix}*");
    let Resp::Array(keys) = conn.command(&[b"KEYS", pattern.as_bytes()])? else {
        return Err(std::io::Error::other("KEYS failed"));
    };
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let Resp::Bulk(Some(k)) = k else { continue };
        let v = match conn.command(&[b"DUMP", &k])? {
            Resp::Bulk(Some(b)) => b.iter().map(|x| format!("{x:02x}")).collect::<String>(),
            Resp::Bulk(None) => "-".into(),
            Resp::Array(_) => "array".into(),
            Resp::Other(s) => s,
        };
        out.push((k, v));
    }
    Ok(out)
}

/// A primary of a cluster and the slot ranges it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPrimary {
    /// Its address as the cluster announces it.
    pub host: String,
    /// Its client port.
    pub port: u16,
    /// Inclusive slot ranges it owns.
    pub slots: Vec<(u16, u16)>,
}

impl ClusterPrimary {
    /// Whether it owns `slot`.
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|(lo, hi)| (*lo..=*hi).contains(&slot))
    }
}

/// The primaries of the cluster `host:port` belongs to, from its `CLUSTER NODES`.
///
/// Errors: the node is unreachable, is not in cluster mode, or answers something unparsable.
pub fn cluster_primaries(host: &str, port: u16) -> std::io::Result<Vec<ClusterPrimary>> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let Resp::Bulk(Some(text)) = Conn::connect(host, port)?.command(&[b"CLUSTER", b"NODES"])? else {
        return Err(bad(format!("{host}:{port} did not answer CLUSTER NODES with text")));
    };
    let mut primaries = Vec::new();
    // `<id> <ip:port@bus[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>…`
    for line in String::from_utf8_lossy(&text).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 || !fields[2].split(',').any(|f| f == "master") {
            continue;
        }
        let addr = fields[1].split(['@', ',']).next().unwrap_or_default();
        let (node_host, node_port) =
            addr.rsplit_once(':').ok_or_else(|| bad(format!("CLUSTER NODES address {addr:?}")))?;
        let node_port = node_port.parse().map_err(|_| bad(format!("CLUSTER NODES port {addr:?}")))?;
        let mut slots = Vec::new();
        // Ranges `a-b` or single slots; `[…]` entries are slots in migration.
        for range in fields[8..].iter().filter(|r| !r.starts_with('[')) {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            let parse = |s: &str| s.parse::<u16>().map_err(|_| bad(format!("CLUSTER NODES slot {range:?}")));
            slots.push((parse(lo)?, parse(hi)?));
        }
        primaries.push(ClusterPrimary { host: node_host.to_owned(), port: node_port, slots });
    }
    primaries.sort_by_key(|p| p.port);
    Ok(primaries)
}

/// Runs `scripts/valkey.sh <command>` with `env`, failing with its output.
fn run_script(command: &str, env: (&str, String)) -> Result<(), String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/valkey.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(command)
        .env(env.0, &env.1)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "scripts/valkey.sh {command} with {}={} failed ({}):\n{}{}",
        env.0,
        env.1,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Starts (or finds) the local three-master cluster on `first_port` and the next two
/// ports with `scripts/valkey.sh cluster-start`, which returns once every node
/// reports `cluster_state:ok`; for tests run from this workspace.
///
/// Errors: the script cannot run or the cluster does not form; the message carries its output.
pub fn start_local_cluster(first_port: u16) -> Result<(), String> {
    run_script("cluster-start", ("FF_VALKEY_CLUSTER_PORT", first_port.to_string()))
}

/// Stops the local cluster `start_local_cluster` started on `first_port`.
///
/// Errors: the script cannot run or a node does not stop.
pub fn stop_local_cluster(first_port: u16) -> Result<(), String> {
    run_script("cluster-stop", ("FF_VALKEY_CLUSTER_PORT", first_port.to_string()))
}

/// Starts (or finds) a loopback server on `port` with the workspace's
/// `scripts/valkey.sh start`, installing one if none is present; for tests,
/// benches and tools run from this workspace.
///
/// Errors: the script cannot run or cannot start a server; the message carries its output.
pub fn start_local_server(port: u16) -> Result<(), String> {
    run_script("start", ("FF_VALKEY_PORT", port.to_string()))
}

/// A key prefix unique to this process and call (`t<pid>-<nanos>-<n>:`), so tests
/// share one server; keys of prefixes whose process is gone can be recognised and removed.
pub fn fresh_test_prefix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("t{}-{nanos}-{n}:", std::process::id())
}
