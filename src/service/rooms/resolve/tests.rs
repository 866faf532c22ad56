//! State resolution against the fixtures of ruma's `ruma-state-res` crate (0.18.0, MIT; copied to
//! `tests/fixtures/state-res` with its expected states): the two problems of MSC4297, each resolved
//! with the rules of room version 11 (state resolution v2.0) and 12 (v2.1, which needs the
//! conflicted state subgraph we compute), through `resolve_maps` as `Rooms::resolve_states` calls
//! it, with our auth chains.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomVersionId, UInt, events::StateEventType,
    room_version_rules::StateResolutionV2Rules, state_res::StateMap,
};
use serde_json::Value;

use super::{super::Pdu, resolve_maps};

fn fixture(path: &str) -> Value {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-res").join(path);
    serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
}

/// The fixture's events as our `Pdu`s (the fixtures carry no hashes, signatures or depth, which
/// resolution does not read).
fn pdus(path: &str) -> HashMap<OwnedEventId, Arc<Pdu>> {
    let ids = |v: &Value| -> Vec<OwnedEventId> {
        v.as_array().unwrap().iter().map(|id| EventId::parse(id.as_str().unwrap()).unwrap()).collect()
    };
    let mut pdus = HashMap::new();
    for event in fixture(path).as_array().unwrap() {
        let event_id = EventId::parse(event["event_id"].as_str().unwrap()).unwrap();
        let pdu = Pdu {
            event_id: event_id.clone(),
            // The create event of a v12 room names no room: the room is named after it.
            room_id: ruma::RoomId::parse(event["room_id"].as_str().unwrap_or("!00-m-room-create")).unwrap(),
            names_room: event.get("room_id").is_some(),
            sender: ruma::UserId::parse(event["sender"].as_str().unwrap()).unwrap(),
            origin_server_ts: MilliSecondsSinceUnixEpoch(
                UInt::new(event["origin_server_ts"].as_u64().unwrap()).unwrap(),
            ),
            kind: event["type"].as_str().unwrap().into(),
            content: serde_json::value::to_raw_value(&event["content"]).unwrap(),
            state_key: event["state_key"].as_str().map(str::to_owned),
            prev_events: ids(&event["prev_events"]),
            auth_events: ids(&event["auth_events"]),
            redacts: None,
            depth: 0,
            rejected: false,
        };
        pdus.insert(event_id, Arc::new(pdu));
    }
    pdus
}

/// A state as the fixture lists it: event IDs, keyed by their type and state key.
fn state(path: &str, pdus: &HashMap<OwnedEventId, Arc<Pdu>>) -> StateMap<OwnedEventId> {
    fixture(path)
        .as_array()
        .unwrap()
        .iter()
        .map(|id| {
            let pdu = &pdus[&*EventId::parse(id.as_str().unwrap()).unwrap()];
            let key = (StateEventType::from(pdu.kind.to_string()), pdu.state_key.clone().unwrap());
            (key, pdu.event_id.clone())
        })
        .collect()
}

/// Resolves the fixture's two states with the room version of its create event; compares with
/// the expected state, entry by entry.
fn check(problem: &str, states: [&str; 2], pdus_file: &str, expected: &str) {
    let pdus = pdus(&format!("{problem}/{pdus_file}"));
    let create = pdus.values().find(|pdu| pdu.kind.to_string() == "m.room.create").unwrap();
    let version: Value = serde_json::from_str(create.content.get()).unwrap();
    let version = RoomVersionId::try_from(version["room_version"].as_str().unwrap()).unwrap();
    let rules = version.rules().unwrap();
    let v2_rules = rules.state_res.v2_rules().copied().unwrap_or(StateResolutionV2Rules::V2_0);
    let maps: Vec<_> = states.iter().map(|file| state(&format!("{problem}/{file}"), &pdus)).collect();
    let fetch = |id: &EventId| pdus.get(id).cloned();
    let resolved = resolve_maps(&rules.authorization, &v2_rules, &maps, &fetch).unwrap();

    let mut got: Vec<(String, String, String)> =
        resolved.into_iter().map(|((kind, key), id)| (kind.to_string(), key, id.to_string())).collect();
    got.sort();
    let mut want: Vec<(String, String, String)> = fixture(expected)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let field = |name: &str| e[name].as_str().unwrap().to_owned();
            (field("type"), field("state_key"), field("event_id"))
        })
        .collect();
    want.sort();
    assert_eq!(got, want, "{problem} with {pdus_file}");
}

#[test]
fn msc4297_problem_a_v2_0_starts_from_the_unconflicted_state() {
    check(
        "MSC4297-problem-A",
        ["state-bob.json", "state-charlie.json"],
        "pdus-v11.json",
        "expected-msc4297_problem_a_state_res_v2_0.json",
    );
}

#[test]
fn msc4297_problem_a_v2_1_starts_from_the_empty_state() {
    check(
        "MSC4297-problem-A",
        ["state-bob.json", "state-charlie.json"],
        "pdus-v12.json",
        "expected-msc4297_problem_a_state_res_v2_1.json",
    );
}

#[test]
fn msc4297_problem_b_v2_0_ignores_the_conflicted_subgraph() {
    check(
        "MSC4297-problem-B",
        ["state-eve.json", "state-zara.json"],
        "pdus-v11.json",
        "expected-msc4297_problem_b_state_res_v2_0.json",
    );
}

#[test]
fn msc4297_problem_b_v2_1_resolves_the_conflicted_subgraph_too() {
    check(
        "MSC4297-problem-B",
        ["state-eve.json", "state-zara.json"],
        "pdus-v12.json",
        "expected-msc4297_problem_b_state_res_v2_1.json",
    );
}
