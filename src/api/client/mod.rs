//! The client-server API, one file per area.

mod account;
mod account_data;
mod devices;
pub mod discovery;
mod profile;
mod register;
pub mod session;

use std::sync::Arc;

use axum::{
    Router,
    routing::{get, post},
};

use crate::service::Services;

/// Endpoints under `/_matrix/client/v3` (and the legacy `r0`).
pub fn v3_routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/capabilities", get(discovery::capabilities))
        .route("/login", get(session::login_flows).post(session::login))
        .route("/refresh", post(session::refresh))
        .route("/logout", post(session::logout))
        .route("/logout/all", post(session::logout_all))
        .route("/account/whoami", get(session::whoami))
        .route("/register", post(register::register))
        .route("/register/available", get(register::available))
        .route("/account/password", post(account::change_password))
        .route("/account/deactivate", post(account::deactivate))
        .route("/account/3pid", get(account::threepids))
        .route("/devices", get(devices::list))
        .route("/devices/{device_id}", get(devices::get).put(devices::update).delete(devices::delete))
        .route("/delete_devices", post(devices::delete_many))
        .route("/profile/{user_id}", get(profile::get_profile))
        .route(
            "/profile/{user_id}/{field}",
            get(profile::get_field).put(profile::set_field).delete(profile::delete_field),
        )
        .route("/user/{user_id}/account_data/{kind}", get(account_data::get).put(account_data::set))
}

/// Endpoints under `/_matrix/client/v1`.
pub fn v1_routes() -> Router<Arc<Services>> {
    Router::new().route("/register/m.login.registration_token/validity", get(register::token_validity))
}
