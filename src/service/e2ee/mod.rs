//! End-to-end encryption: the key server.
//!
//! - device identity keys, one-time and fallback keys: upload (`/keys/upload`), query
//!   (`/keys/query`), claim (`/keys/claim`);
//! - cross-signing keys (`/keys/device_signing/upload`) and signatures of keys
//!   (`/keys/signatures/upload`);
//! - [`device_lists`]: the stream of device-list changes that sync and `/keys/changes` read, and
//!   the hook for federation;
//! - [`backup`]: server-side room key backups.
//!
//! Keys are stored as the client uploaded them (a signature covers the exact JSON); signatures
//! added later are stored apart (`KeySignatures`) and merged in when keys are served, those of a
//! user-signing key only for the signer. Users of other servers are answered in `failures` until
//! federation queries them.

pub mod backup;
pub mod device_lists;
pub mod signing;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use ruma::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId, encryption::CrossSigningKey};
use serde_json::{Map, Value, json};

pub use self::device_lists::DeviceLists;
use super::locks::KeyedLocks;
use crate::{
    error::{Error, ErrorKind, Result},
    storage::{Batch, FallbackKeyRecord, OneTimeKey, Storage},
};

/// The one-time key algorithm clients count on; always reported, as zero when none are left.
const SIGNED_CURVE25519: &str = "signed_curve25519";
/// The cross-signing key usages, as stored.
const MASTER: &str = "master";
const SELF_SIGNING: &str = "self_signing";
const USER_SIGNING: &str = "user_signing";

/// The body of `/keys/upload`, as parsed by the API layer.
#[derive(Debug, Default)]
pub struct KeysUpload {
    pub device_keys: Option<Map<String, Value>>,
    /// `{"algorithm:key_id": key}`.
    pub one_time_keys: Map<String, Value>,
    /// `{"algorithm:key_id": key}`, one per algorithm.
    pub fallback_keys: Map<String, Value>,
}

/// The keys of `/keys/device_signing/upload`.
#[derive(Debug, Default)]
pub struct CrossSigningUpload {
    pub master_key: Option<Map<String, Value>>,
    pub self_signing_key: Option<Map<String, Value>>,
    pub user_signing_key: Option<Map<String, Value>>,
}

impl CrossSigningUpload {
    fn keys(&self) -> [(&'static str, Option<&Map<String, Value>>); 3] {
        [
            (MASTER, self.master_key.as_ref()),
            (SELF_SIGNING, self.self_signing_key.as_ref()),
            (USER_SIGNING, self.user_signing_key.as_ref()),
        ]
    }
}

pub struct E2ee {
    server_name: OwnedServerName,
    storage: Arc<Storage>,
    device_lists: Arc<DeviceLists>,
    /// Changes to one user's keys (uploads, claims, signatures) one at a time.
    locks: KeyedLocks<OwnedUserId>,
}

impl E2ee {
    pub fn new(server_name: OwnedServerName, storage: Arc<Storage>, device_lists: Arc<DeviceLists>) -> Self {
        Self { server_name, storage, device_lists, locks: KeyedLocks::default() }
    }

    fn is_local(&self, user: &UserId) -> bool {
        user.server_name() == self.server_name
    }

    // ----- upload -----

