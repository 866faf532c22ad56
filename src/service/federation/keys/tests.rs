//! Key caching and expiry, over a real database. The remote servers are named by IP literals in
//! denied ranges, so every fetch fails at once without touching the network: what the tests see
//! is what was stored.

use std::sync::Arc;

use ruma::{CanonicalJsonObject, ServerName, server_name};
use serde_json::json;

use super::{KnownKey, check_self_signed};
use crate::{
    config::Config,
    service::{Services, keys::ServerKeys, now_ms},
    storage::Storage,
};

const DAY: u64 = 24 * 3600 * 1000;

pub(crate) async fn services(dir: &std::path::Path, server_name: &str) -> Arc<Services> {
    let config = Config::load(
        None,
        [
            ("MYELIN_SERVER_NAME".to_owned(), server_name.to_owned()),
            ("MYELIN_DATABASE__PATH".to_owned(), dir.to_str().unwrap().to_owned()),
        ],
    )
    .unwrap();
    let storage = Storage::open(&config.database).unwrap();
    Services::new(config, storage).await.unwrap()
}

fn remote_key(seed: u8, version: &str) -> ServerKeys {
    ServerKeys::from_seed(version, &[seed; 32]).unwrap()
}

/// A signed key response of `server` with `key` current and `old` (key, expired_ts) listed as old.
fn response(
    server: &ServerName,
    key: &ServerKeys,
    valid_until: u64,
    old: Option<(&ServerKeys, u64)>,
) -> CanonicalJsonObject {
    let mut object = key.signed_key_response(server.as_str(), valid_until).unwrap();
    if let Some((old_key, expired)) = old {
        object.remove("signatures");
        let old_value: ruma::serde::Base64 = ruma::serde::Base64::new(old_key.public_key().to_vec());
        let old_keys = json!({ old_key.key_id(): { "key": old_value.encode(), "expired_ts": expired } });
        object.insert("old_verify_keys".into(), serde_json::from_value(old_keys).unwrap());
        key.sign_json(server.as_str(), &mut object).unwrap();
    }
    object
}

fn public(key: &ServerKeys) -> ruma::serde::Base64 {
    ruma::serde::Base64::new(key.public_key().to_vec())
}

#[tokio::test]
async fn a_current_key_verifies_requests_without_fetching() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "example.org").await;
    let keys = &services.federation.keys;
    let remote = server_name!("10.0.0.1:8448");
    let key = remote_key(1, "a");
    keys.remember(remote, response(remote, &key, now_ms() + DAY, None)).await.unwrap();

    assert_eq!(keys.request_key(remote, "ed25519:a").await.unwrap(), Some(public(&key)));
    assert_eq!(keys.fetch_count(), 0);
    // An unknown key ID means a fetch (which fails here): no key.
    assert_eq!(keys.request_key(remote, "ed25519:other").await.unwrap(), None);
    assert_eq!(keys.fetch_count(), 1);
}

#[tokio::test]
async fn validity_is_capped_at_seven_days_and_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let remote = server_name!("10.0.0.2:8448");
    let key = remote_key(2, "a");
    {
        let services = services(dir.path(), "example.org").await;
        let far = now_ms() + 365 * DAY;
        services.federation.keys.remember(remote, response(remote, &key, far, None)).await.unwrap();
    }
    // Durable: a new process over the same database knows the key.
    let services = services(dir.path(), "example.org").await;
    let known = services.federation.keys.known(remote).unwrap();
    assert_eq!(known.len(), 1);
    assert!(known[0].valid_until_ts <= now_ms() + 7 * DAY);
    assert!(known[0].valid_until_ts > now_ms() + 6 * DAY);
    assert!(!known[0].signs_events_at(Some(now_ms() + 8 * DAY)));
}

