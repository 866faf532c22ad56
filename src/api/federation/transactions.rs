//! `PUT /_matrix/federation/v1/send/{txnId}`: transactions of PDUs and EDUs from other servers.

use std::sync::Arc;

use axum::{Json, extract::State};
use serde_json::Value;

use super::auth::Signed;
use crate::{
    api::extract::Path,
    error::Result,
    service::{Services, federation::transactions::Transaction},
};

pub async fn send(
    State(services): State<Arc<Services>>,
    Path(txn_id): Path<String>,
    Signed { origin, body }: Signed<Transaction>,
) -> Result<Json<Value>> {
    services.receive_transaction(&origin, &txn_id, body).await.map(Json)
}
