//! The server's signing key: an ed25519 key generated on first start and kept in the database.
//! Every event this server creates is signed with it.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, RoomVersionId,
    serde::Base64,
    signatures::{Ed25519KeyPair, KeyPair},
};

use crate::{
    error::{Error, Result},
    service::rooms::pdu::rules_of,
    storage::{Batch, Storage},
};

const META_KEY: &str = "signing_key";

/// The key and the ID under which it signs (`ed25519:<version>`).
pub struct ServerKeys {
    pair: Ed25519KeyPair,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredKey {
    version: String,
    /// PKCS#8 DER of the key pair.
    pkcs8: Base64,
}

impl ServerKeys {
    /// Loads the key, or generates and stores one on first start.
    pub async fn load_or_generate(storage: &Arc<Storage>) -> Result<Self> {
        if let Some(bytes) = storage.meta(META_KEY)? {
            let stored: StoredKey = serde_json::from_slice(&bytes)
                .map_err(|e| Error::internal(format!("the stored signing key is unreadable: {e}")))?;
            return Self::from_stored(stored);
        }
        let stored = StoredKey {
            version: crate::service::secrets::random_string(6),
            pkcs8: Base64::new(Ed25519KeyPair::generate().to_vec()),
        };
        let mut batch = Batch::new();
        batch.put_meta(META_KEY, serde_json::to_vec(&stored).expect("serializable"));
        let keys = Self::from_stored(stored)?;
        storage.commit(batch).await?;
        tracing::info!(key_id = %keys.key_id(), "generated the server signing key");
        Ok(keys)
    }

    /// A key from its 32-byte ed25519 seed (the form the spec's test vectors give), for tests
    /// and tools.
    pub fn from_seed(version: &str, seed: &[u8; 32]) -> Result<Self> {
        // PKCS#8 v1 of an ed25519 private key: a fixed header, then the seed.
        let mut der = hex::decode("302e020100300506032b657004220420").expect("constant");
        der.extend_from_slice(seed);
        Self::from_stored(StoredKey { version: version.to_owned(), pkcs8: Base64::new(der) })
    }

    fn from_stored(stored: StoredKey) -> Result<Self> {
        let pair = Ed25519KeyPair::from_der(stored.pkcs8.as_bytes(), stored.version)
            .map_err(|e| Error::internal(format!("the stored signing key is invalid: {e}")))?;
        Ok(Self { pair })
    }

    /// `ed25519:<version>`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.pair.public_key()
    }

    /// Adds the content hash and this server's signature to an event.
    pub fn hash_and_sign(
        &self,
        server_name: &str,
        event: &mut CanonicalJsonObject,
        version: &RoomVersionId,
    ) -> Result<()> {
        let rules = rules_of(version)?;
        ruma::signatures::hash_and_sign_event(server_name, &self.pair, event, &rules.redaction)
            .map_err(|e| Error::internal(format!("signing an event: {e}")))
    }

    /// Adds this server's signature to an event another server made (invites of our users,
    /// joins we authorise), leaving its hashes as they are.
    pub fn sign_event(
        &self,
        server_name: &str,
        event: &mut CanonicalJsonObject,
        version: &RoomVersionId,
    ) -> Result<()> {
        let rules = rules_of(version)?;
        ruma::signatures::sign_event(server_name, &self.pair, event, &rules.redaction)
            .map_err(|e| Error::internal(format!("signing an event: {e}")))
    }

    pub fn pair(&self) -> &impl KeyPair {
        &self.pair
    }

    /// The key pair itself, for ruma's X-Matrix request signing.
    pub fn ed25519(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    /// Adds this server's signature to any JSON object (key responses, notary answers).
    pub fn sign_json(&self, server_name: &str, object: &mut CanonicalJsonObject) -> Result<()> {
        ruma::signatures::sign_json(server_name, &self.pair, object)
            .map_err(|e| Error::internal(format!("signing JSON: {e}")))
    }

    /// What `/_matrix/key/v2/server` publishes: our key, valid until `valid_until_ts`, signed.
    /// There are no old keys yet: the key never changes.
    pub fn signed_key_response(&self, server_name: &str, valid_until_ts: u64) -> Result<CanonicalJsonObject> {
        let key: Base64 = Base64::new(self.public_key().to_vec());
        let key = key.encode();
        let value = serde_json::json!({
            "server_name": server_name,
            "verify_keys": { self.key_id(): { "key": key } },
            "old_verify_keys": {},
            "valid_until_ts": valid_until_ts,
        });
        let mut object: CanonicalJsonObject =
            serde_json::from_value(value).map_err(|e| Error::internal(format!("key response: {e}")))?;
        self.sign_json(server_name, &mut object)?;
        Ok(object)
    }
}
