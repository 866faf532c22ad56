//! Memberships over federation: `make_join`/`send_join`, `make_leave`/`send_leave`,
//! `make_knock`/`send_knock`, and invites of our users (`invite`, v1 and v2).

use std::sync::Arc;

use axum::{
    Json,
    extract::{RawQuery, State},
};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};

use super::{
    auth::{Origin, Signed},
    events::repeated,
};
use crate::{
    api::extract::Path,
    error::{Error, Result},
    service::{Services, federation::membership::Remote},
};

/// `ver`: the room versions the asking server supports; `["1"]` when it names none (the spec's
/// default for `make_join`).
fn versions(query: Option<&str>) -> Vec<RoomVersionId> {
    let named: Vec<RoomVersionId> =
        repeated(query, "ver").into_iter().filter_map(|v| RoomVersionId::try_from(v).ok()).collect();
    if named.is_empty() { vec![RoomVersionId::V1] } else { named }
}

pub async fn make_join(
    State(services): State<Arc<Services>>,
    Path((room_id, user_id)): Path<(OwnedRoomId, OwnedUserId)>,
    RawQuery(query): RawQuery,
    Origin(origin): Origin,
) -> Result<Json<Value>> {
    let versions = versions(query.as_deref());
    services.make_membership(&origin, &room_id, &user_id, Remote::Join, Some(&versions)).await.map(Json)
}

pub async fn make_knock(
    State(services): State<Arc<Services>>,
    Path((room_id, user_id)): Path<(OwnedRoomId, OwnedUserId)>,
    RawQuery(query): RawQuery,
    Origin(origin): Origin,
) -> Result<Json<Value>> {
    let versions = versions(query.as_deref());
    services.make_membership(&origin, &room_id, &user_id, Remote::Knock, Some(&versions)).await.map(Json)
}

pub async fn make_leave(
    State(services): State<Arc<Services>>,
    Path((room_id, user_id)): Path<(OwnedRoomId, OwnedUserId)>,
    Origin(origin): Origin,
) -> Result<Json<Value>> {
    services.make_membership(&origin, &room_id, &user_id, Remote::Leave, None).await.map(Json)
}

async fn send(
    services: &Services,
    origin: &ruma::ServerName,
    (room_id, event_id): (OwnedRoomId, OwnedEventId),
    body: &RawValue,
    kind: Remote,
) -> Result<Value> {
    services.send_membership(origin, &room_id, &event_id, body, kind).await
}

pub async fn send_join_v2(
    State(services): State<Arc<Services>>,
    Path(ids): Path<(OwnedRoomId, OwnedEventId)>,
    Signed { origin, body }: Signed<Box<RawValue>>,
) -> Result<Json<Value>> {
    send(&services, &origin, ids, &body, Remote::Join).await.map(Json)
}

/// The v1 endpoints answer `[200, body]`, as they always did.
pub async fn send_join_v1(
    State(services): State<Arc<Services>>,
    Path(ids): Path<(OwnedRoomId, OwnedEventId)>,
    Signed { origin, body }: Signed<Box<RawValue>>,
) -> Result<Json<Value>> {
    let answer = send(&services, &origin, ids, &body, Remote::Join).await?;
    Ok(Json(json!([200, answer])))
}

pub async fn send_leave_v2(
    State(services): State<Arc<Services>>,
    Path(ids): Path<(OwnedRoomId, OwnedEventId)>,
    Signed { origin, body }: Signed<Box<RawValue>>,
) -> Result<Json<Value>> {
    send(&services, &origin, ids, &body, Remote::Leave).await.map(Json)
}

pub async fn send_leave_v1(
    State(services): State<Arc<Services>>,
    Path(ids): Path<(OwnedRoomId, OwnedEventId)>,
    Signed { origin, body }: Signed<Box<RawValue>>,
) -> Result<Json<Value>> {
    let answer = send(&services, &origin, ids, &body, Remote::Leave).await?;
    Ok(Json(json!([200, answer])))
}

pub async fn send_knock(
    State(services): State<Arc<Services>>,
    Path(ids): Path<(OwnedRoomId, OwnedEventId)>,
    Signed { origin, body }: Signed<Box<RawValue>>,
) -> Result<Json<Value>> {
    send(&services, &origin, ids, &body, Remote::Knock).await.map(Json)
}

#[derive(Deserialize)]
pub struct InviteV2 {
    room_version: RoomVersionId,
    event: Box<RawValue>,
    #[serde(default)]
    invite_room_state: Vec<Value>,
}

pub async fn invite_v2(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    Signed { origin, body }: Signed<InviteV2>,
) -> Result<Json<Value>> {
    services
        .receive_invite(&origin, &room_id, &event_id, &body.room_version, &body.event, body.invite_room_state)
        .await
        .map(Json)
}

/// v1: the event itself is the body, of room version 1 or 2; the answer is `[200, {event}]`.
pub async fn invite_v1(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    Signed { origin, body }: Signed<Box<RawValue>>,
) -> Result<Json<Value>> {
    let state = serde_json::from_str::<Value>(body.get())
        .ok()
        .and_then(|event| event.pointer("/unsigned/invite_room_state").cloned())
        .and_then(|state| state.as_array().cloned())
        .unwrap_or_default();
    let answer = services
        .receive_invite(&origin, &room_id, &event_id, &RoomVersionId::V1, &body, state)
        .await
        .map_err(|e| match e.kind() {
            Some(crate::error::ErrorKind::BadJson) => {
                Error::bad_json("Use /v2/invite for rooms of version 3 and later")
            }
            _ => e,
        })?;
    Ok(Json(json!([200, answer])))
}
