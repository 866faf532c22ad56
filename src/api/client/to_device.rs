//! Send-to-device messaging.

use std::sync::Arc;

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    api::extract::{self, Auth, Path},
    error::Result,
    service::Services,
};

#[derive(Deserialize)]
pub struct SendToDevice {
    messages: Map<String, Value>,
}

pub async fn send(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((kind, txn_id)): Path<(String, String)>,
    extract::Json(request): extract::Json<SendToDevice>,
) -> Result<Json<Value>> {
    services.to_device.send(&session.user_id, &session.device_id, &txn_id, &kind, request.messages).await?;
    Ok(Json(json!({})))
}
