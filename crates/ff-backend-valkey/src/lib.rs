//! The Valkey `EngineBackend`: every contract is one atomic Lua function of the
//! `flowfabric` library (`lua/`), called with `FCALL`.
//!
//! The client validates what needs no stored state (`Validate`, policy JSON),
//! builds the keys of the execution's `{fp:N}` partition under a key prefix,
//! passes `now` (the simulated clock's, or `""` for the server's `TIME`), and
//! turns the reply into the typed outcome. Every contract family is claimed.
//!
//! The same backend runs on one server or on a cluster ([`Topology`]): every
//! FCALL's keys share one hash slot, so the cluster client routes each call by
//! its first key to the primary owning that slot.

mod admission;
mod backend;
mod flow;
mod library;
mod policy;
pub mod raw;
mod snapshot;
mod streams;
mod suspension;
mod wire;

use ferriskey::{Client, ClientBuilder, Value};
use ff_core::capabilities::{Capabilities, ContractFamily, Version};
use ff_core::keys::ExecKeys;
use ff_core::{Clock, EngineError, ExecutionId, PartitionConfig, SimClock};

pub use library::{LIBRARY_NAME, library_source, library_version};

/// Longest wait for one reply, in ms: a scanner pass or a flow cascade is one
/// function call and may run longer than the client's 250 ms default.
pub const RESPONSE_TIMEOUT_MS: u64 = 5_000;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ValkeyConfig {
    /// Server host (loopback in tests).
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Prepended to every key (`<prefix>ff:…`), so tenants and tests share one server.
    pub key_prefix: String,
    /// Partition counts.
    pub partitions: PartitionConfig,
    /// A simulated clock whose `now` every call passes; `None` uses the server's `TIME`.
    pub clock: Option<SimClock>,
}

impl ValkeyConfig {
    /// Loopback `127.0.0.1:port`, no prefix, default partitions, server time.
    pub fn local(port: u16) -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port,
            key_prefix: String::new(),
            partitions: PartitionConfig::default(),
            clock: None,
        }
    }

    /// Parses `valkey://HOST:PORT` (one server) or `valkey+cluster://HOST:PORT[,HOST:PORT…]`
    /// (a cluster through these seed nodes) into a config (no prefix, default partitions,
    /// server time) and its topology.
    ///
    /// Errors: `Validation(InvalidInput)` for another scheme, a missing host or a bad port.
    pub fn from_url(url: &str) -> Result<(Self, Topology), EngineError> {
        let bad = |what: &str| EngineError::invalid_input(format!("valkey url {url:?}: {what}"));
        let (cluster, rest) = if let Some(rest) = url.strip_prefix("valkey+cluster://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("valkey://") {
            (false, rest)
        } else {
            return Err(bad("expected valkey://HOST:PORT or valkey+cluster://HOST:PORT[,HOST:PORT…]"));
        };
        let mut nodes = Vec::new();
        for node in rest.trim_end_matches('/').split(',') {
            let (host, port) = node.rsplit_once(':').ok_or_else(|| bad("a node has no :PORT"))?;
            let port: u16 = port.parse().map_err(|_| bad("a port is not a number below 65536"))?;
            if host.is_empty() {
                return Err(bad("a node has no host"));
            }
            nodes.push((host.to_owned(), port));
        }
        if !cluster && nodes.len() != 1 {
            return Err(bad("a standalone url names exactly one node"));
        }
        let mut nodes = nodes.into_iter();
        let Some((host, port)) = nodes.next() else {
            return Err(bad("no node"));
        };
        let topology =
            if cluster { Topology::Cluster { more_seeds: nodes.collect() } } else { Topology::Standalone };
        Ok((Self { host, port, ..Self::local(port) }, topology))
    }
}

/// Whether `ValkeyConfig::host:port` is one server or a seed of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Topology {
    /// One server; every key lives on it.
    #[default]
    Standalone,
    /// A cluster reached through `host:port` and these further seed nodes (one live
    /// seed is enough: the client discovers every primary and the slot map from it).
    Cluster {
        /// Seed nodes besides `host:port`.
        more_seeds: Vec<(String, u16)>,
    },
}

