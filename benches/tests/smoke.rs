//! CI smoke test of the `ff-bench` binary: tiny runs on the memory backend
//! print report lines with every schema field. Timings are never checked here;
//! speed is what the benches measure.

use std::process::Command;

/// Runs `ff-bench` with `args`; returns its stdout lines parsed as JSON.
fn run(args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_ff-bench")).args(args).output().expect("run ff-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ff-bench {args:?} failed:\n{stderr}");
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Asserts the fields of FlowFabric's report schema and ours, by type.
fn assert_schema(line: &serde_json::Value) {
    for field in ["scenario", "system", "git_sha", "valkey_version", "timestamp_utc", "backend"] {
        assert!(line[field].is_string(), "{field} in {line}");
    }
    assert!(
        line["host"]["cpu"].is_string() && line["host"]["cores"].is_u64() && line["host"]["mem_gb"].is_u64()
    );
    assert!(line["cluster"].is_boolean() && line["config"].is_object(), "{line}");
    assert!(line["throughput_ops_per_sec"].is_f64(), "{line}");
    for p in ["p50", "p95", "p99"] {
        assert!(line["latency_ms"][p].is_f64(), "latency_ms.{p} in {line}");
    }
    assert!(line["completed_ops"].is_u64(), "{line}");
}

#[test]
fn scenario_1_on_memory_prints_one_schema_line() {
    let lines = run(&["--backend", "memory", "--scenario", "1", "--scale", "0.005"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_schema(line);
    assert_eq!(line["scenario"], "submit_claim_complete");
    assert_eq!(line["system"], "ff-engine-kit");
    assert_eq!(line["backend"], "memory");
    assert_eq!(line["config"], serde_json::json!({ "tasks": 50, "workers": 16, "payload_bytes": 4096 }));
    assert_eq!(line["completed_ops"], 50);
    assert!(line.get("ratio_to_baseline").is_none(), "no baseline off Valkey");
}

#[test]
fn suspension_and_flow_scenarios_run_on_memory() {
    let lines = run(&["--backend", "memory", "--scenario", "2,4", "--scale", "0.01"]);
    let scenarios: Vec<&str> = lines.iter().filter_map(|l| l["scenario"].as_str()).collect();
    assert_eq!(scenarios, ["suspend_signal_resume", "linear_flow"]);
    lines.iter().for_each(assert_schema);
    assert_eq!(lines[1]["completed_ops"], 10, "one flow of ten nodes");
}

#[test]
fn unknown_backends_and_scenarios_are_refused() {
    for args in [["--backend", "postgres://x", "--scenario", "1"], ["--backend", "memory", "--scenario", "3"]]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_ff-bench")).args(args).output().expect("run ff-bench");
        assert!(!out.status.success(), "{args:?} should fail");
    }
}
