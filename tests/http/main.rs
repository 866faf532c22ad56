//! HTTP tests against a real running Myelin (see `server.rs` for the harness).

mod account;
mod account_data;
mod cli;
mod devices;
mod errors;
mod login;
mod profile;
mod registration;
mod server;
mod shutdown;
