//! Pushers (the spec's push module): where a user's notifications go, and their delivery to push
//! gateways.
//!
//! **What is stored.** `POST /pushers/set` creates, replaces or (with `kind: null`) deletes a pusher
//! of the user, keyed by app ID and pushkey, remembering the device whose session made it; the
//! device's pushers go when it is deleted or logged out (`Accounts`). Only `http` pushers exist:
//! `email` pushers need a mailer, which the server does not have, and are refused.
//!
//! **Delivery.** Every event committed into a room's timeline is offered to a bounded queue
//! (`enqueue`, after the commit: a full queue drops the push with a warning, never the commit). One
//! task takes events from it; for each local joined member but the sender (and for the invitee of
//! an invite) who has pushers and whom the event notifies (`rooms::notification`, the evaluation
//! behind unread counts, and the user's push rules saying `notify`, which also give the tweaks), it
//! posts the spec's notification to each pusher's gateway
//! (`POST {data.url}`), at most [`CONCURRENT_SENDS`] at a time, each with the outbound time limit
//! and [`ATTEMPTS`] tries with backoff. A pushkey the gateway names in `rejected` is deleted.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

use ruma::{
    DeviceId, OwnedUserId, UInt, UserId,
    events::TimelineEventType,
    push::{Action, PushConditionPowerLevelsCtx, PushConditionRoomCtx},
    serde::Raw,
};
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::{
    config::Config,
    error::{Error, Result},
    service::{
        Services,
        federation::{client::GuardedClient, sender::Backoff},
        now_ms,
        rooms::Pdu,
    },
    storage::{Batch, Pusher, PusherRecord, Storage},
};

/// Events waiting for their pushes at most; more are dropped (with a warning).
pub const QUEUE: usize = 1024;
/// Requests to gateways in flight at most.
pub const CONCURRENT_SENDS: usize = 16;
/// Tries of one notification (the first and the retries).
pub const ATTEMPTS: u32 = 3;
/// The path every gateway URL must have (the spec's push gateway API).
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// Longest pushkey, in bytes, and app ID, in characters (the spec's limits).
const MAX_PUSHKEY_BYTES: usize = 512;
const MAX_APP_ID_CHARS: usize = 64;

pub struct Pushers {
    storage: Arc<Storage>,
    /// Gateway URLs are the users' choice: the federation deny list applies to them.
    client: GuardedClient,
    backoff: Backoff,
    queue: mpsc::Sender<Arc<Pdu>>,
    /// Taken by the delivery task when it starts.
    receiver: std::sync::Mutex<Option<mpsc::Receiver<Arc<Pdu>>>>,
    /// Users who may have pushers: those with one at start and each who sets one; a user whose
    /// look-up finds none is dropped. Events in rooms where nobody has a pusher (most rooms on
    /// most servers) then cost no storage reads.
    owners: RwLock<HashSet<OwnedUserId>>,
}

impl Pushers {
    pub fn new(config: &Config, storage: Arc<Storage>) -> Result<Self> {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let owners = storage.all_pushers()?.into_iter().map(|p| p.user_id).collect();
        Ok(Self {
            storage,
            client: GuardedClient::new(&config.federation)?,
            backoff: Backoff::outbound(config),
            queue,
            receiver: std::sync::Mutex::new(Some(receiver)),
            owners: RwLock::new(owners),
        })
    }

    fn may_have_pushers(&self, user: &UserId) -> bool {
        self.owners.read().expect("pusher owners lock").contains(user)
    }

    /// A user's pushers, forgetting the user as an owner when there are none. The second look
    /// is under the lock that `set` takes after its commit, so a pusher being set is never
    /// forgotten.
    fn pushers_of(&self, user: &UserId) -> Result<Vec<Pusher>> {
        let pushers = self.storage.pushers(user)?;
        if !pushers.is_empty() {
            return Ok(pushers);
        }
        let mut owners = self.owners.write().expect("pusher owners lock");
        let pushers = self.storage.pushers(user)?;
        if pushers.is_empty() {
            owners.remove(user);
        }
        Ok(pushers)
    }

