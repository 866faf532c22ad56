//! Accounts, devices and access tokens: registration, login, token checks, refresh, logout,
//! password changes and deactivation.
//!
//! Every request is authenticated through [`Accounts::authenticate`]: the token's SHA-256 is looked
//! up in a bounded cache, then in the `AccessTokens` column. Changes to a user's devices take that
//! user's lock, so two logins reusing one device ID cannot leave an orphaned token behind.

use std::{
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard, OnceCell};

use super::{e2ee::DeviceLists, now_ms, password, secrets};
use crate::{
    config::Config,
    error::{Error, ErrorKind, Result},
    storage::{AccessTokenRecord, Batch, DeviceRecord, LastSeen, RefreshTokenRecord, Storage, TokenHash, UserRecord},
};

/// Sessions kept in memory; a miss costs one RocksDB point lookup.
const SESSION_CACHE_CAPACITY: usize = 50_000;
/// How often a device's last-seen time is written, at most.
const LAST_SEEN_INTERVAL_MS: u64 = 60_000;
/// Lock stripes for per-user changes.
const USER_LOCKS: usize = 64;

/// The authenticated user and device behind a request.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub is_guest: bool,
    /// The application service acting (by its `as_token`), if any.
    pub appservice: Option<Arc<str>>,
}

/// Where a request came from, for the device list.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

struct CachedSession {
    session: Session,
    expires_ts: Option<u64>,
    last_seen_written: AtomicU64,
}

/// What a client asks for when it logs in or registers.
#[derive(Clone, Debug, Default)]
pub struct NewDevice {
    pub device_id: Option<OwnedDeviceId>,
    pub display_name: Option<String>,
    /// The client supports refresh tokens (and so gets an expiring access token).
    pub refresh_token: bool,
}

/// The result of a login.
#[derive(Clone, Debug)]
pub struct LoginTokens {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

/// A new account.
#[derive(Clone, Debug, Default)]
pub struct NewAccount {
    /// Already validated with [`Accounts::user_id_for_registration`].
    pub user_id: Option<OwnedUserId>,
    pub password: Option<String>,
    pub guest: bool,
    pub admin: bool,
    /// Defaults to the localpart, as Synapse does.
    pub displayname: Option<String>,
    /// Log the new account in on this device (absent for `inhibit_login`).
    pub login: Option<NewDevice>,
}

#[derive(Clone, Debug)]
pub struct Registered {
    pub user_id: OwnedUserId,
    pub login: Option<LoginTokens>,
}

/// A device as the device list shows it.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub device_id: OwnedDeviceId,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<u64>,
    pub last_seen_ip: Option<String>,
}

pub struct Accounts {
    config: Arc<Config>,
    storage: Arc<Storage>,
    /// A deleted or renamed device is a device-list change.
    device_lists: Arc<DeviceLists>,
    sessions: quick_cache::sync::Cache<TokenHash, Arc<CachedSession>>,
    /// Bumped after every token revocation; a cache fill that raced with one is dropped.
    revocations: AtomicU64,
    user_locks: Vec<Mutex<()>>,
    lock_hasher: RandomState,
    hasher: password::Hasher,
    /// A hash to verify against when the user does not exist, so that a login for a missing
    /// account takes as long as one with a wrong password.
    dummy_hash: OnceCell<String>,
}

impl Accounts {
    pub fn new(config: Arc<Config>, storage: Arc<Storage>, device_lists: Arc<DeviceLists>) -> Self {
        Self {
            config,
            storage,
            device_lists,
            sessions: quick_cache::sync::Cache::new(SESSION_CACHE_CAPACITY),
            revocations: AtomicU64::new(0),
            user_locks: (0..USER_LOCKS).map(|_| Mutex::new(())).collect(),
            lock_hasher: RandomState::new(),
            hasher: password::Hasher::default(),
            dummy_hash: OnceCell::new(),
        }
    }

