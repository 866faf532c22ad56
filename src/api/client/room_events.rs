//! Sending and reading room events: messages, state, redactions, members.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::{OwnedEventId, OwnedRoomId, RoomId, events::TimelineEventType};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    api::extract::{self, Auth, ClientIp, OptionalJson, Path, Query},
    error::{Error, Result},
    service::{
        Services,
        accounts::Session,
        rate_limit::Limit,
        rooms::{EventDraft, Transaction, canonical_content, read::Viewer},
    },
};

fn viewer(session: &Session) -> Viewer<'_> {
    Viewer { user: &session.user_id, device: Some(&session.device_id) }
}

/// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`.
pub async fn send(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    ClientIp(ip): ClientIp,
    Path((room_id, kind, txn_id)): Path<(OwnedRoomId, String, String)>,
    extract::Json(content): extract::Json<Map<String, Value>>,
) -> Result<Json<Value>> {
    let scope = format!("send/{room_id}/{kind}");
    let txn = Transaction { device_id: session.device_id.clone(), txn_id, scope };
    send_message(&services, &session, &ip, &room_id, &kind, content, Some(txn)).await
}

/// `POST /rooms/{roomId}/send/{eventType}`: without a transaction ID (not idempotent).
pub async fn send_without_txn(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    ClientIp(ip): ClientIp,
    Path((room_id, kind)): Path<(OwnedRoomId, String)>,
    extract::Json(content): extract::Json<Map<String, Value>>,
) -> Result<Json<Value>> {
    send_message(&services, &session, &ip, &room_id, &kind, content, None).await
}

async fn send_message(
    services: &Services,
    session: &Session,
    ip: &str,
    room_id: &RoomId,
    kind: &str,
    content: Map<String, Value>,
    txn: Option<Transaction>,
) -> Result<Json<Value>> {
    services.check_user_rate(Limit::Message, session, ip)?;
    let draft = EventDraft::new(TimelineEventType::from(kind), canonical_content(content)?);
    let appended = services.rooms.send(room_id, &session.user_id, draft, txn).await?;
    services.mark_active(&session.user_id);
    Ok(Json(json!({ "event_id": appended.pdu.event_id })))
}

#[derive(Deserialize)]
pub struct StatePath {
    room_id: OwnedRoomId,
    event_type: String,
    #[serde(default)]
    state_key: String,
}

/// `PUT /rooms/{roomId}/state/{eventType}/{stateKey}` (the state key may be left out).
pub async fn put_state(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    ClientIp(ip): ClientIp,
    Path(path): Path<StatePath>,
    extract::Json(content): extract::Json<Map<String, Value>>,
) -> Result<Json<Value>> {
    services.check_user_rate(Limit::Message, &session, &ip)?;
    let event_id =
        services.rooms.send_state(&path.room_id, &session.user_id, &path.event_type, &path.state_key, content).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

#[derive(Deserialize, Default)]
pub struct StateQuery {
    format: Option<String>,
}

/// `GET /rooms/{roomId}/state/{eventType}/{stateKey}`: the content, or with `format=event` the
/// whole event.
pub async fn get_state(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(path): Path<StatePath>,
    Query(query): Query<StateQuery>,
) -> Result<Json<Value>> {
    let state = services.rooms.readable_state(&session.user_id, &path.room_id)?;
    let event = services.rooms.state_event_in_client_format(&state, &path.event_type, &path.state_key)?;
    Ok(Json(match query.format.as_deref() {
        Some("event") => event,
        _ => event.get("content").cloned().unwrap_or_else(|| json!({})),
    }))
}

/// `GET /rooms/{roomId}/state`: every state event.
pub async fn all_state(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<OwnedRoomId>,
) -> Result<Json<Value>> {
    let state = services.rooms.readable_state(&session.user_id, &room_id)?;
    Ok(Json(Value::Array(services.rooms.state_in_client_format(&state)?)))
}

#[derive(Deserialize, Default)]
pub struct RedactBody {
    reason: Option<String>,
}

/// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.
pub async fn redact(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    ClientIp(ip): ClientIp,
    Path((room_id, event_id, txn_id)): Path<(OwnedRoomId, OwnedEventId, String)>,
    OptionalJson(body): OptionalJson<RedactBody>,
) -> Result<Json<Value>> {
    let txn =
        Transaction { device_id: session.device_id.clone(), txn_id, scope: format!("redact/{room_id}/{event_id}") };
    services.check_user_rate(Limit::Message, &session, &ip)?;
    let appended = services.rooms.redact(&room_id, &session.user_id, &event_id, body.reason, Some(txn)).await?;
    Ok(Json(json!({ "event_id": appended.pdu.event_id })))
}

/// `POST /rooms/{roomId}/redact/{eventId}`: without a transaction ID.
pub async fn redact_without_txn(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    ClientIp(ip): ClientIp,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    OptionalJson(body): OptionalJson<RedactBody>,
) -> Result<Json<Value>> {
    services.check_user_rate(Limit::Message, &session, &ip)?;
    let appended = services.rooms.redact(&room_id, &session.user_id, &event_id, body.reason, None).await?;
    Ok(Json(json!({ "event_id": appended.pdu.event_id })))
}

/// `GET /rooms/{roomId}/event/{eventId}`: 404 for events the user may not see.
pub async fn event(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
) -> Result<Json<Value>> {
    Ok(Json(services.rooms.visible_event(viewer(&session), &room_id, &event_id)?))
}

#[derive(Deserialize, Default)]
pub struct MembersQuery {
    at: Option<String>,
    membership: Option<String>,
    not_membership: Option<String>,
}

/// `GET /rooms/{roomId}/members`, optionally at a point in the past and filtered by membership.
pub async fn members(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<OwnedRoomId>,
    Query(query): Query<MembersQuery>,
) -> Result<Json<Value>> {
    let mut state = services.rooms.readable_state(&session.user_id, &room_id)?;
    if let Some(at) = &query.at {
        let position = stream_position_of(at)?;
        state = services.rooms.state_at_position(&room_id, position)?;
    }
    let mut chunk = Vec::new();
    for event in services.rooms.state_in_client_format(&state)? {
        if event["type"] != "m.room.member" {
            continue;
        }
        let membership = event["content"]["membership"].as_str().unwrap_or_default();
        if query.membership.as_deref().is_some_and(|m| m != membership)
            || query.not_membership.as_deref().is_some_and(|m| m == membership)
        {
            continue;
        }
        chunk.push(event);
    }
    Ok(Json(json!({ "chunk": chunk })))
}

/// The stream position in a token (`s42`, or a sync token that starts with it).
pub fn stream_position_of(token: &str) -> Result<u64> {
    token
        .trim_start_matches(['s', 't'])
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| Error::invalid_param(format!("Invalid token {token}")))
}

pub async fn joined_members(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<OwnedRoomId>,
) -> Result<Json<Value>> {
    Ok(Json(json!({ "joined": services.rooms.joined_members(&session.user_id, &room_id)? })))
}