    /// `GET /pushers`: the user's pushers as the spec shows them.
    pub fn list(&self, user: &UserId) -> Result<Value> {
        let pushers: Vec<Value> = self
            .storage
            .pushers(user)?
            .into_iter()
            .map(|p| {
                let mut json = json!({
                    "pushkey": p.pushkey,
                    "kind": p.record.kind,
                    "app_id": p.app_id,
                    "app_display_name": p.record.app_display_name,
                    "device_display_name": p.record.device_display_name,
                    "lang": p.record.lang,
                    "data": p.record.data,
                });
                if let Some(tag) = p.record.profile_tag {
                    json["profile_tag"] = json!(tag);
                }
                json
            })
            .collect();
        Ok(json!({ "pushers": pushers }))
    }

    /// `POST /pushers/set`: creates, replaces or deletes (`kind: null`) a pusher of the user.
    pub async fn set(&self, user: &UserId, device: &DeviceId, body: &Value) -> Result<()> {
        let body = body.as_object().ok_or_else(|| Error::bad_json("The body must be a JSON object"))?;
        let app_id = string(body, "app_id")?;
        let pushkey = string(body, "pushkey")?;
        if app_id.chars().count() > MAX_APP_ID_CHARS {
            return Err(Error::invalid_param(format!("`app_id` is longer than {MAX_APP_ID_CHARS} characters")));
        }
        if pushkey.len() > MAX_PUSHKEY_BYTES {
            return Err(Error::invalid_param(format!("`pushkey` is longer than {MAX_PUSHKEY_BYTES} bytes")));
        }
        let mut batch = Batch::new();
        match body.get("kind") {
            Some(Value::Null) => {
                batch.delete_pusher(user, &app_id, &pushkey);
                self.storage.commit(batch).await?;
                return Ok(());
            }
            None => return Err(Error::missing_param("Missing `kind`")),
            Some(_) => {}
        }
        let kind = string(body, "kind")?;
        let app_display_name = string(body, "app_display_name")?;
        let device_display_name = string(body, "device_display_name")?;
        let lang = string(body, "lang")?;
        let profile_tag = match body.get("profile_tag") {
            None | Some(Value::Null) => None,
            Some(Value::String(tag)) => Some(tag.clone()),
            Some(_) => return Err(Error::bad_json("`profile_tag` must be a string")),
        };
        let data = match body.get("data") {
            None => return Err(Error::missing_param("Missing `data`")),
            Some(Value::Object(data)) => data.clone(),
            Some(_) => return Err(Error::bad_json("`data` must be an object")),
        };
        let append = match body.get("append") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(append)) => *append,
            Some(_) => return Err(Error::bad_json("`append` must be a boolean")),
        };
        match kind.as_str() {
            "http" => check_http_data(&data)?,
            "email" => return Err(Error::invalid_param("This server does not support email pushers")),
            other => return Err(Error::invalid_param(format!("Unknown pusher kind {other}"))),
        }
        // Without `append`, the pushkey belongs to this user alone from now on.
        if !append {
            for other in self.storage.all_pushers()? {
                if other.user_id != user && other.app_id == app_id && other.pushkey == pushkey {
                    batch.delete_pusher(&other.user_id, &other.app_id, &other.pushkey);
                }
            }
        }
        let record = PusherRecord {
            kind,
            app_display_name,
            device_display_name,
            profile_tag,
            lang,
            data,
            device_id: Some(device.to_owned()),
            pushkey_ts: now_ms(),
        };
        batch.put_pusher(user, &app_id, &pushkey, &record);
        self.storage.commit(batch).await?;
        self.owners.write().expect("pusher owners lock").insert(user.to_owned());
        Ok(())
    }

    /// Offers a committed timeline event for pushing; never waits (a full queue drops it).
    pub fn enqueue(&self, pdu: Arc<Pdu>) {
        if let Err(mpsc::error::TrySendError::Full(pdu)) = self.queue.try_send(pdu) {
            tracing::warn!(event = %pdu.event_id, "push queue full: the event is not pushed");
        }
    }

    /// Posts one notification to a pusher's gateway, with retries. Returns whether the gateway
    /// rejected the pushkey.
    async fn send(&self, pusher: &Pusher, body: &Value) -> bool {
        let url = pusher.record.data.get("url").and_then(Value::as_str).unwrap_or_default();
        let Ok(url) = reqwest::Url::parse(url) else { return false };
        if !self.client.allows(&url) {
            tracing::info!(user = %pusher.user_id, app_id = %pusher.app_id, "push gateway address is in a denied range: not sent");
            return false;
        }
        for attempt in 1..=ATTEMPTS {
            let result = self.client.http.post(url.clone()).json(body).send().await;
            let failure = match result {
                Ok(response) if response.status().is_success() => {
                    let answer: Value = response.json().await.unwrap_or_default();
                    return answer["rejected"]
                        .as_array()
                        .is_some_and(|rejected| rejected.iter().any(|k| k.as_str() == Some(&pusher.pushkey)));
                }
                // The gateway refuses the request itself: trying again would not help.
                Ok(response) if response.status().is_client_error() => {
                    tracing::info!(user = %pusher.user_id, app_id = %pusher.app_id, status = %response.status(), "push gateway refused a notification");
                    return false;
                }
                Ok(response) => format!("status {}", response.status()),
                // Without the URL, which may carry a secret.
                Err(e) => e.without_url().to_string(),
            };
            tracing::info!(user = %pusher.user_id, app_id = %pusher.app_id, attempt, error = %failure, "push failed");
            if attempt < ATTEMPTS {
                tokio::time::sleep(self.backoff.delay(attempt)).await;
            }
        }
        false
    }
}

