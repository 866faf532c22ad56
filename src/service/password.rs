//! Password hashing with argon2id. Hashing is deliberately slow (tens of milliseconds), so it runs
//! on the blocking pool, never on the async workers.

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};

use crate::error::{Error, Result};

/// Longest password accepted; argon2 does not care, but a megabyte "password" is an attack.
pub const MAX_PASSWORD_LEN: usize = 512;

pub async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| Error::internal(format!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| Error::internal(format!("password hashing task: {e}")))?
}

/// Whether `password` matches the PHC string `hash`.
pub async fn verify(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let a = super::hash("correct horse".into()).await.unwrap();
        let b = super::hash("correct horse".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "each hash has its own salt");
        assert!(super::verify(a.clone(), "correct horse".into()).await);
        assert!(!super::verify(a, "wrong".into()).await);
        assert!(!super::verify("not a hash".into(), "x".into()).await);
    }
}
