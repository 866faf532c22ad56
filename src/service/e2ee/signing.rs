//! Checking the ed25519 signatures of keys (device keys, cross-signing keys) with ruma's signature
//! code: canonical JSON without `signatures` and `unsigned`, then the signature of one key.

use ruma::{
    UserId,
    canonical_json::try_from_json_map,
    serde::{Base64, base64::Standard},
    signatures::{SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};
use serde_json::{Map, Value};

/// The signature `signer` made of `object` with the key `key_id` (`ed25519:NAME`), if any.
pub fn signature<'a>(object: &'a Map<String, Value>, signer: &UserId, key_id: &str) -> Option<&'a str> {
    object.get("signatures")?.get(signer.as_str())?.get(key_id)?.as_str()
}

/// Checks that `object` carries a valid signature by `signer` with `key_id`, whose public key is
/// `public_key` (unpadded base64). The error says what is wrong, for the client.
pub fn verify(object: &Map<String, Value>, signer: &UserId, key_id: &str, public_key: &str) -> Result<(), String> {
    let signature =
        signature(object, signer, key_id).ok_or_else(|| format!("no signature by {signer} with {key_id}"))?;
    if key_id.split_once(':').map(|(algorithm, _)| algorithm) != Some("ed25519") {
        return Err(format!("{key_id} is not an ed25519 key"));
    }
    let public_key =
        Base64::<Standard>::parse(public_key).map_err(|e| format!("the key of {key_id} is not base64: {e}"))?;
    let signature = Base64::<Standard>::parse(signature).map_err(|e| format!("the signature is not base64: {e}"))?;
    let canonical = try_from_json_map(object.clone()).map_err(|e| format!("not canonical JSON: {e}"))?;
    let signed = to_canonical_json_string_for_signing(&canonical).map_err(|e| e.to_string())?;
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public_key.as_bytes(),
        signature.as_bytes(),
        signed.as_bytes(),
    )
    .map_err(|e| format!("the signature by {key_id} does not match: {e}"))
}

/// The object without `signatures` and `unsigned`: what a signature covers, for comparing a key
/// someone signed with the key as stored.
pub fn signed_part(object: &Map<String, Value>) -> Map<String, Value> {
    let mut object = object.clone();
    object.remove("signatures");
    object.remove("unsigned");
    object
}

#[cfg(test)]
mod tests {
    use ruma::{
        signatures::{Ed25519KeyPair, sign_json},
        user_id,
    };
    use serde_json::json;

    use super::*;

    fn signed(key: &Ed25519KeyPair, object: Value) -> Map<String, Value> {
        let Value::Object(map) = object else { panic!() };
        let mut canonical = try_from_json_map(map).unwrap();
        sign_json("@alice:x", key, &mut canonical).unwrap();
        match serde_json::to_value(canonical).unwrap() {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_signature_checks_out_and_a_changed_object_does_not() {
        let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "DEV".into()).unwrap();
        let public = Base64::<Standard>::new(key.public_key().to_vec()).encode();
        let alice = user_id!("@alice:x");
        let mut object = signed(&key, json!({ "user_id": "@alice:x", "keys": { "ed25519:DEV": public } }));
        object.insert("unsigned".into(), json!({ "device_display_name": "added later" }));
        verify(&object, alice, "ed25519:DEV", &public).unwrap();
        // Another key, another signer, a changed object: refused, with a reason.
        let other = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "DEV".into()).unwrap();
        let other_public = Base64::<Standard>::new(other.public_key().to_vec()).encode();
        assert!(verify(&object, alice, "ed25519:DEV", &other_public).is_err());
        assert!(verify(&object, user_id!("@bob:x"), "ed25519:DEV", &public).is_err());
        object.insert("user_id".into(), json!("@mallory:x"));
        assert!(verify(&object, alice, "ed25519:DEV", &public).unwrap_err().contains("does not match"));
        assert_eq!(signed_part(&object).len(), 2);
    }
}
