//! Other servers' signing keys: fetched from the server itself (`/_matrix/key/v2/server`) or,
//! failing that, from the configured notaries (`/_matrix/key/v2/query`); the self-signature is
//! checked (and a notary's own), and every key is stored in `server_keys` until it is needed.
//!
//! A key signs requests while it is current (listed in `verify_keys`) and before its
//! `valid_until_ts`, capped at seven days after we fetched it as the spec says. Expired keys and
//! `old_verify_keys` stay stored: they still verify events signed while they were valid.
//!
//! Requests for the keys of one server share one fetch: the first takes the server's lock, the
//! others wait for it and then find the keys stored.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use reqwest::Method;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet},
};
use serde_json::{Value, json};

use super::client::{FederationClient, Signing};
use crate::{
    error::{Error, Result},
    service::{keys::ServerKeys, locks::KeyedLocks, now_ms},
    storage::{Batch, Storage, StoredServerKey},
};

/// The longest a key is trusted past its fetch, whatever its `valid_until_ts` says.
const MAX_KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// After a failed fetch, how long until the same server's keys are fetched again.
const FETCH_FAILURE_BACKOFF: Duration = Duration::from_secs(60);
/// Decoded keys of this many servers are kept in memory.
const CACHE_CAPACITY: usize = 10_000;

/// A public key of another server and how long it may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownKey {
    pub key_id: String,
    pub key: Base64,
    /// Until when it may be used (already capped at seven days after the fetch).
    pub valid_until_ts: u64,
    /// Set when the server lists it as an old key: when it stopped using it.
    pub expired_ts: Option<u64>,
}

impl KnownKey {
    /// Whether it may verify a request signature now.
    pub fn signs_requests_at(&self, now: u64) -> bool {
        self.expired_ts.is_none() && self.valid_until_ts >= now
    }

    /// Whether it may verify an event sent at `ts` (`None`: room versions 1 to 4, where key
    /// validity is ignored).
    pub fn signs_events_at(&self, ts: Option<u64>) -> bool {
        match (ts, self.expired_ts) {
            (None, _) => true,
            (Some(ts), Some(expired)) => ts < expired,
            (Some(ts), None) => ts <= self.valid_until_ts,
        }
    }
}

/// The keys of other servers, and our notary service.
pub struct RemoteKeys {
    storage: Arc<Storage>,
    client: Arc<FederationClient>,
    own: Arc<ServerKeys>,
    server_name: OwnedServerName,
    notaries: Vec<OwnedServerName>,
    own_validity: Duration,
    fetching: KeyedLocks<OwnedServerName>,
    cache: quick_cache::sync::Cache<OwnedServerName, Arc<Vec<KnownKey>>>,
    /// When each server's last fetch failed, so that a dead server is not asked on every request.
    failures: std::sync::Mutex<HashMap<OwnedServerName, u64>>,
    /// Fetches attempted (from the server or notaries), for tests and metrics.
    fetches: std::sync::atomic::AtomicU64,
}

