//! The client-server API, one file per area.

mod account;
mod account_data;
mod devices;
mod directory;
pub mod discovery;
mod ephemeral;
mod history;
mod keys;
pub mod media;
mod profile;
mod push_rules;
mod pushers;
mod register;
mod relations;
mod room_events;
mod room_keys;
mod rooms;
mod search;
pub mod session;
mod spaces;
mod sync;
mod to_device;
mod user_directory;
pub mod websocket;

use std::sync::Arc;

use axum::{
    Router,
    routing::{get, post, put},
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
        .route("/pushers", get(pushers::list))
        .route("/pushers/set", post(pushers::set))
        .route("/pushrules/", get(push_rules::all))
        .route("/pushrules/{scope}/", get(push_rules::global))
        .route(
            "/pushrules/{scope}/{kind}/{rule_id}",
            get(push_rules::get).put(push_rules::put).delete(push_rules::delete),
        )
        .route(
            "/pushrules/{scope}/{kind}/{rule_id}/{attribute}",
            get(push_rules::get_attribute).put(push_rules::set_attribute),
        )
        .merge(room_routes())
        .merge(e2ee_routes())
        .route("/sync", get(sync::sync))
        .route("/user/{user_id}/filter", post(sync::create_filter))
        .route("/user/{user_id}/filter/{filter_id}", get(sync::get_filter))
        .route("/rooms/{room_id}/messages", get(history::messages))
        .route("/rooms/{room_id}/context/{event_id}", get(history::context))
        .route("/rooms/{room_id}/typing/{user_id}", put(ephemeral::typing))
        .route("/rooms/{room_id}/receipt/{receipt_type}/{event_id}", post(ephemeral::receipt))
        .route("/rooms/{room_id}/read_markers", post(ephemeral::read_markers))
        .route("/presence/{user_id}/status", get(ephemeral::get_presence).put(ephemeral::set_presence))
        .route("/sendToDevice/{event_type}/{txn_id}", put(to_device::send))
        .route(
            "/user/{user_id}/rooms/{room_id}/account_data/{kind}",
            get(account_data::get_in_room).put(account_data::set_in_room),
        )
        .route("/user/{user_id}/rooms/{room_id}/tags", get(account_data::tags))
        .route(
            "/user/{user_id}/rooms/{room_id}/tags/{tag}",
            put(account_data::put_tag).delete(account_data::delete_tag),
        )
}

/// Rooms, their events and the directory.
fn room_routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/createRoom", post(rooms::create_room))
        .route("/join/{room_id_or_alias}", post(rooms::join_by_id_or_alias))
        .route("/knock/{room_id_or_alias}", post(rooms::knock))
        .route("/joined_rooms", get(rooms::joined_rooms))
        .route("/rooms/{room_id}/join", post(rooms::join_room))
        .route("/rooms/{room_id}/leave", post(rooms::leave))
        .route("/rooms/{room_id}/forget", post(rooms::forget))
        .route("/rooms/{room_id}/invite", post(rooms::invite))
        .route("/rooms/{room_id}/kick", post(rooms::kick))
        .route("/rooms/{room_id}/ban", post(rooms::ban))
        .route("/rooms/{room_id}/unban", post(rooms::unban))
        .route("/rooms/{room_id}/upgrade", post(rooms::upgrade))
        .route("/rooms/{room_id}/send/{event_type}", post(room_events::send_without_txn))
        .route("/rooms/{room_id}/send/{event_type}/{txn_id}", put(room_events::send))
        .route("/rooms/{room_id}/state", get(room_events::all_state))
        .route("/rooms/{room_id}/state/{event_type}", get(room_events::get_state).put(room_events::put_state))
        .route("/rooms/{room_id}/state/{event_type}/", get(room_events::get_state).put(room_events::put_state))
        .route(
            "/rooms/{room_id}/state/{event_type}/{state_key}",
            get(room_events::get_state).put(room_events::put_state),
        )
        .route("/rooms/{room_id}/redact/{event_id}", post(room_events::redact_without_txn))
        .route("/rooms/{room_id}/redact/{event_id}/{txn_id}", put(room_events::redact))
        .route("/rooms/{room_id}/event/{event_id}", get(room_events::event))
        .route("/rooms/{room_id}/members", get(room_events::members))
        .route("/rooms/{room_id}/joined_members", get(room_events::joined_members))
        .route("/rooms/{room_id}/aliases", get(directory::room_aliases))
        .route(
            "/directory/room/{alias}",
            get(directory::resolve_alias).put(directory::create_alias).delete(directory::delete_alias),
        )
        .route("/directory/list/room/{room_id}", get(directory::get_visibility).put(directory::set_visibility))
        .route("/directory/list/appservice/{network_id}/{room_id}", put(directory::set_appservice_visibility))
        .route("/publicRooms", get(directory::public_rooms).post(directory::search_public_rooms))
        .route("/user_directory/search", post(user_directory::search))
        .route("/search", post(search::search))
}

