//! Events as the room logic sees them: the signed PDU, parsed into the fields the auth rules and
//! clients need. Building a new PDU (fields, content hash, signature, event ID) is here too, all
//! through ruma's canonical JSON and signature code.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, RoomVersionId, UInt, UserId,
    events::TimelineEventType,
    room_version_rules::{EventsReferenceFormatVersion, RoomIdFormatVersion, RoomVersionRules},
};
use serde::Deserialize;
use serde_json::{Map, Value, value::RawValue};

use super::super::now_ms;
use crate::{
    error::{Error, ErrorKind, Result},
    service::keys::ServerKeys,
    storage::{EventStatus, StoredEvent},
};

/// The largest PDU the spec allows, in bytes of canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;
/// Longest `type`, `state_key`, and IDs, in bytes.
pub const MAX_ID_BYTES: usize = 255;

/// A parsed event.
#[derive(Clone, Debug)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    /// The event a redaction redacts (top level before room version 11, in `content` since).
    pub redacts: Option<OwnedEventId>,
    pub depth: u64,
    /// Whether the PDU itself names the room (a v12 create event does not: the room is named
    /// after it).
    pub names_room: bool,
    /// Whether the event failed the checks on receipt (rejected events stay stored, so that
    /// events citing them are rejected too).
    pub rejected: bool,
}

/// The PDU fields we read; `prev_events` and `auth_events` are IDs, or `[id, hashes]` pairs in
/// room versions 1 and 2.
#[derive(Deserialize)]
struct PduFields {
    #[serde(rename = "type")]
    kind: TimelineEventType,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    content: Box<RawValue>,
    state_key: Option<String>,
    prev_events: Vec<EventReference>,
    auth_events: Vec<EventReference>,
    redacts: Option<OwnedEventId>,
    depth: UInt,
    room_id: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EventReference {
    Id(OwnedEventId),
    Pair(OwnedEventId, serde::de::IgnoredAny),
}

impl EventReference {
    fn into_id(self) -> OwnedEventId {
        match self {
            EventReference::Id(id) | EventReference::Pair(id, _) => id,
        }
    }
}

#[derive(Deserialize)]
struct ContentRedacts {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Parses a PDU whose event ID and room ID are known.
    pub fn parse(event_id: OwnedEventId, room_id: OwnedRoomId, pdu: &RawValue) -> Result<Self> {
        let fields: PduFields = serde_json::from_str(pdu.get())
            .map_err(|e| Error::internal(format!("stored event {event_id} does not parse: {e}")))?;
        let redacts = fields.redacts.or_else(|| {
            (fields.kind == TimelineEventType::RoomRedaction)
                .then(|| serde_json::from_str::<ContentRedacts>(fields.content.get()).ok()?.redacts)
                .flatten()
        });
        Ok(Self {
            event_id,
            room_id,
            sender: fields.sender,
            origin_server_ts: fields.origin_server_ts,
            kind: fields.kind,
            content: fields.content,
            state_key: fields.state_key,
            prev_events: fields.prev_events.into_iter().map(EventReference::into_id).collect(),
            auth_events: fields.auth_events.into_iter().map(EventReference::into_id).collect(),
            redacts,
            depth: fields.depth.into(),
            names_room: fields.room_id.is_some(),
            rejected: false,
        })
    }

