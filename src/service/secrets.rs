//! Random tokens and identifiers, and the hashes under which tokens are stored.

use rand::{Rng, RngExt};
use sha2::{Digest, Sha256};

use crate::storage::TokenHash;

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new secret token: a prefix that tells its kind in logs and leaks, then 256 random bits.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// Tokens carry 256 random bits, so one SHA-256 is enough to make a stolen database useless for
/// logging in; a slow password hash would only cost time on every request.
pub fn hash_token(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// A random string from `[A-Za-z0-9]` (session IDs, nonces).
pub fn random_string(len: usize) -> String {
    random_from(ALPHANUMERIC, len)
}

/// A device ID in the style clients are used to: ten upper-case letters.
pub fn new_device_id() -> String {
    random_from(&ALPHANUMERIC[..26], 10)
}

fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let a = new_token("mat");
        let b = new_token("mat");
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert!(new_device_id().chars().all(|c| c.is_ascii_uppercase()));
    }
}
