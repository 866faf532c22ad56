//! Typed key encoding: the only place that turns identifiers and numbers into key bytes.
//!
//! A key is a sequence of parts. A string part is its UTF-8 bytes followed by [`SEP`]; a `u64` part
//! is 8 bytes big-endian; a fixed-size byte part (a hash) is its bytes. The layouts of the column
//! families are in `storage::schema`.

use ruma::{DeviceId, EventId, RoomAliasId, RoomId, UserId};

use super::StorageError;

/// Ends every string part. `0xFF` never occurs in UTF-8.
pub const SEP: u8 = 0xFF;

/// Builds a key part by part.
#[derive(Default)]
pub struct KeyBuilder(Vec<u8>);

impl KeyBuilder {
    pub fn new() -> Self {
        Self(Vec::with_capacity(64))
    }

    pub fn str(mut self, part: &str) -> Self {
        self.0.extend_from_slice(part.as_bytes());
        self.0.push(SEP);
        self
    }

    pub fn u64(mut self, part: u64) -> Self {
        self.0.extend_from_slice(&part.to_be_bytes());
        self
    }

    pub fn bytes(mut self, part: &[u8]) -> Self {
        self.0.extend_from_slice(part);
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

/// Reads a key back part by part, in the order it was built.
pub struct KeyReader<'a> {
    rest: &'a [u8],
}

impl<'a> KeyReader<'a> {
    pub fn new(key: &'a [u8]) -> Self {
        Self { rest: key }
    }

    pub fn str(&mut self) -> Result<&'a str, StorageError> {
        let end = self
            .rest
            .iter()
            .position(|&b| b == SEP)
            .ok_or_else(|| StorageError::Corrupt("key: string part without separator".into()))?;
        let part = std::str::from_utf8(&self.rest[..end])
            .map_err(|_| StorageError::Corrupt("key: string part is not UTF-8".into()))?;
        self.rest = &self.rest[end + 1..];
        Ok(part)
    }

    pub fn u64(&mut self) -> Result<u64, StorageError> {
        let (head, rest) =
            self.rest.split_first_chunk::<8>().ok_or_else(|| StorageError::Corrupt("key: truncated integer".into()))?;
        self.rest = rest;
        Ok(u64::from_be_bytes(*head))
    }

    /// Checks that the whole key was read.
    pub fn finish(self) -> Result<(), StorageError> {
        if self.rest.is_empty() { Ok(()) } else { Err(StorageError::Corrupt("key: trailing bytes".into())) }
    }
}

/// `Meta`: a named server-wide value.
pub fn meta(name: &str) -> Vec<u8> {
    KeyBuilder::new().str(name).build()
}

/// `Users`: one account.
pub fn user(user_id: &UserId) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).build()
}

/// `Devices`, `DeviceLastSeen`: one device of a user.
pub fn user_device(user_id: &UserId, device_id: &DeviceId) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).str(device_id.as_str()).build()
}

/// `Devices`, `DeviceLastSeen`, `Profiles`: every entry of one user.
pub fn user_prefix(user_id: &UserId) -> Vec<u8> {
    user(user_id)
}

/// Reads the device part of a `user_device` key.
pub fn device_of(key: &[u8]) -> Result<&str, StorageError> {
    let mut reader = KeyReader::new(key);
    reader.str()?;
    let device = reader.str()?;
    reader.finish()?;
    Ok(device)
}

/// `Pushers`: one pusher of a user (the user's are under `user_prefix`).
pub fn pusher(user_id: &UserId, app_id: &str, pushkey: &str) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).str(app_id).str(pushkey).build()
}

/// Reads a `pusher` key: user, app ID, pushkey.
pub fn pusher_parts(key: &[u8]) -> Result<(&str, &str, &str), StorageError> {
    let mut reader = KeyReader::new(key);
    let parts = (reader.str()?, reader.str()?, reader.str()?);
    reader.finish()?;
    Ok(parts)
}

/// `AccessTokens`, `RefreshTokens`: a token's SHA-256.
pub fn token(hash: &[u8; 32]) -> Vec<u8> {
    KeyBuilder::new().bytes(hash).build()
}

