//! The logic of the server, free of HTTP: the API layer parses and authorizes, then calls in here;
//! services read and write through `storage`.

pub mod account_data;
pub mod accounts;
pub mod appservice;
mod auto_join;
pub mod e2ee;
pub mod federation;
pub mod filters;
pub mod keys;
pub mod locks;
pub mod media;
pub mod notifier;
pub mod password;
pub mod presence;
pub mod profiles;
pub mod push_rules;
pub mod pushers;
pub mod rate_limit;
pub mod rooms;
pub mod secrets;
pub mod shared_secret;
pub mod sync;
pub mod to_device;
pub mod typing;
pub mod uia;

use std::sync::Arc;

use crate::{config::Config, storage::Storage};

/// Every service, built once at start and shared by all requests.
pub struct Services {
    pub config: Arc<Config>,
    pub storage: Arc<Storage>,
    pub accounts: accounts::Accounts,
    pub keys: Arc<keys::ServerKeys>,
    pub rooms: rooms::Rooms,
    pub uia: uia::Uia,
    pub profiles: profiles::Profiles,
    pub account_data: account_data::AccountData,
    pub rate_limits: rate_limit::RateLimits,
    pub notifier: Arc<notifier::Notifier>,
    pub filters: filters::Filters,
    /// Turns true at shutdown, so that waiting syncs answer at once.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub serial: Arc<typing::EphemeralSerial>,
    pub typing: typing::Typing,
    pub presence: presence::Presence,
    pub to_device: to_device::ToDevice,
    /// Lazy-loaded members each device was sent.
    pub lazy_members: sync::lazy::SentMembers,
    pub shared_secret: shared_secret::SharedSecretRegistration,
    /// Other homeservers: discovery, the outbound client, their keys.
    pub federation: federation::Federation,
    /// Transactions other servers send: one per origin at a time.
    pub inbound: federation::inbound::Inbound,
    /// End-to-end encryption: the key server.
    pub e2ee: e2ee::E2ee,
    /// Who must refetch whose device keys (sync, `/keys/changes`, federation).
    pub device_lists: Arc<e2ee::DeviceLists>,
    /// Server-side room key backups.
    pub key_backup: e2ee::backup::KeyBackup,
    /// The media repository.
    pub media: media::Media,
    /// Application services: registrations, identity assertion, event delivery.
    pub appservices: Arc<appservice::AppServices>,
    /// Pushers and the delivery of notifications to push gateways.
    pub pushers: Arc<pushers::Pushers>,
    /// Held while an auto-join room is created, so that concurrent registrations make one.
    auto_join_creation: tokio::sync::Mutex<()>,
}

impl Services {
    /// Builds every service over an open database (generating the signing key on first start).
    pub async fn new(config: Config, storage: Storage) -> crate::error::Result<Arc<Self>> {
        let config = Arc::new(config);
        let storage = Arc::new(storage);
        let keys = Arc::new(keys::ServerKeys::load_or_generate(&storage).await?);
        let federation = federation::Federation::new(&config, storage.clone(), keys.clone())?;
        let notifier = Arc::new(notifier::Notifier::default());
        let serial = Arc::new(typing::EphemeralSerial::default());
        let device_lists = Arc::new(e2ee::DeviceLists::new(storage.clone(), notifier.clone()));
        let media = media::Media::new(config.clone(), storage.clone(), federation.client.clone())?;
        let appservices = Arc::new(appservice::AppServices::load(&config, storage.clone())?);
        let pushers = Arc::new(pushers::Pushers::new(&config, storage.clone())?);
        Ok(Arc::new(Self {
            rooms: rooms::Rooms::new(
                config.clone(),
                storage.clone(),
                keys.clone(),
                notifier.clone(),
                federation.sender.clone(),
                appservices.clone(),
                pushers.clone(),
            ),
            appservices,
            pushers,
            filters: filters::Filters::new(storage.clone()),
            keys,
            accounts: accounts::Accounts::new(config.clone(), storage.clone(), device_lists.clone()),
            uia: uia::Uia::new(config.auth.uia_session_lifetime()),
            profiles: profiles::Profiles::new(config.clone(), storage.clone()),
            account_data: account_data::AccountData::new(storage.clone(), notifier.clone()),
            to_device: to_device::ToDevice::new(
                storage.clone(),
                notifier.clone(),
                config.server_name.clone(),
                federation.sender.clone(),
            ),
            lazy_members: sync::lazy::SentMembers::default(),
            notifier,
            shutdown: tokio::sync::watch::channel(false).0,
            typing: typing::Typing::new(serial.clone()),
            presence: presence::Presence::new(serial.clone(), config.presence.clone()),
            serial,
            rate_limits: rate_limit::RateLimits::new(&config.rate_limits),
            shared_secret: shared_secret::SharedSecretRegistration::new(config.registration.shared_secret.clone()),
            federation,
            inbound: federation::inbound::Inbound::default(),
            e2ee: e2ee::E2ee::new(config.server_name.clone(), storage.clone(), device_lists.clone()),
            device_lists,
            key_backup: e2ee::backup::KeyBackup::new(storage.clone()),
            media,
            auto_join_creation: tokio::sync::Mutex::new(()),
            config,
            storage,
        }))
    }
}

impl Services {
    /// Wakes everyone who shares a room with `user` (after a presence change), and tells the
    /// other servers among them.
    pub fn notify_peers(&self, user: &ruma::UserId) {
        for room in self.rooms.joined_rooms(user).unwrap_or_default() {
            self.rooms.notify_members(&room, std::iter::empty());
        }
        self.federate_presence(user);
    }

    /// The user did something (sent, typed, read): they are present.
    pub fn mark_active(&self, user: &ruma::UserId) {
        if self.presence.on_activity(user) {
            self.notify_peers(user);
        }
    }

    /// Applies presence transitions (idle, silence) every few seconds until shutdown. Holds the
    /// services weakly, so that it never keeps them (and the database) alive.
    pub async fn run_presence_sweeps(services: std::sync::Weak<Self>) {
        let every = match services.upgrade() {
            Some(services) if services.config.presence.enabled => {
                let presence = &services.config.presence;
                presence.idle_after_secs.min(presence.offline_after_secs).min(10).div_ceil(2)
            }
            _ => return,
        };
        let mut ticks = tokio::time::interval(std::time::Duration::from_secs(every));
        loop {
            ticks.tick().await;
            let Some(services) = services.upgrade() else { return };
            if *services.shutdown.borrow() {
                return;
            }
            for user in services.presence.sweep() {
                services.notify_peers(&user);
            }
        }
    }
}

/// The plain HTTP client of outbound requests to what the configuration names (application
/// services): no X-Matrix, the federation time limit.
pub fn outbound_http_client(config: &Config) -> crate::error::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(config.federation.request_timeout_secs))
        .build()
        .map_err(|e| crate::error::Error::internal(format!("HTTP client: {e}")))
}

/// Milliseconds since the Unix epoch, the unit of every Matrix timestamp.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
