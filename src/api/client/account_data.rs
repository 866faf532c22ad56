//! Global account data.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{Map, Value, json};

use crate::{
    api::extract::{self, GuestAuth, Path},
    error::{Error, Result},
    service::{Services, accounts::Session},
};

fn ensure_own(session: &Session, user_id: &OwnedUserId) -> Result<()> {
    if *user_id == session.user_id {
        Ok(())
    } else {
        Err(Error::forbidden("You can only access your own account data"))
    }
}

pub async fn get(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Path((user_id, kind)): Path<(OwnedUserId, String)>,
) -> Result<Json<Value>> {
    ensure_own(&session, &user_id)?;
    Ok(Json(services.account_data.get(&user_id, None, &kind)?))
}

pub async fn set(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Path((user_id, kind)): Path<(OwnedUserId, String)>,
    extract::Json(content): extract::Json<Map<String, Value>>,
) -> Result<Json<Value>> {
    ensure_own(&session, &user_id)?;
    services.account_data.set(&user_id, None, &kind, content).await?;
    Ok(Json(json!({})))
}

pub async fn get_in_room(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Path((user_id, room_id, kind)): Path<(OwnedUserId, OwnedRoomId, String)>,
) -> Result<Json<Value>> {
    ensure_own(&session, &user_id)?;
    Ok(Json(services.account_data.get(&user_id, Some(&room_id), &kind)?))
}

pub async fn set_in_room(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Path((user_id, room_id, kind)): Path<(OwnedUserId, OwnedRoomId, String)>,
    extract::Json(content): extract::Json<Map<String, Value>>,
) -> Result<Json<Value>> {
    ensure_own(&session, &user_id)?;
    services.account_data.set(&user_id, Some(&room_id), &kind, content).await?;
    Ok(Json(json!({})))
}

/// The `tags` of the room's `m.tag` account data.
fn tags_of(services: &Services, user_id: &OwnedUserId, room_id: &OwnedRoomId) -> Result<Map<String, Value>> {
    match services.account_data.get(user_id, Some(room_id), "m.tag") {
        Ok(content) => Ok(content.get("tags").and_then(Value::as_object).cloned().unwrap_or_default()),
        Err(e) if e.kind() == Some(&crate::error::ErrorKind::NotFound) => Ok(Map::new()),
        Err(e) => Err(e),
    }
}

pub async fn tags(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Path((user_id, room_id)): Path<(OwnedUserId, OwnedRoomId)>,
) -> Result<Json<Value>> {
    ensure_own(&session, &user_id)?;
    Ok(Json(json!({ "tags": tags_of(&services, &user_id, &room_id)? })))
}

pub async fn put_tag(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Path((user_id, room_id, tag)): Path<(OwnedUserId, OwnedRoomId, String)>,
    extract::Json(content): extract::Json<Map<String, Value>>,
) -> Result<Json<Value>> {
    ensure_own(&session, &user_id)?;
    if tag.len() > 255 {
        return Err(Error::invalid_param("Tags are at most 255 bytes"));
    }
    if content.get("order").is_some_and(|order| !order.is_number()) {
        return Err(Error::bad_json("`order` must be a number"));
    }
    let mut tags = tags_of(&services, &user_id, &room_id)?;
    tags.insert(tag, Value::Object(content));
    services.account_data.put(&user_id, Some(&room_id), "m.tag", json!({ "tags": tags })).await?;
    Ok(Json(json!({})))
}

pub async fn delete_tag(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Path((user_id, room_id, tag)): Path<(OwnedUserId, OwnedRoomId, String)>,
) -> Result<Json<Value>> {
    ensure_own(&session, &user_id)?;
    let mut tags = tags_of(&services, &user_id, &room_id)?;
    if tags.remove(&tag).is_some() {
        services.account_data.put(&user_id, Some(&room_id), "m.tag", json!({ "tags": tags })).await?;
    }
    Ok(Json(json!({})))
}