/// `Profiles`: one field of a user's profile.
pub fn profile_field(user_id: &UserId, field: &str) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).str(field).build()
}

/// `AccountDataChanges` (and other per-user streams): an entry of a user at a stream position.
pub fn user_position(user_id: &UserId, position: u64) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).u64(position).build()
}

/// Reads the position part of a `user_position` key.
pub fn position_of_user_position(key: &[u8]) -> Result<u64, StorageError> {
    let mut reader = KeyReader::new(key);
    reader.str()?;
    let position = reader.u64()?;
    reader.finish()?;
    Ok(position)
}

/// `Receipts`: a user's receipt of one type (and thread) in a room.
pub fn receipt(short_room: u64, user_id: &UserId, kind: &str, thread: &str) -> Vec<u8> {
    KeyBuilder::new().u64(short_room).str(user_id.as_str()).str(kind).str(thread).build()
}

/// Reads the user, type and thread of a `receipt` key.
pub fn receipt_parts(key: &[u8]) -> Result<(&str, &str, &str), StorageError> {
    let mut reader = KeyReader::new(key);
    reader.u64()?;
    let parts = (reader.str()?, reader.str()?, reader.str()?);
    reader.finish()?;
    Ok(parts)
}

/// `ToDevice`: one message for a device, at its stream position.
pub fn to_device(user_id: &UserId, device_id: &DeviceId, position: u64) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).str(device_id.as_str()).u64(position).build()
}

/// `ToDevice`: every message for a device (as a prefix).
pub fn to_device_prefix(user_id: &UserId, device_id: &DeviceId) -> Vec<u8> {
    user_device(user_id, device_id)
}

/// Reads the position of a `to_device` key.
pub fn position_of_to_device(key: &[u8]) -> Result<u64, StorageError> {
    let mut reader = KeyReader::new(key);
    reader.str()?;
    reader.str()?;
    let position = reader.u64()?;
    reader.finish()?;
    Ok(position)
}

/// `Relations`: an event relating to `target`, at its position.
pub fn relation(target: &EventId, position: u64) -> Vec<u8> {
    KeyBuilder::new().str(target.as_str()).u64(position).build()
}

/// `Relations`: every event relating to `target` (as a prefix).
pub fn relations_of(target: &EventId) -> Vec<u8> {
    KeyBuilder::new().str(target.as_str()).build()
}

/// Reads the position of a `relation` key.
pub fn position_of_relation(key: &[u8]) -> Result<u64, StorageError> {
    position_of_user_position(key)
}

/// `Filters`: one filter of a user.
pub fn filter(user_id: &UserId, id: &str) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).str(id).build()
}

/// Reads the field part of a `profile_field` key.
pub fn field_of(key: &[u8]) -> Result<&str, StorageError> {
    device_of(key)
}

/// `AccountData`: one account data event, global when `room_id` is `None`.
pub fn account_data(user_id: &UserId, room_id: Option<&RoomId>, kind: &str) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).str(room_id.map_or("", |r| r.as_str())).str(kind).build()
}

/// `AccountData`: every entry of a user in one room, or global when `room_id` is `None`.
pub fn account_data_prefix(user_id: &UserId, room_id: Option<&RoomId>) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).str(room_id.map_or("", |r| r.as_str())).build()
}

/// Reads the type part of an `account_data` key.
pub fn account_data_type_of(key: &[u8]) -> Result<&str, StorageError> {
    let mut reader = KeyReader::new(key);
    reader.str()?;
    reader.str()?;
    let kind = reader.str()?;
    reader.finish()?;
    Ok(kind)
}

/// A key that is one `u64` (short IDs, snapshot IDs).
pub fn short(id: u64) -> Vec<u8> {
    KeyBuilder::new().u64(id).build()
}

/// Reads a key that is one `u64`.
pub fn short_of(key: &[u8]) -> Result<u64, StorageError> {
    let mut reader = KeyReader::new(key);
    let id = reader.u64()?;
    reader.finish()?;
    Ok(id)
}

