//! The federation API, served on the TLS listener only: one file per area. Requests from other
//! servers are verified by the [`auth`] extractors ([`auth::Signed`], [`auth::Origin`]); the key
//! endpoints and `/version` need no authentication.

pub mod auth;
mod devices;
mod directory;
mod events;
mod keys;
mod media;
mod membership;
mod query;
mod transactions;
mod version;

use std::sync::Arc;

use axum::{
    Router,
    routing::{get, post, put},
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
        .route("/_matrix/federation/v1/media/download/{media_id}", get(media::download))
        .route("/_matrix/federation/v1/media/thumbnail/{media_id}", get(media::thumbnail))
        .route("/_matrix/federation/v1/query/directory", get(directory::query_directory))
        .route(
            "/_matrix/federation/v1/publicRooms",
            get(directory::public_rooms).post(directory::public_rooms_filtered),
        )
        .route("/_matrix/federation/v1/send/{txn_id}", put(transactions::send))
        .route("/_matrix/federation/v1/event/{event_id}", get(events::event))
        .route("/_matrix/federation/v1/state/{room_id}", get(events::state))
        .route("/_matrix/federation/v1/state_ids/{room_id}", get(events::state_ids))
        .route("/_matrix/federation/v1/event_auth/{room_id}/{event_id}", get(events::event_auth))
        .route("/_matrix/federation/v1/backfill/{room_id}", get(events::backfill))
        .route("/_matrix/federation/v1/get_missing_events/{room_id}", post(events::get_missing_events))
        .route("/_matrix/federation/v1/make_join/{room_id}/{user_id}", get(membership::make_join))
        .route("/_matrix/federation/v1/send_join/{room_id}/{event_id}", put(membership::send_join_v1))
        .route("/_matrix/federation/v2/send_join/{room_id}/{event_id}", put(membership::send_join_v2))
        .route("/_matrix/federation/v1/make_leave/{room_id}/{user_id}", get(membership::make_leave))
        .route("/_matrix/federation/v1/send_leave/{room_id}/{event_id}", put(membership::send_leave_v1))
        .route("/_matrix/federation/v2/send_leave/{room_id}/{event_id}", put(membership::send_leave_v2))
        .route("/_matrix/federation/v1/make_knock/{room_id}/{user_id}", get(membership::make_knock))
        .route("/_matrix/federation/v1/send_knock/{room_id}/{event_id}", put(membership::send_knock))
        .route("/_matrix/federation/v1/invite/{room_id}/{event_id}", put(membership::invite_v1))
        .route("/_matrix/federation/v2/invite/{room_id}/{event_id}", put(membership::invite_v2))
        .route("/_matrix/federation/v1/user/keys/query", post(devices::query))
        .route("/_matrix/federation/v1/user/keys/claim", post(devices::claim))
        .route("/_matrix/federation/v1/user/devices/{user_id}", get(devices::user_devices))
}
