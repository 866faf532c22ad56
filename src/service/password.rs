//! Password hashing with argon2id. A hash takes tens of milliseconds and 19 MiB on purpose, so it
//! runs on the blocking pool, never on the async workers, and at most one per CPU at a time: more
//! would not finish sooner, only hold more memory.

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Longest password accepted; argon2 does not care, but a megabyte "password" is an attack.
pub const MAX_PASSWORD_LEN: usize = 512;

pub struct Hasher {
    permits: Semaphore,
}

impl Default for Hasher {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        Self { permits: Semaphore::new(cpus) }
    }
}

impl Hasher {
    /// Runs `work` on the blocking pool once a CPU is free for it.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let _permit = self.permits.acquire().await.map_err(|_| Error::internal("password hasher closed"))?;
        tokio::task::spawn_blocking(work).await.map_err(|e| Error::internal(format!("password hashing task: {e}")))
    }

    pub async fn hash(&self, password: String) -> Result<String> {
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| Error::internal(format!("hashing a password: {e}")))
        })
        .await?
    }

    /// Whether `password` matches the PHC string `hash`.
    pub async fn verify(&self, hash: String, password: String) -> bool {
        self.run(move || {
            PasswordHash::new(&hash)
                .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::Hasher;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let hasher = Hasher::default();
        let a = hasher.hash("correct horse".into()).await.unwrap();
        let b = hasher.hash("correct horse".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "each hash has its own salt");
        assert!(hasher.verify(a.clone(), "correct horse".into()).await);
        assert!(!hasher.verify(a, "wrong".into()).await);
        assert!(!hasher.verify("not a hash".into(), "x".into()).await);
    }
}