/// A required string field: missing is `M_MISSING_PARAM`, another type `M_BAD_JSON`.
fn string(body: &Map<String, Value>, field: &str) -> Result<String> {
    match body.get(field) {
        None | Some(Value::Null) => Err(Error::missing_param(format!("Missing `{field}`"))),
        Some(Value::String(value)) => Ok(value.clone()),
        Some(_) => Err(Error::bad_json(format!("`{field}` must be a string"))),
    }
}

/// An http pusher's `data`: an http(s) `url` ending in the notify path, `format` absent or
/// `event_id_only`.
fn check_http_data(data: &Map<String, Value>) -> Result<()> {
    let url = match data.get("url") {
        Some(Value::String(url)) => url,
        None | Some(Value::Null) => return Err(Error::invalid_param("An http pusher needs `data.url`")),
        Some(_) => return Err(Error::invalid_param("`data.url` must be a string")),
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| Error::invalid_param("`data.url` is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::invalid_param("`data.url` must be an http or https URL"));
    }
    if parsed.path() != NOTIFY_PATH {
        return Err(Error::invalid_param(format!("The path of `data.url` must be {NOTIFY_PATH}")));
    }
    match data.get("format") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(format)) if format == "event_id_only" => Ok(()),
        Some(_) => Err(Error::invalid_param("The only `data.format` is `event_id_only`")),
    }
}

