//! Read receipts (`m.read`, `m.read.private`, threaded) and the unread counts they imply.

use std::collections::{BTreeMap, HashMap};

use ruma::{EventId, RoomId, UserId};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use super::{Pdu, Rooms};
use crate::{
    error::{Error, Result},
    service::now_ms,
    storage::{Batch, Receipt, ReceiptRecord},
};

/// Event types that count as unread (what default push rules notify for).
const NOTIFYING: [&str; 4] = ["m.room.message", "m.room.encrypted", "m.sticker", "m.poll.start"];
/// Unread counts stop here; clients show "99+".
const MAX_UNREAD: usize = 100;
/// Events looked at in one count at most; the next sync goes on from there.
const MAX_UNREAD_SCAN: usize = 1000;

impl Rooms {
    /// Sets a user's receipt. `thread` is `None` for an unthreaded receipt, `main` or a thread
    /// root for a threaded one.
    pub async fn set_receipt(
        &self,
        room_id: &RoomId,
        user: &UserId,
        kind: &str,
        event_id: &EventId,
        thread: Option<&str>,
    ) -> Result<()> {
        if !matches!(kind, "m.read" | "m.read.private") {
            return Err(Error::invalid_param(format!("Unknown receipt type {kind}")));
        }
        if thread.is_some_and(str::is_empty) {
            return Err(Error::invalid_param("`thread_id` must not be empty"));
        }
        let room = self.room(room_id)?.ok_or_else(|| Error::forbidden("You are not in this room"))?;
        if self.membership_in(&*self.current_state(&room)?, user)?.as_deref() != Some("join") {
            return Err(Error::forbidden("You are not in this room"));
        }
        self.event_by_id(event_id)?
            .filter(|(_, pdu)| pdu.room_id == room_id)
            .ok_or_else(|| Error::not_found("Unknown event"))?;
        let thread = thread.unwrap_or_default();
        let replaces = self.storage.receipt(room.short_id, user, kind, thread)?.map(|r| r.position);
        let mut batch = Batch::new();
        let receipt = Receipt {
            user: user.to_owned(),
            kind: kind.to_owned(),
            thread: thread.to_owned(),
            record: ReceiptRecord { event_id: event_id.to_owned(), ts: now_ms(), position: 0 },
        };
        // Public receipts go to the other servers in the room too, queued with the receipt.
        // Receipts of remote users came from their server, which tells the others itself.
        let local = user.server_name() == self.config.server_name;
        let destinations = if kind == "m.read" && local { self.remote_servers_in_room(room_id)? } else { Vec::new() };
        let mut queued = crate::service::federation::sender::Queued::default();
        if !destinations.is_empty() {
            let edu = crate::service::federation::edus::receipt(room_id, user, event_id, receipt.record.ts, thread);
            queued = self.sender.queue_edu(&mut batch, destinations.iter().map(|d| &**d), &edu)?;
        }
        batch.put_receipt(room.short_id, receipt, replaces);
        self.storage.commit(batch).await?;
        self.caches.forget_unread(room_id, user);
        self.sender.wake(&queued);
        if kind == "m.read" {
            self.notify_members(room_id, std::iter::empty());
        } else {
            self.notifier.notify(user);
        }
        Ok(())
    }

