//! The Valkey `EngineBackend`: every contract is one atomic Lua function of the
//! `flowfabric` library (`lua/`), called with `FCALL`.
//!
//! The client validates what needs no stored state (`Validate`, policy JSON),
//! builds the keys of the execution's `{fp:N}` partition under a key prefix,
//! passes `now` (the simulated clock's, or `""` for the server's `TIME`), and
//! turns the reply into the typed outcome. Every contract family is claimed.

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
}

/// The Valkey backend.
#[derive(Clone)]
pub struct ValkeyBackend {
    client: Client,
    cfg: ValkeyConfig,
    /// `library_version()`, sent as the last argument of every call.
    version: String,
}

impl std::fmt::Debug for ValkeyBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValkeyBackend").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// The contract families whose every contract is implemented in Lua (all of them).
pub const FAMILIES: [ContractFamily; 9] = ff_core::capabilities::ALL_FAMILIES;

impl ValkeyBackend {
    /// Connects, loads the function library and checks its version.
    ///
    /// Errors: `Transport` when the server is unreachable or refuses the library;
    /// `Validation(InvalidInput)` for a prefix containing `{` or `}`.
    pub async fn connect(cfg: ValkeyConfig) -> Result<Self, EngineError> {
        if cfg.key_prefix.contains(['{', '}']) {
            return Err(EngineError::invalid_input("key_prefix must not contain a hash tag"));
        }
        let client = ClientBuilder::new()
            .host(&cfg.host, cfg.port)
            .request_timeout(std::time::Duration::from_millis(RESPONSE_TIMEOUT_MS))
            .build()
            .await
            .map_err(wire::engine_error)?;
        let backend = Self { client, cfg, version: library_version() };
        backend.load_library().await?;
        Ok(backend)
    }

    /// Loads (replacing) the `flowfabric` library, then checks `ff_version`.
    ///
    /// Errors: `Transport` on load failure or a version mismatch.
    pub async fn load_library(&self) -> Result<(), EngineError> {
        self.client.function_load_replace(&library_source()).await.map_err(wire::engine_error)?;
        self.check_library_version().await
    }

    /// Refuses a server whose loaded library has a different version than this client.
    ///
    /// Errors: `Transport(ScriptNotLoaded)` when the versions differ or no library is loaded.
    pub async fn check_library_version(&self) -> Result<(), EngineError> {
        let none: [&str; 0] = [];
        let v: Value =
            self.client.fcall_readonly("ff_version", &none, &none).await.map_err(wire::engine_error)?;
        let loaded = wire::text(v)?;
        if loaded != library_version() {
            return Err(EngineError::transport(
                wire::BACKEND,
                ff_core::error::BackendErrorKind::ScriptNotLoaded,
                format!("library version {loaded} loaded, client expects {}", library_version()).into(),
            ));
        }
        Ok(())
    }

    /// The configuration this backend was connected with.
    pub fn config(&self) -> &ValkeyConfig {
        &self.cfg
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
