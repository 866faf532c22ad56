//! Synapse-compatible admin endpoints that tools and test suites rely on.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{client, extract};
use crate::{
    error::{Error, Result},
    service::{
        Services,
        accounts::{NewAccount, NewDevice},
        password::MAX_PASSWORD_LEN,
        shared_secret::SignedRequest,
    },
};

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/_synapse/admin/v1/register", get(nonce).post(register))
}

async fn nonce(State(services): State<Arc<Services>>) -> Result<Json<Value>> {
    Ok(Json(json!({ "nonce": services.shared_secret.new_nonce()? })))
}

#[derive(Deserialize)]
struct SharedSecretRegister {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    displayname: Option<String>,
    user_type: Option<String>,
    mac: String,
}

async fn register(
    State(services): State<Arc<Services>>,
    extract::Json(request): extract::Json<SharedSecretRegister>,
) -> Result<Json<Value>> {
    if request.password.len() > MAX_PASSWORD_LEN || request.username.len() > 512 {
        return Err(Error::invalid_param("Username or password too long"));
    }
    services.shared_secret.verify(&SignedRequest {
        nonce: &request.nonce,
        username: &request.username,
        password: &request.password,
        admin: request.admin,
        user_type: request.user_type.as_deref(),
        mac: &request.mac,
    })?;
    let user_id = services.accounts.user_id_for_registration(&request.username)?;
    let registered = services
        .accounts
        .register(NewAccount {
            user_id: Some(user_id),
            password: Some(request.password),
            admin: request.admin,
            displayname: request.displayname,
            login: Some(NewDevice::default()),
            ..Default::default()
        })
        .await?;
    services.auto_join(&registered.user_id).await;
    let tokens = registered.login.expect("registered with a login");
    Ok(Json(client::session::login_response(&services, tokens)))
}
