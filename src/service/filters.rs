//! Filters (`/user/{userId}/filter`, and inline in `/sync` and `/messages`): which events a client
//! wants. Stored per user under an ID derived from their content, so uploading the same filter
//! twice gives the same ID.

use std::sync::Arc;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    error::{Error, Result},
    service::rooms::Pdu,
    storage::{Batch, Storage},
};

/// A filter definition, as the spec gives it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Filter {
    pub event_fields: Option<Vec<String>>,
    pub event_format: Option<EventFormat>,
    pub presence: EventFilter,
    pub account_data: EventFilter,
    pub room: RoomFilter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    Client,
    Federation,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventFilter {
    pub limit: Option<u64>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<OwnedUserId>>,
    pub not_senders: Vec<OwnedUserId>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RoomFilter {
    pub rooms: Option<Vec<OwnedRoomId>>,
    pub not_rooms: Vec<OwnedRoomId>,
    pub include_leave: bool,
    pub timeline: RoomEventFilter,
    pub state: RoomEventFilter,
    pub ephemeral: RoomEventFilter,
    pub account_data: RoomEventFilter,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RoomEventFilter {
    pub limit: Option<u64>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<OwnedUserId>>,
    pub not_senders: Vec<OwnedUserId>,
    pub rooms: Option<Vec<OwnedRoomId>>,
    pub not_rooms: Vec<OwnedRoomId>,
    pub contains_url: Option<bool>,
    pub lazy_load_members: bool,
    pub include_redundant_members: bool,
    pub unread_thread_notifications: bool,
}

/// `*` matches any run of characters, as in the spec's type filters.
fn glob_matches(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else { return false };
            (0..=rest.len()).filter(|i| rest.is_char_boundary(*i)).any(|i| glob_matches(tail, &rest[i..]))
        }
    }
}

fn type_allowed(types: &Option<Vec<String>>, not_types: &[String], kind: &str) -> bool {
    !not_types.iter().any(|p| glob_matches(p, kind))
        && types.as_ref().is_none_or(|t| t.iter().any(|p| glob_matches(p, kind)))
}

fn sender_allowed(senders: &Option<Vec<OwnedUserId>>, not_senders: &[OwnedUserId], sender: &UserId) -> bool {
    !not_senders.iter().any(|s| s == sender) && senders.as_ref().is_none_or(|s| s.iter().any(|s| s == sender))
}

fn room_allowed(rooms: &Option<Vec<OwnedRoomId>>, not_rooms: &[OwnedRoomId], room: &RoomId) -> bool {
    !not_rooms.iter().any(|r| r == room) && rooms.as_ref().is_none_or(|r| r.iter().any(|r| r == room))
}

impl EventFilter {
    /// For events without a sender (account data, presence use the user as sender).
    pub fn allows(&self, kind: &str, sender: Option<&UserId>) -> bool {
        type_allowed(&self.types, &self.not_types, kind)
            && sender.is_none_or(|s| sender_allowed(&self.senders, &self.not_senders, s))
    }

    /// The number of events asked for, within what the server gives.
    pub fn limit_or(&self, default: usize, max: usize) -> usize {
        self.limit.map_or(default, |l| usize::try_from(l).unwrap_or(max)).clamp(1, max)
    }
}

impl RoomEventFilter {
    /// Whether an event (type, sender, room, content) passes.
    pub fn allows(&self, kind: &str, sender: &UserId, room: &RoomId, content: &Value) -> bool {
        type_allowed(&self.types, &self.not_types, kind)
            && sender_allowed(&self.senders, &self.not_senders, sender)
            && room_allowed(&self.rooms, &self.not_rooms, room)
            && self.contains_url.is_none_or(|wanted| content.get("url").is_some_and(Value::is_string) == wanted)
    }

    /// `allows` for a parsed event, its content parsed only when `contains_url` asks about it.
    pub fn allows_pdu(&self, pdu: &Pdu, room: &RoomId) -> bool {
        let kind = pdu.kind.to_string();
        if self.contains_url.is_none() {
            return self.allows(&kind, &pdu.sender, room, &Value::Null);
        }
        let content: Value = serde_json::from_str(pdu.content.get()).unwrap_or_default();
        self.allows(&kind, &pdu.sender, room, &content)
    }

    pub fn allows_room(&self, room: &RoomId) -> bool {
        room_allowed(&self.rooms, &self.not_rooms, room)
    }

