//! Bad input reaching the Lua library (wrong arity, non-numeric numbers, unknown enum
//! strings, a wrong library version) is answered with one of the spec's error codes,
//! never with a Lua runtime error (which `guard` would report as `invariant_violation`).
//!
//! A `ValkeyBackend` is connected first so the library is loaded; the calls then go
//! through a raw ferriskey client, bypassing the client-side validation.

mod common;

use ferriskey::{Client, ClientBuilder, Value};
use ff_backend_valkey::library_version;

/// Codes a rejected call may answer with here.
const SPEC_CODES: [&str; 2] = ["invalid_input", "library_version_mismatch"];
/// Text of a Lua runtime error leaking into a reply.
const LUA_ERROR_MARKERS: [&str; 4] = ["user_function", "attempt to", "script:", "bad argument"];

/// The execution every execution-scoped call names.
const EID: &str = "{fp:1}:00000000-0000-0000-0000-0000000000e1";
/// Its partition's hash tag.
const TAG: &str = "{fp:1}";

/// How a call ends its ARGV.
#[derive(Clone, Copy)]
enum Version {
    /// This client's library version, as the backend sends it.
    Current,
    /// Another client's version.
    Other,
    /// No version at all (the whole ARGV is the given list).
    Missing,
}

/// One call and the error code it must be answered with.
struct Case {
    name: &'static str,
    function: &'static str,
    keys: Vec<String>,
    argv: Vec<String>,
    version: Version,
    code: &'static str,
}

/// The keys and convention arguments of the calls, under one fresh prefix.
struct Calls {
    prefix: String,
}

impl Calls {
    /// KEYS and ARGV[1..4] of an execution-scoped call (`now` as given).
    fn exec(&self, now: &str) -> (Vec<String>, Vec<String>) {
        let core = format!("{}ff:exec:{TAG}:{EID}:core", self.prefix);
        (vec![core], vec![now.into(), self.prefix.clone(), TAG.into(), EID.into()])
    }

    /// KEYS and ARGV[1..3] of a partition-scoped call.
    fn partition(&self) -> (Vec<String>, Vec<String>) {
        let key = format!("{}ff:idx:{TAG}:all_executions", self.prefix);
        (vec![key], vec![String::new(), self.prefix.clone(), TAG.into()])
    }

    /// KEYS and ARGV[1..4] of a budget call.
    fn budget(&self) -> (Vec<String>, Vec<String>) {
        let tag = "{b:0}";
        let key = format!("{}ff:budget:{tag}:budget-1", self.prefix);
        (vec![key], vec![String::new(), self.prefix.clone(), tag.into(), "budget-1".into()])
    }

    /// A case on the execution convention with contract arguments `extra`.
    fn exec_case(
        &self,
        name: &'static str,
        function: &'static str,
        extra: &[&str],
        code: &'static str,
    ) -> Case {
        let (keys, mut argv) = self.exec("");
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        Case { name, function, keys, argv, version: Version::Current, code }
    }

    /// A case on the partition convention with contract arguments `extra`.
    fn partition_case(
        &self,
        name: &'static str,
        function: &'static str,
        extra: &[&str],
        code: &'static str,
    ) -> Case {
        let (keys, mut argv) = self.partition();
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        Case { name, function, keys, argv, version: Version::Current, code }
    }
}

/// The 17 contract arguments of a well-formed `ff_create_execution` (no tags).
fn create_args() -> Vec<&'static str> {
    vec!["ns", "default", "job", "0", "tester", "", "", "", "", "", "", "", "", "", "", "", "0"]
}

/// `create_args` with slot `i` (0-based within the contract arguments) replaced.
fn create_with(i: usize, value: &'static str) -> Vec<&'static str> {
    let mut args = create_args();
    args[i] = value;
    args
}

/// The 17 contract arguments of a well-formed `ff_deliver_signal`.
fn signal_args() -> Vec<&'static str> {
    vec!["wp-1", "sig-1", "go", "test", "e2e", "tester", "0", "", "", "", "", "", "", "", "", "", "k1:00"]
}

