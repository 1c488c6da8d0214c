//! The `ff-sim` binary's sweep and replay commands: exit codes, JSON summaries, replay lines and
//! timelines.

use std::path::PathBuf;
use std::process::{Command, Output};

fn ff_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ff-sim")).args(args).output().expect("ff-sim starts")
}

/// A fresh path under the temp dir, unique per test process and name.
fn temp(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ff-sim-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_green_sweep_exits_zero_and_writes_every_seed_to_json() {
    let json = temp("green.json");
    let json_arg = json.to_string_lossy().into_owned();
    let out = ff_sim(&[
        "sweep",
        "--seeds",
        "1..=3",
        "--workers",
        "2",
        "--executions",
        "4",
        "--safety-ms",
        "5000",
        "--json",
        &json_arg,
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("swept seeds 1..=3"), "{stdout}");
    assert!(stdout.contains("3 passed, 0 FAILED"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("valid json");
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0]["seed"], 1);
    assert_eq!(runs[2]["summary"]["executions"], 4);
    assert!(runs[0]["summary"]["trace_hash"].as_str().is_some_and(|h| h.len() == 16));
    assert!(runs[0]["summary"]["anomalies"]["lost"].is_number());
    assert!(runs[0]["summary"]["violations"].as_array().is_some_and(Vec::is_empty));
}

#[test]
fn a_failing_sweep_exits_non_zero_and_prints_each_failing_seeds_replay() {
    let out = ff_sim(&["sweep", "--seeds", "1..=20", "--faults", "partitions", "--unfenced"]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "an unfenced sweep passed:\n{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    let replay = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("replay: "))
        .unwrap_or_else(|| panic!("no replay line:\n{stdout}"));
    assert!(replay.starts_with("ff-sim replay --seed "), "{replay}");
    assert!(replay.contains("--faults partitions") && replay.contains("--unfenced"), "{replay}");

    // The printed replay, run as printed (with the timeline redirected), fails the same way.
    let svg = temp("replay.svg");
    let mut args: Vec<String> = replay.split_whitespace().skip(1).map(str::to_owned).collect();
    let at = args.iter().position(|a| a == "--timeline").expect("the replay draws a timeline");
    args[at + 1] = svg.to_string_lossy().into_owned();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ff_sim(&refs);
    assert!(!out.status.success(), "the replay passed:\n{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("double ownership"), "{}", text(&out.stdout));
    let drawn = std::fs::read_to_string(&svg).expect("timeline written");
    assert!(drawn.starts_with("<svg") && drawn.trim_end().ends_with("</svg>"));
    assert!(drawn.contains(r#"class="overlap""#), "the timeline does not mark the double ownership");
}

#[test]
fn run_and_turmoil_write_their_summary_as_json() {
    let run_json = temp("run.json");
    let out = ff_sim(&["run", "--seed", "2", "--executions", "50", "--json", &run_json.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&run_json).expect("written")).expect("json");
    assert_eq!(run["seed"], 2);
    assert_eq!(run["executions"], 50);

    let turmoil_json = temp("turmoil.json");
    let out = ff_sim(&[
        "turmoil",
        "--seed",
        "3",
        "--workers",
        "2",
        "--executions",
        "6",
        "--safety-ms",
        "5000",
        "--json",
        &turmoil_json.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let turmoil: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&turmoil_json).expect("written")).expect("json");
    assert_eq!(turmoil["seed"], 3);
    assert_eq!(turmoil["completed"].as_u64().unwrap_or(0) + turmoil["failed"].as_u64().unwrap_or(0), 6);
    assert!(turmoil.get("history").is_none(), "the summary JSON carries the whole history");
}
