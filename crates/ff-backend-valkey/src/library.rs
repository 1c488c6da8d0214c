//! The `flowfabric` function library: the `lua/` files concatenated in one
//! `FUNCTION LOAD`, stamped with a version the client checks.

/// The library name every function is registered under.
pub const LIBRARY_NAME: &str = "flowfabric";

/// The family files, in load order (later files use earlier locals).
const SOURCES: [(&str, &str); 11] = [
    ("common.lua", include_str!("../../../lua/common.lua")),
    ("suspension.lua", include_str!("../../../lua/suspension.lua")),
    ("streams.lua", include_str!("../../../lua/streams.lua")),
    ("admission.lua", include_str!("../../../lua/admission.lua")),
    ("execution.lua", include_str!("../../../lua/execution.lua")),
    ("lifecycle.lua", include_str!("../../../lua/lifecycle.lua")),
    ("flow.lua", include_str!("../../../lua/flow.lua")),
    ("lease.lua", include_str!("../../../lua/lease.lua")),
    ("scheduling.lua", include_str!("../../../lua/scheduling.lua")),
    ("worker.lua", include_str!("../../../lua/worker.lua")),
    ("reads.lua", include_str!("../../../lua/reads.lua")),
];

/// FNV-1a over the sources, so any edit of the Lua changes the version.
fn sources_hash() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, text) in SOURCES {
        for b in name.bytes().chain(text.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The version `ff_version` returns: crate version plus a hash of the sources
/// (hashed once per process: the sources are some hundred kilobytes).
pub fn library_version() -> String {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| format!("{}+{:016x}", env!("CARGO_PKG_VERSION"), sources_hash())).clone()
}

/// The whole library text for `FUNCTION LOAD REPLACE`.
pub fn library_source() -> String {
    let mut out = format!("#!lua name={LIBRARY_NAME}\n");
    out.push_str(&format!("local FF_LIBRARY_VERSION = '{}'\n", library_version()));
    for (name, text) in SOURCES {
        out.push_str(&format!("-- ---- {name}\n"));
        out.push_str(text);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_starts_with_the_shebang_and_stamps_the_version() {
        let src = library_source();
        assert!(src.starts_with("#!lua name=flowfabric\n"));
        assert!(src.contains(&library_version()));
        assert!(src.contains("ff_version"));
    }
}
