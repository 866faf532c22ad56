//! `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`: the rooms of a space.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    api::extract::{Auth, Path, Query},
    error::{Error, Result},
    service::{Services, rooms::hierarchy::HierarchyQuery},
};

#[derive(Deserialize)]
pub struct HierarchyParams {
    suggested_only: Option<String>,
    max_depth: Option<usize>,
    limit: Option<usize>,
    from: Option<String>,
}

pub async fn hierarchy(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<OwnedRoomId>,
    Query(params): Query<HierarchyParams>,
) -> Result<Json<Value>> {
    let suggested_only = match params.suggested_only.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(Error::invalid_param(format!("suggested_only must be true or false, not {other}"))),
    };
    if params.limit == Some(0) {
        return Err(Error::invalid_param("limit must be positive"));
    }
    let query = HierarchyQuery { suggested_only, max_depth: params.max_depth, limit: params.limit, from: params.from };
    let page = services.rooms.hierarchy(&session.user_id, &room_id, &query)?;
    let mut body = json!({ "rooms": page.rooms });
    if let Some(next) = page.next_batch {
        body["next_batch"] = json!(next);
    }
    Ok(Json(body))
}
