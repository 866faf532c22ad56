//! `/sync` and filters.

use std::{sync::Arc, time::Duration};

use axum::{Json, extract::State};
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    api::extract::{self, GuestAuth, Path, Query},
    error::{Error, Result},
    service::{
        Services, presence,
        sync::{self, SyncRequest, SyncToken},
    },
};

#[derive(Deserialize, Default)]
pub struct SyncQuery {
    since: Option<String>,
    filter: Option<String>,
    #[serde(default)]
    full_state: bool,
    timeout: Option<u64>,
    set_presence: Option<String>,
}

pub async fn sync(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Query(query): Query<SyncQuery>,
) -> Result<Json<Value>> {
    let set_presence = match query.set_presence.as_deref() {
        None => None,
        Some(text) => {
            Some(presence::State::parse(text).ok_or_else(|| Error::invalid_param(format!("Unknown presence {text}")))?)
        }
    };
    let request = SyncRequest {
        set_presence,
        since: query.since.as_deref().map(SyncToken::parse).transpose()?,
        filter: services.filters.resolve(&session.user_id, query.filter.as_deref())?,
        full_state: query.full_state,
        timeout: Duration::from_millis(query.timeout.unwrap_or(0)),
    };
    Ok(Json(sync::sync(&services, &session, &request, services.shutdown.subscribe()).await?))
}

fn ensure_own(session_user: &OwnedUserId, user_id: &OwnedUserId) -> Result<()> {
    if session_user == user_id { Ok(()) } else { Err(Error::forbidden("You can only manage your own filters")) }
}

pub async fn create_filter(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Path(user_id): Path<OwnedUserId>,
    extract::Json(filter): extract::Json<Map<String, Value>>,
) -> Result<Json<Value>> {
    ensure_own(&session.user_id, &user_id)?;
    let id = services.filters.create(&user_id, Value::Object(filter)).await?;
    Ok(Json(json!({ "filter_id": id })))
}

pub async fn get_filter(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    Path((user_id, filter_id)): Path<(OwnedUserId, String)>,
) -> Result<Json<Value>> {
    ensure_own(&session.user_id, &user_id)?;
    Ok(Json(services.filters.get(&user_id, &filter_id)?))
}
