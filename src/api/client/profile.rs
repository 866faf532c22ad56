//! Profiles: anyone may read a local user's profile; only its owner may change it.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::OwnedUserId;
use serde_json::{Map, Value, json};

use crate::{
    api::extract::{self, GuestAuth, Path},
    error::{Error, Result},
    service::Services,
};

pub async fn get_profile(
    State(services): State<Arc<Services>>,
    Path(user_id): Path<OwnedUserId>,
) -> Result<Json<Value>> {
    Ok(Json(Value::Object(services.profiles.profile(&user_id)?)))
}

pub async fn get_field(
    State(services): State<Arc<Services>>,
    Path((user_id, field)): Path<(OwnedUserId, String)>,
) -> Result<Json<Value>> {
    let value = services.profiles.field(&user_id, &field)?;
    Ok(Json(json!({ field: value })))
}

pub async fn set_field(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Path((user_id, field)): Path<(OwnedUserId, String)>,
    extract::Json(mut body): extract::Json<Map<String, Value>>,
) -> Result<Json<Value>> {
    if user_id != session.user_id {
        return Err(Error::forbidden("You can only change your own profile"));
    }
    let value = body.remove(&field).ok_or_else(|| Error::missing_param(format!("The body must contain `{field}`")))?;
    services.profiles.set_field(&user_id, &field, value).await?;
    if matches!(field.as_str(), "displayname" | "avatar_url") {
        services.rooms.profile_changed(&user_id).await?;
    }
    Ok(Json(json!({})))
}

pub async fn delete_field(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Path((user_id, field)): Path<(OwnedUserId, String)>,
) -> Result<Json<Value>> {
    if user_id != session.user_id {
        return Err(Error::forbidden("You can only change your own profile"));
    }
    services.profiles.delete_field(&user_id, &field).await?;
    if matches!(field.as_str(), "displayname" | "avatar_url") {
        services.rooms.profile_changed(&user_id).await?;
    }
    Ok(Json(json!({})))
}