impl RemoteKeys {
    pub fn new(
        storage: Arc<Storage>,
        client: Arc<FederationClient>,
        own: Arc<ServerKeys>,
        server_name: OwnedServerName,
        notaries: Vec<OwnedServerName>,
        own_validity: Duration,
    ) -> Self {
        Self {
            storage,
            client,
            own,
            server_name,
            notaries,
            own_validity,
            fetching: KeyedLocks::default(),
            cache: quick_cache::sync::Cache::new(CACHE_CAPACITY),
            failures: std::sync::Mutex::default(),
            fetches: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many key fetches were attempted since start.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Our `/_matrix/key/v2/server` answer, valid for the configured period from now.
    pub fn own_key_response(&self) -> Result<CanonicalJsonObject> {
        let valid_until = now_ms() + u64::try_from(self.own_validity.as_millis()).unwrap_or(u64::MAX / 2);
        self.own.signed_key_response(self.server_name.as_str(), valid_until)
    }

    /// The key `key_id` of `server` if it may verify a request signature now, fetching the
    /// server's keys when it is unknown or expired. `None`: no such valid key.
    pub async fn request_key(&self, server: &ServerName, key_id: &str) -> Result<Option<Base64>> {
        let now = now_ms();
        let usable = |keys: &[KnownKey]| keys.iter().find(|k| k.key_id == key_id && k.signs_requests_at(now)).cloned();
        if let Some(key) = usable(&self.known(server)?) {
            return Ok(Some(key.key));
        }
        let keys = self.refresh(server, |keys| usable(keys).is_some()).await?;
        Ok(usable(&keys).map(|k| k.key))
    }

    /// The keys among `key_ids` of `server` that may verify an event sent at `ts` (`None` for
    /// room versions 1 to 4), fetching once if any is missing. Unknown keys are left out.
    pub async fn event_keys(&self, server: &ServerName, key_ids: &[String], ts: Option<u64>) -> Result<PublicKeySet> {
        let usable = |keys: &[KnownKey]| -> PublicKeySet {
            keys.iter()
                .filter(|k| key_ids.contains(&k.key_id) && k.signs_events_at(ts))
                .map(|k| (k.key_id.clone(), k.key.clone()))
                .collect()
        };
        let found = usable(&self.known(server)?);
        if found.len() == key_ids.len() {
            return Ok(found);
        }
        let keys = self.refresh(server, |keys| usable(keys).len() == key_ids.len()).await?;
        Ok(usable(&keys))
    }

    /// A [`PublicKeyMap`] for `ruma::signatures::verify_event`: for each server, the keys among
    /// the given IDs that may verify an event sent at `ts`. Servers are fetched concurrently; one
    /// that cannot be reached gets no keys (so its signature fails to verify).
    pub async fn public_key_map(
        self: &Arc<Self>,
        wanted: BTreeMap<OwnedServerName, Vec<String>>,
        ts: Option<u64>,
    ) -> PublicKeyMap {
        let mut tasks = tokio::task::JoinSet::new();
        for (server, key_ids) in wanted {
            let keys = self.clone();
            tasks.spawn(async move {
                let found = keys.event_keys(&server, &key_ids, ts).await;
                (server, found)
            });
        }
        let mut map = PublicKeyMap::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((server, Ok(keys))) => {
                    map.insert(server.to_string(), keys);
                }
                Ok((server, Err(e))) => tracing::info!(%server, error = %e, "no keys for a server"),
                Err(e) => tracing::error!(error = %e, "key fetch task failed"),
            }
        }
        map
    }