    /// The `m.receipt` event a user's sync shows for a room: every receipt (initial), or those
    /// that changed in `(since, until]`. Private receipts only for their owner.
    pub fn receipts_for(
        &self,
        short_room: u64,
        viewer: &UserId,
        since: Option<u64>,
        until: u64,
    ) -> Result<Option<Value>> {
        let receipts: Vec<Receipt> = match since {
            None => self.storage.receipts(short_room)?,
            Some(since) => {
                let mut receipts = Vec::new();
                for change in self.storage.receipt_changes(short_room, since, until)? {
                    if let Some(record) =
                        self.storage.receipt(short_room, &change.user, &change.kind, &change.thread)?
                    {
                        receipts.push(Receipt { user: change.user, kind: change.kind, thread: change.thread, record });
                    }
                }
                receipts
            }
        };
        let mut content: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for receipt in receipts {
            if receipt.record.position > until || (receipt.kind == "m.read.private" && receipt.user != viewer) {
                continue;
            }
            let mut data = json!({ "ts": receipt.record.ts });
            if !receipt.thread.is_empty() {
                data["thread_id"] = json!(receipt.thread);
            }
            let by_type = content.entry(receipt.record.event_id.to_string()).or_default();
            let users = by_type.entry(receipt.kind).or_insert_with(|| json!({}));
            users[receipt.user.as_str()] = data;
        }
        Ok((!content.is_empty()).then(|| json!({ "type": "m.receipt", "content": content })))
    }

    /// How many notifying events from others the user has not read, and how many of those
    /// mention them, up to `MAX_UNREAD` in all, by thread. An event is read up to the user's
    /// latest unthreaded receipt (public or private), or up to their threaded receipt for the
    /// event's thread (`main` for events outside threads).
    pub fn unread_counts(&self, room_id: &RoomId, short_room: u64, user: &UserId, until: u64) -> Result<UnreadCounts> {
        let read_up_to = |thread: &str| {
            ["m.read", "m.read.private"]
                .iter()
                .filter_map(|kind| self.storage.receipt(short_room, user, kind, thread).ok().flatten())
                .filter_map(|receipt| self.storage.event_by_id(&receipt.event_id).ok().flatten())
                .map(|event| event.position)
                .max()
        };
        let key = (room_id.to_owned(), user.to_owned());
        let epoch = self.caches.epoch();
        // Counted up to an earlier sync: only the events since are looked at.
        let mut memo = match self.caches.unread(&key) {
            Some(memo) if memo.until <= until => memo,
            _ => {
                // Without a receipt, count from the user's join.
                let after = match read_up_to("") {
                    Some(position) => position,
                    None => self.storage.membership(user, room_id)?.and_then(|m| m.last_join).unwrap_or(until),
                };
                let display_name = self
                    .current_state_event(room_id, "m.room.member", user.as_str())?
                    .and_then(|pdu| pdu.content_str("displayname"));
                UnreadMemo {
                    until: after,
                    display_name,
                    main_read: None,
                    threads: HashMap::new(),
                    notifications: 0,
                    counts: UnreadCounts::default(),
                }
            }
        };
        let mut scanned = 0;
        while memo.until < until && memo.notifications < MAX_UNREAD && scanned < MAX_UNREAD_SCAN {
            let chunk = self.storage.timeline_fwd(short_room, memo.until, until, 64)?;
            let Some(&(last, _)) = chunk.last() else { break };
            for (position, short) in chunk {
                scanned += 1;
                let Some(pdu) = self.event(short)? else { continue };
                let Some(notify) = notification(&pdu, user, memo.display_name.as_deref()) else { continue };
                // Looked up once a thread (the thread's name is copied only then).
                let read = match &notify.thread {
                    // A threaded receipt for the main timeline names the thread `main`.
                    None => *memo.main_read.get_or_insert_with(|| read_up_to("main").unwrap_or(0)),
                    Some(root) => match memo.threads.get(root) {
                        Some(read) => *read,
                        None => {
                            let read = read_up_to(root).unwrap_or(0);
                            memo.threads.insert(root.clone(), read);
                            read
                        }
                    },
                };
                if position <= read {
                    continue;
                }
                memo.notifications += 1;
                let counts = match notify.thread {
                    None => &mut memo.counts.main,
                    Some(root) => memo.counts.threads.entry(root).or_default(),
                };
                counts.notifications += 1;
                counts.highlights += usize::from(notify.highlight);
                if memo.notifications == MAX_UNREAD {
                    break;
                }
            }
            memo.until = last;
        }
        if memo.notifications == MAX_UNREAD || scanned < MAX_UNREAD_SCAN {
            memo.until = until;
        }
        let counts = memo.counts.clone();
        self.caches.fill_unread(epoch, key, memo);
        Ok(counts)
    }
}

