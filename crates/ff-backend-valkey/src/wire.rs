//! The wire edge: ferriskey errors to `EngineError`, replies to plain data.

use ferriskey::{ErrorKind, Value};
use ff_core::EngineError;
use ff_core::error::BackendErrorKind;

/// Backend label of transport errors.
pub const BACKEND: &str = "valkey";

/// Maps a ferriskey error: a function's `error_reply("<code> <detail>")`
/// becomes the typed error of `<code>`; anything else is a transport fault.
pub fn engine_error(e: ferriskey::Error) -> EngineError {
    if e.kind() == ErrorKind::ExtensionError
        && let Some(code) = e.code()
    {
        let code = code.to_owned();
        // `lua/common.lua` always sends a detail, "-" standing for none.
        let detail = match e.detail().unwrap_or_default().trim() {
            "-" => String::new(),
            d => d.to_owned(),
        };
        return match code.as_str() {
            "unavailable" => EngineError::Unavailable { op: "run_scanner" },
            "library_version_mismatch" => EngineError::transport(
                BACKEND,
                BackendErrorKind::ScriptNotLoaded,
                format!("library_version_mismatch {detail}").into(),
            ),
            "execution_not_active" => {
                let slots: Vec<String> = detail.split(' ').map(str::to_owned).collect();
                EngineError::from_code(&code, &slots)
            }
            _ if detail.is_empty() => EngineError::from_code(&code, &[]),
            _ => EngineError::from_code(&code, &[detail]),
        };
    }
    let kind = match e.kind() {
        ErrorKind::IoError | ErrorKind::FatalSendError | ErrorKind::FatalReceiveError => {
            BackendErrorKind::Transport
        }
        ErrorKind::BusyLoadingError => BackendErrorKind::BusyLoading,
        ErrorKind::AuthenticationFailed | ErrorKind::PermissionDenied => BackendErrorKind::Auth,
        ErrorKind::Moved | ErrorKind::Ask | ErrorKind::ClusterDown | ErrorKind::CrossSlot => {
            BackendErrorKind::Cluster
        }
        ErrorKind::NoScriptError => BackendErrorKind::ScriptNotLoaded,
        ErrorKind::TypeError => BackendErrorKind::Protocol,
        _ => BackendErrorKind::Other,
    };
    EngineError::transport(BACKEND, kind, Box::new(e))
}

/// A reply-shape error.
pub fn protocol(what: impl Into<String>) -> EngineError {
    EngineError::protocol(BACKEND, what)
}

/// The items of an array reply (RESP2 nil reads as empty).
pub fn array(v: Value) -> Result<Vec<Value>, EngineError> {
    match v {
        Value::Array(items) => items.into_iter().map(|r| r.map_err(engine_error)).collect(),
        Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(protocol(format!("expected an array, got {other:?}"))),
    }
}

/// The bytes of a string reply.
pub fn bytes(v: Value) -> Result<Vec<u8>, EngineError> {
    match v {
        Value::BulkString(b) => Ok(b.to_vec()),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Okay => Ok(b"OK".to_vec()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(protocol(format!("expected a string, got {other:?}"))),
    }
}

/// The text of a string reply.
pub fn text(v: Value) -> Result<String, EngineError> {
    String::from_utf8(bytes(v)?).map_err(|e| protocol(format!("reply is not UTF-8: {e}")))
}

/// An array reply of strings.
pub fn texts(v: Value) -> Result<Vec<String>, EngineError> {
    array(v)?.into_iter().map(text).collect()
}

/// A field/value list as pairs, in reply order.
pub fn pairs(v: Value) -> Result<Vec<(String, String)>, EngineError> {
    let flat = match v {
        Value::Map(m) => {
            return m.into_iter().map(|(k, v)| Ok((text(k)?, text(v)?))).collect();
        }
        other => texts(other)?,
    };
    if flat.len() % 2 != 0 {
        return Err(protocol("odd field/value list"));
    }
    Ok(flat.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect())
}

/// Reply slot `i` of a string list.
pub fn slot(items: &[String], i: usize) -> Result<&str, EngineError> {
    items.get(i).map(String::as_str).ok_or_else(|| protocol(format!("reply has no slot {i}: {items:?}")))
}

/// Reply slot `i` parsed as a number.
pub fn num<T: std::str::FromStr>(items: &[String], i: usize) -> Result<T, EngineError> {
    let s = slot(items, i)?;
    s.parse().map_err(|_| protocol(format!("reply slot {i} is not a number: {s:?}")))
}