    /// The keys to verify a signed object (an event) with: for each of `servers`, the key IDs its
    /// `signatures` name, as [`Self::public_key_map`] wants them. For events, `servers` is
    /// `ruma::signatures::required_server_signatures_to_verify_event`.
    pub fn signing_key_ids<'a>(
        object: &CanonicalJsonObject,
        servers: impl IntoIterator<Item = &'a ServerName>,
    ) -> BTreeMap<OwnedServerName, Vec<String>> {
        let signatures = match object.get("signatures") {
            Some(CanonicalJsonValue::Object(signatures)) => Some(signatures),
            _ => None,
        };
        servers
            .into_iter()
            .map(|server| {
                let ids = match signatures.and_then(|s| s.get(server.as_str())) {
                    Some(CanonicalJsonValue::Object(by_key)) => by_key.keys().cloned().collect(),
                    _ => Vec::new(),
                };
                (server.to_owned(), ids)
            })
            .collect()
    }

    /// Every stored key of `server` (our own included), expired or not, without fetching.
    pub fn known(&self, server: &ServerName) -> Result<Arc<Vec<KnownKey>>> {
        if server == self.server_name {
            let key: Base64 = Base64::new(self.own.public_key().to_vec());
            let valid_until_ts = now_ms() + u64::try_from(self.own_validity.as_millis()).unwrap_or(0);
            return Ok(Arc::new(vec![KnownKey { key_id: self.own.key_id(), key, valid_until_ts, expired_ts: None }]));
        }
        if let Some(keys) = self.cache.get(server) {
            return Ok(keys);
        }
        let keys: Vec<KnownKey> = self
            .storage
            .server_keys(server.as_str())?
            .into_iter()
            .filter_map(|(key_id, record)| {
                Some(KnownKey {
                    key_id,
                    key: Base64::parse(&record.key).ok()?,
                    valid_until_ts: record.valid_until_ts,
                    expired_ts: record.expired_ts,
                })
            })
            .collect();
        let keys = Arc::new(keys);
        self.cache.insert(server.to_owned(), keys.clone());
        Ok(keys)
    }

    /// Fetches the keys of `server` unless, once its lock is ours, `enough` is already true of
    /// what is stored (another request fetched them meanwhile), or a fetch failed a moment ago.
    async fn refresh(&self, server: &ServerName, enough: impl Fn(&[KnownKey]) -> bool) -> Result<Arc<Vec<KnownKey>>> {
        if server == self.server_name {
            return self.known(server);
        }
        let _one_fetch = self.fetching.lock(&server.to_owned()).await;
        let known = self.known(server)?;
        if enough(&known) || self.failed_recently(server) {
            return Ok(known);
        }
        match self.fetch(server).await {
            Ok(()) => {
                self.failures.lock().expect("failures").remove(server);
            }
            Err(e) => {
                tracing::info!(%server, error = %e, "cannot fetch the server's keys");
                self.failures.lock().expect("failures").insert(server.to_owned(), now_ms());
            }
        }
        self.known(server)
    }

    fn failed_recently(&self, server: &ServerName) -> bool {
        let failures = self.failures.lock().expect("failures");
        failures.get(server).is_some_and(|at| now_ms() < at + FETCH_FAILURE_BACKOFF.as_millis() as u64)
    }

    /// Fetches from the server itself, then from each notary, storing the first valid answer.
    async fn fetch(&self, server: &ServerName) -> Result<()> {
        self.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let origin_error = match self.fetch_from_origin(server).await {
            Ok(response) => return self.store(server, vec![response]).await,
            Err(e) => e,
        };
        for notary in &self.notaries {
            match self.fetch_from_notary(notary, server).await {
                Ok(responses) if !responses.is_empty() => return self.store(server, responses).await,
                Ok(_) => tracing::debug!(%server, %notary, "the notary has no keys for the server"),
                Err(e) => tracing::info!(%server, %notary, error = %e, "notary key query failed"),
            }
        }
        Err(origin_error)
    }

    /// `GET /_matrix/key/v2/server` of the server, self-signature checked.
    async fn fetch_from_origin(&self, server: &ServerName) -> Result<CanonicalJsonObject> {
        let answer =
            self.client.request_json(server, Method::GET, "/_matrix/key/v2/server", None, Signing::Unsigned).await?;
        let object =
            to_canonical(answer).ok_or_else(|| Error::unreachable(server, "key response is not canonical JSON"))?;
        check_self_signed(server, &object).map_err(|e| Error::unreachable(server, e))?;
        Ok(object)
    }

    /// The notary's answers for `server`, each self-signed by `server` and signed by the notary.
    async fn fetch_from_notary(&self, notary: &ServerName, server: &ServerName) -> Result<Vec<CanonicalJsonObject>> {
        let notary_keys = self.notary_keys(notary).await?;
        let body = json!({ "server_keys": { server.as_str(): {} } });
        let answer = self
            .client
            .request_json(notary, Method::POST, "/_matrix/key/v2/query", Some(&body), Signing::Unsigned)
            .await?;
        let mut valid = Vec::new();
        for response in answer.get("server_keys").and_then(Value::as_array).into_iter().flatten() {
            let Some(object) = to_canonical(response.clone()) else { continue };
            let checked = check_self_signed(server, &object).and_then(|()| {
                verify_entity(notary.as_str(), &notary_keys, &object).map_err(|e| format!("notary signature: {e}"))
            });
            match checked {
                Ok(()) => valid.push(object),
                Err(e) => tracing::info!(%server, %notary, error = %e, "ignoring a notary's key response"),
            }
        }
        Ok(valid)
    }

    /// The notary's own current keys, which sign its answers (fetched from it directly).
    async fn notary_keys(&self, notary: &ServerName) -> Result<PublicKeySet> {
        let now = now_ms();
        let current = |keys: &[KnownKey]| -> PublicKeySet {
            keys.iter().filter(|k| k.signs_requests_at(now)).map(|k| (k.key_id.clone(), k.key.clone())).collect()
        };
        let known = current(&self.known(notary)?);
        if !known.is_empty() {
            return Ok(known);
        }
        let response = self.fetch_from_origin(notary).await?;
        self.store(notary, vec![response]).await?;
        Ok(current(&self.known(notary)?))
    }

    /// Stores the keys of a response as if fetched (tests seed keys of servers they cannot reach).
    #[cfg(test)]
    pub(crate) async fn remember(&self, server: &ServerName, response: CanonicalJsonObject) -> Result<()> {
        check_self_signed(server, &response).map_err(Error::internal)?;
        self.store(server, vec![response]).await
    }

    /// Stores the keys of checked responses of `server`.
    async fn store(&self, server: &ServerName, responses: Vec<CanonicalJsonObject>) -> Result<()> {
        let now = now_ms();
        let cap = now + MAX_KEY_VALIDITY.as_millis() as u64;
        let existing: HashMap<String, StoredServerKey> =
            self.storage.server_keys(server.as_str())?.into_iter().collect();
        let mut batch = Batch::new();
        for response in responses {
            let valid_until = int_field(&response, "valid_until_ts").unwrap_or(0);
            let value: Value = CanonicalJsonValue::Object(response.clone()).into();
            for (key_id, key) in object_field(&response, "verify_keys") {
                let Some(key) = key_string(key) else { continue };
                let record = StoredServerKey {
                    key,
                    valid_until_ts: valid_until.min(cap),
                    expired_ts: None,
                    response: value.clone(),
                };
                // An older answer (from a notary's cache) never shortens what we know.
                if existing
                    .get(key_id)
                    .is_some_and(|old| old.expired_ts.is_none() && old.valid_until_ts > record.valid_until_ts)
                {
                    continue;
                }
                batch.put_server_key(server.as_str(), key_id, &record);
            }
            for (key_id, key) in object_field(&response, "old_verify_keys") {
                let (Some(key_text), Some(expired)) =
                    (key_string(key), key.as_object().and_then(|k| int_value(k.get("expired_ts"))))
                else {
                    continue;
                };
                let record = StoredServerKey {
                    key: key_text,
                    valid_until_ts: expired,
                    expired_ts: Some(expired),
                    response: value.clone(),
                };
                batch.put_server_key(server.as_str(), key_id, &record);
            }
        }
        self.storage.commit(batch).await?;
        self.cache.remove(server);
        Ok(())
    }

    /// The notary answer for `server`: its stored self-signed responses still valid at
    /// `minimum_valid_until_ts` (fetched from it when there are none), each signed by us too. When
    /// the server cannot be reached, the last responses we have, so old events stay verifiable.
    /// For our own name, our own key response.
    pub async fn notary_answer(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: u64,
    ) -> Result<Vec<CanonicalJsonObject>> {
        if server == self.server_name {
            return Ok(vec![self.own_key_response()?]);
        }
        let fresh = |responses: &[CanonicalJsonObject]| {
            responses
                .iter()
                .any(|r| int_field(r, "valid_until_ts").is_some_and(|v| v >= minimum_valid_until_ts.max(now_ms())))
        };
        let mut responses = self.stored_responses(server)?;
        if !fresh(&responses) {
            let _one_fetch = self.fetching.lock(&server.to_owned()).await;
            responses = self.stored_responses(server)?;
            if !fresh(&responses) && !self.failed_recently(server) {
                match self.fetch_from_origin(server).await {
                    Ok(response) => {
                        self.store(server, vec![response]).await?;
                        responses = self.stored_responses(server)?;
                    }
                    Err(e) => {
                        tracing::info!(%server, error = %e, "notary: cannot fetch the server's keys");
                        self.failures.lock().expect("failures").insert(server.to_owned(), now_ms());
                    }
                }
            }
        }
        for response in &mut responses {
            self.own.sign_json(self.server_name.as_str(), response)?;
        }
        Ok(responses)
    }

    /// The distinct signed responses our stored keys of `server` came in.
    fn stored_responses(&self, server: &ServerName) -> Result<Vec<CanonicalJsonObject>> {
        let mut responses: Vec<CanonicalJsonObject> = Vec::new();
        for (_, record) in self.storage.server_keys(server.as_str())? {
            if let Some(object) = to_canonical(record.response)
                && !responses.contains(&object)
            {
                responses.push(object);
            }
        }
        Ok(responses)
    }
}

