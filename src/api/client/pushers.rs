//! Pushers (`/pushers`, `/pushers/set`): where the user's notifications go.

use std::sync::Arc;

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::{
    api::extract::{self, Auth},
    error::Result,
    service::Services,
};

/// `GET /pushers`.
pub async fn list(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    Ok(Json(services.pushers.list(&session.user_id)?))
}

/// `POST /pushers/set`.
pub async fn set(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    extract::Json(body): extract::Json<Value>,
) -> Result<Json<Value>> {
    services.pushers.set(&session.user_id, &session.device_id, &body).await?;
    Ok(Json(json!({})))
}