/// `EventIds`: an event ID.
pub fn event_id(event_id: &EventId) -> Vec<u8> {
    KeyBuilder::new().str(event_id.as_str()).build()
}

/// `StateKeys`: a `(type, state_key)` pair.
pub fn state_key(kind: &str, state_key: &str) -> Vec<u8> {
    KeyBuilder::new().str(kind).str(state_key).build()
}

/// `Rooms`, `PublicRooms`: a room ID. `RoomAliases`: every alias of a room (as a prefix).
pub fn room(room_id: &RoomId) -> Vec<u8> {
    KeyBuilder::new().str(room_id.as_str()).build()
}

/// `Timeline`: an event's place in its room. Ordered by position within a room.
pub fn timeline(short_room: u64, position: u64) -> Vec<u8> {
    KeyBuilder::new().u64(short_room).u64(position).build()
}

/// `Timeline`, `RoomMembers`: everything of one room (as a prefix).
pub fn room_prefix(short_room: u64) -> Vec<u8> {
    short(short_room)
}

/// Reads the position part of a `timeline` key.
pub fn timeline_position_of(key: &[u8]) -> Result<u64, StorageError> {
    let mut reader = KeyReader::new(key);
    reader.u64()?;
    let position = reader.u64()?;
    reader.finish()?;
    Ok(position)
}

/// `UserRooms`: a user's membership in a room.
pub fn user_room(user_id: &UserId, room_id: &RoomId) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).str(room_id.as_str()).build()
}

/// Reads the room part of a `user_room` key.
pub fn room_of_user_room(key: &[u8]) -> Result<&str, StorageError> {
    device_of(key)
}

/// `RoomMembers`: one member of a room.
pub fn room_member(short_room: u64, user_id: &UserId) -> Vec<u8> {
    KeyBuilder::new().u64(short_room).str(user_id.as_str()).build()
}

/// Reads the user part of a `room_member` key.
pub fn member_of(key: &[u8]) -> Result<&str, StorageError> {
    let mut reader = KeyReader::new(key);
    reader.u64()?;
    let user = reader.str()?;
    reader.finish()?;
    Ok(user)
}

/// `Aliases`: a room alias.
pub fn alias(alias: &RoomAliasId) -> Vec<u8> {
    KeyBuilder::new().str(alias.as_str()).build()
}

/// `RoomAliases`: one alias of a room.
pub fn room_alias(room_id: &RoomId, alias: &RoomAliasId) -> Vec<u8> {
    KeyBuilder::new().str(room_id.as_str()).str(alias.as_str()).build()
}

/// Reads the alias part of a `room_alias` key.
pub fn alias_of(key: &[u8]) -> Result<&str, StorageError> {
    device_of(key)
}

/// `TransactionIds`: a request of one device, by the path it was sent to (without the ID).
pub fn transaction(user_id: &UserId, device_id: &DeviceId, scope: &str, txn_id: &str) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).str(device_id.as_str()).str(scope).str(txn_id).build()
}

/// `FederationTransactions`: a transaction of another server.
pub fn federation_transaction(origin: &str, txn_id: &str) -> Vec<u8> {
    KeyBuilder::new().str(origin).str(txn_id).build()
}

/// `OutboundPdus`, `OutboundEdus`, `AppServiceQueue`: one queued item for a destination (a server
/// or an application service), by its number.
pub fn outbound(destination: &str, number: u64) -> Vec<u8> {
    KeyBuilder::new().str(destination).u64(number).build()
}

/// `OutboundPdus`, `OutboundEdus`: everything queued for one destination (as a prefix).
pub fn outbound_prefix(destination: &str) -> Vec<u8> {
    KeyBuilder::new().str(destination).build()
}

/// `OutboundPdus`, `OutboundEdus`: a key above every key of `destination` and below those of
/// any destination that sorts after it, for skipping to the next destination.
pub fn outbound_after(destination: &str) -> Vec<u8> {
    KeyBuilder::new().str(destination).u64(u64::MAX).bytes(&[0]).build()
}

