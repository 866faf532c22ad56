//! User profiles: `displayname`, `avatar_url`, `m.tz` and custom fields (extensible profiles,
//! Matrix 1.16). Changing the display name or avatar will also update the user's room memberships
//! once rooms exist.

use std::sync::Arc;

use ruma::UserId;
use serde_json::{Map, Value};

use crate::{
    config::Config,
    error::{Error, ErrorKind, Result},
    storage::{Batch, Storage},
};

/// The whole profile must stay under this, serialized (the spec's 64 KiB).
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;
/// Longest field name.
pub const MAX_KEY_BYTES: usize = 255;
const MAX_DISPLAYNAME_CHARS: usize = 256;
const MAX_AVATAR_URL_BYTES: usize = 1000;

pub struct Profiles {
    config: Arc<Config>,
    storage: Arc<Storage>,
}

impl Profiles {
    pub fn new(config: Arc<Config>, storage: Arc<Storage>) -> Self {
        Self { config, storage }
    }

    /// A local user's whole profile; `M_NOT_FOUND` for unknown or remote users.
    pub fn profile(&self, user_id: &UserId) -> Result<Map<String, Value>> {
        self.ensure_known(user_id)?;
        Ok(self.storage.profile(user_id)?.into_iter().collect())
    }

    pub fn field(&self, user_id: &UserId, field: &str) -> Result<Value> {
        self.ensure_known(user_id)?;
        self.storage.profile_field(user_id, field)?.ok_or_else(|| Error::not_found("Profile field not set"))
    }

    fn ensure_known(&self, user_id: &UserId) -> Result<()> {
        let known = user_id.server_name() == self.config.server_name
            && self.storage.user(user_id)?.is_some_and(|u| !u.deactivated || !u.erased);
        if known { Ok(()) } else { Err(Error::not_found("Profile not found")) }
    }

    /// Sets one field. An empty display name or avatar URL removes the field.
    pub async fn set_field(&self, user_id: &UserId, field: &str, value: Value) -> Result<()> {
        validate_key(field)?;
        validate_value(field, &value)?;
        let clears = matches!(field, "displayname" | "avatar_url") && value.as_str() == Some("");
        let mut profile = self.storage.profile(user_id)?;
        let mut batch = Batch::new();
        if clears {
            profile.remove(field);
            batch.delete_profile_field(user_id, field);
        } else {
            batch.put_profile_field(user_id, field, &value);
            profile.insert(field.to_owned(), value);
            let size = serde_json::to_vec(&profile).map_or(usize::MAX, |v| v.len());
            if size > MAX_PROFILE_BYTES {
                return Err(Error::new(ErrorKind::ProfileTooLarge, "The profile would exceed 64 KiB"));
            }
        }
        self.storage.commit(batch).await?;
        Ok(())
    }

    pub async fn delete_field(&self, user_id: &UserId, field: &str) -> Result<()> {
        validate_key(field)?;
        let mut batch = Batch::new();
        batch.delete_profile_field(user_id, field);
        self.storage.commit(batch).await?;
        Ok(())
    }
}

/// Field names: the three the spec defines, or the common namespaced identifier grammar (and the
/// `m.` namespace is the spec's alone).
fn validate_key(field: &str) -> Result<()> {
    if field.len() > MAX_KEY_BYTES {
        return Err(Error::new(ErrorKind::KeyTooLarge, "Profile field names are at most 255 bytes"));
    }
    if matches!(field, "displayname" | "avatar_url" | "m.tz") {
        return Ok(());
    }
    let grammar = field.starts_with(|c: char| c.is_ascii_lowercase())
        && field.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
    if !grammar || field.starts_with("m.") {
        return Err(Error::invalid_param(
            "Profile field names are `displayname`, `avatar_url`, `m.tz` or a namespaced identifier like `com.example.field`",
        ));
    }
    Ok(())
}

fn validate_value(field: &str, value: &Value) -> Result<()> {
    match field {
        "displayname" => match value.as_str() {
            Some(name) if name.chars().count() <= MAX_DISPLAYNAME_CHARS => Ok(()),
            Some(_) => Err(Error::invalid_param("Display names are at most 256 characters")),
            None => Err(Error::invalid_param("`displayname` must be a string")),
        },
        "avatar_url" => match value.as_str() {
            Some(url) if url.len() > MAX_AVATAR_URL_BYTES => Err(Error::invalid_param("`avatar_url` is too long")),
            Some(url) if url.is_empty() || url.starts_with("mxc://") => Ok(()),
            _ => Err(Error::invalid_param("`avatar_url` must be an mxc:// URI")),
        },
        "m.tz" if !value.is_string() => Err(Error::invalid_param("`m.tz` must be a string")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn field_names_follow_the_grammar() {
        assert!(validate_key("displayname").is_ok());
        assert!(validate_key("m.tz").is_ok());
        assert!(validate_key("com.example.pronouns").is_ok());
        assert!(validate_key("m.custom").is_err());
        assert!(validate_key("Com.Example").is_err());
        assert!(validate_key("1abc").is_err());
        let long = "a".repeat(256);
        assert_eq!(validate_key(&long).unwrap_err().kind(), Some(&ErrorKind::KeyTooLarge));
    }

    #[test]
    fn values_are_checked_per_field() {
        assert!(validate_value("displayname", &json!("Alice")).is_ok());
        assert!(validate_value("displayname", &json!(3)).is_err());
        assert!(validate_value("avatar_url", &json!("mxc://a/b")).is_ok());
        assert!(validate_value("avatar_url", &json!("https://a/b")).is_err());
        assert!(validate_value("com.example.anything", &json!({"a": [1]})).is_ok());
    }
}
