//! End-to-end encryption keys of local users for other servers: `/user/keys/query`,
//! `/user/keys/claim`, `/user/devices/{userId}`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, extract::State};
use ruma::{OwnedDeviceId, OwnedUserId};
use serde::Deserialize;
use serde_json::Value;

use super::auth::{Origin, Signed};
use crate::{
    api::extract::Path,
    error::{Error, Result},
    service::Services,
};

#[derive(Deserialize)]
pub struct QueryBody {
    device_keys: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
}

pub async fn query(
    State(services): State<Arc<Services>>,
    Signed { body, .. }: Signed<QueryBody>,
) -> Result<Json<Value>> {
    Ok(Json(services.serve_key_query(&body.device_keys)?))
}

#[derive(Deserialize)]
pub struct ClaimBody {
    one_time_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
}

pub async fn claim(
    State(services): State<Arc<Services>>,
    Signed { body, .. }: Signed<ClaimBody>,
) -> Result<Json<Value>> {
    Ok(Json(services.serve_key_claim(&body.one_time_keys).await?))
}

/// A local user's devices with their keys, and the position of their latest change.
pub async fn user_devices(
    State(services): State<Arc<Services>>,
    Path(user_id): Path<OwnedUserId>,
    Origin(_origin): Origin,
) -> Result<Json<Value>> {
    if user_id.server_name() != services.config.server_name {
        return Err(Error::invalid_param("The user is not local to this server"));
    }
    Ok(Json(services.e2ee.user_devices(&user_id)?))
}