/// The 18 contract arguments of `ff_suspend_execution` with no extra waitpoints.
fn suspend_args(primary_kind: &'static str, condition: &'static str) -> Vec<&'static str> {
    vec![
        "0",
        "lease-1",
        "1",
        "att-1",
        "susp-1",
        "waiting_for_signal",
        "waiting_for_signal",
        "worker",
        "",
        "fail",
        "",
        "",
        condition,
        "{}",
        primary_kind,
        "wp-1",
        "approval",
        "0",
    ]
}

fn cases(calls: &Calls) -> Vec<Case> {
    let bad = "invalid_input";
    let mut out = Vec::new();
    let (keys, argv) = calls.exec("");
    let whole = |argv: Vec<String>, extra: &[&str]| {
        let mut argv = argv;
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        argv
    };
    out.push(Case {
        name: "no arguments at all",
        function: "ff_create_execution",
        keys: keys.clone(),
        argv: Vec::new(),
        version: Version::Missing,
        code: "library_version_mismatch",
    });
    out.push(Case {
        name: "another client's version",
        function: "ff_create_execution",
        keys: keys.clone(),
        argv: whole(argv.clone(), &create_args()),
        version: Version::Other,
        code: "library_version_mismatch",
    });
    out.push(Case {
        name: "another client's version (complete)",
        function: "ff_complete_execution",
        keys: keys.clone(),
        argv: whole(argv.clone(), &["", "", "", "0", ""]),
        version: Version::Other,
        code: "library_version_mismatch",
    });
    out.push(Case {
        name: "no key",
        function: "ff_create_execution",
        keys: Vec::new(),
        argv: whole(argv.clone(), &create_args()),
        version: Version::Current,
        code: bad,
    });
    let (keys_now, argv_now) = calls.exec("yesterday");
    out.push(Case {
        name: "non-numeric now",
        function: "ff_create_execution",
        keys: keys_now.clone(),
        argv: whole(argv_now, &create_args()),
        version: Version::Current,
        code: bad,
    });
    let (_, argv_nan) = calls.exec("nan");
    out.push(Case {
        name: "NaN now",
        function: "ff_create_execution",
        keys: keys_now,
        argv: whole(argv_nan, &create_args()),
        version: Version::Current,
        code: bad,
    });
    out.push(Case {
        name: "only the convention arguments",
        function: "ff_create_execution",
        keys: Vec::new(),
        argv: argv[..2].to_vec(),
        version: Version::Current,
        code: bad,
    });
    out.extend([
        calls.exec_case("convention only", "ff_create_execution", &[], bad),
        calls.exec_case("one argument short", "ff_create_execution", &create_args()[..16], bad),
        calls.exec_case("priority is text", "ff_create_execution", &create_with(3, "high"), bad),
        calls.exec_case("delay_until is text", "ff_create_execution", &create_with(8, "later"), bad),
        calls.exec_case("tag count is text", "ff_create_execution", &create_with(16, "many"), bad),
        calls.exec_case("tag count without pairs", "ff_create_execution", &create_with(16, "2"), bad),
        calls.exec_case("tag count negative", "ff_create_execution", &create_with(16, "-1"), bad),
        calls.exec_case("claim too short", "ff_claim_execution", &["w", "i", "default"], bad),
        calls.exec_case(
            "claim ttl is text",
            "ff_claim_execution",
            &["w", "i", "default", "lease-1", "abc", "att-1", "", "", ""],
            bad,
        ),
        calls.exec_case(
            "claim timeout is text",
            "ff_claim_execution",
            &["w", "i", "default", "lease-1", "1000", "att-1", "", "soon", ""],
            bad,
        ),
        calls.exec_case("complete too short", "ff_complete_execution", &["lease-1", "1", "att-1"], bad),
        calls.exec_case(
            "complete override flag unknown",
            "ff_complete_execution",
            &["lease-1", "1", "att-1", "maybe", ""],
            bad,
        ),
        calls.exec_case(
            "fail override flag unknown",
            "ff_fail_execution",
            &["lease-1", "1", "att-1", "yes", "boom", "", "-"],
            bad,
        ),
        calls.exec_case("signal too short", "ff_deliver_signal", &signal_args()[..16], bad),
    ]);
    let mut dedup_ttl_text = signal_args();
    dedup_ttl_text[12] = "forever";
    out.push(calls.exec_case("signal dedup ttl is text", "ff_deliver_signal", &dedup_ttl_text, bad));
    out.extend([
        calls.exec_case(
            "suspend primary kind unknown",
            "ff_suspend_execution",
            &suspend_args("borrowed", r#"{"type":"Single"}"#),
            bad,
        ),
        calls.exec_case(
            "suspend condition is not JSON",
            "ff_suspend_execution",
            &suspend_args("fresh", "{not json"),
            bad,
        ),
        calls.exec_case("resume delay is text", "ff_resume_execution", &["soon"], bad),
        calls.exec_case("renew ttl is text", "ff_renew_lease", &["0", "l", "1", "a", "ttl", ""], bad),
        calls.exec_case("set tags count is text", "ff_set_execution_tags", &["x"], bad),
        calls.exec_case("change priority is text", "ff_change_priority", &["urgent"], bad),
        calls.exec_case("read stream lower id is text", "ff_read_stream", &["0", "start", "+", "10"], bad),
        calls.exec_case("read stream count is text", "ff_read_stream", &["0", "-", "+", "all"], bad),
        calls.partition_case(
            "expired leases cursor score is text",
            "ff_list_expired_leases",
            &["100", "yesterday", "x", "10"],
            bad,
        ),
        calls.partition_case("run scanner batch is text", "ff_run_scanner", &["lease_expiry", "all"], bad),
        calls.partition_case("list executions limit is text", "ff_list_executions", &["", "ten"], bad),
        calls.partition_case("list executions too short", "ff_list_executions", &[], bad),
        calls.partition_case("rotate grace is text", "ff_rotate_hmac_secret", &["k2", "ab", "long"], bad),
    ]);
    let (budget_keys, budget_argv) = calls.budget();
    let budget = |name: &'static str, function: &'static str, extra: &[&str]| Case {
        name,
        function,
        keys: budget_keys.clone(),
        argv: whole(budget_argv.clone(), extra),
        version: Version::Current,
        code: bad,
    };
    out.extend([
        budget("report usage too short", "ff_charge_budget", &["", "0"]),
        budget("report usage delta count is text", "ff_charge_budget", &["", "0", "two"]),
        budget("report usage delta count without pairs", "ff_charge_budget", &["", "0", "2", "tokens", "1"]),
        budget("report usage delta is text", "ff_charge_budget", &["", "0", "1", "tokens", "lots"]),
    ]);
    out.extend(idempotency_and_feed_cases(calls));
    let pass_key = format!("{}ff:idx:{{b:0}}:budget_policies", calls.prefix);
    out.push(Case {
        name: "budget pass kind unknown",
        function: "ff_budget_pass",
        keys: vec![pass_key],
        argv: vec![String::new(), calls.prefix.clone(), "{b:0}".into(), "budget_sweeper".into(), "10".into()],
        version: Version::Current,
        code: bad,
    });
    out
}

/// Cases of the functions off the execution convention: the idempotency guard and the
/// completion feed.
fn idempotency_and_feed_cases(calls: &Calls) -> Vec<Case> {
    let bad = "invalid_input";
    let guard = format!("{}ff:idem:{TAG}:ns:k1", calls.prefix);
    let guard_argv = |extra: &[&str]| {
        let mut argv =
            vec![String::new(), calls.prefix.clone(), TAG.into(), "ns".into(), "k1".into(), EID.into()];
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        argv
    };
    let feed = format!("{}ff:completions:{{feed}}", calls.prefix);
    let case = |name, function, keys: Vec<String>, argv: Vec<String>| Case {
        name,
        function,
        keys,
        argv,
        version: Version::Current,
        code: bad,
    };
    let relay = |extra: &[&str]| extra.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    vec![
        case("reserve window is text", "ff_reserve_idempotency", vec![guard.clone()], guard_argv(&["long"])),
        case("reserve too short", "ff_reserve_idempotency", vec![guard.clone()], guard_argv(&[])),
        case(
            "reserve key of another guard",
            "ff_reserve_idempotency",
            vec![feed.clone()],
            guard_argv(&["10"]),
        ),
        case("release too short", "ff_release_idempotency", vec![guard], guard_argv(&[""])),
        calls.partition_case("drain mark is text", "ff_drain_completions", &["first", "10"], bad),
        calls.partition_case("drain max is zero", "ff_drain_completions", &["0", "0"], bad),
        case("relay limit is text", "ff_relay_completions", vec![feed.clone()], relay(&["0", "all"])),
        case("relay limit is zero", "ff_relay_completions", vec![feed.clone()], relay(&["0", "0"])),
        case(
            "relay count without events",
            "ff_relay_completions",
            vec![feed.clone()],
            relay(&["0", "1", "0", "2", "{}"]),
        ),
        case(
            "relay event is not JSON",
            "ff_relay_completions",
            vec![feed.clone()],
            relay(&["0", "1", "0", "1", "{x"]),
        ),
        case(
            "relay event has no seq",
            "ff_relay_completions",
            vec![feed],
            relay(&["0", "1", "0", "1", "{}"]),
        ),
    ]
}

async fn raw_client() -> Client {
    ClientBuilder::new()
        .host("127.0.0.1", common::port())
        .request_timeout(std::time::Duration::from_millis(ff_backend_valkey::RESPONSE_TIMEOUT_MS))
        .build()
        .await
        .expect("raw client connects")
}

/// Sends one case; returns a transcript line, and whether the answer was the expected one.
async fn run(client: &Client, case: &Case) -> (String, bool) {
    let mut argv = case.argv.clone();
    match case.version {
        Version::Current => argv.push(library_version()),
        Version::Other => argv.push("0.0.0+0000000000000000".into()),
        Version::Missing => {}
    }
    let reply: Result<Value, ferriskey::Error> = client.fcall(case.function, &case.keys, &argv).await;
    let error = match reply {
        Ok(v) => return (format!("{}: {}: answered {v:?}, not an error", case.name, case.function), false),
        Err(e) => e,
    };
    let code = error.code().unwrap_or_default().to_owned();
    let detail = error.detail().unwrap_or_default().to_owned();
    let leaked = LUA_ERROR_MARKERS.iter().any(|m| detail.contains(m));
    let ok = code == case.code && SPEC_CODES.contains(&code.as_str()) && !leaked;
    (format!("{}: {} -> {code} {detail}", case.name, case.function), ok)
}

#[tokio::test]
async fn bad_input_gets_the_spec_error_never_a_lua_runtime_error() {
    let backend = common::backend(None).await;
    let calls = Calls { prefix: backend.config().key_prefix.clone() };
    let client = raw_client().await;
    let mut failures = Vec::new();
    let cases = cases(&calls);
    for case in &cases {
        let (line, ok) = run(&client, case).await;
        if !ok {
            failures.push(format!("expected {}: {line}", case.code));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn well_formed_calls_still_succeed() {
    let backend = common::backend(None).await;
    let calls = Calls { prefix: backend.config().key_prefix.clone() };
    let client = raw_client().await;
    let (keys, mut argv) = calls.exec("");
    argv.extend(create_args().iter().map(|s| (*s).to_owned()));
    argv.push(library_version());
    let reply: Value = client.fcall("ff_create_execution", &keys, &argv).await.expect("create");
    let Value::Array(items) = reply else { panic!("not an array: {reply:?}") };
    let first = items.into_iter().next().and_then(Result::ok);
    assert!(matches!(&first, Some(Value::BulkString(b)) if &b[..] == b"created"), "{first:?}");
}