    pub fn from_stored(stored: &StoredEvent) -> Result<Self> {
        let mut pdu = Self::parse(stored.event_id.clone(), stored.room_id.clone(), &stored.pdu)?;
        pdu.rejected = stored.status == EventStatus::Rejected;
        Ok(pdu)
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// The content as a JSON map (empty if it is not an object, which valid events never are).
    pub fn content_map(&self) -> Map<String, Value> {
        serde_json::from_str(self.content.get()).unwrap_or_default()
    }

    /// A string field of the content.
    pub fn content_str(&self, field: &str) -> Option<String> {
        self.content_map().get(field).and_then(Value::as_str).map(str::to_owned)
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.names_room.then_some(&*self.room_id)
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}

/// What a new event should say; the server fills in the rest.
#[derive(Clone, Debug)]
pub struct EventDraft {
    pub kind: TimelineEventType,
    pub content: CanonicalJsonObject,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
}

impl EventDraft {
    pub fn new(kind: impl Into<TimelineEventType>, content: CanonicalJsonObject) -> Self {
        Self { kind: kind.into(), content, state_key: None, redacts: None }
    }

    pub fn state(
        kind: impl Into<TimelineEventType>,
        state_key: impl Into<String>,
        content: CanonicalJsonObject,
    ) -> Self {
        Self { state_key: Some(state_key.into()), ..Self::new(kind, content) }
    }

    /// Checks the size limits on `type` and `state_key`.
    pub fn validate(&self) -> Result<()> {
        if self.kind.to_string().len() > MAX_ID_BYTES {
            return Err(Error::new(ErrorKind::TooLarge, "The event type is longer than 255 bytes"));
        }
        if self.state_key.as_ref().is_some_and(|k| k.len() > MAX_ID_BYTES) {
            return Err(Error::new(ErrorKind::TooLarge, "The state key is longer than 255 bytes"));
        }
        Ok(())
    }
}

/// Converts client JSON to canonical JSON: integers within ±(2^53 - 1), written without fraction
/// or exponent (room versions 6+ require it, and so does signing). `-0` is read as `0`, as Synapse
/// reads it.
pub fn canonical_content(mut content: Map<String, Value>) -> Result<CanonicalJsonObject> {
    content.values_mut().for_each(negative_zero_to_zero);
    match CanonicalJsonValue::try_from(Value::Object(content)) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        Ok(_) => Err(Error::bad_json("Event content must be an object")),
        Err(e) => Err(Error::bad_json(format!("Event content is not canonical JSON: {e}"))),
    }
}

/// A reference to an event in `prev_events` or `auth_events`.
#[derive(Clone, Debug)]
pub struct Reference {
    pub event_id: OwnedEventId,
    /// The event's reference hash, which room versions 1 and 2 put beside its ID.
    pub sha256: Option<String>,
}

fn negative_zero_to_zero(value: &mut Value) {
    match value {
        Value::Number(n) if n.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()) => *value = Value::from(0),
        Value::Array(items) => items.iter_mut().for_each(negative_zero_to_zero),
        Value::Object(map) => map.values_mut().for_each(negative_zero_to_zero),
        _ => {}
    }
}

/// Prunes an event with the room version's redaction algorithm.
pub fn redact(event: &mut CanonicalJsonObject, rules: &RoomVersionRules) -> Result<()> {
    ruma::canonical_json::redact_in_place(event, &rules.redaction, None)
        .map_err(|e| Error::internal(format!("redacting an event: {e}")))
}

/// Where a new event goes in the graph.
pub struct Placement<'a> {
    /// `None` only for the create event of a room whose ID is the create event's hash (v12+).
    pub room_id: Option<&'a RoomId>,
    pub prev_events: &'a [Reference],
    pub auth_events: &'a [Reference],
    pub depth: u64,
}

/// An event, signed and parsed: new, or received.
#[derive(Clone, Debug)]
pub struct Built {
    pub pdu: Pdu,
    pub json: CanonicalJsonObject,
}

/// Builds, hashes and signs a new event of this server.
pub fn build(
    keys: &ServerKeys,
    server_name: &str,
    version: &RoomVersionId,
    sender: &UserId,
    draft: EventDraft,
    placement: Placement<'_>,
) -> Result<Built> {
    let object = template(version, sender, draft, &placement)?;
    sign_new(keys, server_name, version, object, placement.room_id)
}

