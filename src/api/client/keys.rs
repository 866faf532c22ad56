//! End-to-end encryption keys: `/keys/upload`, `/keys/query`, `/keys/claim`, `/keys/changes`,
//! cross-signing keys and signatures.

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, extract::State};
use ruma::{OwnedDeviceId, OwnedUserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::account::confirm_with_password;
use crate::{
    api::extract::{self, Auth, GuestAuth, Operation, Query},
    error::Result,
    service::{
        Services,
        e2ee::{CrossSigningUpload, KeysUpload},
        federation::devices::DEFAULT_TIMEOUT,
        sync::SyncToken,
    },
};

#[derive(Deserialize, Default)]
pub struct UploadBody {
    device_keys: Option<Map<String, Value>>,
    one_time_keys: Option<Map<String, Value>>,
    fallback_keys: Option<Map<String, Value>>,
    /// The name fallback keys had before they were in the spec (MSC2732).
    #[serde(rename = "org.matrix.msc2732.fallback_keys")]
    unstable_fallback_keys: Option<Map<String, Value>>,
}

pub async fn upload(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    extract::Json(body): extract::Json<UploadBody>,
) -> Result<Json<Value>> {
    let upload = KeysUpload {
        device_keys: body.device_keys,
        one_time_keys: body.one_time_keys.unwrap_or_default(),
        fallback_keys: body.fallback_keys.or(body.unstable_fallback_keys).unwrap_or_default(),
    };
    let counts = services.e2ee.upload(&session.user_id, &session.device_id, upload).await?;
    Ok(Json(json!({ "one_time_key_counts": counts })))
}

#[derive(Deserialize)]
pub struct QueryBody {
    /// A list of devices per user (empty for all): an object in its place is `M_BAD_JSON`.
    device_keys: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    /// How long to wait for other servers, in milliseconds.
    timeout: Option<u64>,
}

/// The client's `timeout` for other servers' answers (at most a minute).
fn remote_timeout(timeout: Option<u64>) -> std::time::Duration {
    timeout.map_or(DEFAULT_TIMEOUT, |ms| std::time::Duration::from_millis(ms.min(60_000)))
}

pub async fn query(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    extract::Json(body): extract::Json<QueryBody>,
) -> Result<Json<Value>> {
    Ok(Json(services.query_keys(&session.user_id, &body.device_keys, remote_timeout(body.timeout)).await?))
}

#[derive(Deserialize)]
pub struct ClaimBody {
    one_time_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    timeout: Option<u64>,
}

pub async fn claim(
    State(services): State<Arc<Services>>,
    GuestAuth(_session): GuestAuth,
    extract::Json(body): extract::Json<ClaimBody>,
) -> Result<Json<Value>> {
    Ok(Json(services.claim_keys(&body.one_time_keys, remote_timeout(body.timeout)).await?))
}

#[derive(Deserialize)]
pub struct ChangesQuery {
    from: String,
    to: String,
}

/// Users whose devices changed between two sync tokens, as a sync's `device_lists` would say.
pub async fn changes(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Query(query): Query<ChangesQuery>,
) -> Result<Json<Value>> {
    let from = SyncToken::parse(&query.from)?.position;
    let to = SyncToken::parse(&query.to)?.position.min(services.storage.stream_position());
    let (changed, left) = services.device_lists.changes(&services.rooms, &session.user_id, from, to)?;
    Ok(Json(json!({ "changed": changed, "left": left })))
}

#[derive(Deserialize)]
struct DeviceSigningBody {
    master_key: Option<Map<String, Value>>,
    self_signing_key: Option<Map<String, Value>>,
    user_signing_key: Option<Map<String, Value>>,
}

/// Cross-signing keys. Replacing keys one has needs the password; the first upload does not.
pub async fn device_signing_upload(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Operation(operation): Operation,
    extract::Json(body): extract::Json<Map<String, Value>>,
) -> Result<Json<Value>> {
    let keys: DeviceSigningBody = extract::fields(&body)?;
    let upload = CrossSigningUpload {
        master_key: keys.master_key,
        self_signing_key: keys.self_signing_key,
        user_signing_key: keys.user_signing_key,
    };
    if services.e2ee.cross_signing_needs_auth(&session.user_id, &upload)? {
        confirm_with_password(&services, &session, operation, body).await?;
    }
    services.e2ee.upload_cross_signing(&session.user_id, upload).await?;
    Ok(Json(json!({})))
}

pub async fn signatures_upload(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    extract::Json(body): extract::Json<BTreeMap<String, BTreeMap<String, Value>>>,
) -> Result<Json<Value>> {
    let failures = services.e2ee.upload_signatures(&session.user_id, &body).await?;
    Ok(Json(json!({ "failures": failures })))
}