/// Reads an `outbound` key: destination and number.
pub fn outbound_parts(key: &[u8]) -> Result<(&str, u64), StorageError> {
    let mut reader = KeyReader::new(key);
    let destination = reader.str()?;
    let number = reader.u64()?;
    reader.finish()?;
    Ok((destination, number))
}

/// `ServerKeys`: one signing key of another server.
pub fn server_key(server: &str, key_id: &str) -> Vec<u8> {
    KeyBuilder::new().str(server).str(key_id).build()
}

/// `ServerKeys`: every key of one server.
pub fn server_keys_prefix(server: &str) -> Vec<u8> {
    KeyBuilder::new().str(server).build()
}

/// Reads the key ID part of a `server_key` key.
pub fn key_id_of_server_key(key: &[u8]) -> Result<&str, StorageError> {
    let mut reader = KeyReader::new(key);
    reader.str()?;
    let key_id = reader.str()?;
    reader.finish()?;
    Ok(key_id)
}

/// `OneTimeKeys`: one key of a device, by algorithm, upload number and key ID.
pub fn one_time_key(user_id: &UserId, device_id: &DeviceId, algorithm: &str, upload: u64, key_id: &str) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).str(device_id.as_str()).str(algorithm).u64(upload).str(key_id).build()
}

/// `FallbackKeys`: a device's key of one algorithm. `OneTimeKeys`: a device's keys of one
/// algorithm (as a prefix).
pub fn device_algorithm(user_id: &UserId, device_id: &DeviceId, algorithm: &str) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).str(device_id.as_str()).str(algorithm).build()
}

/// Reads a `one_time_key` key: algorithm, upload number and key ID.
pub fn one_time_key_parts(key: &[u8]) -> Result<(&str, u64, &str), StorageError> {
    let mut reader = KeyReader::new(key);
    reader.str()?;
    reader.str()?;
    let parts = (reader.str()?, reader.u64()?, reader.str()?);
    reader.finish()?;
    Ok(parts)
}

/// Reads the algorithm of a `device_algorithm` key.
pub fn algorithm_of(key: &[u8]) -> Result<&str, StorageError> {
    let mut reader = KeyReader::new(key);
    reader.str()?;
    reader.str()?;
    let algorithm = reader.str()?;
    reader.finish()?;
    Ok(algorithm)
}

/// `CrossSigningKeys`: one cross-signing key of a user, by usage.
pub fn cross_signing_key(user_id: &UserId, usage: &str) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).str(usage).build()
}

/// `KeySignatures`: the signatures one user made of one key (a device's or a master key).
pub fn key_signature(target: &UserId, target_key: &str, signer: &UserId) -> Vec<u8> {
    KeyBuilder::new().str(target.as_str()).str(target_key).str(signer.as_str()).build()
}

/// `KeySignatures`: every signature of one key (as a prefix).
pub fn key_signatures_of(target: &UserId, target_key: &str) -> Vec<u8> {
    KeyBuilder::new().str(target.as_str()).str(target_key).build()
}

/// Reads the signer of a `key_signature` key.
pub fn signer_of(key: &[u8]) -> Result<&str, StorageError> {
    let mut reader = KeyReader::new(key);
    reader.str()?;
    reader.str()?;
    let signer = reader.str()?;
    reader.finish()?;
    Ok(signer)
}

/// `BackupVersions`: one backup version of a user. `BackupKeys`: every key of it (as a prefix).
pub fn backup_version(user_id: &UserId, version: u64) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).u64(version).build()
}

/// `BackupKeys`: one backed-up session.
pub fn backup_key(user_id: &UserId, version: u64, room_id: &RoomId, session_id: &str) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).u64(version).str(room_id.as_str()).str(session_id).build()
}

/// `BackupKeys`: every backed-up session of a room (as a prefix).
pub fn backup_room(user_id: &UserId, version: u64, room_id: &RoomId) -> Vec<u8> {
    KeyBuilder::new().str(user_id.as_str()).u64(version).str(room_id.as_str()).build()
}

/// Reads a `backup_key` key: room and session.
pub fn backup_key_parts(key: &[u8]) -> Result<(&str, &str), StorageError> {
    let mut reader = KeyReader::new(key);
    reader.str()?;
    reader.u64()?;
    let parts = (reader.str()?, reader.str()?);
    reader.finish()?;
    Ok(parts)
}

