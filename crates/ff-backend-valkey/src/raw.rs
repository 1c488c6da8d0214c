//! A minimal blocking RESP client for tooling outside the async runtime: the
//! conformance kit's synchronous state dump and test housekeeping.

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
    let run = || -> std::io::Result<String> {
        let mut conn = Conn::connect(host, port)?;
        let pattern = format!("{prefix}*");
        let Resp::Array(keys) = conn.command(&[b"KEYS", pattern.as_bytes()])? else {
            return Ok("KEYS failed".into());
        };
        let mut keys: Vec<Vec<u8>> = keys
            .into_iter()
            .filter_map(|k| if let Resp::Bulk(Some(k)) = k { Some(k) } else { None })
            .collect();
        keys.sort();
        let mut out = String::new();
        for k in keys {
            let v = match conn.command(&[b"DUMP", &k])? {
                Resp::Bulk(Some(b)) => b.iter().map(|x| format!("{x:02x}")).collect::<String>(),
                Resp::Bulk(None) => "-".into(),
                Resp::Array(_) => "array".into(),
                Resp::Other(s) => s,
            };
            out.push_str(&format!("{} {v}\n", String::from_utf8_lossy(&k)));
        }
        Ok(out)
    };
    run().unwrap_or_else(|e| format!("dump failed: {e}"))
}

/// Starts (or finds) a loopback server on `port` with the workspace's
/// `scripts/valkey.sh start`, installing one if none is present; for tests,
/// benches and tools run from this workspace.
///
/// Errors: the script cannot run or cannot start a server; the message carries its output.
pub fn start_local_server(port: u16) -> Result<(), String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/valkey.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .env("FF_VALKEY_PORT", port.to_string())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "scripts/valkey.sh start on port {port} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
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
