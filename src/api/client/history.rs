//! Room history: `/messages` and `/context`.

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
        filters::RoomEventFilter,
        rooms::{
            history::{Direction, Messages, MessagesQuery},
            read::Viewer,
        },
        sync::SyncToken,
    },
};

#[derive(Deserialize, Default)]
pub struct MessagesParams {
    from: Option<String>,
    to: Option<String>,
    dir: Option<String>,
    limit: Option<usize>,
    filter: Option<String>,
}

/// A room event filter given inline (JSON) in a query string.
fn room_filter(filter: Option<&str>) -> Result<RoomEventFilter> {
    match filter {
        None => Ok(RoomEventFilter::default()),
        Some(json) => serde_json::from_str(json).map_err(|e| Error::bad_json(format!("Invalid filter: {e}"))),
    }
}

pub async fn messages(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<OwnedRoomId>,
    Query(params): Query<MessagesParams>,
) -> Result<Json<Messages>> {
    let dir = match params.dir.as_deref() {
        Some("b") => Direction::Backward,
        Some("f") => Direction::Forward,
        Some(other) => return Err(Error::invalid_param(format!("`dir` must be `b` or `f`, not {other}"))),
        None => {
            // A room the user may not read is refused as such, whatever the parameters.
            services.rooms.check_history_readable(&session.user_id, &room_id)?;
            return Err(Error::missing_param("`dir` is required"));
        }
    };
    // `b{number}`: a token into history older than the timeline (backfilled).
    let backfilled = match params.from.as_deref().and_then(|from| from.strip_prefix('b')) {
        Some(number) => Some(number.parse::<u64>().map_err(|_| Error::invalid_param("Invalid `from` token"))?),
        None => None,
    };
    let query = MessagesQuery {
        from: params.from.as_deref().filter(|_| backfilled.is_none()).map(SyncToken::parse).transpose()?,
        to: params.to.as_deref().map(SyncToken::parse).transpose()?,
        dir,
        limit: params.limit,
        filter: room_filter(params.filter.as_deref())?,
    };
    let viewer = Viewer { user: &session.user_id, device: Some(&session.device_id) };
    Ok(Json(services.room_messages(viewer, &room_id, &query, backfilled).await?))
}

#[derive(Deserialize, Default)]
pub struct ContextParams {
    limit: Option<usize>,
    filter: Option<String>,
}

pub async fn context(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    Query(params): Query<ContextParams>,
) -> Result<Json<Value>> {
    let viewer = Viewer { user: &session.user_id, device: Some(&session.device_id) };
    let filter = room_filter(params.filter.as_deref())?;
    Ok(Json(services.rooms.context(viewer, &room_id, &event_id, params.limit, &filter)?))
}
