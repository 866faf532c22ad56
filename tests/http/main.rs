//! HTTP tests against a real running Myelin (see `server.rs` for the harness).

mod account;
mod account_data;
mod authorization;
mod cli;
mod crash;
mod devices;
mod ephemeral;
mod errors;
mod federation;
mod federation_rooms;
mod history;
mod keys;
mod login;
mod profile;
mod push_rules;
mod registration;
mod rooms_api;
mod rooms_auth;
mod search;
mod server;
mod shutdown;
mod spaces;
mod sync;
mod sync_filters;
mod user_directory;
mod websocket;