fn to_canonical(value: Value) -> Option<CanonicalJsonObject> {
    match CanonicalJsonValue::try_from(value).ok()? {
        CanonicalJsonValue::Object(object) => Some(object),
        _ => None,
    }
}

fn int_value(value: Option<&CanonicalJsonValue>) -> Option<u64> {
    match value? {
        CanonicalJsonValue::Integer(i) => u64::try_from(i64::from(*i)).ok(),
        _ => None,
    }
}

fn int_field(object: &CanonicalJsonObject, name: &str) -> Option<u64> {
    int_value(object.get(name))
}

fn object_field<'a>(
    object: &'a CanonicalJsonObject,
    name: &str,
) -> impl Iterator<Item = (&'a String, &'a CanonicalJsonValue)> {
    match object.get(name) {
        Some(CanonicalJsonValue::Object(map)) => Some(map.iter()),
        _ => None,
    }
    .into_iter()
    .flatten()
}

fn key_string(key: &CanonicalJsonValue) -> Option<String> {
    match key.as_object()?.get("key")? {
        CanonicalJsonValue::String(s) if Base64::<ruma::serde::base64::Standard>::parse(s).is_ok() => Some(s.clone()),
        _ => None,
    }
}

/// Checks a key response: it is about `server`, lists at least one key, and is signed by `server`
/// with one of its listed `verify_keys` (every such signature must verify).
pub fn check_self_signed(server: &ServerName, object: &CanonicalJsonObject) -> std::result::Result<(), String> {
    match object.get("server_name") {
        Some(CanonicalJsonValue::String(name)) if name == server.as_str() => {}
        _ => return Err(format!("the key response is not about {server}")),
    }
    let keys: PublicKeySet = object_field(object, "verify_keys")
        .filter_map(|(key_id, key)| Some((key_id.clone(), Base64::parse(key_string(key)?).ok()?)))
        .collect();
    if keys.is_empty() {
        return Err("the key response lists no verify key".into());
    }
    if int_field(object, "valid_until_ts").is_none() {
        return Err("the key response has no valid_until_ts".into());
    }
    verify_entity(server.as_str(), &keys, object).map_err(|e| format!("self-signature: {e}"))
}

/// Verifies the signatures of one entity on `object` with `keys`, ignoring other entities'.
pub fn verify_entity(
    entity: &str,
    keys: &PublicKeySet,
    object: &CanonicalJsonObject,
) -> std::result::Result<(), String> {
    let mut only_entity = object.clone();
    let signatures = match object.get("signatures") {
        Some(CanonicalJsonValue::Object(all)) => {
            all.get(entity).cloned().ok_or_else(|| format!("no signature by {entity}"))?
        }
        _ => return Err("no signatures".into()),
    };
    only_entity.insert("signatures".into(), CanonicalJsonValue::Object([(entity.to_owned(), signatures)].into()));
    let map: PublicKeyMap = [(entity.to_owned(), keys.clone())].into();
    ruma::signatures::verify_json(&map, &only_entity).map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod tests;