/// Reads the version of a `backup_version` key.
pub fn version_of(key: &[u8]) -> Result<u64, StorageError> {
    position_of_user_position(key)
}

/// `Media`: one file, local or remote.
pub fn media(server: &str, media_id: &str) -> Vec<u8> {
    KeyBuilder::new().str(server).str(media_id).build()
}

/// `MediaThumbnails`: one generated thumbnail of a file.
pub fn media_thumbnail(server: &str, media_id: &str, width: u32, height: u32, method: &str) -> Vec<u8> {
    KeyBuilder::new().str(server).str(media_id).u64(width.into()).u64(height.into()).str(method).build()
}

#[cfg(test)]
mod tests {
    use ruma::{device_id, room_id, user_id};

    use super::*;

    #[test]
    fn parts_round_trip() {
        let key = KeyBuilder::new().str("@a:b").u64(42).str("").str("x").build();
        let mut reader = KeyReader::new(&key);
        assert_eq!(reader.str().unwrap(), "@a:b");
        assert_eq!(reader.u64().unwrap(), 42);
        assert_eq!(reader.str().unwrap(), "");
        assert_eq!(reader.str().unwrap(), "x");
        reader.finish().unwrap();
    }

    #[test]
    fn integers_sort_numerically() {
        let mut numbers = [0u64, 1, 255, 256, 65_535, 1 << 40, u64::MAX - 1, u64::MAX];
        let mut keys: Vec<Vec<u8>> = numbers.iter().map(|&n| KeyBuilder::new().str("r").u64(n).build()).collect();
        keys.sort();
        numbers.sort();
        let decoded: Vec<u64> = keys
            .iter()
            .map(|k| {
                let mut r = KeyReader::new(k);
                r.str().unwrap();
                r.u64().unwrap()
            })
            .collect();
        assert_eq!(decoded, numbers);
    }

    #[test]
    fn a_user_prefix_never_matches_a_longer_user() {
        let alice = user_id!("@alice:example.org");
        let alice2 = user_id!("@alice:example.org2");
        let key = user_device(alice2, device_id!("DEV"));
        assert!(!key.starts_with(&user_prefix(alice)));
        assert!(user_device(alice, device_id!("DEV")).starts_with(&user_prefix(alice)));
        assert_eq!(device_of(&user_device(alice, device_id!("DEV"))).unwrap(), "DEV");
    }

    #[test]
    fn global_and_room_account_data_are_apart() {
        let alice = user_id!("@alice:example.org");
        let room = room_id!("!room:example.org");
        let global = account_data(alice, None, "m.direct");
        let in_room = account_data(alice, Some(room), "m.tag");
        assert!(global.starts_with(&account_data_prefix(alice, None)));
        assert!(!in_room.starts_with(&account_data_prefix(alice, None)));
        assert!(in_room.starts_with(&account_data_prefix(alice, Some(room))));
        assert_eq!(account_data_type_of(&in_room).unwrap(), "m.tag");
    }

    #[test]
    fn a_room_timeline_is_ordered_by_position_and_apart_from_other_rooms() {
        let mut keys = vec![timeline(2, 5), timeline(1, 300), timeline(2, 1), timeline(1, 7)];
        keys.sort();
        assert_eq!(keys, vec![timeline(1, 7), timeline(1, 300), timeline(2, 1), timeline(2, 5)]);
        assert!(timeline(1, 7).starts_with(&room_prefix(1)));
        assert!(!timeline(256, 7).starts_with(&room_prefix(1)));
        assert_eq!(timeline_position_of(&timeline(3, 42)).unwrap(), 42);
        assert_eq!(member_of(&room_member(3, ruma::user_id!("@a:b"))).unwrap(), "@a:b");
    }

    #[test]
    fn server_keys_of_one_server_share_a_prefix_that_no_longer_name_matches() {
        let key = server_key("example.org", "ed25519:abc");
        assert!(key.starts_with(&server_keys_prefix("example.org")));
        assert!(!server_key("example.org.evil", "ed25519:abc").starts_with(&server_keys_prefix("example.org")));
        assert_eq!(key_id_of_server_key(&key).unwrap(), "ed25519:abc");
    }

