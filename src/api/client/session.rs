//! Logging in and out, refreshing tokens, whoami.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::OwnedDeviceId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    api::extract::{self, ClientIp, GuestAuth, OptionalJson},
    error::{Error, ErrorKind, Result},
    service::{
        Services,
        accounts::{LoginTokens, NewDevice},
        rate_limit::Limit,
        uia::identified_user,
    },
};

pub async fn login_flows() -> Json<Value> {
    Json(json!({ "flows": [{ "type": "m.login.password" }] }))
}

#[derive(Deserialize)]
pub struct LoginRequest {
    #[serde(rename = "type")]
    kind: String,
    password: Option<String>,
    device_id: Option<OwnedDeviceId>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    refresh_token: bool,
    /// `identifier`, the legacy `user`, `medium` and `address`.
    #[serde(flatten)]
    identity: Map<String, Value>,
}

pub async fn login(
    State(services): State<Arc<Services>>,
    ClientIp(ip): ClientIp,
    extract::Json(request): extract::Json<LoginRequest>,
) -> Result<Json<Value>> {
    services.rate_limits.check(Limit::Login, &ip)?;
    if request.kind != "m.login.password" {
        return Err(Error::new(ErrorKind::Unknown, format!("Unsupported login type {}", request.kind)));
    }
    let user = login_user(&request.identity)?;
    let password = request.password.as_deref().ok_or_else(|| Error::missing_param("Missing password"))?;
    services.rate_limits.peek(Limit::FailedLogin, &user.to_lowercase())?;
    let device = NewDevice {
        device_id: request.device_id,
        display_name: request.initial_device_display_name,
        refresh_token: request.refresh_token,
    };
    let tokens = match services.accounts.login_with_password(user, password, device).await {
        Err(e) if e.kind() == Some(&ErrorKind::Forbidden) => {
            // Count the failure against the account; the error stays the same either way.
            let _ = services.rate_limits.check(Limit::FailedLogin, &user.to_lowercase());
            return Err(e);
        }
        other => other?,
    };
    tracing::info!(user = %tokens.user_id, device = %tokens.device_id, "logged in");
    Ok(Json(login_response(&services, tokens)))
}

/// Who is logging in: an `m.id.user` identifier, or the legacy `user` field. We hold no
/// third-party identifiers, so a login by email or phone cannot match anyone.
fn login_user(identity: &Map<String, Value>) -> Result<&str> {
    if let Some(user) = identified_user(identity) {
        return Ok(user);
    }
    match identity.get("identifier").and_then(|i| i.get("type")).and_then(Value::as_str) {
        Some("m.id.thirdparty" | "m.id.phone") => Err(Error::forbidden("No account has this third-party identifier")),
        Some(other) => Err(Error::new(ErrorKind::Unknown, format!("Unknown identifier type {other}"))),
        None if identity.contains_key("medium") || identity.contains_key("address") => {
            Err(Error::forbidden("No account has this third-party identifier"))
        }
        None => Err(Error::missing_param("Missing identifier")),
    }
}

/// The body of a successful login or registration.
pub fn login_response(services: &Services, tokens: LoginTokens) -> Value {
    let mut body = json!({
        "user_id": tokens.user_id,
        "access_token": tokens.access_token,
        "device_id": tokens.device_id,
        "home_server": services.config.server_name,
    });
    let object = body.as_object_mut().expect("built as an object");
    if let Some(refresh_token) = tokens.refresh_token {
        object.insert("refresh_token".into(), refresh_token.into());
    }
    if let Some(expires_in_ms) = tokens.expires_in_ms {
        object.insert("expires_in_ms".into(), expires_in_ms.into());
    }
    if services.config.public_baseurl.is_some() {
        object
            .insert("well_known".into(), json!({ "m.homeserver": { "base_url": services.config.client_base_url() } }));
    }
    body
}

#[derive(Deserialize)]
pub struct RefreshRequest {
    refresh_token: String,
}

pub async fn refresh(
    State(services): State<Arc<Services>>,
    extract::Json(request): extract::Json<RefreshRequest>,
) -> Result<Json<Value>> {
    let tokens = services.accounts.refresh(&request.refresh_token).await?;
    let mut body = json!({ "access_token": tokens.access_token });
    if let Some(refresh_token) = tokens.refresh_token {
        body["refresh_token"] = refresh_token.into();
    }
    if let Some(expires_in_ms) = tokens.expires_in_ms {
        body["expires_in_ms"] = expires_in_ms.into();
    }
    Ok(Json(body))
}

pub async fn logout(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    _body: OptionalJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    services.accounts.logout(&session).await?;
    tracing::info!(user = %session.user_id, device = %session.device_id, "logged out");
    Ok(Json(json!({})))
}

pub async fn logout_all(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    _body: OptionalJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    services.accounts.logout_all(&session.user_id).await?;
    tracing::info!(user = %session.user_id, "logged out everywhere");
    Ok(Json(json!({})))
}

pub async fn whoami(GuestAuth(session): GuestAuth) -> Json<Value> {
    // An application service acts without a device.
    if session.appservice.is_some() {
        return Json(json!({ "user_id": session.user_id, "is_guest": false }));
    }
    Json(json!({
        "user_id": session.user_id,
        "device_id": session.device_id,
        "is_guest": session.is_guest,
    }))
}
