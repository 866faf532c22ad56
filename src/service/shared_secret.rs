//! Shared-secret registration, compatible with Synapse's `/_synapse/admin/v1/register`: admin
//! tools (`register_new_matrix_user`) and test suites (Complement) create accounts with it.
//!
//! A client first fetches a nonce, then posts the account with `mac`, the hex HMAC-SHA1 keyed with
//! the secret over `nonce \0 username \0 password \0 admin|notadmin [\0 user_type]`. Each nonce is
//! good for one attempt within a minute.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use super::secrets;
use crate::error::{Error, Result};

const NONCE_LIFETIME: Duration = Duration::from_secs(60);
const MAX_NONCES: usize = 10_000;

pub struct SharedSecretRegistration {
    secret: Option<String>,
    nonces: Mutex<HashMap<String, Instant>>,
}

/// The fields covered by the MAC.
pub struct SignedRequest<'a> {
    pub nonce: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub admin: bool,
    pub user_type: Option<&'a str>,
    pub mac: &'a str,
}

impl SharedSecretRegistration {
    pub fn new(secret: Option<String>) -> Self {
        Self { secret, nonces: Mutex::new(HashMap::new()) }
    }

    fn secret(&self) -> Result<&str> {
        self.secret
            .as_deref()
            .ok_or_else(|| Error::new(crate::error::ErrorKind::Unknown, "Shared secret registration is not enabled"))
    }

    pub fn new_nonce(&self) -> Result<String> {
        self.secret()?;
        let nonce = secrets::random_string(32);
        let mut nonces = self.nonces.lock().expect("nonce lock");
        nonces.retain(|_, issued| issued.elapsed() < NONCE_LIFETIME);
        if nonces.len() >= MAX_NONCES {
            return Err(Error::new(
                crate::error::ErrorKind::LimitExceeded { retry_after_ms: 10_000 },
                "Too many registration nonces outstanding",
            ));
        }
        nonces.insert(nonce.clone(), Instant::now());
        Ok(nonce)
    }

    /// Spends the nonce and checks the MAC.
    pub fn verify(&self, request: &SignedRequest<'_>) -> Result<()> {
        let secret = self.secret()?;
        let issued = self.nonces.lock().expect("nonce lock").remove(request.nonce);
        if issued.is_none_or(|at| at.elapsed() >= NONCE_LIFETIME) {
            return Err(Error::new(crate::error::ErrorKind::Unknown, "Unrecognised or expired nonce"));
        }
        let expected = hex::decode(request.mac).map_err(|_| Error::forbidden("HMAC incorrect"))?;
        mac_for(secret, request).verify_slice(&expected).map_err(|_| Error::forbidden("HMAC incorrect"))
    }
}

fn mac_for(secret: &str, request: &SignedRequest<'_>) -> Hmac<Sha1> {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    let role = if request.admin { "admin" } else { "notadmin" };
    let mut fields = vec![request.nonce, request.username, request.password, role];
    fields.extend(request.user_type);
    mac.update(fields.join("\0").as_bytes());
    mac
}

/// The hex MAC a client sends (used by the CLI and tests).
pub fn sign(secret: &str, request: &SignedRequest<'_>) -> String {
    hex::encode(mac_for(secret, request).finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(nonce: &'a str, mac: &'a str) -> SignedRequest<'a> {
        SignedRequest { nonce, username: "alice", password: "pw", admin: false, user_type: None, mac }
    }

    #[test]
    fn matches_synapse_mac_and_spends_nonces() {
        // The MAC of Synapse's documented algorithm, computed independently with Python's hmac:
        // hmac.new(b"secret", b"abc\x00alice\x00pw\x00notadmin", hashlib.sha1).hexdigest()
        assert_eq!(sign("secret", &request("abc", "")), "42e32623fe124933c326f9d2d67ff7c617915a10");
        let registration = SharedSecretRegistration::new(Some("secret".into()));
        let nonce = registration.new_nonce().unwrap();
        let mac = sign("secret", &request(&nonce, ""));
        registration.verify(&request(&nonce, &mac)).unwrap();
        assert!(registration.verify(&request(&nonce, &mac)).is_err(), "a nonce is good once");
        let nonce = registration.new_nonce().unwrap();
        assert!(registration.verify(&request(&nonce, "00")).is_err());
    }

    #[test]
    fn off_without_a_secret() {
        assert!(SharedSecretRegistration::new(None).new_nonce().is_err());
    }
}