    #[test]
    fn outbound_queues_are_ordered_per_destination_and_skippable() {
        // "a.org:8448" sorts before "a.org" (':' < the separator), and skipping past one
        // destination's keys never skips another's.
        let mut keys =
            vec![outbound("a.org", 2), outbound("a.org:8448", 1), outbound("a.org", 1), outbound("b.org", 0)];
        keys.sort();
        assert_eq!(
            keys,
            vec![outbound("a.org:8448", 1), outbound("a.org", 1), outbound("a.org", 2), outbound("b.org", 0)]
        );
        assert!(outbound("a.org", u64::MAX) < outbound_after("a.org"));
        assert!(outbound_after("a.org") < outbound("b.org", 0));
        assert!(outbound_after("a.org:8448") < outbound("a.org", 0));
        assert!(!outbound("a.org:8448", 1).starts_with(&outbound_prefix("a.org")));
        assert_eq!(outbound_parts(&outbound("a.org:8448", 7)).unwrap(), ("a.org:8448", 7));
    }

    #[test]
    fn one_time_keys_sort_by_upload_within_an_algorithm_and_read_back() {
        let (alice, dev) = (ruma::user_id!("@a:x"), device_id!("D"));
        let mut keys = [
            one_time_key(alice, dev, "signed_curve25519", 2, "AAAA"),
            one_time_key(alice, dev, "signed_curve25519", 1, "ZZZZ"),
            one_time_key(alice, dev, "curve25519", 9, "B"),
        ];
        keys.sort();
        assert_eq!(one_time_key_parts(&keys[0]).unwrap(), ("curve25519", 9, "B"));
        assert_eq!(one_time_key_parts(&keys[1]).unwrap(), ("signed_curve25519", 1, "ZZZZ"));
        assert!(keys[2].starts_with(&device_algorithm(alice, dev, "signed_curve25519")));
        assert!(!keys[0].starts_with(&device_algorithm(alice, dev, "signed_curve25519")));
        assert_eq!(algorithm_of(&device_algorithm(alice, dev, "alg")).unwrap(), "alg");
        let room = room_id!("!r:x");
        let backup = backup_key(alice, 3, room, "sess");
        assert!(backup.starts_with(&backup_room(alice, 3, room)));
        assert!(backup.starts_with(&backup_version(alice, 3)));
        assert!(!backup.starts_with(&backup_version(alice, 4)));
        assert_eq!(backup_key_parts(&backup).unwrap(), ("!r:x", "sess"));
        assert_eq!(version_of(&backup_version(alice, 3)).unwrap(), 3);
        let signature = key_signature(alice, "D", ruma::user_id!("@b:x"));
        assert!(signature.starts_with(&key_signatures_of(alice, "D")));
        assert!(!signature.starts_with(&key_signatures_of(alice, "")));
        assert_eq!(signer_of(&signature).unwrap(), "@b:x");
    }

    #[test]
    fn malformed_keys_are_errors_not_panics() {
        assert!(KeyReader::new(b"no separator").str().is_err());
        assert!(KeyReader::new(&[1, 2, 3]).u64().is_err());
        assert!(KeyReader::new(&[0xC3, SEP]).str().is_err());
        assert!(device_of(b"a\xFFb\xFFextra").is_err());
    }

    #[test]
    fn pusher_keys_read_back_and_stay_under_their_user() {
        let alice = UserId::parse("@alice:example.org").unwrap();
        let key = pusher(&alice, "org.example.app", "key:with/odd chars");
        assert!(key.starts_with(&user_prefix(&alice)));
        assert_eq!(pusher_parts(&key).unwrap(), ("@alice:example.org", "org.example.app", "key:with/odd chars"));
        let alicia = UserId::parse("@alice:example.org.evil").unwrap();
        assert!(!pusher(&alicia, "a", "b").starts_with(&user_prefix(&alice)));
    }
}