impl Services {
    /// Starts the push delivery task (once); it ends at shutdown or when the services go.
    pub fn start_pushers(self: &Arc<Self>) {
        let Some(mut receiver) = self.pushers.receiver.lock().expect("not poisoned").take() else { return };
        let services = Arc::downgrade(self);
        let mut shutdown = self.shutdown.subscribe();
        let permits = Arc::new(Semaphore::new(CONCURRENT_SENDS));
        tokio::spawn(async move {
            loop {
                let pdu = tokio::select! {
                    pdu = receiver.recv() => match pdu { Some(pdu) => pdu, None => return },
                    _ = shutdown.changed() => return,
                };
                let Some(services) = services.upgrade() else { return };
                let notifications = match services.notifications_for(&pdu).await {
                    Ok(notifications) => notifications,
                    Err(e) => {
                        tracing::warn!(event = %pdu.event_id, error = %e, "cannot work out the pushes of an event");
                        continue;
                    }
                };
                for (pusher, body) in notifications {
                    let Ok(permit) = permits.clone().acquire_owned().await else { return };
                    let services = services.clone();
                    tokio::spawn(async move {
                        if services.pushers.send(&pusher, &body).await {
                            tracing::info!(user = %pusher.user_id, app_id = %pusher.app_id, "the gateway rejected a pushkey: pusher deleted");
                            let mut batch = Batch::new();
                            batch.delete_pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey);
                            if let Err(e) = services.storage.commit(batch).await {
                                tracing::warn!(error = %e, "deleting a rejected pusher failed");
                            }
                        }
                        drop(permit);
                    });
                }
            }
        });
    }

    /// The notifications an event sends: one per pusher of each user it notifies. The event must
    /// count as a notification (`rooms::notification`, as for unread counts) and the user's push
    /// rules must say `notify` (so a muted room stays silent); their tweaks go to the gateway.
    async fn notifications_for(&self, pdu: &Pdu) -> Result<Vec<(Pusher, Value)>> {
        let Some(room) = self.rooms.room(&pdu.room_id)? else { return Ok(Vec::new()) };
        let joined: Vec<OwnedUserId> = self
            .storage
            .members(room.short_id)?
            .into_iter()
            .filter(|(_, membership)| membership == "join")
            .map(|(user, _)| user)
            .collect();
        // The push rules' `room_member_count` counts every joined member, local or not.
        let member_count = UInt::try_from(joined.len()).unwrap_or(UInt::MAX);
        // Local users other than the sender who may have pushers: the joined members and the
        // invitee of an invite.
        let candidate = |user: &UserId| {
            user.server_name() == self.config.server_name && user != pdu.sender && self.pushers.may_have_pushers(user)
        };
        let mut users: Vec<OwnedUserId> = joined.into_iter().filter(|user| candidate(user)).collect();
        if pdu.kind == TimelineEventType::RoomMember
            && pdu.content_str("membership").as_deref() == Some("invite")
            && let Some(invitee) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
            && candidate(&invitee)
            && !users.contains(&invitee)
        {
            users.push(invitee);
        }
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let power_levels: PushConditionPowerLevelsCtx =
            self.rooms.power_levels(&*self.rooms.current_state(&room)?, &room.version)?.into();
        let mut event = json!({
            "event_id": pdu.event_id,
            "room_id": pdu.room_id,
            "sender": pdu.sender,
            "type": pdu.kind.to_string(),
            "content": serde_json::from_str::<Value>(pdu.content.get()).unwrap_or_default(),
        });
        if let Some(state_key) = &pdu.state_key {
            event["state_key"] = json!(state_key);
        }
        let event: Raw<Value> = Raw::new(&event).map_err(|e| Error::internal(format!("push event: {e}")))?;
        let mut out = Vec::new();
        let mut room_facts = None;
        for user in users {
            let pushers = self.pushers.pushers_of(&user)?;
            if pushers.is_empty() {
                continue;
            }
            let display_name = self
                .rooms
                .current_state_event(&pdu.room_id, "m.room.member", user.as_str())?
                .and_then(|member| member.content_str("displayname"));
            let Some(notification) = crate::service::rooms::notification(pdu, &user, display_name.as_deref()) else {
                continue;
            };
            let context = PushConditionRoomCtx::new(
                pdu.room_id.clone(),
                member_count,
                user.clone(),
                display_name.clone().unwrap_or_else(|| user.localpart().to_owned()),
            )
            .with_power_levels(power_levels.clone());
            let ruleset = self.account_data.push_rules(&user)?;
            let actions = ruleset.get_actions(&event, &context).await;
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            let tweaks = tweaks_of(actions, notification.highlight);
            if room_facts.is_none() {
                let name = |kind: &str, field: &str, key: &str| -> Result<Option<String>> {
                    Ok(self.rooms.current_state_event(&pdu.room_id, kind, key)?.and_then(|e| e.content_str(field)))
                };
                room_facts = Some((
                    name("m.room.name", "name", "")?,
                    name("m.room.member", "displayname", pdu.sender.as_str())?,
                ));
            }
            let (room_name, sender_name) = room_facts.clone().expect("filled above");
            let unread = self.unread_total(&user)?;
            for pusher in pushers {
                let body = notification_body(pdu, &pusher, &tweaks, unread, &room_name, &sender_name);
                out.push((pusher, body));
            }
        }
        Ok(out)
    }

    /// Unread notifications of a user across their joined rooms (the gateway's badge count).
    fn unread_total(&self, user: &UserId) -> Result<usize> {
        let until = self.storage.stream_position();
        let mut total = 0;
        for room_id in self.rooms.joined_rooms(user)? {
            if let Some(room) = self.rooms.room(&room_id)? {
                total += self.rooms.unread_counts(&room_id, room.short_id, user, until)?.total().notifications;
            }
        }
        Ok(total)
    }
}

