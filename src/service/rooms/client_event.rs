//! An event in the client format, written straight from the cached PDU when serialized.
//!
//! `/messages` serves up to 1 000 events at a time: building a `serde_json::Value` tree for each
//! (its content parsed, every string copied, the server's `unsigned` map cloned) and then
//! serializing and freeing it was most of that request's time. A `ClientEvent` holds the cached
//! event and the few per-reader extras, and writes the JSON in one pass; `into_value` gives the
//! tree for the callers that edit events or nest them in one.

use std::sync::Arc;

use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::{Map, Value};

use super::{CachedEvent, Pdu};
use crate::error::{Error, Result};

pub struct ClientEvent {
    event: Arc<CachedEvent>,
    with_room_id: bool,
    /// Milliseconds since the event was sent, when it was rendered.
    pub(super) age: u64,
    /// The content of the state event this one replaced (`unsigned.replaces_state`).
    pub(super) prev_content: Option<Arc<Pdu>>,
    /// The reader sent it from this device: its transaction ID goes back to them.
    pub(super) own_transaction: bool,
    /// Bundled aggregations (edits, threads, references).
    pub(super) relations: Option<Value>,
    /// The reader's membership at the event (MSC4115).
    pub(super) membership: Option<String>,
}

impl ClientEvent {
    pub(super) fn new(event: Arc<CachedEvent>, age: u64) -> Self {
        Self {
            event,
            with_room_id: true,
            age,
            prev_content: None,
            own_transaction: false,
            relations: None,
            membership: None,
        }
    }

    pub fn pdu(&self) -> &Pdu {
        &self.event.pdu
    }

    /// Leaves out `room_id` (sync gives events under their room).
    pub fn without_room_id(mut self) -> Self {
        self.with_room_id = false;
        self
    }

    /// The event as a JSON tree.
    pub fn into_value(self) -> Result<Value> {
        serde_json::to_value(&self)
            .map_err(|e| Error::internal(format!("event {} in the client format: {e}", self.pdu().event_id)))
    }

    fn transaction_id(&self) -> Option<&str> {
        self.event.transaction.as_ref().filter(|_| self.own_transaction).map(|(_, txn_id)| txn_id.as_str())
    }

    /// Whether the key of a stored `unsigned` value is one this event sets itself.
    fn overrides(&self, key: &str) -> bool {
        match key {
            "age" => true,
            "prev_content" => self.prev_content.is_some(),
            "transaction_id" => self.transaction_id().is_some(),
            "m.relations" => self.relations.is_some(),
            "membership" => self.membership.is_some(),
            _ => false,
        }
    }
}

impl Serialize for ClientEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let pdu = self.pdu();
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", &pdu.kind)?;
        map.serialize_entry("sender", &pdu.sender)?;
        map.serialize_entry("content", &*pdu.content)?;
        map.serialize_entry("origin_server_ts", &pdu.origin_server_ts)?;
        if let Some(state_key) = &pdu.state_key {
            map.serialize_entry("state_key", state_key)?;
        }
        map.serialize_entry("event_id", &pdu.event_id)?;
        if self.with_room_id {
            map.serialize_entry("room_id", &pdu.room_id)?;
        }
        if let Some(redacts) = &pdu.redacts {
            map.serialize_entry("redacts", redacts)?;
        }
        map.serialize_entry("unsigned", &Unsigned(self))?;
        map.end()
    }
}

struct Unsigned<'a>(&'a ClientEvent);

impl Serialize for Unsigned<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let stored: &Map<String, Value> = &event.event.unsigned;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in stored.iter().filter(|(key, _)| !event.overrides(key)) {
            map.serialize_entry(key, value)?;
        }
        map.serialize_entry("age", &event.age)?;
        if let Some(previous) = &event.prev_content {
            map.serialize_entry("prev_content", &*previous.content)?;
        }
        if let Some(txn_id) = event.transaction_id() {
            map.serialize_entry("transaction_id", txn_id)?;
        }
        if let Some(relations) = &event.relations {
            map.serialize_entry("m.relations", relations)?;
        }
        if let Some(membership) = &event.membership {
            map.serialize_entry("membership", membership)?;
        }
        map.end()
    }
}
