//! Application services (the spec's Application Service API; Synapse is the model): bridges and
//! bots registered by a YAML file (`app_services.registration_files`).
//!
//! **Who they are.** A request bearing a registration's `as_token` acts as its `sender_localpart`
//! user or, with `?user_id=`, as any local user in its user namespaces (identity assertion). Users
//! in a namespace a registration holds exclusively may be registered by that service only
//! (`M_EXCLUSIVE` for everyone else).
//!
//! **What they hear.** Every timeline event that concerns a service (its sender or, for member
//! events, its target in the user namespaces; the room in the room namespaces; one of the room's
//! aliases in the alias namespaces; or a joined member in the user namespaces) is queued for it
//! in `AppServiceQueue`, in the same atomic batch as the event, so nothing a client saw is missing
//! from the queue. One task per service sends the oldest queued events (at most
//! [`MAX_EVENTS`]) as a transaction, `PUT {url}/_matrix/app/v1/transactions/{txnId}` with the
//! `hs_token`, and deletes them once the service answered 200. A failed transaction is sent
//! again unchanged (same ID, so the service can deduplicate) after the federation sender's
//! backoff (`federation.retry_min_ms`, doubling up to `retry_max_secs`). Queues survive
//! restarts; the tasks look at them again at start. An unknown alias of an exclusive namespace
//! is asked of its service (`GET {url}/_matrix/app/v1/rooms/{alias}`) before it is refused.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use regex::Regex;
use ruma::{OwnedUserId, RoomAliasId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::{
    config::Config,
    error::{Error, ErrorKind, Result},
    service::{Services, accounts::Session, federation::sender::Backoff, rooms::Pdu},
    storage::{Batch, QueuedPdu, Sequence, Storage},
};

/// Most events in one transaction.
pub const MAX_EVENTS: usize = 100;

/// A registration file, as Synapse reads it.
#[derive(Clone, Debug, Deserialize)]
pub struct Registration {
    pub id: String,
    /// Where the service listens; none for a service that only acts and hears nothing.
    #[serde(default)]
    pub url: Option<String>,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    #[serde(default)]
    pub namespaces: Namespaces,
    /// Whether the service's requests count against rate limits (Synapse's default: yes).
    #[serde(default = "yes")]
    pub rate_limited: bool,
    #[serde(default)]
    pub protocols: Vec<String>,
    #[serde(default)]
    pub receive_ephemeral: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Namespaces {
    #[serde(default)]
    pub users: Vec<Namespace>,
    #[serde(default)]
    pub aliases: Vec<Namespace>,
    #[serde(default)]
    pub rooms: Vec<Namespace>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Namespace {
    #[serde(default)]
    pub exclusive: bool,
    pub regex: String,
}

/// Compiled namespaces: `(exclusive, regex)`.
struct Patterns(Vec<(bool, Regex)>);

impl Patterns {
    fn compile(id: &str, kind: &str, namespaces: &[Namespace]) -> std::result::Result<Self, String> {
        namespaces
            .iter()
            .map(|ns| {
                // Anchored at the start only, as Synapse's `re.match`.
                Regex::new(&format!("^(?:{})", ns.regex))
                    .map(|re| (ns.exclusive, re))
                    .map_err(|e| format!("application service {id}: bad {kind} regex `{}`: {e}", ns.regex))
            })
            .collect::<std::result::Result<_, _>>()
            .map(Patterns)
    }

    fn matches(&self, value: &str) -> bool {
        self.0.iter().any(|(_, re)| re.is_match(value))
    }

    fn exclusive(&self, value: &str) -> bool {
        self.0.iter().any(|(exclusive, re)| *exclusive && re.is_match(value))
    }
}

/// One registered service and its delivery state.
pub struct AppService {
    pub registration: Registration,
    pub sender: OwnedUserId,
    users: Patterns,
    aliases: Patterns,
    rooms: Patterns,
    wake: Notify,
    /// The lowest queue number woken since the task last scanned (numbers are allocated before
    /// their batch commits, so one may appear below where the last scan reached).
    woken: Mutex<Option<u64>>,
}

impl AppService {
    /// Whether `user` is the service's sender or in its user namespaces.
    pub fn is_user_in_namespace(&self, user: &UserId) -> bool {
        *user == self.sender || self.users.matches(user.as_str())
    }

    pub fn is_exclusive_user(&self, user: &UserId) -> bool {
        *user == self.sender || self.users.exclusive(user.as_str())
    }

    pub fn is_exclusive_alias(&self, alias: &RoomAliasId) -> bool {
        self.aliases.exclusive(alias.as_str())
    }
}

pub struct AppServices {
    storage: Arc<Storage>,
    services: Vec<Arc<AppService>>,
    by_token: HashMap<String, usize>,
    client: reqwest::Client,
    backoff: Backoff,
}

impl AppServices {
    /// Reads and checks the registration files named in the configuration.
    pub fn load(config: &Config, storage: Arc<Storage>) -> Result<Self> {
        let mut registrations = Vec::new();
        for file in &config.app_services.registration_files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Error::internal(format!("cannot read application service file {file}: {e}")))?;
            registrations.push(
                parse_registration(&text)
                    .map_err(|e| Error::internal(format!("application service file {file}: {e}")))?,
            );
        }
        Self::new(config, storage, registrations)
    }

    pub fn new(config: &Config, storage: Arc<Storage>, registrations: Vec<Registration>) -> Result<Self> {
        let mut services = Vec::new();
        let mut by_token = HashMap::new();
        for registration in registrations {
            let id = registration.id.clone();
            let sender = UserId::parse(format!("@{}:{}", registration.sender_localpart, config.server_name))
                .map_err(|e| Error::internal(format!("application service {id}: bad sender_localpart: {e}")))?;
            let compile = |kind, ns: &[Namespace]| Patterns::compile(&id, kind, ns).map_err(Error::internal);
            let service = AppService {
                users: compile("users", &registration.namespaces.users)?,
                aliases: compile("aliases", &registration.namespaces.aliases)?,
                rooms: compile("rooms", &registration.namespaces.rooms)?,
                sender,
                registration,
                wake: Notify::new(),
                woken: Mutex::new(None),
            };
            if services.iter().any(|s: &Arc<AppService>| s.registration.id == id) {
                return Err(Error::internal(format!("two application services have the id {id}")));
            }
            if by_token.insert(service.registration.as_token.clone(), services.len()).is_some() {
                return Err(Error::internal(format!("application service {id} reuses another's as_token")));
            }
            services.push(Arc::new(service));
        }
        Ok(Self {
            storage,
            services,
            by_token,
            client: super::outbound_http_client(config)?,
            backoff: Backoff::outbound(config),
        })
    }

    pub fn all(&self) -> &[Arc<AppService>] {
        &self.services
    }

    /// The service an `as_token` belongs to.
    pub fn by_token(&self, token: &str) -> Option<&Arc<AppService>> {
        self.by_token.get(token).map(|&i| &self.services[i])
    }

    /// The session of a request bearing an `as_token`: the sender, or the user the service
    /// asserts with `user_id`, which must be in its namespaces and registered.
    pub fn session(&self, service: &AppService, asserted: Option<&str>) -> Result<Session> {
        let user_id = match asserted {
            None => service.sender.clone(),
            Some(user) => UserId::parse(user).map_err(|e| Error::invalid_param(format!("Bad user_id: {e}")))?,
        };
        if !service.is_user_in_namespace(&user_id) {
            return Err(Error::new(ErrorKind::Exclusive, "The user is outside the application service's namespaces"));
        }
        if user_id != service.sender && !self.storage.user_exists(&user_id)? {
            return Err(Error::forbidden("The application service has not registered this user"));
        }
        Ok(Session {
            user_id,
            device_id: format!("_appservice_{}", service.registration.id).into(),
            is_guest: false,
            appservice: Some(service.registration.id.as_str().into()),
        })
    }

    /// The service holding `user` exclusively, if any.
    pub fn exclusive_owner_of_user(&self, user: &UserId) -> Option<&Arc<AppService>> {
        self.services.iter().find(|s| s.is_exclusive_user(user))
    }

    /// The service holding `alias` exclusively, if any.
    pub fn exclusive_owner_of_alias(&self, alias: &RoomAliasId) -> Option<&Arc<AppService>> {
        self.services.iter().find(|s| s.is_exclusive_alias(alias))
    }

    /// Whether the request of `session` is subject to rate limits.
    pub fn rate_limited(&self, session: &Session) -> bool {
        match &session.appservice {
            Some(id) => {
                self.services.iter().find(|s| s.registration.id == **id).is_none_or(|s| s.registration.rate_limited)
            }
            None => true,
        }
    }

    /// Queues a new timeline event, staged in `batch`, for every service it concerns. Returns
    /// what to wake once the batch is committed.
    pub fn queue(&self, batch: &mut Batch, pdu: &Pdu, short_event: u64) -> Result<Vec<(usize, u64)>> {
        let mut queued = Vec::new();
        let mut room_facts: Option<(Vec<String>, Vec<OwnedUserId>)> = None;
        for (index, service) in self.services.iter().enumerate() {
            if service.registration.url.is_none() || !self.interested(service, pdu, &mut room_facts)? {
                continue;
            }
            let number = self.storage.allocate(batch, Sequence::Outbound);
            batch.queue_appservice_event(&service.registration.id, QueuedPdu { number, short_event });
            queued.push((index, number));
        }
        Ok(queued)
    }

    fn interested(
        &self,
        service: &AppService,
        pdu: &Pdu,
        room_facts: &mut Option<(Vec<String>, Vec<OwnedUserId>)>,
    ) -> Result<bool> {
        if service.is_user_in_namespace(&pdu.sender)
            || pdu
                .state_key
                .as_deref()
                .and_then(|k| UserId::parse(k).ok())
                .is_some_and(|u| service.is_user_in_namespace(&u))
            || service.rooms.matches(pdu.room_id.as_str())
        {
            return Ok(true);
        }
        if service.aliases.0.is_empty() && service.users.0.is_empty() {
            return Ok(false);
        }
        if room_facts.is_none() {
            *room_facts = Some(self.room_facts(&pdu.room_id)?);
        }
        let (aliases, members) = room_facts.as_ref().expect("filled above");
        Ok(aliases.iter().any(|a| service.aliases.matches(a))
            || members.iter().any(|m| service.is_user_in_namespace(m)))
    }

    /// A room's local aliases and its joined members.
    fn room_facts(&self, room_id: &RoomId) -> Result<(Vec<String>, Vec<OwnedUserId>)> {
        let aliases = self.storage.room_aliases(room_id)?.into_iter().map(|a| a.to_string()).collect();
        let members = match self.storage.room(room_id)? {
            Some(room) => self
                .storage
                .members(room.short_id)?
                .into_iter()
                .filter(|(_, membership)| membership == "join")
                .map(|(user, _)| user)
                .collect(),
            None => Vec::new(),
        };
        Ok((aliases, members))
    }

    /// Wakes the tasks of the services something was queued for (after the commit).
    pub fn wake(&self, queued: &[(usize, u64)]) {
        for &(index, number) in queued {
            let service = &self.services[index];
            {
                let mut woken = service.woken.lock().expect("not poisoned");
                *woken = Some(woken.map_or(number, |w| w.min(number)));
            }
            service.wake.notify_one();
        }
    }

    /// Asks the service whether an alias in its exclusive namespace exists
    /// (`GET /_matrix/app/v1/rooms/{alias}`); it creates the room and alias if so.
    pub async fn query_alias(&self, service: &AppService, alias: &RoomAliasId) -> bool {
        self.query(service, &format!("rooms/{}", urlencode(alias.as_str()))).await
    }

    async fn query(&self, service: &AppService, path: &str) -> bool {
        let Some(url) = &service.registration.url else { return false };
        let url = format!("{}/_matrix/app/v1/{path}", url.trim_end_matches('/'));
        match self.client.get(&url).bearer_auth(&service.registration.hs_token).send().await {
            Ok(response) => response.status().is_success(),
            Err(e) => {
                tracing::info!(appservice = %service.registration.id, error = %e, "query failed");
                false
            }
        }
    }

    async fn send_transaction(&self, service: &AppService, txn_id: &str, events: &[Value]) -> Result<()> {
        let url = service.registration.url.as_deref().unwrap_or_default();
        let url = format!("{}/_matrix/app/v1/transactions/{txn_id}", url.trim_end_matches('/'));
        let response = self
            .client
            .put(&url)
            .bearer_auth(&service.registration.hs_token)
            .json(&json!({ "events": events }))
            .send()
            .await
            .map_err(|e| Error::internal(format!("sending to {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(Error::internal(format!("{url} answered {}", response.status())));
        }
        Ok(())
    }
}

/// A registration file's YAML.
pub fn parse_registration(text: &str) -> std::result::Result<Registration, String> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| e.to_string())
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Services {
    /// Checks a per-user rate limit, unless an application service registered with
    /// `rate_limited: false` makes the request.
    pub fn check_user_rate(&self, limit: crate::service::rate_limit::Limit, session: &Session, ip: &str) -> Result<()> {
        if !self.appservices.rate_limited(session) {
            return Ok(());
        }
        self.rate_limits.check_user(limit, &session.user_id, ip)
    }

    /// Creates the services' sender users that do not exist yet, then starts one delivery task
    /// per service with a URL. The tasks hold the services weakly and end at shutdown.
    pub async fn start_appservices(self: &Arc<Self>) -> Result<()> {
        for service in self.appservices.all() {
            if !self.storage.user_exists(&service.sender)? {
                self.accounts
                    .register(crate::service::accounts::NewAccount {
                        user_id: Some(service.sender.clone()),
                        ..Default::default()
                    })
                    .await?;
            }
        }
        for (index, service) in self.appservices.all().iter().enumerate() {
            if service.registration.url.is_some() {
                tokio::spawn(Self::deliver_to_appservice(Arc::downgrade(self), index));
            }
        }
        Ok(())
    }

    /// One service's delivery loop: send the oldest queued events, delete them once accepted,
    /// wait for more (or back off after a failure).
    async fn deliver_to_appservice(services: Weak<Self>, index: usize) {
        let mut start = 0;
        let mut failures = 0u32;
        // The entries of a transaction that failed, sent again as they were.
        let mut pending = Vec::new();
        let mut shutdown = match services.upgrade() {
            Some(services) => services.shutdown.subscribe(),
            None => return,
        };
        loop {
            let wait = {
                let Some(services) = services.upgrade() else { return };
                let service = services.appservices.services[index].clone();
                if let Some(woken) = service.woken.lock().expect("not poisoned").take() {
                    start = start.min(woken);
                }
                match services.deliver_once(&service, start, &mut pending).await {
                    Ok(Some(next)) => {
                        start = next;
                        failures = 0;
                        continue;
                    }
                    Ok(None) => None,
                    Err(e) => {
                        failures += 1;
                        let delay = services.appservices.backoff.delay(failures);
                        tracing::info!(appservice = %service.registration.id, error = %e, ?delay, "transaction failed");
                        Some(delay)
                    }
                }
            };
            let Some(services_now) = services.upgrade() else { return };
            let service = services_now.appservices.services[index].clone();
            drop(services_now);
            tokio::select! {
                _ = service.wake.notified() => {}
                _ = async { match wait { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// Sends one transaction of the oldest queued events (or again the `pending` ones of a
    /// failed try); `Some(next start)` when it sent one, `None` when the queue is empty. The
    /// transaction ID is the first event's queue number, so a retry carries the same ID.
    async fn deliver_once(
        &self,
        service: &AppService,
        start: u64,
        pending: &mut Vec<QueuedPdu>,
    ) -> Result<Option<u64>> {
        let id = &service.registration.id;
        if pending.is_empty() {
            *pending = self.storage.appservice_queue(id, start, MAX_EVENTS)?;
        }
        let queued = std::mem::take(pending);
        let Some(first) = queued.first() else { return Ok(None) };
        let mut events = Vec::new();
        for entry in &queued {
            if let Some(event) = self.rooms.cached_event(entry.short_event)? {
                events.push(self.rooms.client_event_plain(&event, None)?);
            }
        }
        if let Err(e) = self.appservices.send_transaction(service, &first.number.to_string(), &events).await {
            *pending = queued;
            return Err(e);
        }
        let mut batch = Batch::new();
        for entry in &queued {
            batch.dequeue_appservice_event(id, entry.number);
        }
        self.storage.commit(batch).await?;
        Ok(Some(queued.last().map_or(start, |e| e.number + 1)))
    }
}
