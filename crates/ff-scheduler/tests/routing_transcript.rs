//! A golden transcript of capability-routed claims through the scheduler:
//! superset, exact, empty, missing, a malformed routing policy (fails closed),
//! a malformed worker capability list, and a route block lifted once a capable
//! worker registers.

mod common;

use std::collections::BTreeMap;

use common::Env;
use ff_core::contracts::CreateExecutionArgs;
use ff_core::{ExecutionId, LaneId};
use serde_json::{Value, json};

struct Script {
    env: Env,
    names: BTreeMap<ExecutionId, String>,
    log: Vec<String>,
}

impl Script {
    fn new() -> Self {
        Self { env: Env::new(1), names: BTreeMap::new(), log: Vec::new() }
    }

    async fn submit(&mut self, name: &str, required: Value) -> ExecutionId {
        let id =
            self.env.submit(0, json!({"routing_requirements": {"required_capabilities": required}})).await;
        self.names.insert(id.clone(), name.to_owned());
        self.log.push(format!("submit {name} requiring {required}"));
        id
    }

    async fn submit_raw(&mut self, name: &str, policy: &str) {
        let id = ExecutionId::from_parts(0, self.env.uuid());
        let mut args = CreateExecutionArgs::new(id.clone(), "ns", LaneId::new(common::LANE), "job");
        args.policy_json = policy.to_owned();
        let answer = match self.env.backend.create_execution(args).await {
            Ok(_) => "created".to_owned(),
            Err(e) => format!("error {}", e.code().unwrap_or("?")),
        };
        let exists = self.env.backend.describe_execution(&id).await.ok().flatten().is_some();
        self.log.push(format!("submit {name} with policy {policy} -> {answer}; stored: {exists}"));
    }

    async fn claim(&mut self, caps: &[&str]) {
        let answer = match self.env.claim("inst-1", caps).await {
            Ok(Some(grant)) => {
                let name = self.names.get(&grant.execution_id).cloned().unwrap_or_else(|| "?".into());
                self.env.lease(&grant, "inst-1").await;
                format!("granted {name} (leased)")
            }
            Ok(None) => "no grant".to_owned(),
            Err(e) => format!("error {}", e.code().unwrap_or("?")),
        };
        self.log.push(format!("claim with {caps:?} -> {answer}"));
    }

    async fn show(&mut self, id: &ExecutionId) {
        let s = self.env.state(id).await;
        let name = self.names[id].clone();
        self.log.push(format!(
            "  {name}: {} / {} / {} {:?}",
            s.public_state, s.eligibility_state, s.blocking_reason, s.blocking_detail
        ));
    }
}

#[tokio::test]
async fn capability_routed_claims() {
    let mut s = Script::new();
    let superset = s.submit("superset", json!(["gpu"])).await;
    s.claim(&["cuda", "gpu"]).await;
    s.show(&superset).await;

    let exact = s.submit("exact", json!(["cuda", "gpu"])).await;
    s.claim(&["gpu", "cuda"]).await;
    s.show(&exact).await;

    let empty = s.submit("empty", json!([])).await;
    s.claim(&[]).await;
    s.show(&empty).await;

    let missing = s.submit("missing", json!(["gpu", "tpu"])).await;
    s.claim(&["gpu"]).await;
    s.show(&missing).await;
    s.claim(&["gpu"]).await;

    s.submit_raw("malformed-list", r#"{"routing_requirements":{"required_capabilities":"gpu"}}"#).await;
    s.submit_raw("malformed-token", r#"{"routing_requirements":{"required_capabilities":["g,pu"]}}"#).await;
    s.submit_raw("malformed-json", r#"{"routing_requirements":"#).await;
    s.claim(&["gp u"]).await;
    s.claim(&["gpu", ""]).await;
    s.show(&missing).await;

    s.env.register_worker("inst-gpu", &["gpu"]).await;
    let lifted = s.env.unblock_pass().await;
    s.log.push(format!("register a gpu-only worker; unblock pass lifted {lifted}"));
    s.show(&missing).await;
    s.env.register_worker("inst-tpu", &["gpu", "tpu"]).await;
    let lifted = s.env.unblock_pass().await;
    s.log.push(format!("register a gpu+tpu worker; unblock pass lifted {lifted}"));
    s.show(&missing).await;
    s.claim(&["gpu", "tpu"]).await;
    s.show(&missing).await;

    insta::assert_snapshot!("capability_routed_claims", s.log.join("\n"));
}
