//! Push rules: the user's ruleset lives in their `m.push_rules` global account data, which is how
//! `/sync` tells their other devices about a change. Until the user changes anything it is the
//! spec's defaults; a stored ruleset is brought up to date with the current defaults when read, so
//! new default rules reach existing users.

use ruma::{
    OwnedRoomId, OwnedUserId, UserId,
    push::{
        Action, AnyPushRuleRef, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule, NewPushRule,
        NewSimplePushRule, PushCondition, RemovePushRuleError, RuleKind, Ruleset,
    },
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::account_data::AccountData;
use crate::error::{Error, Result};

/// The account data type that holds the ruleset.
pub const PUSH_RULES: &str = "m.push_rules";

/// Where a new or moved rule goes: relative to another rule of its kind.
#[derive(Default)]
pub struct Position<'a> {
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
}

/// The body of `PUT /pushrules/global/{kind}/{ruleId}`; which fields count depends on the kind.
#[derive(Deserialize)]
pub struct RuleBody {
    actions: Vec<Action>,
    #[serde(default)]
    conditions: Vec<PushCondition>,
    pattern: Option<String>,
}

impl AccountData {
    /// The user's ruleset: stored changes over the current server defaults.
    pub fn push_rules(&self, user: &UserId) -> Result<Ruleset> {
        let defaults = Ruleset::server_default(user);
        let Ok(stored) = self.get(user, None, PUSH_RULES) else { return Ok(defaults) };
        let mut rules: Ruleset = serde_json::from_value(stored.get("global").cloned().unwrap_or_default())
            .map_err(|e| Error::internal(format!("stored push rules of {user}: {e}")))?;
        rules.update_with_server_default(defaults);
        Ok(rules)
    }

    /// The ruleset as the client API shows it: every kind present, even without rules (ruma
    /// leaves empty kinds out; clients and the spec expect them).
    pub fn push_rules_json(&self, user: &UserId) -> Result<Value> {
        ruleset_json(&self.push_rules(user)?)
    }

    /// One rule as the client API shows it.
    pub fn push_rule(&self, user: &UserId, kind: &str, rule_id: &str) -> Result<Value> {
        let rules = self.push_rules(user)?;
        let rule = rules.get(rule_kind(kind)?, rule_id).ok_or_else(rule_not_found)?;
        let json = match rule {
            AnyPushRuleRef::Override(rule) | AnyPushRuleRef::Underride(rule) => serde_json::to_value(rule),
            AnyPushRuleRef::Content(rule) => serde_json::to_value(rule),
            AnyPushRuleRef::Room(rule) => serde_json::to_value(rule),
            AnyPushRuleRef::Sender(rule) => serde_json::to_value(rule),
            _ => return Err(rule_not_found()),
        };
        json.map_err(|e| Error::internal(format!("push rule: {e}")))
    }

    /// Adds or replaces a user-defined rule, optionally moving it.
    pub async fn put_push_rule(
        &self,
        user: &UserId,
        kind: &str,
        rule_id: &str,
        body: RuleBody,
        position: Position<'_>,
    ) -> Result<()> {
        let rule = new_rule(rule_kind(kind)?, rule_id, body)?;
        self.update_push_rules(user, |rules| {
            rules.insert(rule, position.after, position.before).map_err(|e| match e {
                InsertPushRuleError::UnknownRuleId => Error::not_found("The `before` or `after` rule does not exist"),
                other => Error::invalid_param(other.to_string()),
            })
        })
        .await
    }

    pub async fn delete_push_rule(&self, user: &UserId, kind: &str, rule_id: &str) -> Result<()> {
        let kind = rule_kind(kind)?;
        self.update_push_rules(user, |rules| {
            rules.remove(kind, rule_id).map_err(|e| match e {
                RemovePushRuleError::ServerDefault => Error::invalid_param("Server-default rules cannot be deleted"),
                _ => rule_not_found(),
            })
        })
        .await
    }

    pub async fn set_push_rule_enabled(&self, user: &UserId, kind: &str, rule_id: &str, enabled: bool) -> Result<()> {
        let kind = rule_kind(kind)?;
        self.update_push_rules(user, |rules| rules.set_enabled(kind, rule_id, enabled).map_err(|_| rule_not_found()))
            .await
    }

    pub async fn set_push_rule_actions(
        &self,
        user: &UserId,
        kind: &str,
        rule_id: &str,
        actions: Vec<Action>,
    ) -> Result<()> {
        let kind = rule_kind(kind)?;
        self.update_push_rules(user, |rules| rules.set_actions(kind, rule_id, actions).map_err(|_| rule_not_found()))
            .await
    }

    /// Reads, changes and stores the ruleset under the user's account-data lock, so concurrent
    /// changes do not overwrite each other. Nothing is stored when `change` fails.
    async fn update_push_rules(&self, user: &UserId, change: impl FnOnce(&mut Ruleset) -> Result<()>) -> Result<()> {
        let _guard = self.lock(user).await;
        let mut rules = self.push_rules(user)?;
        change(&mut rules)?;
        let content = json!({ "global": ruleset_json(&rules)? });
        self.put_locked(user, None, PUSH_RULES, content).await
    }
}

fn ruleset_json(rules: &Ruleset) -> Result<Value> {
    let mut json = serde_json::to_value(rules).map_err(|e| Error::internal(format!("push rules: {e}")))?;
    if let Some(kinds) = json.as_object_mut() {
        for kind in ["override", "content", "room", "sender", "underride"] {
            kinds.entry(kind).or_insert_with(|| json!([]));
        }
    }
    Ok(json)
}

fn rule_not_found() -> Error {
    Error::not_found("No such push rule")
}

fn rule_kind(kind: &str) -> Result<RuleKind> {
    match RuleKind::from(kind) {
        kind @ (RuleKind::Override | RuleKind::Underride | RuleKind::Sender | RuleKind::Room | RuleKind::Content) => {
            Ok(kind)
        }
        _ => Err(Error::invalid_param(format!("Unknown push rule kind {kind}"))),
    }
}

fn new_rule(kind: RuleKind, rule_id: &str, body: RuleBody) -> Result<NewPushRule> {
    let RuleBody { actions, conditions, pattern } = body;
    Ok(match kind {
        RuleKind::Override => NewPushRule::Override(NewConditionalPushRule::new(rule_id.into(), conditions, actions)),
        RuleKind::Underride => NewPushRule::Underride(NewConditionalPushRule::new(rule_id.into(), conditions, actions)),
        RuleKind::Content => {
            let pattern = pattern.ok_or_else(|| Error::missing_param("A content rule needs a `pattern`"))?;
            NewPushRule::Content(NewPatternedPushRule::new(rule_id.into(), pattern, actions))
        }
        RuleKind::Room => {
            let room = OwnedRoomId::try_from(rule_id)
                .map_err(|_| Error::invalid_param("The ID of a room rule is the room's ID"))?;
            NewPushRule::Room(NewSimplePushRule::new(room, actions))
        }
        RuleKind::Sender => {
            let sender = OwnedUserId::try_from(rule_id)
                .map_err(|_| Error::invalid_param("The ID of a sender rule is the sender's user ID"))?;
            NewPushRule::Sender(NewSimplePushRule::new(sender, actions))
        }
        _ => return Err(Error::invalid_param("Unknown push rule kind")),
    })
}
