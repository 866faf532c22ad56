//! `/_matrix/federation/v1/query/*`: information about local users and rooms.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::auth::Origin;
use crate::{
    api::extract::Query,
    error::{Error, Result},
    service::Services,
};

#[derive(Deserialize)]
pub struct ProfileQuery {
    user_id: OwnedUserId,
    field: Option<String>,
}

/// A local user's profile, or one field of it.
pub async fn profile(
    State(services): State<Arc<Services>>,
    Query(query): Query<ProfileQuery>,
    Origin(_origin): Origin,
) -> Result<Json<Map<String, Value>>> {
    if query.user_id.server_name() != services.config.server_name {
        return Err(Error::invalid_param("The user is not local to this server"));
    }
    let mut profile = services.profiles.profile(&query.user_id)?;
    if let Some(field) = query.field {
        profile.retain(|key, _| *key == field);
    }
    Ok(Json(profile))
}
