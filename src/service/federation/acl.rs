//! Server ACLs (`m.room.server_acl`): which servers may take part in a room. Handlers of the
//! endpoints the spec protects (make/send join, leave, knock, invite, state, backfill, event
//! auth, missing events, and each PDU and room EDU of `/send`) call
//! [`Services::check_server_acl`].

use ruma::{RoomId, ServerName, events::room::server_acl::RoomServerAclEventContent};
use serde_json::{Map, Value};

use crate::{
    error::{Error, Result},
    service::Services,
};

impl Services {
    /// `403 M_FORBIDDEN` when the room's current server ACL denies `origin`. A room without an
    /// ACL, or unknown here, denies nobody.
    pub fn check_server_acl(&self, room_id: &RoomId, origin: &ServerName) -> Result<()> {
        let Some(acl) = self.rooms.current_state_event(room_id, "m.room.server_acl", "")? else {
            return Ok(());
        };
        if acl_allows(&acl.content_map(), origin) {
            Ok(())
        } else {
            Err(Error::forbidden(format!("Server {origin} is denied by the room's server ACL")))
        }
    }
}

/// Evaluates ACL content as Synapse does, so both agree on malformed content: a missing or
/// non-list `allow` allows nobody, a non-list `deny` denies nobody, entries that are not strings
/// are skipped, and `allow_ip_literals` is true unless it is `false`.
pub fn acl_allows(content: &Map<String, Value>, origin: &ServerName) -> bool {
    let list = |name: &str| -> Vec<String> {
        content
            .get(name)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let allow_ip_literals = content.get("allow_ip_literals").and_then(Value::as_bool).unwrap_or(true);
    RoomServerAclEventContent::new(allow_ip_literals, list("allow"), list("deny")).is_allowed(origin)
}

#[cfg(test)]
mod tests {
    use ruma::server_name;
    use serde_json::{Map, Value, json};

    use super::acl_allows;

    fn content(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn allow_deny_wildcards_and_ip_literals() {
        let acl =
            content(json!({ "allow": ["*"], "deny": ["evil.example", "*.bad.example"], "allow_ip_literals": false }));
        assert!(acl_allows(&acl, server_name!("good.example")));
        assert!(acl_allows(&acl, server_name!("good.example:8448")));
        assert!(!acl_allows(&acl, server_name!("evil.example")));
        assert!(!acl_allows(&acl, server_name!("sub.bad.example")));
        assert!(!acl_allows(&acl, server_name!("1.2.3.4")));
        assert!(!acl_allows(&acl, server_name!("[::1]:8448")));
        let only = content(json!({ "allow": ["*.example.org", "example.org"] }));
        assert!(acl_allows(&only, server_name!("example.org")));
        assert!(acl_allows(&only, server_name!("matrix.example.org")));
        assert!(!acl_allows(&only, server_name!("example.com")));
        assert!(acl_allows(&content(json!({ "allow": ["*"] })), server_name!("1.2.3.4")));
        assert!(acl_allows(&content(json!({ "allow": ["ex?mple.org"] })), server_name!("example.org")));
    }

    #[test]
    fn malformed_content_is_read_like_synapse_does() {
        assert!(!acl_allows(&content(json!({})), server_name!("example.org")));
        assert!(!acl_allows(&content(json!({ "allow": "*" })), server_name!("example.org")));
        assert!(acl_allows(&content(json!({ "allow": ["*", 5], "deny": "example.org" })), server_name!("example.org")));
        assert!(acl_allows(&content(json!({ "allow": ["*"], "allow_ip_literals": "no" })), server_name!("1.2.3.4")));
    }
}