    async fn lock_user(&self, user_id: &UserId) -> MutexGuard<'_, ()> {
        let stripe = self.lock_hasher.hash_one(user_id) as usize % USER_LOCKS;
        self.user_locks[stripe].lock().await
    }

    pub fn user(&self, user_id: &UserId) -> Result<Option<UserRecord>> {
        Ok(self.storage.user(user_id)?)
    }

    pub fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.config.server_name
    }

    // ----- authentication of requests -----

    /// Resolves an access token to its session. Expired tokens are refused with `soft_logout`, so
    /// the client refreshes instead of discarding its state.
    pub fn authenticate(&self, token: &str, client: &ClientInfo) -> Result<Session> {
        let hash = secrets::hash_token(token);
        let cached = match self.sessions.get(&hash) {
            Some(cached) => cached,
            None => self.load_session(&hash)?,
        };
        if cached.expires_ts.is_some_and(|expires| expires <= now_ms()) {
            return Err(Error::new(ErrorKind::UnknownToken { soft_logout: true }, "Access token has expired"));
        }
        self.touch(&cached, client);
        Ok(cached.session.clone())
    }

    fn load_session(&self, hash: &TokenHash) -> Result<Arc<CachedSession>> {
        let generation = self.revocations.load(Ordering::SeqCst);
        let unknown = || Error::new(ErrorKind::UnknownToken { soft_logout: false }, "Unknown access token");
        let mut record = self.storage.access_token(hash)?.ok_or_else(unknown)?;
        let user = self.storage.user(&record.user_id)?.ok_or_else(unknown)?;
        if let Some(replaced) = record.revokes_on_use.take() {
            // First use of a refreshed token: the refresh token it replaced is now spent.
            let mut batch = Batch::new();
            batch.delete_refresh_token(&replaced);
            batch.put_access_token(hash, &record);
            self.storage.commit_relaxed(batch)?;
        }
        let cached = Arc::new(CachedSession {
            session: Session {
                user_id: record.user_id,
                device_id: record.device_id,
                is_guest: user.guest,
                appservice: None,
            },
            expires_ts: record.expires_ts,
            last_seen_written: AtomicU64::new(0),
        });
        if self.revocations.load(Ordering::SeqCst) == generation {
            self.sessions.insert(*hash, cached.clone());
        }
        Ok(cached)
    }

    /// Records when and from where a device was used, at most once a minute per session.
    fn touch(&self, cached: &CachedSession, client: &ClientInfo) {
        let now = now_ms();
        let last = cached.last_seen_written.load(Ordering::Relaxed);
        if now.saturating_sub(last) < LAST_SEEN_INTERVAL_MS
            || cached.last_seen_written.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let seen = LastSeen { ts: now, ip: client.ip.clone(), user_agent: client.user_agent.clone() };
        let mut batch = Batch::new();
        batch.put_last_seen(&cached.session.user_id, &cached.session.device_id, &seen);
        if let Err(e) = self.storage.commit_relaxed(batch) {
            tracing::warn!(error = %e, "recording a device's last use failed");
        }
    }

    /// Drops revoked tokens from the cache. Call after the revoking write is committed.
    fn forget_tokens(&self, tokens: impl IntoIterator<Item = TokenHash>) {
        self.revocations.fetch_add(1, Ordering::SeqCst);
        for token in tokens {
            self.sessions.remove(&token);
        }
    }

    // ----- registration -----

    /// Validates a requested username and turns it into a user ID. Usernames are lower-cased, as
    /// Synapse does, then must match the user ID grammar.
    pub fn user_id_for_registration(&self, username: &str) -> Result<OwnedUserId> {
        let localpart = username.to_lowercase();
        let invalid = |why: &str| Error::new(ErrorKind::InvalidUsername, format!("Invalid username: {why}"));
        if localpart.is_empty() {
            return Err(invalid("it is empty"));
        }
        if !localpart.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'))
        {
            return Err(invalid("only a-z, 0-9, '.', '_', '=', '-', '/' and '+' are allowed"));
        }
        let user_id = format!("@{localpart}:{}", self.config.server_name);
        if user_id.len() > 255 {
            return Err(invalid("the user ID would be longer than 255 bytes"));
        }
        OwnedUserId::try_from(user_id).map_err(|e| invalid(&e.to_string()))
    }

    /// Fails with `M_USER_IN_USE` if the account exists (or existed: IDs are never reused).
    pub fn ensure_available(&self, user_id: &UserId) -> Result<()> {
        if self.storage.user_exists(user_id)? {
            return Err(Error::new(ErrorKind::UserInUse, "That user ID is already taken"));
        }
        Ok(())
    }

    /// Creates an account, its profile and, unless `inhibit_login`, its first device, in one write.
    pub async fn register(&self, account: NewAccount) -> Result<Registered> {
        let user_id = match account.user_id {
            Some(user_id) => user_id,
            None => self.generated_user_id()?,
        };
        let password_hash = match account.password {
            Some(password) => Some(self.hasher.hash(password).await?),
            None => None,
        };
        let _lock = self.lock_user(&user_id).await;
        self.ensure_available(&user_id)?;
        let mut batch = Batch::new();
        batch.put_user(
            &user_id,
            &UserRecord {
                password_hash,
                created_ts: now_ms(),
                admin: account.admin,
                guest: account.guest,
                ..Default::default()
            },
        );
        let displayname = account.displayname.unwrap_or_else(|| user_id.localpart().to_owned());
        batch.put_profile_field(&user_id, "displayname", &Value::String(displayname));
        let login = match account.login {
            Some(device) => Some(self.stage_login(&mut batch, &user_id, device)?.0),
            None => None,
        };
        self.storage.commit(batch).await?;
        tracing::info!(user = %user_id, guest = account.guest, "registered");
        Ok(Registered { user_id, login })
    }

    fn generated_user_id(&self) -> Result<OwnedUserId> {
        for _ in 0..8 {
            let user_id = UserId::new(&self.config.server_name);
            if !self.storage.user_exists(&user_id)? {
                return Ok(user_id);
            }
        }
        Err(Error::internal("could not find a free random user ID"))
    }

    // ----- login and logout -----

    /// Turns what a user typed ("alice", "@Alice:example.org") into one of our user IDs. Local
    /// parts are matched without regard to case, as every account here is lower case.
    pub fn user_id_for_login(&self, input: &str) -> Option<OwnedUserId> {
        let input = input.trim();
        let user_id = if input.starts_with('@') {
            let parsed = UserId::parse(input).ok()?;
            if !self.is_local(&parsed) {
                return None;
            }
            format!("@{}:{}", parsed.localpart().to_lowercase(), parsed.server_name())
        } else {
            format!("@{}:{}", input.to_lowercase(), self.config.server_name)
        };
        UserId::parse(user_id).ok()
    }

    /// Checks a user's password. Takes as long for a missing account as for a wrong password.
    pub async fn check_password(&self, user_id: Option<&UserId>, password: &str) -> Result<Option<UserRecord>> {
        let user = match user_id {
            Some(user_id) => self.storage.user(user_id)?,
            None => None,
        };
        let hash = match user.as_ref().and_then(|u| u.password_hash.clone()) {
            Some(hash) => hash,
            None => self.dummy_hash().await?,
        };
        let matches = self.hasher.verify(hash, password.to_owned()).await;
        Ok(user.filter(|u| matches && u.password_hash.is_some()))
    }

    async fn dummy_hash(&self) -> Result<String> {
        self.dummy_hash.get_or_try_init(|| self.hasher.hash(secrets::random_string(32))).await.cloned()
    }

    /// `m.login.password`: verifies the password and opens a session on a new or reused device.
    pub async fn login_with_password(&self, user: &str, password: &str, device: NewDevice) -> Result<LoginTokens> {
        let user_id = self.user_id_for_login(user);
        let record = self.check_password(user_id.as_deref(), password).await?;
        let (Some(user_id), Some(record)) = (user_id, record) else {
            return Err(Error::forbidden("Invalid username or password"));
        };
        if record.deactivated {
            return Err(Error::new(ErrorKind::UserDeactivated, "This account has been deactivated"));
        }
        self.login(&user_id, device).await
    }

    /// Opens a session for a user already authenticated some other way.
    pub async fn login(&self, user_id: &UserId, device: NewDevice) -> Result<LoginTokens> {
        let _lock = self.lock_user(user_id).await;
        let mut batch = Batch::new();
        let (tokens, revoked) = self.stage_login(&mut batch, user_id, device)?;
        self.storage.commit(batch).await?;
        self.forget_tokens(revoked);
        Ok(tokens)
    }

    /// Adds a device (or takes over an existing one of this user, revoking its tokens, as the spec
    /// says for a login that names a known device) with fresh tokens to `batch`. Returns the
    /// tokens and the hashes that stop being valid once the batch is committed.
    fn stage_login(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        device: NewDevice,
    ) -> Result<(LoginTokens, Vec<TokenHash>)> {
        let device_id = device.device_id.unwrap_or_else(|| secrets::new_device_id().into());
        let existing = self.storage.device(user_id, &device_id)?;
        let revoked: Vec<TokenHash> = existing
            .iter()
            .flat_map(|d| [d.access_token, d.refresh_token, d.previous_refresh_token])
            .flatten()
            .collect();
        if let Some(old) = &existing {
            // Delete the old tokens; the device itself is rewritten below.
            batch.delete_device(user_id, &device_id, old);
        }
        let (record, tokens) = self.mint_tokens(batch, user_id, &device_id, device.refresh_token, None);
        let record = DeviceRecord {
            display_name: existing.as_ref().map_or(device.display_name, |d| d.display_name.clone()),
            created_ts: existing.as_ref().map_or_else(now_ms, |d| d.created_ts),
            ..record
        };
        batch.put_device(user_id, &device_id, &record);
        Ok((tokens, revoked))
    }

    /// Creates an access token (and a refresh token if asked) for a device and stages them.
    fn mint_tokens(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        device_id: &DeviceId,
        with_refresh: bool,
        revokes_on_use: Option<TokenHash>,
    ) -> (DeviceRecord, LoginTokens) {
        let access_token = secrets::new_token("mya");
        let access_hash = secrets::hash_token(&access_token);
        let lifetime_ms = with_refresh
            .then(|| u64::try_from(self.config.auth.access_token_lifetime().as_millis()).unwrap_or(u64::MAX));
        batch.put_access_token(
            &access_hash,
            &AccessTokenRecord {
                user_id: user_id.to_owned(),
                device_id: device_id.to_owned(),
                expires_ts: lifetime_ms.map(|ms| now_ms().saturating_add(ms)),
                revokes_on_use,
            },
        );
        let refresh_token = with_refresh.then(|| secrets::new_token("myr"));
        let refresh_hash = refresh_token.as_deref().map(secrets::hash_token);
        if let Some(hash) = &refresh_hash {
            batch.put_refresh_token(
                hash,
                &RefreshTokenRecord { user_id: user_id.to_owned(), device_id: device_id.to_owned() },
            );
        }
        let record =
            DeviceRecord { access_token: Some(access_hash), refresh_token: refresh_hash, ..Default::default() };
        let tokens = LoginTokens {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            access_token,
            refresh_token,
            expires_in_ms: lifetime_ms,
        };
        (record, tokens)
    }

    /// `/refresh`: swaps a refresh token for new tokens. The old refresh token stays usable until
    /// the new tokens are used, so a client that never saw this answer can ask again.
    pub async fn refresh(&self, refresh_token: &str) -> Result<LoginTokens> {
        let hash = secrets::hash_token(refresh_token);
        let unknown = || Error::new(ErrorKind::UnknownToken { soft_logout: false }, "Unknown refresh token");
        let record = self.storage.refresh_token(&hash)?.ok_or_else(unknown)?;
        let _lock = self.lock_user(&record.user_id).await;
        let device = self.storage.device(&record.user_id, &record.device_id)?.ok_or_else(unknown)?;

        let mut batch = Batch::new();
        let mut revoked: Vec<TokenHash> = device.access_token.into_iter().collect();
        if device.refresh_token == Some(hash) {
            // The normal case: the refresh token before this one is now spent for good.
            revoked.extend(device.previous_refresh_token);
        } else if device.previous_refresh_token == Some(hash) {
            // A repeat: the tokens handed out last time were never used; replace them.
            revoked.extend(device.refresh_token);
        } else {
            return Err(unknown());
        }
        for token in &revoked {
            batch.delete_access_token(token);
            batch.delete_refresh_token(token);
        }
        let (fresh, tokens) = self.mint_tokens(&mut batch, &record.user_id, &record.device_id, true, Some(hash));
        batch.put_device(
            &record.user_id,
            &record.device_id,
            &DeviceRecord {
                display_name: device.display_name,
                created_ts: device.created_ts,
                previous_refresh_token: Some(hash),
                ..fresh
            },
        );
        self.storage.commit(batch).await?;
        self.forget_tokens(revoked);
        Ok(tokens)
    }

    /// Deletes the session's device and so its tokens.
    pub async fn logout(&self, session: &Session) -> Result<()> {
        self.delete_devices(&session.user_id, std::slice::from_ref(&session.device_id)).await
    }

    /// Deletes every device of the user.
    pub async fn logout_all(&self, user_id: &UserId) -> Result<()> {
        self.delete_devices_except(user_id, None).await
    }

    // ----- devices -----

    pub fn devices(&self, user_id: &UserId) -> Result<Vec<DeviceInfo>> {
        let mut last_seen = self.storage.last_seen(user_id)?;
        Ok(self
            .storage
            .devices(user_id)?
            .into_iter()
            .map(|(device_id, record)| {
                let seen = last_seen.remove(&device_id);
                DeviceInfo {
                    display_name: record.display_name,
                    last_seen_ts: seen.as_ref().map(|s| s.ts),
                    last_seen_ip: seen.and_then(|s| s.ip),
                    device_id,
                }
            })
            .collect())
    }

    pub fn device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<DeviceInfo> {
        self.devices(user_id)?
            .into_iter()
            .find(|d| d.device_id == device_id)
            .ok_or_else(|| Error::not_found("Device not found"))
    }

    /// Renames a device; `None` leaves the name as it is.
    pub async fn rename_device(&self, user_id: &UserId, device_id: &DeviceId, name: Option<String>) -> Result<()> {
        let _lock = self.lock_user(user_id).await;
        let mut record =
            self.storage.device(user_id, device_id)?.ok_or_else(|| Error::not_found("Device not found"))?;
        if name.is_none() {
            return Ok(());
        }
        if record.display_name == name {
            return Ok(());
        }
        record.display_name = name;
        let mut batch = Batch::new();
        batch.put_device(user_id, device_id, &record);
        // Others see device names in `/keys/query`.
        self.device_lists.stage(&mut batch, user_id, Some(device_id), false)?;
        self.storage.commit(batch).await?;
        self.device_lists.committed(user_id);
        Ok(())
    }

    /// Deletes the given devices with their tokens and end-to-end encryption keys; unknown ones
    /// are skipped.
    pub async fn delete_devices(&self, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> Result<()> {
        let _lock = self.lock_user(user_id).await;
        let mut batch = Batch::new();
        let mut revoked = Vec::new();
        let mut deleted = Vec::new();
        for device_id in device_ids {
            if let Some(record) = self.storage.device(user_id, device_id)? {
                revoked.extend(record.access_token);
                self.stage_delete_device(&mut batch, user_id, device_id, &record)?;
                deleted.push(device_id.as_ref());
            }
        }
        self.stage_device_list_change(&mut batch, user_id, &deleted)?;
        self.commit_deletions(batch, user_id, revoked).await
    }

    /// Stages a device's deletion: its record, tokens, pushers and end-to-end encryption keys.
    fn stage_delete_device(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        device_id: &DeviceId,
        record: &DeviceRecord,
    ) -> Result<()> {
        batch.delete_device(user_id, device_id, record);
        self.storage.delete_device_pushers(batch, user_id, device_id)?;
        Ok(self.storage.delete_device_keys(batch, user_id, device_id)?)
    }

    /// Stages the device-list change of deleting devices (one change, naming the device when
    /// there is one).
    fn stage_device_list_change(&self, batch: &mut Batch, user_id: &UserId, deleted: &[&DeviceId]) -> Result<()> {
        match deleted {
            [] => Ok(()),
            [one] => self.device_lists.stage(batch, user_id, Some(one), true),
            _ => self.device_lists.stage(batch, user_id, None, true),
        }
    }

    /// Commits a batch that deleted devices (if it did), then forgets their tokens and tells
    /// those tracking the user's devices.
    async fn commit_deletions(&self, batch: Batch, user_id: &UserId, revoked: Vec<TokenHash>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.storage.commit(batch).await?;
        self.forget_tokens(revoked);
        self.device_lists.committed(user_id);
        Ok(())
    }

    /// Deletes every device of the user but `keep`.
    async fn delete_devices_except(&self, user_id: &UserId, keep: Option<&DeviceId>) -> Result<()> {
        let _lock = self.lock_user(user_id).await;
        let mut batch = Batch::new();
        let revoked = self.stage_delete_devices_except(&mut batch, user_id, keep)?;
        self.commit_deletions(batch, user_id, revoked).await
    }

    fn stage_delete_devices_except(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        keep: Option<&DeviceId>,
    ) -> Result<Vec<TokenHash>> {
        let mut revoked = Vec::new();
        let mut deleted = Vec::new();
        for (device_id, record) in self.storage.devices(user_id)? {
            if Some(&*device_id) != keep {
                revoked.extend(record.access_token);
                self.stage_delete_device(batch, user_id, &device_id, &record)?;
                deleted.push(device_id);
            }
        }
        let deleted: Vec<&DeviceId> = deleted.iter().map(|d| &**d).collect();
        self.stage_device_list_change(batch, user_id, &deleted)?;
        Ok(revoked)
    }

    // ----- password and deactivation -----

    /// Sets a new password; with `logout_others`, every other device is logged out in the same
    /// write.
    pub async fn change_password(&self, session: &Session, new_password: String, logout_others: bool) -> Result<()> {
        let hash = self.hasher.hash(new_password).await?;
        let user_id = &session.user_id;
        let _lock = self.lock_user(user_id).await;
        let mut user = self.storage.user(user_id)?.ok_or_else(|| Error::not_found("Unknown user"))?;
        user.password_hash = Some(hash);
        let mut batch = Batch::new();
        batch.put_user(user_id, &user);
        let revoked = if logout_others {
            self.stage_delete_devices_except(&mut batch, user_id, Some(&session.device_id))?
        } else {
            Vec::new()
        };
        let deleted = !revoked.is_empty();
        self.storage.commit(batch).await?;
        self.forget_tokens(revoked);
        if deleted {
            self.device_lists.committed(user_id);
        }
        tracing::info!(user = %user_id, "password changed");
        Ok(())
    }

    /// Deactivates an account for good: no password, no devices, and with `erase` no profile.
    pub async fn deactivate(&self, user_id: &UserId, erase: bool) -> Result<()> {
        let _lock = self.lock_user(user_id).await;
        let mut user = self.storage.user(user_id)?.ok_or_else(|| Error::not_found("Unknown user"))?;
        user.deactivated = true;
        user.erased |= erase;
        user.password_hash = None;
        let mut batch = Batch::new();
        batch.put_user(user_id, &user);
        let revoked = self.stage_delete_devices_except(&mut batch, user_id, None)?;
        if erase {
            for field in self.storage.profile(user_id)?.keys() {
                batch.delete_profile_field(user_id, field);
            }
        }
        self.storage.commit(batch).await?;
        self.forget_tokens(revoked);
        self.device_lists.committed(user_id);
        tracing::info!(user = %user_id, erase, "deactivated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn accounts(dir: &std::path::Path) -> Accounts {
        let config = Config::load(
            None,
            [
                ("MYELIN_SERVER_NAME".to_owned(), "example.org".to_owned()),
                ("MYELIN_DATABASE__PATH".to_owned(), dir.to_str().unwrap().to_owned()),
            ],
        )
        .unwrap();
        let storage = Arc::new(Storage::open(&config.database).unwrap());
        let device_lists = Arc::new(DeviceLists::new(storage.clone(), Default::default()));
        Accounts::new(Arc::new(config), storage, device_lists)
    }

    #[tokio::test]
    async fn secrets_are_stored_only_as_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = accounts(dir.path());
        let user_id = accounts.user_id_for_registration("alice").unwrap();
        let registered = accounts
            .register(NewAccount {
                user_id: Some(user_id.clone()),
                password: Some("correct horse battery".into()),
                login: Some(NewDevice { refresh_token: true, ..Default::default() }),
                ..Default::default()
            })
            .await
            .unwrap();
        let login = registered.login.unwrap();
        let record = accounts.storage.user(&user_id).unwrap().unwrap();
        assert!(record.password_hash.unwrap().starts_with("$argon2id$"));
        for secret in [login.access_token.as_str(), login.refresh_token.as_deref().unwrap(), "correct horse battery"] {
            assert!(!accounts.storage.contains_bytes(secret.as_bytes()), "a secret is stored in clear");
        }
        // The token works, and its hash is what the database holds.
        let session = accounts.authenticate(&login.access_token, &ClientInfo::default()).unwrap();
        assert_eq!(session.user_id, user_id);
        assert!(accounts.storage.access_token(&secrets::hash_token(&login.access_token)).unwrap().is_some());
    }

    #[tokio::test]
    async fn a_revoked_token_is_not_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = accounts(dir.path());
        let user_id = accounts.user_id_for_registration("bob").unwrap();
        let registered = accounts
            .register(NewAccount {
                user_id: Some(user_id),
                password: Some("pw".into()),
                login: Some(NewDevice::default()),
                ..Default::default()
            })
            .await
            .unwrap();
        let token = registered.login.unwrap().access_token;
        let session = accounts.authenticate(&token, &ClientInfo::default()).unwrap();
        // Cached now; logging out must still make it fail at once.
        accounts.authenticate(&token, &ClientInfo::default()).unwrap();
        accounts.logout(&session).await.unwrap();
        let error = accounts.authenticate(&token, &ClientInfo::default()).unwrap_err();
        assert_eq!(error.kind(), Some(&ErrorKind::UnknownToken { soft_logout: false }));
    }
}