/// End-to-end encryption: keys, cross-signing, key backups.
fn e2ee_routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/keys/upload", post(keys::upload))
        .route("/keys/query", post(keys::query))
        .route("/keys/claim", post(keys::claim))
        .route("/keys/changes", get(keys::changes))
        .route("/keys/device_signing/upload", post(keys::device_signing_upload))
        .route("/keys/signatures/upload", post(keys::signatures_upload))
        .route("/room_keys/version", get(room_keys::current_version).post(room_keys::create_version))
        .route(
            "/room_keys/version/{version}",
            get(room_keys::get_version).put(room_keys::update_version).delete(room_keys::delete_version),
        )
        .route("/room_keys/keys", get(room_keys::get_all).put(room_keys::put_all).delete(room_keys::delete_all))
        .route(
            "/room_keys/keys/{room_id}",
            get(room_keys::get_room).put(room_keys::put_room).delete(room_keys::delete_room),
        )
        .route(
            "/room_keys/keys/{room_id}/{session_id}",
            get(room_keys::get_session).put(room_keys::put_session).delete(room_keys::delete_session),
        )
}

/// Endpoints under `/_matrix/client/v1`.
pub fn v1_routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/register/m.login.registration_token/validity", get(register::token_validity))
        .route("/rooms/{room_id}/relations/{event_id}", get(relations::relations))
        .route("/rooms/{room_id}/relations/{event_id}/{rel_type}", get(relations::relations))
        .route("/rooms/{room_id}/relations/{event_id}/{rel_type}/{event_type}", get(relations::relations))
        .route("/rooms/{room_id}/threads", get(relations::threads))
        .route("/rooms/{room_id}/hierarchy", get(spaces::hierarchy))
        .route("/media/config", get(media::config))
        .route("/media/download/{server_name}/{media_id}", get(media::download))
        // matrix-nio asks with a trailing slash when it gives no file name (Synapse accepts it).
        .route("/media/download/{server_name}/{media_id}/", get(media::download))
        .route("/media/download/{server_name}/{media_id}/{file_name}", get(media::download_named))
        .route("/media/thumbnail/{server_name}/{media_id}", get(media::thumbnail))
}

/// The deprecated media endpoints under `/_matrix/media/v3` (and `r0`): uploads, which have no
/// successor yet, and unauthenticated downloads.
pub fn media_routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/upload", post(media::upload))
        .route("/upload/{server_name}/{media_id}", put(media::upload_async))
        .route("/config", get(media::config))
        .route("/download/{server_name}/{media_id}", get(media::download_legacy))
        .route("/download/{server_name}/{media_id}/", get(media::download_legacy))
        .route("/download/{server_name}/{media_id}/{file_name}", get(media::download_legacy_named))
        .route("/thumbnail/{server_name}/{media_id}", get(media::thumbnail_legacy))
}
