//! Account management: password change, deactivation, third-party identifiers.

use std::sync::Arc;

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    api::extract::{self, Auth, Operation, OptionalJson},
    error::{Error, Result},
    service::{
        Services,
        accounts::Session,
        password::MAX_PASSWORD_LEN,
        uia::{AuthDict, Stage, UiaRequest},
    },
};

/// Runs user-interactive authentication with the account's password for a signed-in user.
pub async fn confirm_with_password(
    services: &Services,
    session: &Session,
    operation: String,
    mut body: Map<String, Value>,
) -> Result<Map<String, Value>> {
    let auth = AuthDict::take_from(&mut body)?;

    services
        .uia
        .authenticate(
            &services.accounts,
            &services.config,
            UiaRequest {
                operation,
                user: Some(&session.user_id),
                flows: vec![vec![Stage::Password]],
                body,
                auth,
                registering: None,
            },
        )
        .await
}

#[derive(Deserialize)]
struct PasswordChange {
    new_password: String,
    #[serde(default = "yes")]
    logout_devices: bool,
}

fn yes() -> bool {
    true
}

pub async fn change_password(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Operation(operation): Operation,
    extract::Json(body): extract::Json<Map<String, Value>>,
) -> Result<Json<Value>> {
    // Check the request before asking for a password.
    let request: PasswordChange = extract::fields(&body)?;
    if request.new_password.len() > MAX_PASSWORD_LEN {
        return Err(Error::invalid_param("The password is too long"));
    }
    confirm_with_password(&services, &session, operation, body).await?;
    services.accounts.change_password(&session, request.new_password, request.logout_devices).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
struct Deactivation {
    #[serde(default)]
    erase: bool,
}

pub async fn deactivate(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Operation(operation): Operation,
    OptionalJson(body): OptionalJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    let body = confirm_with_password(&services, &session, operation, body).await?;
    let request: Deactivation = extract::fields(&body)?;

    services.rooms.leave_all(&session.user_id).await?;
    services.accounts.deactivate(&session.user_id, request.erase).await?;
    // We bind no identifiers at identity servers, so there is nothing to unbind.
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}

/// Third-party identifiers (email, phone): this server holds none.
pub async fn threepids(_auth: Auth) -> Json<Value> {
    Json(json!({ "threepids": [] }))
}
