//! Entry points of the fuzz targets (`fuzz/`), one per parser that reads what others send or
//! what is on disk. Each takes arbitrary bytes and must never panic; where a parse succeeds,
//! what it produced must survive a round trip. The committed corpus (`fuzz/corpus/<target>/`) is
//! replayed through these same functions by `tests/fuzz_corpus.rs` in every `cargo test`.

use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomVersionId};
use serde_json::Value;

use crate::{
    service::{filters::Filter, rooms::pdu},
    storage::key::{self, KeyBuilder, KeyReader},
};

/// A target's entry point: arbitrary bytes in, a panic on a bug.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/` call them.
pub const TARGETS: [(&str, Target); 5] = [
    ("canonical_json", canonical_json),
    ("pdu", pdu),
    ("filter", filter),
    ("key_codec", key_codec),
    ("x_matrix", x_matrix),
];

/// Canonical JSON: a parsed object serializes to text that parses back to the same object, and
/// client content converted to canonical JSON does too.
pub fn canonical_json(data: &[u8]) {
    if let Ok(object) = serde_json::from_slice::<CanonicalJsonObject>(data) {
        let text = serde_json::to_string(&object).expect("canonical JSON serializes");
        let again: CanonicalJsonObject = serde_json::from_str(&text).expect("canonical JSON parses back");
        assert_eq!(object, again);
        assert_eq!(text, serde_json::to_string(&again).unwrap(), "one canonical form");
    }
    if let Ok(Value::Object(content)) = serde_json::from_slice::<Value>(data)
        && let Ok(object) = pdu::canonical_content(content)
    {
        let value = CanonicalJsonValue::Object(object);
        let text = serde_json::to_string(&value).unwrap();
        assert_eq!(serde_json::from_str::<CanonicalJsonValue>(&text).unwrap(), value);
    }
}

/// A PDU from another server, checked as each room-version family would (format, size, event
/// ID, room ID), then read as a stored event.
pub fn pdu(data: &[u8]) {
    let Ok(object) = serde_json::from_slice::<CanonicalJsonObject>(data) else { return };
    for version in [RoomVersionId::V1, RoomVersionId::V3, RoomVersionId::V11, RoomVersionId::V12] {
        let rules = pdu::rules_of(&version).expect("a supported version");
        if let Ok(built) = pdu::from_federation(object.clone(), &rules) {
            let _ = pdu::version_of_create(&built.pdu);
            let _ = built.pdu.content_map();
        }
    }
}

/// A sync or `/messages` filter as a client uploads it.
pub fn filter(data: &[u8]) {
    if let Ok(json) = serde_json::from_slice::<Value>(data) {
        let _ = Filter::parse(&json);
    }
}

/// The storage key codec: every decoder takes any bytes without panicking, and parts read by
/// [`KeyReader`] (string or integer as each byte of a small plan says) build the same bytes back.
pub fn key_codec(data: &[u8]) {
    let decoders: [fn(&[u8]) -> bool; 21] = [
        |k| key::device_of(k).is_ok(),
        |k| key::position_of_user_position(k).is_ok(),
        |k| key::receipt_parts(k).is_ok(),
        |k| key::position_of_to_device(k).is_ok(),
        |k| key::position_of_relation(k).is_ok(),
        |k| key::field_of(k).is_ok(),
        |k| key::account_data_type_of(k).is_ok(),
        |k| key::short_of(k).is_ok(),
        |k| key::timeline_position_of(k).is_ok(),
        |k| key::room_of_user_room(k).is_ok(),
        |k| key::member_of(k).is_ok(),
        |k| key::alias_of(k).is_ok(),
        |k| key::outbound_parts(k).is_ok(),
        |k| key::key_id_of_server_key(k).is_ok(),
        |k| key::one_time_key_parts(k).is_ok(),
        |k| key::algorithm_of(k).is_ok(),
        |k| key::signer_of(k).is_ok(),
        |k| key::backup_key_parts(k).is_ok(),
        |k| key::version_of(k).is_ok(),
        |k| KeyReader::new(k).finish().is_ok(),
        |k| KeyReader::new(k).str().is_ok(),
    ];
    for decode in decoders {
        decode(data);
    }
    // The first byte is the plan: bit i says whether part i is a string (1) or an integer (0).
    let Some((&plan, key)) = data.split_first() else { return };
    let mut reader = KeyReader::new(key);
    let mut rebuilt = KeyBuilder::new();
    for i in 0..8 {
        if plan & (1 << i) != 0 {
            let Ok(part) = reader.str() else { break };
            rebuilt = rebuilt.str(part);
        } else {
            let Ok(part) = reader.u64() else { break };
            rebuilt = rebuilt.u64(part);
        }
    }
    let rebuilt = rebuilt.build();
    assert_eq!(rebuilt, key[..rebuilt.len()], "parts read build the same bytes");
}

/// An `Authorization: X-Matrix ...` header of an inbound federation request.
pub fn x_matrix(data: &[u8]) {
    if let Ok(header) = std::str::from_utf8(data)
        && let Ok(parsed) = crate::api::parse_x_matrix(header)
    {
        // What parsed names an origin and a key.
        assert!(!parsed.origin.as_str().is_empty());
        assert!(!parsed.key.as_str().is_empty());
    }
}
