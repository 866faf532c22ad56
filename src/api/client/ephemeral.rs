//! Typing, receipts, read markers and presence.

use std::{sync::Arc, time::Duration};

use axum::{Json, extract::State};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    api::extract::{self, Auth, OptionalJson, Path},
    error::{Error, Result},
    service::{Services, presence},
};

#[derive(Deserialize)]
pub struct TypingRequest {
    typing: bool,
    timeout: Option<u64>,
}

pub async fn typing(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, user_id)): Path<(OwnedRoomId, OwnedUserId)>,
    extract::Json(request): extract::Json<TypingRequest>,
) -> Result<Json<Value>> {
    if user_id != session.user_id {
        return Err(Error::forbidden("You can only set your own typing"));
    }
    let timeout = Duration::from_millis(request.timeout.unwrap_or(30_000));
    set_typing(&services, &room_id, &user_id, request.typing, timeout)?;
    Ok(Json(json!({})))
}

/// Starts or stops a member typing, and tells the room, now and when the typing runs out.
pub fn set_typing(
    services: &Arc<Services>,
    room_id: &RoomId,
    user: &UserId,
    typing: bool,
    timeout: Duration,
) -> Result<()> {
    let room = services.rooms.room(room_id)?.ok_or_else(|| Error::forbidden("You are not in this room"))?;
    if services.rooms.membership_in(&*services.rooms.current_state(&room)?, user)?.as_deref() != Some("join") {
        return Err(Error::forbidden("You are not in this room"));
    }
    let until = services.typing.set(room_id, user, typing, timeout);
    services.rooms.notify_members(room_id, std::iter::empty());
    services.federate_typing(room_id, user, typing);
    if typing {
        services.mark_active(user);
    }
    if let Some(until) = until {
        let (services, room_id) = (Arc::downgrade(services), room_id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep_until(until.into()).await;
            let Some(services) = services.upgrade() else { return };
            let stopped = services.typing.expire(&room_id);
            if !stopped.is_empty() {
                services.rooms.notify_members(&room_id, std::iter::empty());
            }
            // Other servers hear of the stop too: theirs would show the user typing for a minute.
            for user in stopped {
                services.federate_typing(&room_id, &user, false);
            }
        });
    }
    Ok(())
}

#[derive(Deserialize, Default)]
pub struct ReceiptRequest {
    thread_id: Option<String>,
}

pub async fn receipt(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, kind, event_id)): Path<(OwnedRoomId, String, OwnedEventId)>,
    OptionalJson(request): OptionalJson<ReceiptRequest>,
) -> Result<Json<Value>> {
    if kind == "m.fully_read" {
        // A read marker, which lives in account data.
        if request.thread_id.is_some() {
            return Err(Error::bad_json("A read marker has no thread"));
        }
        set_fully_read(&services, &session.user_id, &room_id, &event_id).await?;
    } else {
        services.rooms.set_receipt(&room_id, &session.user_id, &kind, &event_id, request.thread_id.as_deref()).await?;
    }
    services.mark_active(&session.user_id);
    Ok(Json(json!({})))
}

async fn set_fully_read(
    services: &Services,
    user: &ruma::UserId,
    room_id: &ruma::RoomId,
    event_id: &ruma::EventId,
) -> Result<()> {
    services
        .rooms
        .event_by_id(event_id)?
        .filter(|(_, pdu)| pdu.room_id == room_id)
        .ok_or_else(|| Error::not_found("Unknown event"))?;
    services.account_data.put(user, Some(room_id), "m.fully_read", json!({ "event_id": event_id })).await
}

#[derive(Deserialize)]
pub struct ReadMarkers {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<OwnedEventId>,
    #[serde(rename = "m.read")]
    read: Option<OwnedEventId>,
    #[serde(rename = "m.read.private")]
    read_private: Option<OwnedEventId>,
}

pub async fn read_markers(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<OwnedRoomId>,
    extract::Json(markers): extract::Json<ReadMarkers>,
) -> Result<Json<Value>> {
    set_read_markers(&services, &room_id, &session.user_id, markers.fully_read, markers.read, markers.read_private)
        .await?;
    Ok(Json(json!({})))
}

/// Moves the read marker (`m.fully_read`) and the public and private read receipts.
pub async fn set_read_markers(
    services: &Services,
    room_id: &RoomId,
    user: &UserId,
    fully_read: Option<OwnedEventId>,
    read: Option<OwnedEventId>,
    read_private: Option<OwnedEventId>,
) -> Result<()> {
    if let Some(event_id) = &fully_read {
        set_fully_read(services, user, room_id, event_id).await?;
    }
    for (kind, event_id) in [("m.read", read), ("m.read.private", read_private)] {
        if let Some(event_id) = event_id {
            services.rooms.set_receipt(room_id, user, kind, &event_id, None).await?;
        }
    }
    services.mark_active(user);
    Ok(())
}

#[derive(Deserialize)]
pub struct PresenceRequest {
    presence: String,
    status_msg: Option<String>,
}

pub async fn set_presence(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(user_id): Path<OwnedUserId>,
    extract::Json(request): extract::Json<PresenceRequest>,
) -> Result<Json<Value>> {
    if user_id != session.user_id {
        return Err(Error::forbidden("You can only set your own presence"));
    }
    let state = presence::State::parse(&request.presence)
        .ok_or_else(|| Error::invalid_param(format!("Unknown presence {}", request.presence)))?;
    if services.presence.set(&user_id, state, request.status_msg) {
        services.notify_peers(&user_id);
    }
    Ok(Json(json!({})))
}

/// A user's presence, for themselves and those who share a room with them.
pub async fn get_presence(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(user_id): Path<OwnedUserId>,
) -> Result<Json<Value>> {
    if user_id != session.user_id {
        let theirs = services.rooms.joined_rooms(&user_id)?;
        let shared = services.rooms.joined_rooms(&session.user_id)?.iter().any(|room| theirs.contains(room));
        if !shared {
            return Err(Error::forbidden("You do not share a room with this user"));
        }
    }
    Ok(Json(services.presence.content(&user_id)))
}