#[tokio::test]
async fn an_expired_key_no_longer_signs_requests_but_still_verifies_older_events() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "example.org").await;
    let keys = &services.federation.keys;
    let remote = server_name!("10.0.0.3:8448");
    let key = remote_key(3, "a");
    let expired_at = now_ms() - DAY;
    keys.remember(remote, response(remote, &key, expired_at, None)).await.unwrap();

    assert_eq!(keys.request_key(remote, "ed25519:a").await.unwrap(), None, "expired keys sign no requests");
    assert_eq!(keys.fetch_count(), 1, "an expired key is fetched again");
    let ids = vec!["ed25519:a".to_owned()];
    let before = keys.event_keys(remote, &ids, Some(expired_at - 1000)).await.unwrap();
    assert_eq!(before.get("ed25519:a"), Some(&public(&key)));
    assert!(keys.event_keys(remote, &ids, Some(expired_at + 1000)).await.unwrap().is_empty());
    // Room versions 1 to 4 ignore validity.
    assert_eq!(keys.event_keys(remote, &ids, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn old_verify_keys_verify_events_from_before_they_expired_and_never_requests() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "example.org").await;
    let keys = &services.federation.keys;
    let remote = server_name!("10.0.0.4:8448");
    let (current, old) = (remote_key(4, "new"), remote_key(5, "old"));
    let retired = now_ms() - 10 * DAY;
    keys.remember(remote, response(remote, &current, now_ms() + DAY, Some((&old, retired)))).await.unwrap();

    let known = keys.known(remote).unwrap();
    let old_known = known.iter().find(|k| k.key_id == "ed25519:old").unwrap();
    assert_eq!(old_known.expired_ts, Some(retired));
    assert_eq!(keys.request_key(remote, "ed25519:old").await.unwrap(), None);
    let ids = vec!["ed25519:old".to_owned()];
    assert_eq!(keys.event_keys(remote, &ids, Some(retired - 1)).await.unwrap().len(), 1);
    assert!(keys.event_keys(remote, &ids, Some(retired)).await.unwrap().is_empty());
    assert_eq!(keys.request_key(remote, "ed25519:new").await.unwrap(), Some(public(&current)));
}

#[tokio::test]
async fn a_newer_answer_extends_a_key_and_an_older_one_does_not_shorten_it() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "example.org").await;
    let keys = &services.federation.keys;
    let remote = server_name!("10.0.0.5:8448");
    let key = remote_key(6, "a");
    keys.remember(remote, response(remote, &key, now_ms() + DAY, None)).await.unwrap();
    keys.remember(remote, response(remote, &key, now_ms() + 3 * DAY, None)).await.unwrap();
    let extended = keys.known(remote).unwrap()[0].valid_until_ts;
    assert!(extended > now_ms() + 2 * DAY);
    keys.remember(remote, response(remote, &key, now_ms() + DAY, None)).await.unwrap();
    assert_eq!(keys.known(remote).unwrap()[0].valid_until_ts, extended);
}

#[tokio::test]
async fn concurrent_requests_for_an_unknown_server_share_one_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "example.org").await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let services = services.clone();
            tokio::spawn(async move {
                services.federation.keys.request_key(server_name!("10.0.0.6:8448"), "ed25519:a").await.unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), None);
    }
    // One fetch; the others waited for it, and a failure is not retried at once.
    assert_eq!(services.federation.keys.fetch_count(), 1);
}

#[tokio::test]
async fn our_own_key_is_known_without_fetching_and_self_signed() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "example.org").await;
    let keys = &services.federation.keys;
    let own = keys.own_key_response().unwrap();
    check_self_signed(server_name!("example.org"), &own).unwrap();
    let valid_until = super::int_field(&own, "valid_until_ts").unwrap();
    assert!(valid_until > now_ms() + 6 * DAY && valid_until <= now_ms() + 7 * DAY, "7 days by default");
    let key_id = services.keys.key_id();
    assert!(keys.request_key(server_name!("example.org"), &key_id).await.unwrap().is_some());
    assert_eq!(keys.fetch_count(), 0);
}