/// A new event's fields, without hashes, signatures or (room versions 1 and 2) event ID: what
/// `make_join` and the like hand to another server to sign.
pub fn template(
    version: &RoomVersionId,
    sender: &UserId,
    draft: EventDraft,
    placement: &Placement<'_>,
) -> Result<CanonicalJsonObject> {
    let rules = rules_of(version)?;
    draft.validate()?;
    let mut object = CanonicalJsonObject::new();
    let mut content = draft.content;
    if let Some(redacts) = &draft.redacts {
        object.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        if rules.redaction.keep_room_redaction_redacts {
            content.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        }
    }
    object.insert("type".into(), CanonicalJsonValue::String(draft.kind.to_string()));
    object.insert("sender".into(), CanonicalJsonValue::String(sender.to_string()));
    object.insert("content".into(), CanonicalJsonValue::Object(content));
    object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(now_ms().try_into().unwrap_or_default()));
    object.insert("depth".into(), CanonicalJsonValue::Integer(placement.depth.try_into().unwrap_or_default()));
    if let Some(state_key) = &draft.state_key {
        object.insert("state_key".into(), CanonicalJsonValue::String(state_key.clone()));
    }
    if let Some(room_id) = placement.room_id {
        object.insert("room_id".into(), CanonicalJsonValue::String(room_id.to_string()));
    }
    object.insert("prev_events".into(), references(placement.prev_events, &rules)?);
    object.insert("auth_events".into(), references(placement.auth_events, &rules)?);
    Ok(object)
}

/// Hashes and signs an event of this server (built here, or a template another server made),
/// with its event ID: chosen here in room versions 1 and 2, the reference hash since.
pub fn sign_new(
    keys: &ServerKeys,
    server_name: &str,
    version: &RoomVersionId,
    mut object: CanonicalJsonObject,
    room_id: Option<&RoomId>,
) -> Result<Built> {
    let rules = rules_of(version)?;
    object.remove("signatures");
    object.remove("hashes");
    object.remove("unsigned");
    // Room versions 1 and 2: the event ID is chosen by the sender and part of what is signed.
    let chosen_id = (rules.events_reference_format == EventsReferenceFormatVersion::V1)
        .then(|| EventId::new_v1(&ruma::ServerName::parse(server_name).expect("our server name is valid")));
    match &chosen_id {
        Some(id) => {
            object.insert("event_id".into(), CanonicalJsonValue::String(id.to_string()));
        }
        None => {
            object.remove("event_id");
        }
    }

    // Checked before signing too, as ruma refuses to hash an oversized event.
    check_size(&object)?;
    keys.hash_and_sign(server_name, &mut object, version)?;
    check_size(&object)?;
    let event_id = match chosen_id {
        Some(id) => id,
        None => {
            let hash = ruma::signatures::reference_hash(&object, &rules)
                .map_err(|e| Error::internal(format!("computing an event ID: {e}")))?;
            EventId::new_v2_or_v3(&hash).map_err(|e| Error::internal(format!("event ID: {e}")))?
        }
    };
    let room_id = match room_id {
        Some(room_id) => room_id.to_owned(),
        None if rules.room_id_format == RoomIdFormatVersion::V2 => {
            let hash = &event_id.as_str()[1..];
            RoomId::new_v2(hash).map_err(|e| Error::internal(format!("room ID: {e}")))?
        }
        None => return Err(Error::internal("a room ID is needed in this room version")),
    };
    let raw = RawValue::from_string(serde_json::to_string(&object).expect("canonical JSON serializes"))
        .expect("serialized JSON is valid");
    let pdu = Pdu::parse(event_id, room_id, &raw)?;
    Ok(Built { pdu, json: object })
}

fn check_size(object: &CanonicalJsonObject) -> Result<()> {
    let size = serde_json::to_string(object).map_or(usize::MAX, |s| s.len());
    if size > MAX_PDU_BYTES {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("The event is {size} bytes; at most {MAX_PDU_BYTES} are allowed"),
        ));
    }
    Ok(())
}

