//! `POST /user_directory/search`: finding people to talk to.

use std::sync::Arc;

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    api::extract::{self, Auth},
    error::Result,
    service::{
        Services,
        rooms::user_directory::{DEFAULT_LIMIT, MAX_LIMIT},
    },
};

#[derive(Deserialize)]
pub struct SearchRequest {
    search_term: String,
    limit: Option<usize>,
}

pub async fn search(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    extract::Json(request): extract::Json<SearchRequest>,
) -> Result<Json<Value>> {
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let (results, limited) = services.rooms.search_users(&session.user_id, &request.search_term, limit)?;
    Ok(Json(json!({ "results": results, "limited": limited })))
}
