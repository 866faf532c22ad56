//! Push rules: the defaults, user rules added, moved, changed and deleted, and the ruleset in
//! `/sync` account data.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    server::{TestServer, User, assert_error},
    sync::{sync, sync_token},
};

const RULES: &str = "/_matrix/client/v3/pushrules";

fn rule_ids(ruleset: &Value, kind: &str) -> Vec<String> {
    ruleset[kind].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap().to_owned()).collect()
}

async fn global(server: &TestServer, user: &User) -> Value {
    let (status, reply) = server.get(&format!("{RULES}/"), user.tok()).await;
    assert_eq!(status, 200, "{reply}");
    reply["global"].clone()
}

async fn delete(server: &TestServer, user: &User, path: &str) -> (reqwest::StatusCode, Value) {
    server.request(Method::DELETE, &format!("{RULES}/global/{path}"), user.tok(), None).await
}

#[tokio::test]
async fn the_defaults_are_served_and_server_rules_cannot_be_removed() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let rules = global(&server, &alice).await;
    assert!(rule_ids(&rules, "override").contains(&".m.rule.master".to_owned()), "{rules}");
    assert!(rule_ids(&rules, "underride").contains(&".m.rule.message".to_owned()), "{rules}");
    assert_eq!(server.get(&format!("{RULES}/global/"), alice.tok()).await.1, rules);

    let (status, master) = server.get(&format!("{RULES}/global/override/.m.rule.master"), alice.tok()).await;
    assert_eq!(status, 200, "{master}");
    assert_eq!(master["default"], true);
    assert_eq!(master["enabled"], false);
    assert_error(&delete(&server, &alice, "override/.m.rule.master").await, 400, "M_INVALID_PARAM");
    assert_error(&server.get(&format!("{RULES}/global/override/nope"), alice.tok()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get(&format!("{RULES}/global/sideways/x"), alice.tok()).await, 400, "M_INVALID_PARAM");
    assert_error(&server.get(&format!("{RULES}/device/override/x"), alice.tok()).await, 400, "M_INVALID_PARAM");
    assert_error(&server.get(&format!("{RULES}/"), None).await, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn rules_are_added_positioned_changed_and_deleted() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let put = |path: String, body: Value| {
        let server = &server;
        let alice = &alice;
        async move { server.put(&format!("{RULES}/global/{path}"), alice.tok(), body).await }
    };

    // Room and sender rules are named by the room and the user.
    let room = "!somewhere:test.local";
    let reply = put(format!("room/{room}"), json!({ "actions": [] })).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let reply = put(format!("sender/{}", bob.user_id), json!({ "actions": ["notify"] })).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    assert_error(&put("room/not-a-room".into(), json!({ "actions": [] })).await, 400, "M_INVALID_PARAM");

    // Content rules need a pattern; new rules come first, or where `before`/`after` put them.
    assert_error(&put("content/cats".into(), json!({ "actions": ["notify"] })).await, 400, "M_MISSING_PARAM");
    for id in ["cats", "dogs"] {
        let reply = put(format!("content/{id}"), json!({ "pattern": id, "actions": ["notify"] })).await;
        assert_eq!(reply.0, 200, "{}", reply.1);
    }
    let content =
        |rules: &Value| rule_ids(rules, "content").into_iter().filter(|id| !id.starts_with('.')).collect::<Vec<_>>();
    assert_eq!(content(&global(&server, &alice).await), ["dogs", "cats"]);
    let reply = put("content/birds?after=cats".into(), json!({ "pattern": "birds", "actions": [] })).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let reply = put("content/fish?before=dogs".into(), json!({ "pattern": "fish", "actions": [] })).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    assert_eq!(content(&global(&server, &alice).await), ["fish", "dogs", "cats", "birds"]);
    let unknown = put("content/ants?before=nothing".into(), json!({ "pattern": "ants", "actions": [] })).await;
    assert_error(&unknown, 404, "M_NOT_FOUND");
    let dotted = put("override/.m.rule.mine".into(), json!({ "actions": [] })).await;
    assert_error(&dotted, 400, "M_INVALID_PARAM");
    assert_error(&put("content/bad".into(), json!({ "pattern": "x", "actions": "notify" })).await, 400, "M_BAD_JSON");
    assert_eq!(content(&global(&server, &alice).await), ["fish", "dogs", "cats", "birds"], "refusals change nothing");

    // Overrides with conditions; enabled and actions of user and default rules alike.
    let conditions = json!([{ "kind": "event_match", "key": "type", "pattern": "org.example.*" }]);
    let reply = put("override/examples".into(), json!({ "conditions": conditions, "actions": ["notify"] })).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let (_, rule) = server.get(&format!("{RULES}/global/override/examples"), alice.tok()).await;
    assert_eq!(rule["conditions"], conditions, "{rule}");
    assert_eq!(rule["default"], false);
    assert_eq!(rule["enabled"], true);

    let reply = put("override/.m.rule.master/enabled".into(), json!({ "enabled": true })).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let (_, enabled) = server.get(&format!("{RULES}/global/override/.m.rule.master/enabled"), alice.tok()).await;
    assert_eq!(enabled, json!({ "enabled": true }));
    let reply =
        put("override/examples/actions".into(), json!({ "actions": ["notify", { "set_tweak": "highlight" }] })).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let (_, actions) = server.get(&format!("{RULES}/global/override/examples/actions"), alice.tok()).await;
    assert_eq!(actions, json!({ "actions": ["notify", { "set_tweak": "highlight" }] }));
    assert_error(&put("override/nope/enabled".into(), json!({ "enabled": true })).await, 404, "M_NOT_FOUND");
    assert_error(&put("override/examples/enabled".into(), json!({ "enabled": "yes" })).await, 400, "M_BAD_JSON");

    let reply = delete(&server, &alice, "override/examples").await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    assert_error(&server.get(&format!("{RULES}/global/override/examples"), alice.tok()).await, 404, "M_NOT_FOUND");
    assert_error(&delete(&server, &alice, "override/examples").await, 404, "M_NOT_FOUND");

    // Bob's rules are his own.
    assert_eq!(content(&global(&server, &bob).await), Vec::<String>::new());
    let (_, master) = server.get(&format!("{RULES}/global/override/.m.rule.master"), bob.tok()).await;
    assert_eq!(master["enabled"], false);
}

#[tokio::test]
async fn the_ruleset_is_in_sync_account_data_and_changes_reach_other_devices() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let other_device = server.login("alice", "pw").await;
    let initial = sync(&server, &other_device, &[]).await;
    let pushed = |reply: &Value| {
        reply["account_data"]["events"].as_array().unwrap().iter().find(|e| e["type"] == "m.push_rules").cloned()
    };
    let rules = pushed(&initial).expect("push rules in an initial sync");
    assert_eq!(rules["content"]["global"], global(&server, &alice).await);

    let since = sync_token(&server, &other_device).await;
    let path = format!("{RULES}/global/override/.m.rule.master/enabled");
    assert_eq!(server.put(&path, alice.tok(), json!({ "enabled": true })).await.0, 200);
    let later = sync(&server, &other_device, &[("since", &since), ("timeout", "5000")]).await;
    let rules = pushed(&later).expect("the change in an incremental sync");
    let master =
        rules["content"]["global"]["override"].as_array().unwrap().iter().find(|r| r["rule_id"] == ".m.rule.master");
    assert_eq!(master.unwrap()["enabled"], true, "{rules}");
}