/// `prev_events`/`auth_events`: IDs, or `[id, {"sha256": reference hash}]` in room versions 1-2.
fn references(events: &[Reference], rules: &RoomVersionRules) -> Result<CanonicalJsonValue> {
    let with_hashes = rules.events_reference_format == EventsReferenceFormatVersion::V1;
    let refs = events
        .iter()
        .map(|reference| {
            let id = CanonicalJsonValue::String(reference.event_id.to_string());
            if !with_hashes {
                return Ok(id);
            }
            let hash = reference
                .sha256
                .clone()
                .ok_or_else(|| Error::internal(format!("no reference hash for {}", reference.event_id)))?;
            let hashes = CanonicalJsonObject::from([("sha256".to_owned(), CanonicalJsonValue::String(hash))]);
            Ok(CanonicalJsonValue::Array(vec![id, CanonicalJsonValue::Object(hashes)]))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(CanonicalJsonValue::Array(refs))
}

/// The reference hash of a PDU (for references in room versions 1 and 2).
pub fn reference_hash(pdu: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<String> {
    ruma::signatures::reference_hash(pdu, rules).map_err(|e| Error::internal(format!("reference hash: {e}")))
}

pub fn rules_of(version: &RoomVersionId) -> Result<RoomVersionRules> {
    version.rules().ok_or_else(|| {
        Error::new(ErrorKind::UnsupportedRoomVersion, format!("Room version {version} is not supported"))
    })
}

/// A PDU received from another server, as the spec's first checks on receipt want it: the room
/// version's event format (ruma's `check_pdu_format`), its event ID (the reference hash, or the
/// `event_id` field in room versions 1 and 2) and room. `unsigned` is dropped: it is not signed,
/// so nothing in it can be trusted. Signatures and hashes are checked apart (they need keys).
pub fn from_federation(mut json: CanonicalJsonObject, rules: &RoomVersionRules) -> std::result::Result<Built, String> {
    json.remove("unsigned");
    ruma::state_res::check_pdu_format(&json, &rules.event_format)?;
    let event_id = match rules.events_reference_format {
        EventsReferenceFormatVersion::V1 => match json.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => EventId::parse(id).map_err(|e| format!("bad event ID: {e}"))?,
            _ => return Err("the event has no event_id".into()),
        },
        _ => {
            let hash = ruma::signatures::reference_hash(&json, rules).map_err(|e| format!("reference hash: {e}"))?;
            EventId::new_v2_or_v3(&hash).map_err(|e| format!("event ID: {e}"))?
        }
    };
    let room_id = match json.get("room_id") {
        Some(CanonicalJsonValue::String(id)) => RoomId::parse(id).map_err(|e| format!("bad room ID: {e}"))?,
        // A create event of room version 12 names no room: the room is named after it.
        _ if rules.room_id_format == RoomIdFormatVersion::V2 => {
            RoomId::new_v2(&event_id.as_str()[1..]).map_err(|e| format!("room ID: {e}"))?
        }
        _ => return Err("the event names no room".into()),
    };
    let raw = RawValue::from_string(serde_json::to_string(&json).expect("canonical JSON serializes"))
        .expect("serialized JSON is valid");
    let pdu = Pdu::parse(event_id, room_id, &raw).map_err(|e| e.to_string())?;
    Ok(Built { pdu, json })
}

/// The room version a PDU's room uses, read from a create event's content.
pub fn version_of_create(pdu: &Pdu) -> Option<RoomVersionId> {
    let version = pdu.content_map().get("room_version").and_then(Value::as_str).map(str::to_owned);
    // Without `room_version`, a create event is of room version 1.
    version.map_or(Ok(RoomVersionId::V1), RoomVersionId::try_from).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A v11 message PDU whose body is `body_len` bytes.
    fn remote_pdu(body_len: usize) -> CanonicalJsonObject {
        serde_json::from_value(json!({
            "type": "m.room.message",
            "room_id": "!room:remote.test",
            "sender": "@eve:remote.test",
            "origin_server_ts": 1,
            "depth": 5,
            "prev_events": ["$prev"],
            "auth_events": ["$create"],
            "content": { "msgtype": "m.text", "body": "x".repeat(body_len) },
            "hashes": { "sha256": "aGFzaA" },
            "signatures": {},
        }))
        .unwrap()
    }

    #[test]
    fn a_pdu_over_65536_bytes_from_another_server_is_refused() {
        let rules = rules_of(&RoomVersionId::V11).unwrap();
        assert!(from_federation(remote_pdu(60_000), &rules).is_ok());
        let Err(error) = from_federation(remote_pdu(MAX_PDU_BYTES), &rules) else { panic!("accepted") };
        assert!(error.contains("larger than maximum"), "{error}");
    }
}
