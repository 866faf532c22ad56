//! Device management.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::OwnedDeviceId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::account::confirm_with_password;
use crate::{
    api::extract::{self, Auth, Operation, OptionalJson, Path},
    error::Result,
    service::{Services, accounts::DeviceInfo},
};

/// Unknown values are `null` rather than absent: Synapse does so, and clients (matrix-nio) rely on
/// the keys being there.
fn device_json(device: DeviceInfo) -> Value {
    json!({
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
    })
}

pub async fn list(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    let devices: Vec<Value> = services.accounts.devices(&session.user_id)?.into_iter().map(device_json).collect();
    Ok(Json(json!({ "devices": devices })))
}

pub async fn get(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(device_id): Path<OwnedDeviceId>,
) -> Result<Json<Value>> {
    Ok(Json(device_json(services.accounts.device(&session.user_id, &device_id)?)))
}

#[derive(Deserialize, Default)]
pub struct DeviceUpdate {
    display_name: Option<String>,
}

pub async fn update(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(device_id): Path<OwnedDeviceId>,
    extract::Json(update): extract::Json<DeviceUpdate>,
) -> Result<Json<Value>> {
    services.accounts.rename_device(&session.user_id, &device_id, update.display_name).await?;
    Ok(Json(json!({})))
}

pub async fn delete(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(device_id): Path<OwnedDeviceId>,
    Operation(operation): Operation,
    OptionalJson(body): OptionalJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    confirm_with_password(&services, &session, operation, body).await?;
    services.accounts.delete_devices(&session.user_id, &[device_id]).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeleteDevices {
    devices: Vec<OwnedDeviceId>,
}

pub async fn delete_many(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Operation(operation): Operation,
    extract::Json(body): extract::Json<Map<String, Value>>,
) -> Result<Json<Value>> {
    // Check the list before asking for a password.
    let DeleteDevices { devices } = extract::fields(&body)?;

    confirm_with_password(&services, &session, operation, body).await?;
    services.accounts.delete_devices(&session.user_id, &devices).await?;
    Ok(Json(json!({})))
}