/// The tweaks of the actions (`sound`, `highlight`, ...) as the gateway gets them: `highlight`
/// when a rule sets it or the event mentions the user (as the unread counts see it).
fn tweaks_of(actions: &[Action], mentioned: bool) -> Map<String, Value> {
    let mut tweaks = Map::new();
    for action in actions {
        if let Action::SetTweak(tweak) = action
            && let Ok(Value::Object(json)) = serde_json::to_value(tweak)
            && let Some(Value::String(name)) = json.get("set_tweak")
        {
            tweaks.insert(name.clone(), json.get("value").cloned().unwrap_or(Value::Bool(true)));
        }
    }
    if mentioned {
        tweaks.insert("highlight".to_owned(), Value::Bool(true));
    }
    if tweaks.get("highlight") == Some(&Value::Bool(false)) {
        tweaks.remove("highlight");
    }
    tweaks
}

/// The spec's notification for one pusher. With `format: event_id_only`, only the event and room
/// IDs, the counts and the device go (no content, sender or names).
fn notification_body(
    pdu: &Pdu,
    pusher: &Pusher,
    tweaks: &Map<String, Value>,
    unread: usize,
    room_name: &Option<String>,
    sender_name: &Option<String>,
) -> Value {
    let mut data = pusher.record.data.clone();
    data.remove("url");
    let event_id_only = data.get("format").and_then(Value::as_str) == Some("event_id_only");
    let kind = pdu.kind.to_string();
    let is_invite = kind == "m.room.member" && pdu.content_str("membership").as_deref() == Some("invite");
    let high = is_invite || matches!(kind.as_str(), "m.room.message" | "m.room.encrypted" | "m.sticker");
    let mut notification = json!({
        "event_id": pdu.event_id,
        "room_id": pdu.room_id,
        "prio": if high { "high" } else { "low" },
        "counts": { "unread": unread },
        "devices": [{
            "app_id": pusher.app_id,
            "pushkey": pusher.pushkey,
            "pushkey_ts": pusher.record.pushkey_ts / 1000,
            "data": data,
            "tweaks": tweaks,
        }],
    });
    if !event_id_only {
        notification["type"] = json!(kind);
        notification["sender"] = json!(pdu.sender);
        notification["content"] = serde_json::from_str(pdu.content.get()).unwrap_or_default();
        if let Some(name) = sender_name {
            notification["sender_display_name"] = json!(name);
        }
        if let Some(name) = room_name {
            notification["room_name"] = json!(name);
        }
        if is_invite {
            notification["user_is_target"] = json!(true);
        }
    }
    json!({ "notification": notification })
}
