//! Relations and threads.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::{OwnedEventId, OwnedRoomId};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    api::extract::{Auth, Path, Query},
    error::{Error, Result},
    service::{
        Services,
        rooms::{read::Viewer, relations::RelationsQuery},
        sync::SyncToken,
    },
};

#[derive(Deserialize, Default)]
pub struct RelationsParams {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    dir: Option<String>,
    #[serde(default)]
    recurse: bool,
}

#[derive(Deserialize)]
pub struct RelationsPath {
    room_id: OwnedRoomId,
    event_id: OwnedEventId,
    rel_type: Option<String>,
    event_type: Option<String>,
}

pub async fn relations(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(path): Path<RelationsPath>,
    Query(params): Query<RelationsParams>,
) -> Result<Json<Value>> {
    let forward = match params.dir.as_deref() {
        None | Some("b") => false,
        Some("f") => true,
        Some(other) => return Err(Error::invalid_param(format!("`dir` must be `b` or `f`, not {other}"))),
    };
    let query = RelationsQuery {
        rel_type: path.rel_type,
        event_type: path.event_type,
        from: params.from.as_deref().map(SyncToken::parse).transpose()?,
        to: params.to.as_deref().map(SyncToken::parse).transpose()?,
        limit: params.limit,
        forward,
        recurse: params.recurse,
    };
    let viewer = Viewer { user: &session.user_id, device: Some(&session.device_id) };
    Ok(Json(services.rooms.relations_page(viewer, &path.room_id, &path.event_id, &query)?))
}

#[derive(Deserialize, Default)]
pub struct ThreadsParams {
    include: Option<String>,
    from: Option<String>,
    limit: Option<usize>,
}

pub async fn threads(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<OwnedRoomId>,
    Query(params): Query<ThreadsParams>,
) -> Result<Json<Value>> {
    let participated = match params.include.as_deref() {
        None | Some("all") => false,
        Some("participated") => true,
        Some(other) => {
            return Err(Error::invalid_param(format!("`include` must be `all` or `participated`, not {other}")));
        }
    };
    let from = params.from.as_deref().map(SyncToken::parse).transpose()?;
    let viewer = Viewer { user: &session.user_id, device: Some(&session.device_id) };
    Ok(Json(services.rooms.threads_page(viewer, &room_id, participated, from, params.limit)?))
}