    pub fn limit_or(&self, default: usize, max: usize) -> usize {
        self.limit.map_or(default, |l| usize::try_from(l).unwrap_or(max)).clamp(1, max)
    }
}

impl RoomFilter {
    pub fn allows_room(&self, room: &RoomId) -> bool {
        room_allowed(&self.rooms, &self.not_rooms, room)
    }
}

impl Filter {
    /// Parses a filter, refusing wrong shapes (`M_BAD_JSON`): the spec's types, and valid room and
    /// user IDs in the lists.
    pub fn parse(json: &Value) -> Result<Self> {
        // Derived deserializers also read a struct from an array; the spec's sections are objects.
        let object = |value: Option<&Value>| value.is_none_or(Value::is_object);
        let room = json.get("room");
        if !json.is_object()
            || !["presence", "account_data", "room"].iter().all(|k| object(json.get(k)))
            || !["timeline", "state", "ephemeral", "account_data"].iter().all(|k| object(room.and_then(|r| r.get(k))))
        {
            return Err(Error::bad_json("A filter and each of its sections are JSON objects"));
        }
        Self::deserialize(json).map_err(|e| Error::bad_json(format!("Invalid filter: {e}")))
    }
}

pub struct Filters {
    storage: Arc<Storage>,
}

impl Filters {
    pub fn new(storage: Arc<Storage>) -> Self {
        Self { storage }
    }

    /// Stores a filter; returns its ID.
    pub async fn create(&self, user: &UserId, json: Value) -> Result<String> {
        Filter::parse(&json)?;
        let text = serde_json::to_string(&json).expect("JSON serializes");
        let id = hex::encode(&Sha256::digest(text.as_bytes())[..8]);
        let mut batch = Batch::new();
        batch.put_filter(user, &id, &json);
        self.storage.commit(batch).await?;
        Ok(id)
    }

    /// A stored filter, as uploaded.
    pub fn get(&self, user: &UserId, id: &str) -> Result<Value> {
        self.storage.filter(user, id)?.ok_or_else(|| Error::not_found("Unknown filter"))
    }

    /// The filter a request names: an ID, or inline JSON (which starts with `{`).
    pub fn resolve(&self, user: &UserId, filter: Option<&str>) -> Result<Filter> {
        match filter {
            None => Ok(Filter::default()),
            Some(inline) if inline.trim_start().starts_with('{') => {
                let json: Value =
                    serde_json::from_str(inline).map_err(|e| Error::bad_json(format!("Invalid filter JSON: {e}")))?;
                Filter::parse(&json)
            }
            // Not found is the request's fault here: a bad parameter, as Synapse answers.
            Some(id) => match self.storage.filter(user, id)? {
                Some(json) => Filter::parse(&json),
                None => Err(Error::invalid_param(format!("Unknown filter {id}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn wildcards_match_as_the_spec_says() {
        assert!(glob_matches("m.room.*", "m.room.message"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("m.*.member", "m.room.member"));
        assert!(!glob_matches("m.room.*", "m.call.invite"));
        assert!(!glob_matches("m.room.message", "m.room.messages"));
    }

    #[test]
    fn filters_parse_strictly() {
        for bad in [
            json!({ "presence": "not_an_object" }),
            json!({ "room": { "timeline": "not_an_object" } }),
            json!({ "room": { "timeline": { "rooms": "not_a_list" } } }),
            json!({ "room": { "timeline": { "types": [1] } } }),
            json!({ "room": { "timeline": { "rooms": ["not_a_room_id"] } } }),
            json!({ "room": { "timeline": { "senders": ["not_a_sender_id"] } } }),
            json!({ "event_format": "xml" }),
            json!({ "account_data": [] }),
            json!({ "room": { "state": [true] } }),
            json!("not an object"),
        ] {
            assert!(Filter::parse(&bad).is_err(), "{bad}");
        }
        let filter =
            Filter::parse(&json!({ "room": { "timeline": { "limit": 5, "not_types": ["m.room.member"] } } })).unwrap();
        assert_eq!(filter.room.timeline.limit_or(10, 100), 5);
        let room = ruma::room_id!("!r:x");
        let alice = ruma::user_id!("@a:x");
        assert!(!filter.room.timeline.allows("m.room.member", alice, room, &json!({})));
        assert!(filter.room.timeline.allows("m.room.message", alice, room, &json!({})));
    }
}
