//! Registration: `/register` with user-interactive authentication, username availability and
//! registration-token validity.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::OwnedDeviceId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::session::login_response;
use crate::{
    api::extract::{self, AppServiceToken, ClientIp, Operation, Query},
    error::{Error, ErrorKind, Result},
    service::{
        Services,
        accounts::{NewAccount, NewDevice},
        password::MAX_PASSWORD_LEN,
        rate_limit::Limit,
        uia::{AuthDict, Stage, UiaRequest},
    },
};

#[derive(Deserialize)]
pub struct RegisterQuery {
    kind: Option<String>,
}

/// The fields of a registration body (besides `auth`).
#[derive(Deserialize, Default)]
struct RegisterRequest {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<OwnedDeviceId>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    #[serde(default)]
    refresh_token: bool,
}

impl RegisterRequest {
    fn parse(body: &Map<String, Value>) -> Result<Self> {
        extract::fields(body)
    }

    fn new_device(&self) -> Option<NewDevice> {
        (!self.inhibit_login).then(|| NewDevice {
            device_id: self.device_id.clone(),
            display_name: self.initial_device_display_name.clone(),
            refresh_token: self.refresh_token,
        })
    }
}

pub async fn register(
    State(services): State<Arc<Services>>,
    Query(query): Query<RegisterQuery>,
    ClientIp(ip): ClientIp,
    Operation(operation): Operation,
    AppServiceToken(appservice): AppServiceToken,
    extract::Json(mut body): extract::Json<Map<String, Value>>,
) -> Result<Json<Value>> {
    let config = &services.config.registration;
    match query.kind.as_deref().unwrap_or("user") {
        "user" => {}
        "guest" => return register_guest(&services, &ip, &body).await,
        other => return Err(Error::invalid_param(format!("Unknown account kind {other}"))),
    }
    if body.get("type").and_then(Value::as_str) == Some("m.login.application_service") {
        return register_appservice_user(&services, appservice.as_deref(), &body).await;
    }
    if !config.enabled {
        return Err(Error::forbidden("Registration is disabled on this server"));
    }
    let auth = AuthDict::take_from(&mut body)?;

    // One token per registration: taken when a session starts, not when it is continued, so a
    // flood of abandoned sessions is limited like a flood of registrations.
    if auth.as_ref().is_some_and(|a| a.session.is_some()) {
        services.rate_limits.peek(Limit::Registration, &ip)?;
    } else {
        services.rate_limits.check(Limit::Registration, &ip)?;
    }

    // Check what can be checked before authentication, so clients learn early.
    let request = RegisterRequest::parse(&body)?;
    validate(&services, &request)?;

    let stage = if config.token_required { Stage::RegistrationToken } else { Stage::Dummy };
    let body = services
        .uia
        .authenticate(
            &services.accounts,
            &services.config,
            UiaRequest {
                operation,
                user: None,
                flows: vec![vec![stage]],
                body,
                auth,
                registering: request.username.as_deref().map(str::to_lowercase),
            },
        )
        .await?;

    // The session may have remembered fields this request left out.
    let request = RegisterRequest::parse(&body)?;
    let user_id = validate(&services, &request)?;
    let password = request.password.clone().ok_or_else(|| Error::missing_param("Missing password"))?;
    let registered = services
        .accounts
        .register(NewAccount { user_id, password: Some(password), login: request.new_device(), ..Default::default() })
        .await?;
    services.auto_join(&registered.user_id).await;
    Ok(Json(registration_response(&services, registered)))
}

/// Checks the username and password of a registration; returns the user ID asked for, if any.
fn validate(services: &Services, request: &RegisterRequest) -> Result<Option<ruma::OwnedUserId>> {
    if request.password.as_ref().is_some_and(|p| p.len() > MAX_PASSWORD_LEN) {
        return Err(Error::invalid_param("The password is too long"));
    }
    let Some(username) = &request.username else { return Ok(None) };
    let user_id = services.accounts.user_id_for_registration(username)?;
    services.accounts.ensure_available(&user_id)?;
    ensure_not_exclusive(services, &user_id)?;
    Ok(Some(user_id))
}