/// The Valkey backend.
#[derive(Clone)]
pub struct ValkeyBackend {
    client: Client,
    cfg: ValkeyConfig,
    topology: Topology,
    /// `library_version()`, sent as the last argument of every call.
    version: String,
}

impl std::fmt::Debug for ValkeyBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValkeyBackend")
            .field("cfg", &self.cfg)
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

/// The contract families whose every contract is implemented in Lua (all of them).
pub const FAMILIES: [ContractFamily; 9] = ff_core::capabilities::ALL_FAMILIES;

impl ValkeyBackend {
    /// Connects to one server, loading the function library unless it holds this version.
    ///
    /// Errors: `Transport` when the server is unreachable or refuses the library;
    /// `Validation(InvalidInput)` for a prefix containing `{` or `}`.
    pub async fn connect(cfg: ValkeyConfig) -> Result<Self, EngineError> {
        Self::connect_with(cfg, Topology::Standalone).await
    }

    /// Connects to one server or to a cluster and makes sure the function library of
    /// this version is loaded: checked on every slot the backend uses, and loaded
    /// (on every primary of a cluster) unless every one already holds it.
    ///
    /// Errors: `Transport` when a node is unreachable or refuses the library;
    /// `Validation(InvalidInput)` for a prefix containing `{` or `}`.
    pub async fn connect_with(cfg: ValkeyConfig, topology: Topology) -> Result<Self, EngineError> {
        if cfg.key_prefix.contains(['{', '}']) {
            return Err(EngineError::invalid_input("key_prefix must not contain a hash tag"));
        }
        let mut builder = ClientBuilder::new()
            .host(&cfg.host, cfg.port)
            .request_timeout(std::time::Duration::from_millis(RESPONSE_TIMEOUT_MS));
        if let Topology::Cluster { more_seeds } = &topology {
            for (host, port) in more_seeds {
                builder = builder.host(host, *port);
            }
            builder = builder.cluster();
        }
        let client = builder.build().await.map_err(wire::engine_error)?;
        let backend = Self { client, cfg, topology, version: library_version() };
        // A library of this version is this client's Lua byte for byte: load only when
        // some node lacks it or holds another version (a load compiles the whole library
        // on every primary).
        if backend.check_library_version().await.is_err() {
            backend.load_library().await?;
        }
        Ok(backend)
    }

    /// Loads (replacing) the `flowfabric` library, then checks `ff_version`. On a
    /// cluster the load goes to every primary.
    ///
    /// Errors: `Transport` on load failure or a version mismatch.
    pub async fn load_library(&self) -> Result<(), EngineError> {
        self.client.function_load_replace(&library_source()).await.map_err(wire::engine_error)?;
        self.check_library_version().await
    }

    /// Refuses a server whose loaded library has a different version than this client;
    /// on a cluster, asks the primary of every slot the backend's partitions use.
    ///
    /// Errors: `Transport(ScriptNotLoaded)` when the versions differ or no library is loaded.
    pub async fn check_library_version(&self) -> Result<(), EngineError> {
        let none: [&str; 0] = [];
        let loaded = if self.is_cluster() {
            self.versions_on_every_slot().await?
        } else {
            vec![wire::text(
                self.client.fcall_readonly("ff_version", &none, &none).await.map_err(wire::engine_error)?,
            )?]
        };
        if let Some(other) = loaded.iter().find(|v| **v != self.version) {
            return Err(EngineError::transport(
                wire::BACKEND,
                ff_core::error::BackendErrorKind::ScriptNotLoaded,
                format!("library version {other} loaded, client expects {}", self.version).into(),
            ));
        }
        Ok(())
    }

    /// `ff_version` from the primary of each distinct slot of the partition tags (flow,
    /// budget, quota), as one pipeline: `ff_version` ignores its key, which only routes it.
    async fn versions_on_every_slot(&self) -> Result<Vec<String>, EngineError> {
        let mut slots = std::collections::BTreeMap::new();
        for tag in partition_tags(&self.cfg.partitions) {
            let key = format!("{}ff:idx:{tag}:version", self.cfg.key_prefix);
            slots.entry(key_hash_slot(&key)).or_insert(key);
        }
        let mut pipe = self.client.pipeline();
        let replies: Vec<_> = slots
            .values()
            .map(|key| pipe.cmd::<Value>("FCALL_RO").arg("ff_version").arg(1).arg(key).finish())
            .collect();
        pipe.execute().await.map_err(wire::engine_error)?;
        replies.into_iter().map(|r| wire::text(r.value().map_err(wire::engine_error)?)).collect()
    }

