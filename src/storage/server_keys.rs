//! Other servers' signing keys (`ServerKeys`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Batch, Column, Storage, StorageError, key};

/// One public key of another server, as last fetched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredServerKey {
    /// The ed25519 public key, unpadded base64 as published.
    pub key: String,
    /// Until when the key may sign requests and events: the response's `valid_until_ts`, capped
    /// at seven days after we fetched it (as the spec asks).
    pub valid_until_ts: u64,
    /// For a key the server lists in `old_verify_keys`: when it stopped using it.
    pub expired_ts: Option<u64>,
    /// The server's signed response that listed the key, kept to answer notary queries.
    pub response: Value,
}

impl Storage {
    /// Every stored key of `server`, by key ID.
    pub fn server_keys(&self, server: &str) -> Result<Vec<(String, StoredServerKey)>, StorageError> {
        self.scan_json(Column::ServerKeys, &key::server_keys_prefix(server))?
            .into_iter()
            .map(|(k, record)| Ok((key::key_id_of_server_key(&k)?.to_owned(), record)))
            .collect()
    }
}

impl Batch {
    pub fn put_server_key(&mut self, server: &str, key_id: &str, record: &StoredServerKey) {
        self.put_json(Column::ServerKeys, key::server_key(server, key_id), record);
    }
}