/// What an event means for a user's notifications: which thread's read position it is counted
/// against, and whether it highlights (mentions them).
pub struct Notification {
    /// The thread root; none outside threads.
    pub thread: Option<String>,
    pub highlight: bool,
}

/// Whether an event notifies a user, as the default push rules decide it: messages (and the like)
/// from others, and invites of the user. The one evaluation behind unread counts and pushers.
pub fn notification(pdu: &Pdu, user: &UserId, display_name: Option<&str>) -> Option<Notification> {
    if pdu.sender == user {
        return None;
    }
    let kind = pdu.kind.to_string();
    if kind == "m.room.member" {
        let invited = pdu.state_key.as_deref() == Some(user.as_str())
            && pdu.content_str("membership").as_deref() == Some("invite");
        return invited.then_some(Notification { thread: None, highlight: false });
    }
    if !NOTIFYING.contains(&kind.as_str()) {
        return None;
    }
    // Parsed once, and only the fields looked at.
    let content: Notable = serde_json::from_str(pdu.content.get()).unwrap_or_default();
    Some(Notification { thread: content.thread_root(), highlight: content.mentions(user, display_name) })
}

/// Unread counts of a user in a room, counted up to a stream position, so that the next sync
/// counts only the events since. Receipts and the user's member event (their display name, their
/// join) invalidate it.
#[derive(Clone)]
pub(super) struct UnreadMemo {
    /// Counted up to here.
    until: u64,
    display_name: Option<String>,
    /// The read position outside threads, once looked up.
    main_read: Option<u64>,
    /// Read positions of the threads looked up so far, by root. Most rooms have none: nothing is
    /// allocated for them.
    threads: HashMap<String, u64>,
    /// Notifications counted, all threads together.
    notifications: usize,
    counts: UnreadCounts,
}

/// A user's unread notifications in a room: outside threads, and in each thread by its root.
#[derive(Clone, Debug, Default)]
pub struct UnreadCounts {
    pub main: Counts,
    pub threads: BTreeMap<String, Counts>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub notifications: usize,
    pub highlights: usize,
}

impl UnreadCounts {
    /// All threads and the main timeline together.
    pub fn total(&self) -> Counts {
        self.threads.values().fold(self.main, |sum, counts| Counts {
            notifications: sum.notifications + counts.notifications,
            highlights: sum.highlights + counts.highlights,
        })
    }
}

/// The fields of an event's content that unread counts read; the others are skipped without being
/// built. A field that is present holds its value, `null` included.
#[derive(Deserialize, Default)]
struct Notable {
    #[serde(rename = "m.relates_to", default, deserialize_with = "present")]
    relates_to: Option<Value>,
    #[serde(rename = "m.mentions", default, deserialize_with = "present")]
    mentions: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    body: Option<Value>,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl Notable {
    /// The thread the event is in, if it is an `m.thread` relation (as `relation_of` reads it).
    fn thread_root(&self) -> Option<String> {
        let relates_to = self.relates_to.as_ref()?.as_object()?;
        if relates_to.get("rel_type")?.as_str()? != "m.thread" {
            return None;
        }
        Some(EventId::parse(relates_to.get("event_id")?.as_str()?).ok()?.to_string())
    }

    /// Whether a message mentions the user: `m.mentions`, or their ID or display name in the body.
    fn mentions(&self, user: &UserId, display_name: Option<&str>) -> bool {
        if let Some(mentions) = &self.mentions {
            return mentions
                .get("user_ids")
                .and_then(Value::as_array)
                .is_some_and(|ids| ids.iter().any(|id| id == user.as_str()));
        }
        let body = self.body.as_ref().and_then(Value::as_str).unwrap_or_default();
        body.contains(user.as_str()) || display_name.is_some_and(|name| !name.is_empty() && body.contains(name))
    }
}