    /// `/keys/upload` for the session's device: identity keys (checked: the session's user and
    /// device, and the device's own signature when it gives one), one-time keys (a key ID already
    /// used with another key is refused; the same key again is fine) and fallback keys. Returns the
    /// one-time key counts.
    pub async fn upload(&self, user: &UserId, device: &DeviceId, upload: KeysUpload) -> Result<BTreeMap<String, u64>> {
        let device_keys = upload.device_keys.map(|keys| check_device_keys(user, device, keys)).transpose()?;
        let one_time_keys = parse_key_ids(&upload.one_time_keys, "one_time_keys")?;
        let fallback_keys = parse_key_ids(&upload.fallback_keys, "fallback_keys")?;

        let _guard = self.locks.lock(&user.to_owned()).await;
        let mut batch = Batch::new();
        let mut changed = false;
        if let Some(keys) = device_keys {
            let old = self.storage.device_keys(user, device)?;
            if old.as_ref() != Some(&keys) {
                if old.is_some() {
                    // Signatures of the old keys do not cover the new ones.
                    for (signer, _) in self.storage.key_signatures(user, device.as_str())? {
                        batch.delete_key_signatures(user, device.as_str(), &signer);
                    }
                }
                batch.put_device_keys(user, device, &keys);
                self.device_lists.stage(&mut batch, user, Some(device), false)?;
                changed = true;
            }
        }
        if !one_time_keys.is_empty() {
            let existing = self.storage.one_time_keys(user, device)?;
            let upload = existing.iter().map(|k| k.upload).max().unwrap_or(0) + 1;
            let known: HashMap<(&str, &str), &Value> =
                existing.iter().map(|k| ((k.algorithm.as_str(), k.key_id.as_str()), &k.key)).collect();
            for (algorithm, key_id, key) in one_time_keys {
                match known.get(&(algorithm, key_id)) {
                    Some(&old) if old == key => {}
                    Some(_) => {
                        return Err(Error::invalid_param(format!(
                            "One-time key {algorithm}:{key_id} already exists with another value"
                        )));
                    }
                    None => batch.put_one_time_key(
                        user,
                        device,
                        &OneTimeKey {
                            algorithm: algorithm.to_owned(),
                            upload,
                            key_id: key_id.to_owned(),
                            key: key.clone(),
                        },
                    ),
                }
            }
        }
        for (algorithm, key_id, key) in fallback_keys {
            let old = self.storage.fallback_key(user, device, algorithm)?;
            if old.as_ref().is_some_and(|old| old.key_id == key_id && old.key == *key) {
                continue;
            }
            let record = FallbackKeyRecord { key_id: key_id.to_owned(), key: key.clone(), used: false };
            batch.put_fallback_key(user, device, algorithm, &record);
        }
        self.storage.commit(batch).await?;
        if changed {
            self.device_lists.committed(user);
        }
        self.one_time_key_counts(user, device)
    }

    /// Unclaimed one-time keys of a device by algorithm, `signed_curve25519` always included.
    pub fn one_time_key_counts(&self, user: &UserId, device: &DeviceId) -> Result<BTreeMap<String, u64>> {
        let mut counts = self.storage.one_time_key_counts(user, device)?;
        counts.entry(SIGNED_CURVE25519.to_owned()).or_insert(0);
        Ok(counts)
    }

    /// Algorithms of the device's fallback keys that were not claimed yet.
    pub fn unused_fallback_key_types(&self, user: &UserId, device: &DeviceId) -> Result<Vec<String>> {
        Ok(self
            .storage
            .fallback_keys(user, device)?
            .into_iter()
            .filter(|(_, record)| !record.used)
            .map(|(algorithm, _)| algorithm)
            .collect())
    }

    // ----- query -----