    /// The configuration this backend was connected with.
    pub fn config(&self) -> &ValkeyConfig {
        &self.cfg
    }

    /// Whether this backend runs on one server or on a cluster.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// True on a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster { .. })
    }

    /// `now` for an FCALL: the simulated clock's, or `""` for the server's `TIME`.
    fn now_arg(&self) -> Vec<u8> {
        match &self.cfg.clock {
            Some(c) => c.now_ms().to_string().into_bytes(),
            None => Vec::new(),
        }
    }

    /// The exec_core key of an execution under the prefix.
    fn core_key(&self, id: &ExecutionId) -> String {
        format!("{}{}", self.cfg.key_prefix, ExecKeys::new(&id.hash_tag(), id.as_str()).core())
    }

    /// The all_executions key of a partition under the prefix.
    fn partition_key(&self, partition: u16) -> String {
        let tag = format!("{{fp:{partition}}}");
        format!("{}{}", self.cfg.key_prefix, ff_core::keys::PartitionKeys::new(&tag).all_executions())
    }

    /// Calls an execution-scoped function (see `lua/common.lua` for the convention).
    async fn exec_call(
        &self,
        function: &str,
        id: &ExecutionId,
        extra: Vec<Vec<u8>>,
        read_only: bool,
    ) -> Result<Value, EngineError> {
        let mut args = vec![
            self.now_arg(),
            self.cfg.key_prefix.clone().into_bytes(),
            id.hash_tag().into_bytes(),
            id.as_str().as_bytes().to_vec(),
        ];
        args.extend(extra);
        args.push(self.version.clone().into_bytes());
        let keys = [self.core_key(id)];
        let r = if read_only {
            self.client.fcall_readonly(function, &keys, &args).await
        } else {
            self.client.fcall(function, &keys, &args).await
        };
        r.map_err(wire::engine_error)
    }

    /// Calls a partition-scoped function (KEYS[1] = the partition's all_executions index).
    async fn partition_call(
        &self,
        function: &str,
        partition: u16,
        extra: Vec<Vec<u8>>,
        read_only: bool,
    ) -> Result<Value, EngineError> {
        let tag = format!("{{fp:{partition}}}");
        let mut args = vec![self.now_arg(), self.cfg.key_prefix.clone().into_bytes(), tag.into_bytes()];
        args.extend(extra);
        args.push(self.version.clone().into_bytes());
        let keys = [self.partition_key(partition)];
        let r = if read_only {
            self.client.fcall_readonly(function, &keys, &args).await
        } else {
            self.client.fcall(function, &keys, &args).await
        };
        r.map_err(wire::engine_error)
    }

    /// The head of a lane's eligible index on every partition of the range, as one
    /// pipelined round trip (an idle worker's poll); `None` for an empty partition.
    pub async fn scan_heads_pipelined(
        &self,
        lane_id: &ff_core::LaneId,
        partitions: std::ops::Range<u16>,
    ) -> Result<Vec<Option<String>>, EngineError> {
        let mut pipe = self.client.pipeline();
        let mut slots = Vec::new();
        for partition in partitions {
            let tag = format!("{{fp:{partition}}}");
            let args = vec![
                self.now_arg(),
                self.cfg.key_prefix.clone().into_bytes(),
                tag.into_bytes(),
                lane_id.as_str().as_bytes().to_vec(),
                b"1".to_vec(),
                self.version.clone().into_bytes(),
            ];
            let keys = [self.partition_key(partition)];
            slots.push(pipe.fcall::<Value>("ff_scan_eligible", &keys, &args));
        }
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        pipe.execute().await.map_err(wire::engine_error)?;
        let mut heads = Vec::with_capacity(slots.len());
        for slot in slots {
            let texts = wire::texts(slot.value().map_err(wire::engine_error)?)?;
            heads.push(texts.into_iter().next());
        }
        Ok(heads)
    }

    /// Calls a worker-registry function (see `lua/worker.lua` for the convention).
    async fn worker_call(
        &self,
        function: &str,
        namespace: &ff_core::Namespace,
        extra: Vec<Vec<u8>>,
        read_only: bool,
    ) -> Result<Value, EngineError> {
        let base = format!("{}ff:workers:{{w:{namespace}}}:", self.cfg.key_prefix);
        let mut args = vec![self.now_arg(), format!("{base}w:").into_bytes()];
        args.extend(extra);
        args.push(self.version.clone().into_bytes());
        let keys = [format!("{base}ids")];
        let r = if read_only {
            self.client.fcall_readonly(function, &keys, &args).await
        } else {
            self.client.fcall(function, &keys, &args).await
        };
        r.map_err(wire::engine_error)
    }

    /// The capability report: only fully implemented families are claimed.
    fn capability_report(&self) -> Capabilities {
        let version = Version::parse_lenient(env!("CARGO_PKG_VERSION"));
        Capabilities::complete("valkey", version, self.cfg.clock.is_some())
    }
}

