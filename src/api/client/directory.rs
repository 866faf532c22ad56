//! Room aliases and the public room directory.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::{OwnedRoomAliasId, OwnedRoomId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    api::extract::{self, Auth, Path, Query},
    error::{Error, ErrorKind, Result},
    service::{Services, rooms::PublicRoomsQuery},
};

#[derive(Deserialize)]
pub struct AliasRequest {
    room_id: OwnedRoomId,
}

pub async fn create_alias(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(alias): Path<OwnedRoomAliasId>,
    extract::Json(request): extract::Json<AliasRequest>,
) -> Result<Json<Value>> {
    // Aliases in a namespace an application service holds exclusively are that service's.
    if let Some(owner) = services.appservices.exclusive_owner_of_alias(&alias)
        && session.appservice.as_deref() != Some(owner.registration.id.as_str())
    {
        return Err(Error::new(ErrorKind::Exclusive, "This alias is reserved by an application service"));
    }
    services.rooms.create_alias(&alias, &request.room_id, &session.user_id).await?;
    Ok(Json(json!({})))
}

pub async fn resolve_alias(
    State(services): State<Arc<Services>>,
    Path(alias): Path<OwnedRoomAliasId>,
) -> Result<Json<Value>> {
    let resolved = match services.rooms.resolve_alias(&alias) {
        // An unknown alias of a service's exclusive namespace: the service may create it now.
        Err(e) if e.kind() == Some(&ErrorKind::NotFound) => match services.appservices.exclusive_owner_of_alias(&alias)
        {
            Some(owner) if services.appservices.query_alias(owner, &alias).await => {
                services.rooms.resolve_alias(&alias)
            }
            _ => Err(e),
        },
        other => other,
    };
    let (room_id, servers) = resolved?;
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

pub async fn delete_alias(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(alias): Path<OwnedRoomAliasId>,
) -> Result<Json<Value>> {
    services.rooms.delete_alias(&alias, &session.user_id).await?;
    Ok(Json(json!({})))
}

pub async fn room_aliases(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<OwnedRoomId>,
) -> Result<Json<Value>> {
    Ok(Json(json!({ "aliases": services.rooms.aliases_of(&session.user_id, &room_id)? })))
}

pub async fn get_visibility(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<OwnedRoomId>,
) -> Result<Json<Value>> {
    let public = services.rooms.is_published(&room_id)?;
    Ok(Json(json!({ "visibility": if public { "public" } else { "private" } })))
}

#[derive(Deserialize)]
pub struct VisibilityRequest {
    visibility: String,
}

pub async fn set_visibility(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<OwnedRoomId>,
    extract::Json(request): extract::Json<VisibilityRequest>,
) -> Result<Json<Value>> {
    let public = match request.visibility.as_str() {
        "public" => true,
        "private" => false,
        other => return Err(Error::bad_json(format!("Unknown visibility {other}"))),
    };
    services.rooms.set_published(&room_id, &session.user_id, public).await?;
    Ok(Json(json!({})))
}

/// `PUT /directory/list/appservice/{networkId}/{roomId}`: for application services only.
pub async fn set_appservice_visibility(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((_network_id, room_id)): Path<(String, OwnedRoomId)>,
    extract::Json(request): extract::Json<VisibilityRequest>,
) -> Result<Json<Value>> {
    if session.appservice.is_none() {
        return Err(Error::forbidden("Only application services may use this endpoint"));
    }
    let public = match request.visibility.as_str() {
        "public" => true,
        "private" => false,
        other => return Err(Error::bad_json(format!("Unknown visibility {other}"))),
    };
    services.rooms.publish(&room_id, public).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
pub struct PublicRoomsParams {
    limit: Option<usize>,
    since: Option<String>,
    server: Option<String>,
}

pub async fn public_rooms(
    State(services): State<Arc<Services>>,
    Query(params): Query<PublicRoomsParams>,
) -> Result<Json<Value>> {
    check_server(&services, params.server.as_deref())?;
    page(&services, PublicRoomsQuery { limit: params.limit, since: params.since, ..Default::default() })
}

#[derive(Deserialize, Default)]
pub struct PublicRoomsBody {
    limit: Option<usize>,
    since: Option<String>,
    #[serde(default)]
    filter: PublicRoomsFilter,
}

#[derive(Deserialize, Default)]
struct PublicRoomsFilter {
    generic_search_term: Option<String>,
    room_types: Option<Vec<Option<String>>>,
}

pub async fn search_public_rooms(
    State(services): State<Arc<Services>>,
    Query(params): Query<PublicRoomsParams>,
    extract::Json(body): extract::Json<PublicRoomsBody>,
) -> Result<Json<Value>> {
    check_server(&services, params.server.as_deref())?;
    page(
        &services,
        PublicRoomsQuery {
            limit: body.limit,
            since: body.since,
            search: body.filter.generic_search_term,
            room_types: body.filter.room_types,
        },
    )
}

/// Other servers' directories are reached over federation, which does not exist yet.
fn check_server(services: &Services, server: Option<&str>) -> Result<()> {
    match server {
        Some(server) if server != services.config.server_name.as_str() => {
            Err(Error::not_found("Other servers' directories cannot be reached yet"))
        }
        _ => Ok(()),
    }
}

fn page(services: &Services, query: PublicRoomsQuery) -> Result<Json<Value>> {
    let page = services.rooms.public_rooms(&query)?;
    let mut body = json!({ "chunk": page.chunk, "total_room_count_estimate": page.total });
    if let Some(next) = page.next_batch {
        body["next_batch"] = json!(next);
    }
    if let Some(prev) = page.prev_batch {
        body["prev_batch"] = json!(prev);
    }
    Ok(Json(body))
}