    /// `/keys/query`: the identity keys of the devices asked for (every device for an empty
    /// list), with the device's display name, and the users' cross-signing keys (the user-signing
    /// key only to its owner). `requester` sees the signatures they made of others' master keys;
    /// `None` (another server asking) sees only the owners' own. For local users: other servers'
    /// users are asked of their servers (`Services::query_keys`); any given here are in
    /// `failures`.
    pub fn query(
        &self,
        requester: Option<&UserId>,
        request: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<Value> {
        let (mut device_keys, mut failures) = (Map::new(), Map::new());
        let (mut master_keys, mut self_signing_keys, mut user_signing_keys) = (Map::new(), Map::new(), Map::new());
        for (user, devices) in request {
            if !self.is_local(user) {
                failures.insert(user.server_name().to_string(), remote_failure());
                continue;
            }
            let names: HashMap<OwnedDeviceId, Option<String>> =
                self.storage.devices(user)?.into_iter().map(|(id, record)| (id, record.display_name)).collect();
            let mut theirs = Map::new();
            for (device, mut keys) in self.storage.all_device_keys(user)? {
                if !devices.is_empty() && !devices.contains(&device) {
                    continue;
                }
                // Keys of a device that is gone (deleted while the keys were being uploaded).
                let Some(name) = names.get(&device) else { continue };
                self.merge_signatures(&mut keys, user, device.as_str(), requester)?;
                let unsigned = match name {
                    Some(name) => json!({ "device_display_name": name }),
                    None => json!({}),
                };
                keys.insert("unsigned".into(), unsigned);
                theirs.insert(device.to_string(), Value::Object(keys));
            }
            device_keys.insert(user.to_string(), Value::Object(theirs));
            if let Some(mut master) = self.storage.cross_signing_key(user, MASTER)? {
                if let Some((key_id, _)) = single_key(&master) {
                    self.merge_signatures(&mut master, user, &key_id, requester)?;
                }
                master_keys.insert(user.to_string(), Value::Object(master));
            }
            if let Some(key) = self.storage.cross_signing_key(user, SELF_SIGNING)? {
                self_signing_keys.insert(user.to_string(), Value::Object(key));
            }
            if requester == Some(&**user)
                && let Some(key) = self.storage.cross_signing_key(user, USER_SIGNING)?
            {
                user_signing_keys.insert(user.to_string(), Value::Object(key));
            }
        }
        Ok(json!({
            "device_keys": device_keys,
            "failures": failures,
            "master_keys": master_keys,
            "self_signing_keys": self_signing_keys,
            "user_signing_keys": user_signing_keys,
        }))
    }

    /// Adds the stored signatures of a key that `requester` may see: the owner's, and the
    /// requester's own.
    fn merge_signatures(
        &self,
        object: &mut Map<String, Value>,
        owner: &UserId,
        key: &str,
        requester: Option<&UserId>,
    ) -> Result<()> {
        for (signer, signatures) in self.storage.key_signatures(owner, key)? {
            if signer != owner && Some(&*signer) != requester {
                continue;
            }
            let all = object.entry("signatures").or_insert_with(|| json!({}));
            let Some(all) = all.as_object_mut() else { continue };
            let theirs = all.entry(signer.to_string()).or_insert_with(|| json!({}));
            if let Some(theirs) = theirs.as_object_mut() {
                theirs.extend(signatures);
            }
        }
        Ok(())
    }

    /// For federation (`/user/devices/{userId}`): a local user's devices with their keys and
    /// names, and their master and self-signing keys. `stream_id` is the position of the user's
    /// latest device-list change.
    pub fn user_devices(&self, user: &UserId) -> Result<Value> {
        let mut devices = Vec::new();
        let keys: HashMap<OwnedDeviceId, Map<String, Value>> =
            self.storage.all_device_keys(user)?.into_iter().collect();
        for (device, record) in self.storage.devices(user)? {
            let mut entry = json!({ "device_id": device });
            if let Some(mut keys) = keys.get(&device).cloned() {
                self.merge_signatures(&mut keys, user, device.as_str(), None)?;
                entry["keys"] = Value::Object(keys);
            }
            if let Some(name) = record.display_name {
                entry["device_display_name"] = json!(name);
            }
            devices.push(entry);
        }
        let mut answer = json!({
            "user_id": user,
            "stream_id": self.storage.device_list_latest(user)?.unwrap_or(0),
            "devices": devices,
        });
        if let Some(mut master) = self.storage.cross_signing_key(user, MASTER)? {
            if let Some((key_id, _)) = single_key(&master) {
                self.merge_signatures(&mut master, user, &key_id, None)?;
            }
            answer["master_key"] = Value::Object(master);
        }
        if let Some(key) = self.storage.cross_signing_key(user, SELF_SIGNING)? {
            answer["self_signing_key"] = Value::Object(key);
        }
        Ok(answer)
    }

    // ----- claim -----

    /// `/keys/claim`: one key per device asked for, the oldest one-time key of the algorithm
    /// (deleted as it is handed out), or the fallback key when none is left (marked used). Devices
    /// with neither are left out; users of other servers are in `failures`.
    pub async fn claim(&self, request: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>) -> Result<Value> {
        let (mut one_time_keys, mut failures) = (Map::new(), Map::new());
        for (user, devices) in request {
            if !self.is_local(user) {
                failures.insert(user.server_name().to_string(), remote_failure());
                continue;
            }
            let _guard = self.locks.lock(user).await;
            let mut batch = Batch::new();
            let mut theirs = Map::new();
            for (device, algorithm) in devices {
                if let Some(key) = self.storage.first_one_time_key(user, device, algorithm)? {
                    batch.delete_one_time_key(user, device, &key);
                    theirs.insert(device.to_string(), json!({ format!("{algorithm}:{}", key.key_id): key.key }));
                } else if let Some(mut fallback) = self.storage.fallback_key(user, device, algorithm)? {
                    let claimed = json!({ format!("{algorithm}:{}", fallback.key_id): fallback.key });
                    if !fallback.used {
                        fallback.used = true;
                        batch.put_fallback_key(user, device, algorithm, &fallback);
                    }
                    theirs.insert(device.to_string(), claimed);
                }
            }
            self.storage.commit(batch).await?;
            if !theirs.is_empty() {
                one_time_keys.insert(user.to_string(), Value::Object(theirs));
            }
        }
        Ok(json!({ "one_time_keys": one_time_keys, "failures": failures }))
    }

    // ----- cross-signing -----

    /// Whether uploading these cross-signing keys needs the user to authenticate: only when they
    /// replace keys the user has (the first upload does not, as in Synapse and MSC3967; the same
    /// keys again do not either).
    pub fn cross_signing_needs_auth(&self, user: &UserId, upload: &CrossSigningUpload) -> Result<bool> {
        if self.storage.cross_signing_key(user, MASTER)?.is_none() {
            return Ok(false);
        }
        for (usage, key) in upload.keys() {
            if let Some(key) = key
                && self.storage.cross_signing_key(user, usage)?.as_ref() != Some(key)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `/keys/device_signing/upload` (authentication already done): checks each key (the user's,
    /// its usage, one ed25519 key), that the self-signing and user-signing keys are signed by the
    /// master key (new or stored), and stores them.
    pub async fn upload_cross_signing(&self, user: &UserId, upload: CrossSigningUpload) -> Result<()> {
        let mut checked = Vec::new();
        for (usage, key) in upload.keys() {
            if let Some(key) = key {
                checked.push((usage, key, check_cross_signing_key(user, key, usage)?));
            }
        }
        if checked.is_empty() {
            return Ok(());
        }
        let _guard = self.locks.lock(&user.to_owned()).await;
        let stored_master = self.storage.cross_signing_key(user, MASTER)?;
        let master = match &upload.master_key {
            Some(key) => single_key(key),
            None => stored_master.as_ref().and_then(single_key),
        };
        for (usage, key, _) in &checked {
            if *usage == MASTER {
                continue;
            }
            let Some((master_id, master_public)) = &master else {
                return Err(Error::missing_param("No master key: upload one first, or with these keys"));
            };
            signing::verify(key, user, master_id, master_public).map_err(|e| {
                Error::new(ErrorKind::InvalidSignature, format!("The {usage} key is not signed by the master key: {e}"))
            })?;
        }
        let mut batch = Batch::new();
        if let (Some(new), Some(old)) = (&upload.master_key, &stored_master)
            && let (Some((new_id, _)), Some((old_id, _))) = (single_key(new), single_key(old))
            && new_id != old_id
        {
            for (signer, _) in self.storage.key_signatures(user, &old_id)? {
                batch.delete_key_signatures(user, &old_id, &signer);
            }
        }
        for (usage, key, _) in &checked {
            batch.put_cross_signing_key(user, usage, key);
        }
        self.device_lists.stage(&mut batch, user, None, false)?;
        self.storage.commit(batch).await?;
        self.device_lists.committed(user);
        Ok(())
    }

    // ----- signatures -----

    /// `/keys/signatures/upload`: signatures by `signer` of their own devices (with their
    /// self-signing key), of their own master key (with one of their devices), or of other users'
    /// master keys (with their user-signing key). Each signed object must be the key as stored.
    /// Returns the `failures` (by user, then key ID); the good ones are stored.
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        body: &BTreeMap<String, BTreeMap<String, Value>>,
    ) -> Result<Map<String, Value>> {
        let mut failures = Map::new();
        let mut staged = Vec::new();
        for (target, objects) in body {
            let target_id = UserId::parse(target.as_str());
            for (key_id, object) in objects {
                let result = match (&target_id, object.as_object()) {
                    (Err(e), _) => Err(failure("M_INVALID_PARAM", format!("Invalid user ID: {e}"))),
                    (Ok(_), None) => Err(failure("M_BAD_JSON", "A signed key is an object")),
                    (Ok(target), Some(_)) if !self.is_local(target) => {
                        Err(failure("M_UNRECOGNIZED", "Signing keys of other servers' users needs federation"))
                    }
                    (Ok(target), Some(object)) if target == signer => self.own_signature(signer, key_id, object),
                    (Ok(target), Some(object)) => self.other_signature(signer, target, key_id, object),
                };
                match result {
                    Ok(signature) => staged.push(signature),
                    Err(reason) => {
                        let theirs = failures.entry(target.clone()).or_insert_with(|| json!({}));
                        theirs[key_id.as_str()] = reason;
                    }
                }
            }
        }
        if staged.is_empty() {
            return Ok(failures);
        }
        let _guard = self.locks.lock(&signer.to_owned()).await;
        let mut batch = Batch::new();
        let (mut own, mut others) = (false, false);
        for signature in &staged {
            let mut all = self
                .storage
                .key_signatures(&signature.target, &signature.target_key)?
                .into_iter()
                .find(|(who, _)| who == signer)
                .map(|(_, signatures)| signatures)
                .unwrap_or_default();
            all.extend(signature.signatures.clone());
            batch.put_key_signatures(&signature.target, &signature.target_key, signer, &all);
            if signature.target == signer {
                own = true;
            } else {
                self.device_lists.stage_private(&mut batch, &signature.target, signer);
                others = true;
            }
        }
        if own {
            self.device_lists.stage(&mut batch, signer, None, false)?;
        }
        self.storage.commit(batch).await?;
        if own {
            self.device_lists.committed(signer);
        } else if others {
            self.device_lists.committed_private(signer);
        }
        Ok(failures)
    }

    /// A signature of one's own device (by the self-signing key) or master key (by a device).
    fn own_signature(&self, user: &UserId, key_id: &str, object: &Map<String, Value>) -> Result<NewSignature, Value> {
        let device = <&DeviceId>::from(key_id);
        if let Some(stored) = self.storage.device_keys(user, device).map_err(internal)? {
            if signing::signed_part(&stored) != signing::signed_part(object) {
                return Err(failure("M_INVALID_SIGNATURE", "The signed object is not the device's keys"));
            }
            let ssk = self.storage.cross_signing_key(user, SELF_SIGNING).map_err(internal)?;
            let Some((ssk_id, ssk_public)) = ssk.as_ref().and_then(single_key) else {
                return Err(failure("M_INVALID_SIGNATURE", "No self-signing key to sign devices with"));
            };
            signing::verify(object, user, &ssk_id, &ssk_public).map_err(|e| failure("M_INVALID_SIGNATURE", e))?;
            let signature = signing::signature(object, user, &ssk_id).unwrap_or_default();
            return Ok(NewSignature {
                target: user.to_owned(),
                target_key: key_id.to_owned(),
                signatures: [(ssk_id, json!(signature))].into_iter().collect(),
            });
        }
        let master = self.storage.cross_signing_key(user, MASTER).map_err(internal)?;
        let Some((master_id, master_public)) = master.as_ref().and_then(single_key) else {
            return Err(failure("M_NOT_FOUND", format!("No device or master key {key_id}")));
        };
        if key_id != master_public && key_id != master_id {
            return Err(failure("M_NOT_FOUND", format!("No device or master key {key_id}")));
        }
        if master.as_ref().map(signing::signed_part) != Some(signing::signed_part(object)) {
            return Err(failure("M_INVALID_SIGNATURE", "The signed object is not the master key"));
        }
        // Signed by one or more of the user's devices.
        let mut signatures = Map::new();
        let by_user = object.get("signatures").and_then(|s| s.get(user.as_str())).and_then(Value::as_object);
        for (signing_key, signature) in by_user.into_iter().flatten() {
            let Some(device) = signing_key.strip_prefix("ed25519:") else { continue };
            let Some(keys) = self.storage.device_keys(user, device.into()).map_err(internal)? else { continue };
            let Some(public) = keys.get("keys").and_then(|k| k.get(signing_key)).and_then(Value::as_str) else {
                continue;
            };
            signing::verify(object, user, signing_key, public).map_err(|e| failure("M_INVALID_SIGNATURE", e))?;
            signatures.insert(signing_key.clone(), signature.clone());
        }
        if signatures.is_empty() {
            return Err(failure("M_INVALID_SIGNATURE", "No signature by one of your devices"));
        }
        Ok(NewSignature { target: user.to_owned(), target_key: master_id, signatures })
    }

    /// A signature of another user's master key by one's user-signing key.
    fn other_signature(
        &self,
        signer: &UserId,
        target: &UserId,
        key_id: &str,
        object: &Map<String, Value>,
    ) -> Result<NewSignature, Value> {
        let master = self.storage.cross_signing_key(target, MASTER).map_err(internal)?;
        let Some((master_id, master_public)) = master.as_ref().and_then(single_key) else {
            return Err(failure("M_NOT_FOUND", format!("{target} has no master key")));
        };
        if key_id != master_public && key_id != master_id {
            return Err(failure("M_NOT_FOUND", format!("{key_id} is not {target}'s master key")));
        }
        if master.as_ref().map(signing::signed_part) != Some(signing::signed_part(object)) {
            return Err(failure("M_INVALID_SIGNATURE", "The signed object is not the master key"));
        }
        let usk = self.storage.cross_signing_key(signer, USER_SIGNING).map_err(internal)?;
        let Some((usk_id, usk_public)) = usk.as_ref().and_then(single_key) else {
            return Err(failure("M_INVALID_SIGNATURE", "You have no user-signing key"));
        };
        signing::verify(object, signer, &usk_id, &usk_public).map_err(|e| failure("M_INVALID_SIGNATURE", e))?;
        let signature = signing::signature(object, signer, &usk_id).unwrap_or_default();
        Ok(NewSignature {
            target: target.to_owned(),
            target_key: master_id,
            signatures: [(usk_id, json!(signature))].into_iter().collect(),
        })
    }
}

/// A checked signature, ready to store.
struct NewSignature {
    target: OwnedUserId,
    /// A device ID, or the master key's ID.
    target_key: String,
    signatures: Map<String, Value>,
}

/// What `failures` says about a user of another server.
fn remote_failure() -> Value {
    json!({ "status": 503, "message": "Keys of other servers' users are asked of their servers" })
}

fn failure(errcode: &str, error: impl std::fmt::Display) -> Value {
    json!({ "errcode": errcode, "error": error.to_string() })
}

fn internal(e: crate::storage::StorageError) -> Value {
    tracing::error!(error = %e, "reading keys failed");
    failure("M_UNKNOWN", "Internal error")
}

/// Checks uploaded device keys: their shape (ruma's `DeviceKeys`), that they are the session's
/// user and device, and the device's own signature if it made one. Returns them without
/// `unsigned`, which the server fills in.
fn check_device_keys(user: &UserId, device: &DeviceId, mut keys: Map<String, Value>) -> Result<Map<String, Value>> {
    keys.remove("unsigned");
    // Keys without signatures are accepted, as Synapse does (clients refuse them); a signature
    // by the device's key, when given, must be right.
    let mut shape = keys.clone();
    shape.entry("signatures").or_insert_with(|| json!({}));
    let parsed: ruma::encryption::DeviceKeys = serde_json::from_value(Value::Object(shape))
        .map_err(|e| Error::bad_json(format!("Invalid device_keys: {e}")))?;
    if parsed.user_id != user {
        return Err(Error::invalid_param(format!("device_keys.user_id must be {user}")));
    }
    if parsed.device_id != device {
        return Err(Error::invalid_param(format!("device_keys.device_id must be this session's device, {device}")));
    }
    let key_id = format!("ed25519:{device}");
    if signing::signature(&keys, user, &key_id).is_some() {
        let public =
            parsed.keys.iter().find(|(id, _)| id.as_str() == key_id).map(|(_, key)| key.as_str()).ok_or_else(|| {
                Error::invalid_param(format!("device_keys is signed with {key_id} but does not have it"))
            })?;
        signing::verify(&keys, user, &key_id, public)
            .map_err(|e| Error::new(ErrorKind::InvalidSignature, format!("Invalid device_keys signature: {e}")))?;
    }
    Ok(keys)
}

/// Splits `{"algorithm:key_id": key}` into `(algorithm, key_id, key)`.
fn parse_key_ids<'a>(keys: &'a Map<String, Value>, field: &str) -> Result<Vec<(&'a str, &'a str, &'a Value)>> {
    keys.iter()
        .map(|(id, key)| {
            let (algorithm, key_id) = id
                .split_once(':')
                .filter(|(algorithm, key_id)| !algorithm.is_empty() && !key_id.is_empty())
                .ok_or_else(|| Error::bad_json(format!("{field}: key IDs are algorithm:key_id, not {id}")))?;
            if !key.is_string() && !key.is_object() {
                return Err(Error::bad_json(format!("{field}: {id} is neither a string nor a key object")));
            }
            Ok((algorithm, key_id, key))
        })
        .collect()
}

/// Checks an uploaded cross-signing key: shape (ruma's `CrossSigningKey`), owner, usage, exactly
/// one ed25519 key whose ID names it. Returns its key ID and public key.
fn check_cross_signing_key(user: &UserId, key: &Map<String, Value>, usage: &str) -> Result<(String, String)> {
    let parsed: CrossSigningKey = serde_json::from_value(Value::Object(key.clone()))
        .map_err(|e| Error::bad_json(format!("Invalid {usage} key: {e}")))?;
    if parsed.user_id != user {
        return Err(Error::invalid_param(format!("The {usage} key's user_id must be {user}")));
    }
    if !parsed.usage.iter().any(|u| u.as_str() == usage) {
        return Err(Error::invalid_param(format!("The {usage} key's usage must include {usage}")));
    }
    single_key(key)
        .ok_or_else(|| Error::invalid_param(format!("The {usage} key must have one ed25519 key, ed25519:KEY")))
}

/// The key ID and public key of a cross-signing key with exactly one ed25519 key named after
/// itself (`"ed25519:KEY": "KEY"`).
fn single_key(key: &Map<String, Value>) -> Option<(String, String)> {
    let keys = key.get("keys")?.as_object()?;
    if keys.len() != 1 {
        return None;
    }
    let (id, public) = keys.iter().next()?;
    let public = public.as_str()?;
    (id.strip_prefix("ed25519:") == Some(public) && !public.is_empty()).then(|| (id.clone(), public.to_owned()))
}
