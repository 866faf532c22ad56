//! The user directory (`/user_directory/search`): the users who share a room with the searcher or
//! are in a room of the public directory, as Synapse shows by default. Local users are matched and
//! shown by their global profile, so a name set in one private room does not leak to others;
//! remote users by their member event.

use std::collections::{BTreeSet, HashMap};

use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use super::Rooms;
use crate::error::Result;

/// Results when the client does not say.
pub const DEFAULT_LIMIT: usize = 10;
/// The most results a client may ask for.
pub const MAX_LIMIT: usize = 100;

/// One user found.
struct Found {
    user_id: OwnedUserId,
    display_name: Option<String>,
    avatar_url: Option<String>,
    /// Lower is a better match: 0 exact, 1 every word of the term begins a word.
    rank: u8,
}

impl Rooms {
    /// Users matching `term` (case-insensitively, in the user ID or the display name) whom
    /// `searcher` may see; the bool says whether there were more than `limit`.
    pub fn search_users(&self, searcher: &UserId, term: &str, limit: usize) -> Result<(Vec<Value>, bool)> {
        let term = term.trim().to_lowercase();
        let mut rooms: BTreeSet<_> = self.joined_rooms(searcher)?.into_iter().collect();
        rooms.extend(self.storage.public_rooms()?);

        let mut found: HashMap<OwnedUserId, Found> = HashMap::new();
        for room_id in rooms {
            let Some(room) = self.room(&room_id)? else { continue };
            let state = self.current_state(&room)?;
            for (member, membership) in self.storage.members(room.short_id)? {
                // Not the searcher (Synapse leaves them out too), and each user once.
                if membership != "join" || member == searcher || found.contains_key(&member) {
                    continue;
                }
                let (display_name, avatar_url) = if self.is_local(&member) {
                    let profile = self.storage.profile(&member)?;
                    let field = |name: &str| profile.get(name).and_then(Value::as_str).map(str::to_owned);
                    (field("displayname"), field("avatar_url"))
                } else {
                    let content = self.state_content(&state, "m.room.member", member.as_str())?.unwrap_or_default();
                    let field = |name: &str| content.get(name).and_then(Value::as_str).map(str::to_owned);
                    (field("displayname"), field("avatar_url"))
                };
                let Some(rank) = rank(&term, member.as_str(), display_name.as_deref()) else { continue };
                found.insert(member.clone(), Found { user_id: member, display_name, avatar_url, rank });
            }
        }

        let mut found: Vec<Found> = found.into_values().collect();
        found.sort_by(|a, b| {
            let name = |f: &Found| f.display_name.clone().unwrap_or_default().to_lowercase();
            (a.rank, name(a), &a.user_id).cmp(&(b.rank, name(b), &b.user_id))
        });
        let limited = found.len() > limit;
        let results = found
            .into_iter()
            .take(limit)
            .map(|f| {
                let mut user = json!({ "user_id": f.user_id });
                if let Some(name) = f.display_name {
                    user["display_name"] = json!(name);
                }
                if let Some(avatar) = f.avatar_url {
                    user["avatar_url"] = json!(avatar);
                }
                user
            })
            .collect();
        Ok((results, limited))
    }

    fn is_local(&self, user: &UserId) -> bool {
        user.server_name() == self.config.server_name
    }
}

/// How well `term` (lowercase) matches a user, if at all: every word of the term must begin a
/// word of the user ID or the display name (as Synapse matches); an exact match of the whole name or
/// localpart ranks first.
fn rank(term: &str, user_id: &str, display_name: Option<&str>) -> Option<u8> {
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
    };
    let wanted = words(term);
    if wanted.is_empty() {
        return None;
    }
    let localpart = user_id.trim_start_matches('@').split(':').next().unwrap_or_default().to_lowercase();
    let name = display_name.unwrap_or_default().to_lowercase();
    let mut known = words(user_id);
    known.extend(words(&name));
    if !wanted.iter().all(|w| known.iter().any(|k| k.starts_with(w.as_str()))) {
        return None;
    }
    Some(if localpart == term || name == term { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::rank;

    #[test]
    fn ranks_exact_then_word_starts_then_anywhere() {
        assert_eq!(rank("alice", "@alice:example.org", None), Some(0));
        assert_eq!(rank("alice cooper", "@x:example.org", Some("Alice Cooper")), Some(0));
        assert_eq!(rank("ali", "@alice:example.org", Some("Wonder")), Some(1));
        assert_eq!(rank("won ali", "@x:example.org", Some("Alice Wonder")), Some(1), "words in any order");
        assert_eq!(rank("@user", "@user-1-alice:hs1", None), Some(1), "the start of a user ID");
        assert_eq!(rank("nder", "@x:example.org", Some("Alice Wonder")), None, "not inside a word");
        assert_eq!(rank("alice bob", "@x:example.org", Some("Alice Wonder")), None, "every word must match");
        assert_eq!(rank("bob", "@alice:example.org", Some("Alice")), None);
        assert_eq!(rank("", "@alice:example.org", Some("Alice")), None);
    }
}
