//! The federation API, served on the TLS listener only: one file per area. Requests from other
//! servers are verified by the [`auth`] extractors ([`auth::Signed`], [`auth::Origin`]); the key
//! endpoints and `/version` need no authentication.

pub mod auth;
mod keys;
mod query;
mod version;

use std::sync::Arc;

use axum::{
    Router,
    routing::{get, post},
};

use crate::service::Services;

/// Every federation route.
pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/_matrix/federation/v1/version", get(version::version))
        .route("/_matrix/key/v2/server", get(keys::server_keys))
        .route("/_matrix/key/v2/query", post(keys::query_batch))
        .route("/_matrix/key/v2/query/{server_name}", get(keys::query_one))
        .route("/_matrix/federation/v1/query/profile", get(query::profile))
}
