//! Creating rooms, membership, upgrades.

use std::sync::Arc;

use axum::{
    Json,
    extract::{RawQuery, State},
};
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    api::extract::{self, Auth, ClientIp, OptionalJson, Path},
    error::{Error, Result},
    service::{
        Services,
        rate_limit::Limit,
        rooms::{CreateRoom, MembershipChange},
    },
};

#[derive(Deserialize)]
pub struct CreateRoomRequest {
    visibility: Option<String>,
    room_alias_name: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<OwnedUserId>,
    room_version: Option<String>,
    creation_content: Option<Map<String, Value>>,
    #[serde(default)]
    initial_state: Vec<InitialState>,
    preset: Option<String>,
    #[serde(default)]
    is_direct: bool,
    power_level_content_override: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct InitialState {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: Map<String, Value>,
}

pub async fn create_room(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    extract::Json(request): extract::Json<CreateRoomRequest>,
) -> Result<Json<Value>> {
    let public = match request.visibility.as_deref() {
        None | Some("private") => false,
        Some("public") => true,
        Some(other) => return Err(Error::bad_json(format!("Unknown visibility {other}"))),
    };
    if let Some(preset) = &request.preset
        && !matches!(preset.as_str(), "private_chat" | "public_chat" | "trusted_private_chat")
    {
        return Err(Error::bad_json(format!("Unknown preset {preset}")));
    }
    let room_id = services
        .rooms
        .create_room(
            &session.user_id,
            CreateRoom {
                preset: request.preset,
                public,
                name: request.name,
                topic: request.topic,
                alias_localpart: request.room_alias_name,
                invite: request.invite,
                is_direct: request.is_direct,
                initial_state: request.initial_state.into_iter().map(|s| (s.kind, s.state_key, s.content)).collect(),
                power_level_content_override: request.power_level_content_override,
                creation_content: request.creation_content,
                room_version: request.room_version.map(RoomVersionId::try_from).transpose().map_err(|_| {
                    Error::new(crate::error::ErrorKind::UnsupportedRoomVersion, "Unsupported room version")
                })?,
            },
        )
        .await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// A room ID, or an alias resolved to one (here, or by the alias's server), with the servers
/// to join it through.
async fn resolve(services: &Services, id_or_alias: &str) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    services.resolve_room(id_or_alias).await
}

/// `server_name` and `via` query parameters (repeated): servers to join through.
fn via_servers(query: Option<&str>) -> Vec<OwnedServerName> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key == "server_name" || key == "via")
        .filter_map(|(_, value)| OwnedServerName::try_from(value).ok())
        .collect()
}

/// Splits `reason` off a membership request body; the rest is the client's extra content.
fn reason_and_extra(mut body: Map<String, Value>) -> Result<(Option<String>, Map<String, Value>)> {
    let reason = match body.remove("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(reason)) => Some(reason),
        Some(_) => return Err(Error::bad_json("`reason` must be a string")),
    };
    Ok((reason, body))
}

pub async fn join_by_id_or_alias(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    ClientIp(ip): ClientIp,
    Path(id_or_alias): Path<String>,
    RawQuery(query): RawQuery,
    OptionalJson(body): OptionalJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    let (room_id, mut servers) = resolve(&services, &id_or_alias).await?;
    servers.splice(0..0, via_servers(query.as_deref()));
    join(&services, &session, &ip, &room_id, servers, body).await
}

pub async fn join_room(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    ClientIp(ip): ClientIp,
    Path(room_id): Path<OwnedRoomId>,
    OptionalJson(body): OptionalJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    join(&services, &session, &ip, &room_id, Vec::new(), body).await
}

async fn join(
    services: &Services,
    session: &crate::service::accounts::Session,
    ip: &str,
    room_id: &RoomId,
    servers: Vec<OwnedServerName>,
    body: Map<String, Value>,
) -> Result<Json<Value>> {
    services.check_user_rate(Limit::Join, session, ip)?;
    let user = &session.user_id;
    let (reason, extra) = reason_and_extra(body)?;
    // Clients' extra keys go into the member content, but not what only the server may set.
    let extra = extra.into_iter().filter(|(key, _)| !matches!(key.as_str(), "third_party_signed")).collect();
    services.join_room(user, room_id, servers, reason, extra).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

pub async fn knock(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    ClientIp(ip): ClientIp,
    Path(id_or_alias): Path<String>,
    RawQuery(query): RawQuery,
    OptionalJson(body): OptionalJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    let (room_id, mut servers) = resolve(&services, &id_or_alias).await?;
    servers.splice(0..0, via_servers(query.as_deref()));
    let (reason, _) = reason_and_extra(body)?;
    services.check_user_rate(Limit::Join, &session, &ip)?;
    services.knock_room(&session.user_id, &room_id, servers, reason).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

pub async fn leave(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<OwnedRoomId>,
    OptionalJson(body): OptionalJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    let (reason, _) = reason_and_extra(body)?;
    services.leave_room(&session.user_id, &room_id, reason).await?;
    Ok(Json(json!({})))
}

pub async fn forget(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<OwnedRoomId>,
    _body: OptionalJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    services.rooms.forget(&room_id, &session.user_id).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct TargetRequest {
    user_id: OwnedUserId,
    reason: Option<String>,
}

/// `invite`, `kick`, `ban` and `unban`: the same shape, a different change.
macro_rules! targeted {
    ($name:ident, $limit:expr, $change:expr) => {
        pub async fn $name(
            State(services): State<Arc<Services>>,
            Auth(session): Auth,
            ClientIp(ip): ClientIp,
            Path(room_id): Path<OwnedRoomId>,
            extract::Json(request): extract::Json<TargetRequest>,
        ) -> Result<Json<Value>> {
            let change: fn(OwnedUserId, Option<String>) -> MembershipChange = $change;
            let limit: Option<Limit> = $limit;
            if let Some(limit) = limit {
                services.check_user_rate(limit, &session, &ip)?;
            }
            services
                .rooms
                .change_membership(&room_id, &session.user_id, change(request.user_id, request.reason))
                .await?;
            Ok(Json(json!({})))
        }
    };
}

pub async fn invite(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    ClientIp(ip): ClientIp,
    Path(room_id): Path<OwnedRoomId>,
    extract::Json(request): extract::Json<TargetRequest>,
) -> Result<Json<Value>> {
    services.check_user_rate(Limit::Invite, &session, &ip)?;
    services.invite_user(&room_id, &session.user_id, &request.user_id, request.reason, false).await?;
    Ok(Json(json!({})))
}

targeted!(kick, None, |target, reason| MembershipChange::Kick { target, reason });
targeted!(ban, None, |target, reason| MembershipChange::Ban { target, reason });
targeted!(unban, None, |target, reason| MembershipChange::Unban { target, reason });

pub async fn joined_rooms(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    Ok(Json(json!({ "joined_rooms": services.rooms.joined_rooms(&session.user_id)? })))
}

#[derive(Deserialize)]
pub struct UpgradeRequest {
    new_version: String,
}

pub async fn upgrade(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<OwnedRoomId>,
    extract::Json(request): extract::Json<UpgradeRequest>,
) -> Result<Json<Value>> {
    let version = RoomVersionId::try_from(request.new_version)
        .map_err(|_| Error::new(crate::error::ErrorKind::UnsupportedRoomVersion, "Unsupported room version"))?;
    let replacement = services.rooms.upgrade(&room_id, &session.user_id, version).await?;
    Ok(Json(json!({ "replacement_room": replacement })))
}
