//! Server keys: ours (`/_matrix/key/v2/server`), and others' as a notary (`/_matrix/key/v2/query`).

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, extract::State};
use ruma::{CanonicalJsonObject, OwnedServerName};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    api::extract::{Path, Query},
    error::{Error, Result},
    service::{Services, now_ms},
};

/// Servers one notary query may ask about; each can mean a fetch.
const MAX_SERVERS_PER_QUERY: usize = 100;

pub async fn server_keys(State(services): State<Arc<Services>>) -> Result<Json<CanonicalJsonObject>> {
    services.federation.keys.own_key_response().map(Json)
}

#[derive(Deserialize)]
pub struct QueryParams {
    minimum_valid_until_ts: Option<u64>,
}

pub async fn query_one(
    State(services): State<Arc<Services>>,
    Path(server): Path<OwnedServerName>,
    Query(params): Query<QueryParams>,
) -> Result<Json<Value>> {
    let minimum = params.minimum_valid_until_ts.unwrap_or_else(now_ms);
    let keys = services.federation.keys.notary_answer(&server, minimum).await?;
    Ok(Json(json!({ "server_keys": keys })))
}

#[derive(Deserialize)]
pub struct BatchQuery {
    /// Server name → key ID → criteria. Key IDs do not narrow the answer: every key is returned.
    server_keys: BTreeMap<String, BTreeMap<String, Criteria>>,
}

#[derive(Deserialize)]
struct Criteria {
    minimum_valid_until_ts: Option<u64>,
}

pub async fn query_batch(
    State(services): State<Arc<Services>>,
    crate::api::extract::Json(query): crate::api::extract::Json<BatchQuery>,
) -> Result<Json<Value>> {
    if query.server_keys.len() > MAX_SERVERS_PER_QUERY {
        return Err(Error::invalid_param(format!("At most {MAX_SERVERS_PER_QUERY} servers per query")));
    }
    let now = now_ms();
    let mut answers = Vec::new();
    for (server, key_ids) in query.server_keys {
        // A name that is no server name has no keys.
        let Ok(server) = OwnedServerName::try_from(server) else { continue };
        let minimum = key_ids.values().filter_map(|c| c.minimum_valid_until_ts).max().unwrap_or(now);
        answers.extend(services.federation.keys.notary_answer(&server, minimum).await?);
    }
    Ok(Json(json!({ "server_keys": answers })))
}