#[test]
fn self_signature_checks_refuse_forgeries() {
    let server = server_name!("example.com");
    let key = remote_key(7, "a");
    let good = response(server, &key, now_ms() + DAY, None);
    check_self_signed(server, &good).unwrap();
    // About another server.
    assert!(check_self_signed(server_name!("example.net"), &good).is_err());
    // Changed after signing.
    let mut tampered = good.clone();
    tampered
        .insert("valid_until_ts".into(), ruma::CanonicalJsonValue::Integer((now_ms() + 9 * DAY).try_into().unwrap()));
    assert!(check_self_signed(server, &tampered).is_err());
    // Signed by a key it does not list.
    let mut other = response(server, &remote_key(8, "b"), now_ms() + DAY, None);
    other.insert("verify_keys".into(), good["verify_keys"].clone());
    assert!(check_self_signed(server, &other).is_err());
    // Unsigned.
    let mut unsigned = good.clone();
    unsigned.remove("signatures");
    assert!(check_self_signed(server, &unsigned).is_err());
}

#[tokio::test]
async fn the_notary_answers_from_storage_with_its_own_signature_added() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "notary.example").await;
    let keys = &services.federation.keys;
    let remote = server_name!("10.0.0.7:8448");
    let key = remote_key(9, "a");
    let valid_until = now_ms() + DAY;
    keys.remember(remote, response(remote, &key, valid_until, None)).await.unwrap();

    let answers = keys.notary_answer(remote, now_ms()).await.unwrap();
    assert_eq!(answers.len(), 1);
    check_self_signed(remote, &answers[0]).unwrap();
    let notary_key: ruma::signatures::PublicKeySet = [(services.keys.key_id(), public(&services.keys))].into();
    super::verify_entity("notary.example", &notary_key, &answers[0]).unwrap();
    // Asked for keys valid longer than any we have, it tries the server (unreachable here) and
    // still answers with the last known ones.
    let later = keys.notary_answer(remote, valid_until + DAY).await.unwrap();
    assert_eq!(later.len(), 1);
    // About itself, it answers with its own keys.
    let own = keys.notary_answer(server_name!("notary.example"), now_ms()).await.unwrap();
    check_self_signed(server_name!("notary.example"), &own[0]).unwrap();
}

#[test]
fn key_validity_rules() {
    let now = now_ms();
    let key = |valid_until_ts, expired_ts| KnownKey {
        key_id: "ed25519:a".into(),
        key: ruma::serde::Base64::new(vec![0; 32]),
        valid_until_ts,
        expired_ts,
    };
    assert!(key(now + 1000, None).signs_requests_at(now));
    assert!(!key(now - 1000, None).signs_requests_at(now));
    assert!(!key(now + 1000, Some(now + 1000)).signs_requests_at(now));
    assert!(key(now, None).signs_events_at(Some(now)));
    assert!(!key(now, None).signs_events_at(Some(now + 1)));
    assert!(key(now, Some(now)).signs_events_at(Some(now - 1)));
    assert!(!key(now, Some(now)).signs_events_at(Some(now)));
}

#[tokio::test]
async fn a_key_map_for_an_event_names_the_keys_its_signatures_use() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "example.org").await;
    let keys = &services.federation.keys;
    let remote = server_name!("10.0.0.8:8448");
    let key = remote_key(10, "a");
    keys.remember(remote, response(remote, &key, now_ms() + DAY, None)).await.unwrap();
    let mut event: CanonicalJsonObject =
        serde_json::from_value(json!({ "type": "m.room.message", "content": {} })).unwrap();
    key.sign_json(remote.as_str(), &mut event).unwrap();

    let wanted = super::RemoteKeys::signing_key_ids(&event, [remote, server_name!("10.0.0.9:8448")]);
    assert_eq!(wanted[remote], ["ed25519:a"]);
    assert!(wanted[server_name!("10.0.0.9:8448")].is_empty());
    let map = keys.public_key_map(wanted, Some(now_ms())).await;
    ruma::signatures::verify_json(&[(remote.to_string(), map[remote.as_str()].clone())].into(), &event).unwrap();
}
