//! Global account data.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::OwnedUserId;
use serde_json::{Map, Value, json};

use crate::{
    api::extract::{self, GuestAuth, Path},
    error::{Error, Result},
    service::{Services, accounts::Session},
};

fn ensure_own(session: &Session, user_id: &OwnedUserId) -> Result<()> {
    if *user_id == session.user_id {
        Ok(())
    } else {
        Err(Error::forbidden("You can only access your own account data"))
    }
}

pub async fn get(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Path((user_id, kind)): Path<(OwnedUserId, String)>,
) -> Result<Json<Value>> {
    ensure_own(&session, &user_id)?;
    Ok(Json(services.account_data.get(&user_id, None, &kind)?))
}

pub async fn set(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Path((user_id, kind)): Path<(OwnedUserId, String)>,
    extract::Json(content): extract::Json<Map<String, Value>>,
) -> Result<Json<Value>> {
    ensure_own(&session, &user_id)?;
    services.account_data.set(&user_id, None, &kind, content).await?;
    Ok(Json(json!({})))
}
