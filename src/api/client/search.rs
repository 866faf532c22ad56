//! `POST /search`: server-side search of room events.

use std::sync::Arc;

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    api::extract::{self, Auth, Query},
    error::{Error, Result},
    service::{Services, filters::RoomEventFilter, rooms::search::SearchQuery},
};

#[derive(Deserialize)]
pub struct SearchParams {
    next_batch: Option<String>,
}

#[derive(Deserialize)]
pub struct SearchRequest {
    search_categories: Categories,
}

#[derive(Deserialize)]
pub struct Categories {
    room_events: Option<RoomEvents>,
}

#[derive(Deserialize)]
pub struct RoomEvents {
    search_term: String,
    keys: Option<Vec<String>>,
    #[serde(default)]
    filter: Option<Value>,
    order_by: Option<String>,
    event_context: Option<EventContext>,
}

#[derive(Deserialize)]
pub struct EventContext {
    #[serde(default = "five")]
    before_limit: usize,
    #[serde(default = "five")]
    after_limit: usize,
}

fn five() -> usize {
    5
}

pub async fn search(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Query(params): Query<SearchParams>,
    extract::Json(request): extract::Json<SearchRequest>,
) -> Result<Json<Value>> {
    let Some(room_events) = request.search_categories.room_events else {
        return Ok(Json(json!({ "search_categories": {} })));
    };
    let filter: RoomEventFilter = match room_events.filter {
        None | Some(Value::Null) => RoomEventFilter::default(),
        Some(filter @ Value::Object(_)) => {
            serde_json::from_value(filter).map_err(|e| Error::bad_json(format!("Invalid filter: {e}")))?
        }
        Some(_) => return Err(Error::bad_json("filter must be an object")),
    };
    let order_by_rank = match room_events.order_by.as_deref() {
        None | Some("rank") => true,
        Some("recent") => false,
        Some(other) => return Err(Error::invalid_param(format!("Unknown order_by {other}"))),
    };
    let query = SearchQuery {
        search_term: room_events.search_term,
        keys: room_events.keys,
        filter,
        order_by_rank,
        context: room_events.event_context.map(|c| (c.before_limit, c.after_limit)),
        next_batch: params.next_batch,
    };
    let found = services.rooms.search(&session.user_id, Some(&session.device_id), &query)?;
    Ok(Json(json!({ "search_categories": { "room_events": found } })))
}
