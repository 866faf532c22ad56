//! Server-side key backups: `/room_keys/version` and `/room_keys/keys`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, extract::State};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    api::extract::{self, Auth, Path, Query},
    error::Result,
    service::{Services, e2ee::backup::RoomKeys},
};

#[derive(Deserialize)]
pub struct VersionBody {
    algorithm: String,
    auth_data: Value,
    version: Option<String>,
}

pub async fn create_version(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    extract::Json(body): extract::Json<VersionBody>,
) -> Result<Json<Value>> {
    let version = services.key_backup.create_version(&session.user_id, body.algorithm, body.auth_data).await?;
    Ok(Json(json!({ "version": version })))
}

pub async fn current_version(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    Ok(Json(services.key_backup.version_info(&session.user_id, None)?))
}

pub async fn get_version(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(version): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(services.key_backup.version_info(&session.user_id, Some(&version))?))
}

pub async fn update_version(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(version): Path<String>,
    extract::Json(body): extract::Json<VersionBody>,
) -> Result<Json<Value>> {
    let backup = &services.key_backup;
    backup.update_version(&session.user_id, &version, &body.algorithm, body.auth_data, body.version.as_deref()).await?;
    Ok(Json(json!({})))
}

pub async fn delete_version(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(version): Path<String>,
) -> Result<Json<Value>> {
    services.key_backup.delete_version(&session.user_id, &version).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct VersionQuery {
    version: String,
}

#[derive(Deserialize)]
pub struct AllKeys {
    rooms: BTreeMap<OwnedRoomId, RoomSessions>,
}

#[derive(Deserialize)]
pub struct RoomSessions {
    sessions: BTreeMap<String, Value>,
}

pub async fn put_all(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Query(query): Query<VersionQuery>,
    extract::Json(body): extract::Json<AllKeys>,
) -> Result<Json<Value>> {
    let keys: RoomKeys = body.rooms.into_iter().map(|(room, r)| (room, r.sessions)).collect();
    Ok(Json(services.key_backup.put_keys(&session.user_id, &query.version, keys).await?))
}

pub async fn put_room(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room): Path<OwnedRoomId>,
    Query(query): Query<VersionQuery>,
    extract::Json(body): extract::Json<RoomSessions>,
) -> Result<Json<Value>> {
    let keys: RoomKeys = [(room, body.sessions)].into();
    Ok(Json(services.key_backup.put_keys(&session.user_id, &query.version, keys).await?))
}

pub async fn put_session(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room, session_id)): Path<(OwnedRoomId, String)>,
    Query(query): Query<VersionQuery>,
    extract::Json(body): extract::Json<Value>,
) -> Result<Json<Value>> {
    let keys: RoomKeys = [(room, [(session_id, body)].into())].into();
    Ok(Json(services.key_backup.put_keys(&session.user_id, &query.version, keys).await?))
}

pub async fn get_all(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    Ok(Json(services.key_backup.get_keys(&session.user_id, &query.version, None, None)?))
}

pub async fn get_room(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room): Path<OwnedRoomId>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    Ok(Json(services.key_backup.get_keys(&session.user_id, &query.version, Some(&room), None)?))
}

pub async fn get_session(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room, session_id)): Path<(OwnedRoomId, String)>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    Ok(Json(services.key_backup.get_keys(&session.user_id, &query.version, Some(&room), Some(&session_id))?))
}

pub async fn delete_all(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    Ok(Json(services.key_backup.delete_keys(&session.user_id, &query.version, None, None).await?))
}

pub async fn delete_room(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room): Path<OwnedRoomId>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    Ok(Json(services.key_backup.delete_keys(&session.user_id, &query.version, Some(&room), None).await?))
}

pub async fn delete_session(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room, session_id)): Path<(OwnedRoomId, String)>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    let backup = &services.key_backup;
    Ok(Json(backup.delete_keys(&session.user_id, &query.version, Some(&room), Some(&session_id)).await?))
}
