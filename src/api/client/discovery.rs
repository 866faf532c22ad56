//! What a client asks before anything else: versions, server discovery, capabilities.

use std::sync::Arc;

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::{
    api::extract::Auth,
    config::SUPPORTED_ROOM_VERSIONS,
    error::{Error, Result},
    service::Services,
};

/// The spec versions whose client API this server speaks.
const VERSIONS: &[&str] = &[
    "r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4",
    "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
];

pub async fn versions() -> Json<Value> {
    Json(json!({ "versions": VERSIONS, "unstable_features": { "io.myelin.websocket": true } }))
}

pub async fn well_known_client(State(services): State<Arc<Services>>) -> Json<Value> {
    Json(json!({ "m.homeserver": { "base_url": services.config.client_base_url() } }))
}

/// Federation delegation: the configured `well_known.server`, or our own federation listener.
pub async fn well_known_server(State(services): State<Arc<Services>>) -> Result<Json<Value>> {
    let config = &services.config;
    let server = match (&config.well_known.server, config.listen.federation) {
        (Some(server), _) => server.clone(),
        (None, Some(listener)) => format!("{}:{}", config.server_name.host(), listener.port()),
        (None, None) => return Err(Error::not_found("This server does not federate")),
    };
    Ok(Json(json!({ "m.server": server })))
}

pub async fn capabilities(State(services): State<Arc<Services>>, _auth: Auth) -> Json<Value> {
    let available: serde_json::Map<String, Value> =
        SUPPORTED_ROOM_VERSIONS.iter().map(|v| (v.to_string(), json!("stable"))).collect();
    Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.room_versions": {
                "default": services.config.rooms.default_version.to_string(),
                "available": available,
            },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.profile_fields": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": false },
        }
    }))
}