/// Users in a namespace an application service holds exclusively are that service's to create.
fn ensure_not_exclusive(services: &Services, user_id: &ruma::UserId) -> Result<()> {
    if services.appservices.exclusive_owner_of_user(user_id).is_some() {
        return Err(Error::new(ErrorKind::Exclusive, "This user ID is reserved by an application service"));
    }
    Ok(())
}

/// `m.login.application_service`: a service creates a user of its namespaces, with its
/// `as_token` and no user-interactive authentication (whether or not registration is open).
async fn register_appservice_user(
    services: &Services,
    appservice: Option<&crate::service::appservice::AppService>,
    body: &Map<String, Value>,
) -> Result<Json<Value>> {
    let appservice = appservice.ok_or_else(|| {
        Error::new(ErrorKind::MissingToken, "m.login.application_service needs the application service's token")
    })?;
    let request = RegisterRequest::parse(body)?;
    let username = request.username.as_deref().ok_or_else(|| Error::missing_param("Missing username"))?;
    let user_id = services.accounts.user_id_for_registration(username)?;
    if !appservice.is_user_in_namespace(&user_id) {
        return Err(Error::new(ErrorKind::Exclusive, "The user is outside the application service's namespaces"));
    }
    services.accounts.ensure_available(&user_id)?;
    let registered = services
        .accounts
        .register(NewAccount { user_id: Some(user_id), login: request.new_device(), ..Default::default() })
        .await?;
    services.auto_join(&registered.user_id).await;
    Ok(Json(registration_response(services, registered)))
}

async fn register_guest(services: &Services, ip: &str, body: &Map<String, Value>) -> Result<Json<Value>> {
    if !services.config.registration.allow_guests {
        return Err(Error::new(ErrorKind::GuestAccessForbidden, "Guest accounts are disabled on this server"));
    }
    services.rate_limits.check(Limit::Registration, ip)?;
    let request = RegisterRequest::parse(body)?;
    let registered = services
        .accounts
        .register(NewAccount { guest: true, login: request.new_device(), ..Default::default() })
        .await?;
    Ok(Json(registration_response(services, registered)))
}

fn registration_response(services: &Services, registered: crate::service::accounts::Registered) -> Value {
    match registered.login {
        Some(tokens) => login_response(services, tokens),
        None => json!({ "user_id": registered.user_id, "home_server": services.config.server_name }),
    }
}

#[derive(Deserialize)]
pub struct AvailableQuery {
    username: String,
}

pub async fn available(
    State(services): State<Arc<Services>>,
    ClientIp(ip): ClientIp,
    Query(query): Query<AvailableQuery>,
) -> Result<Json<Value>> {
    if !services.config.registration.enabled {
        return Err(Error::forbidden("Registration is disabled on this server"));
    }
    services.rate_limits.check(Limit::AvailabilityCheck, &ip)?;
    let user_id = services.accounts.user_id_for_registration(&query.username)?;
    services.accounts.ensure_available(&user_id)?;
    ensure_not_exclusive(&services, &user_id)?;
    Ok(Json(json!({ "available": true })))
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: String,
}

pub async fn token_validity(
    State(services): State<Arc<Services>>,
    ClientIp(ip): ClientIp,
    Query(query): Query<TokenQuery>,
) -> Result<Json<Value>> {
    let config = &services.config.registration;
    if !config.enabled {
        return Err(Error::forbidden("Registration is disabled on this server"));
    }
    services.rate_limits.check(Limit::AvailabilityCheck, &ip)?;
    let valid = config.token_required && config.tokens.contains(&query.token);
    Ok(Json(json!({ "valid": valid })))
}
