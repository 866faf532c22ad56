//! Myelin, a Matrix homeserver.
//!
//! Requests flow one way: `api` (HTTP handlers) → `service` (logic) → `storage` (RocksDB).
//! `docs/architecture.md` is the map.

pub mod allocator;
pub mod api;
pub mod cli;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod server;
pub mod service;
pub mod storage;
pub mod tls;
