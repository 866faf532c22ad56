//! The public room directory over federation (`/publicRooms`, GET and POST) and room alias
//! queries (`/query/directory`).

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::OwnedRoomAliasId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Origin, Signed};
use crate::{
    api::extract::Query,
    error::{Error, Result},
    service::{
        Services,
        rooms::{PublicRoomsPage, PublicRoomsQuery},
    },
};

#[derive(Deserialize, Default)]
pub struct PublicRoomsParams {
    limit: Option<usize>,
    since: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct PublicRoomsBody {
    limit: Option<usize>,
    since: Option<String>,
    #[serde(default)]
    filter: Option<Filter>,
}

#[derive(Deserialize, Default)]
pub struct Filter {
    generic_search_term: Option<String>,
    room_types: Option<Vec<Option<String>>>,
}

fn page(page: PublicRoomsPage) -> Value {
    let mut body = json!({ "chunk": page.chunk, "total_room_count_estimate": page.total });
    if let Some(next) = page.next_batch {
        body["next_batch"] = json!(next);
    }
    if let Some(prev) = page.prev_batch {
        body["prev_batch"] = json!(prev);
    }
    body
}

pub async fn public_rooms(
    State(services): State<Arc<Services>>,
    Query(params): Query<PublicRoomsParams>,
    Origin(_origin): Origin,
) -> Result<Json<Value>> {
    let query = PublicRoomsQuery { limit: params.limit, since: params.since, ..Default::default() };
    Ok(Json(page(services.rooms.public_rooms(&query)?)))
}

pub async fn public_rooms_filtered(
    State(services): State<Arc<Services>>,
    Signed { body, .. }: Signed<PublicRoomsBody>,
) -> Result<Json<Value>> {
    let filter = body.filter.unwrap_or_default();
    let query = PublicRoomsQuery {
        limit: body.limit,
        since: body.since,
        search: filter.generic_search_term,
        room_types: filter.room_types,
    };
    Ok(Json(page(services.rooms.public_rooms(&query)?)))
}

#[derive(Deserialize)]
pub struct DirectoryQuery {
    room_alias: OwnedRoomAliasId,
}

/// A local alias: its room and the servers to join it through (those in the room, ours first).
pub async fn query_directory(
    State(services): State<Arc<Services>>,
    Query(query): Query<DirectoryQuery>,
    Origin(_origin): Origin,
) -> Result<Json<Value>> {
    if query.room_alias.server_name() != services.config.server_name {
        return Err(Error::not_found("The alias is not of this server"));
    }
    let (room_id, _) = services.rooms.resolve_alias(&query.room_alias)?;
    let mut servers = vec![services.config.server_name.clone()];
    servers.extend(services.rooms.remote_servers_in_room(&room_id)?);
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}
