//! Reading rooms over federation: `/event`, `/state`, `/state_ids`, `/event_auth`, `/backfill`,
//! `/get_missing_events`. Each checks the room's server ACL and that the asking server may see
//! what it asks for.

use std::sync::Arc;

use axum::{
    Json,
    extract::{RawQuery, State},
};
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, ServerName};
use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};

use super::auth::{Origin, Signed};
use crate::{
    api::extract::{Path, Query},
    error::{Error, Result},
    service::{Services, now_ms},
};

/// The PDUs of events, in order, leaving out any not stored.
fn pdus(services: &Services, ids: &[OwnedEventId]) -> Result<Vec<Box<RawValue>>> {
    let mut pdus = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(pdu) = services.rooms.pdu_json(id)? {
            pdus.push(pdu);
        }
    }
    Ok(pdus)
}

/// The room of an event, checked: the ACL allows `origin` and it may see the event.
fn visible_event(services: &Services, origin: &ServerName, event_id: &EventId) -> Result<OwnedRoomId> {
    let not_found = || Error::not_found("Event not found");
    let (_, pdu) = services.rooms.event_by_id(event_id)?.ok_or_else(not_found)?;
    services.check_server_acl(&pdu.room_id, origin)?;
    if !services.rooms.server_can_see(origin, event_id)? {
        return Err(Error::forbidden("The server may not see this event"));
    }
    Ok(pdu.room_id.clone())
}

/// A room the asking server may read: its ACL allows it, and it is in the room (or the room is
/// world-readable).
fn readable_room(services: &Services, origin: &ServerName, room_id: &RoomId) -> Result<()> {
    services.check_server_acl(room_id, origin)?;
    services.rooms.check_server_in_room(room_id, origin)
}

pub async fn event(
    State(services): State<Arc<Services>>,
    Path(event_id): Path<OwnedEventId>,
    Origin(origin): Origin,
) -> Result<Json<Value>> {
    visible_event(&services, &origin, &event_id)?;
    Ok(Json(json!({
        "origin": services.config.server_name,
        "origin_server_ts": now_ms(),
        "pdus": pdus(&services, &[event_id])?,
    })))
}

#[derive(Deserialize)]
pub struct AtEvent {
    event_id: Option<OwnedEventId>,
}

pub async fn state(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<OwnedRoomId>,
    Query(query): Query<AtEvent>,
    Origin(origin): Origin,
) -> Result<Json<Value>> {
    readable_room(&services, &origin, &room_id)?;
    let state = services.rooms.state_for_server(&room_id, query.event_id.as_deref())?;
    let ids: Vec<OwnedEventId> = state.state.iter().map(|pdu| pdu.event_id.clone()).collect();
    Ok(Json(json!({ "pdus": pdus(&services, &ids)?, "auth_chain": pdus(&services, &state.auth_chain)? })))
}

pub async fn state_ids(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<OwnedRoomId>,
    Query(query): Query<AtEvent>,
    Origin(origin): Origin,
) -> Result<Json<Value>> {
    readable_room(&services, &origin, &room_id)?;
    let state = services.rooms.state_for_server(&room_id, query.event_id.as_deref())?;
    let ids: Vec<&OwnedEventId> = state.state.iter().map(|pdu| &pdu.event_id).collect();
    Ok(Json(json!({ "pdu_ids": ids, "auth_chain_ids": state.auth_chain })))
}

pub async fn event_auth(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    Origin(origin): Origin,
) -> Result<Json<Value>> {
    readable_room(&services, &origin, &room_id)?;
    if visible_event(&services, &origin, &event_id)? != room_id {
        return Err(Error::not_found("Event not found"));
    }
    let chain = services.rooms.auth_chain_of(std::iter::once(event_id))?;
    Ok(Json(json!({ "auth_chain": pdus(&services, &chain)? })))
}

/// Repeated query parameters (`v=..&v=..`, `ver=..`), which the usual extractor does not read.
pub fn repeated(query: Option<&str>, name: &str) -> Vec<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value)
        .collect()
}

pub async fn backfill(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<OwnedRoomId>,
    RawQuery(query): RawQuery,
    Origin(origin): Origin,
) -> Result<Json<Value>> {
    readable_room(&services, &origin, &room_id)?;
    let from: Vec<OwnedEventId> =
        repeated(query.as_deref(), "v").iter().filter_map(|id| EventId::parse(id).ok()).collect();
    if from.is_empty() {
        return Err(Error::missing_param("Missing `v`"));
    }
    let limit = repeated(query.as_deref(), "limit")
        .first()
        .map(|l| l.parse::<usize>().map_err(|_| Error::invalid_param("`limit` must be a number")))
        .transpose()?
        .unwrap_or(10);
    let ids = services.rooms.backfill(&origin, &room_id, &from, limit)?;
    Ok(Json(json!({
        "origin": services.config.server_name,
        "origin_server_ts": now_ms(),
        "pdus": pdus(&services, &ids)?,
    })))
}

#[derive(Deserialize)]
pub struct MissingEventsRequest {
    #[serde(default)]
    earliest_events: Vec<OwnedEventId>,
    latest_events: Vec<OwnedEventId>,
    #[serde(default = "default_missing_limit")]
    limit: usize,
    #[serde(default)]
    min_depth: u64,
}

fn default_missing_limit() -> usize {
    10
}

pub async fn get_missing_events(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<OwnedRoomId>,
    Signed { origin, body }: Signed<MissingEventsRequest>,
) -> Result<Json<Value>> {
    readable_room(&services, &origin, &room_id)?;
    let ids = services.rooms.missing_events(
        &origin,
        &room_id,
        &body.earliest_events,
        &body.latest_events,
        body.limit,
        body.min_depth,
    )?;
    Ok(Json(json!({ "events": pdus(&services, &ids)? })))
}