/// Every partition hash tag of a configuration: `{fp:N}`, `{b:M}`, `{q:K}`.
fn partition_tags(p: &PartitionConfig) -> impl Iterator<Item = String> {
    let flows = (0..p.num_flow_partitions).map(|n| format!("{{fp:{n}}}"));
    let budgets = (0..p.num_budget_partitions).map(|n| format!("{{b:{n}}}"));
    let quotas = (0..p.num_quota_partitions).map(|n| format!("{{q:{n}}}"));
    flows.chain(budgets).chain(quotas)
}

/// The cluster hash slot of a key: CRC16 (XMODEM) of its hash tag (the text between
/// the first `{` and the next `}`, when not empty) or of the whole key, mod 16384.
pub fn key_hash_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    ff_core::partition::crc16_xmodem(tagged.unwrap_or(bytes)) % CLUSTER_SLOTS
}

/// Hash slots of a Valkey cluster.
pub const CLUSTER_SLOTS: u16 = 16_384;

/// Text of a bool flag argument.
fn flag(b: bool) -> Vec<u8> {
    if b { b"1".to_vec() } else { b"0".to_vec() }
}

/// Text argument.
fn arg(s: impl ToString) -> Vec<u8> {
    s.to_string().into_bytes()
}

/// Optional argument (`""` for none).
fn opt_arg<T: ToString>(v: Option<T>) -> Vec<u8> {
    v.map(|x| x.to_string().into_bytes()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_the_servers() {
        // Values from `CLUSTER KEYSLOT` (and the Redis cluster spec's check value).
        assert_eq!(key_hash_slot("123456789"), 12_739);
        assert_eq!(key_hash_slot("{fp:0}"), 14_926);
        assert_eq!(key_hash_slot("t1:ff:exec:{fp:0}:x:core"), key_hash_slot("{fp:0}"));
        // An empty tag does not count; only the first `{…}` does.
        assert_eq!(key_hash_slot("a{}b"), ff_core::partition::crc16_xmodem(b"a{}b") % CLUSTER_SLOTS);
        assert_eq!(key_hash_slot("ff:idem:{fp:3}:{ns}:k"), key_hash_slot("{fp:3}"));
    }

    #[test]
    fn urls_name_one_server_or_cluster_seeds() {
        let (cfg, topology) = ValkeyConfig::from_url("valkey://127.0.0.1:6391").unwrap();
        assert_eq!((cfg.host.as_str(), cfg.port, topology), ("127.0.0.1", 6391, Topology::Standalone));
        let (cfg, topology) = ValkeyConfig::from_url("valkey+cluster://h1:7101,h2:7102,h3:7103").unwrap();
        assert_eq!((cfg.host.as_str(), cfg.port), ("h1", 7101));
        let more_seeds = vec![("h2".to_owned(), 7102), ("h3".to_owned(), 7103)];
        assert_eq!(topology, Topology::Cluster { more_seeds });
        for bad in [
            "redis://h:1",
            "valkey://h",
            "valkey://:1",
            "valkey://h:70000",
            "valkey://a:1,b:2",
            "valkey+cluster://",
        ] {
            assert!(ValkeyConfig::from_url(bad).is_err(), "{bad}");
        }
    }
}
