//! Push rules (`/pushrules/`): read, add, move, delete, enable and change the actions of the
//! user's rules. Only the `global` scope exists.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::push::Action;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    api::extract::{self, Auth, Path, Query},
    error::{Error, ErrorKind, Result},
    service::{
        Services,
        push_rules::{Position, RuleBody},
    },
};

/// `GET /pushrules/`: every client reads them before its first sync.
pub async fn all(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    Ok(Json(json!({ "global": services.account_data.push_rules_json(&session.user_id)? })))
}

/// `GET /pushrules/global/`.
pub async fn global(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(scope): Path<String>,
) -> Result<Json<Value>> {
    check_scope(&scope)?;
    Ok(Json(services.account_data.push_rules_json(&session.user_id)?))
}

pub async fn get(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check_scope(&scope)?;
    Ok(Json(services.account_data.push_rule(&session.user_id, &kind, &rule_id)?))
}

#[derive(Deserialize)]
pub struct PositionQuery {
    before: Option<String>,
    after: Option<String>,
}

pub async fn put(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
    Query(query): Query<PositionQuery>,
    extract::Json(body): extract::Json<RuleBody>,
) -> Result<Json<Value>> {
    check_scope(&scope)?;
    let position = Position { before: query.before.as_deref(), after: query.after.as_deref() };
    services.account_data.put_push_rule(&session.user_id, &kind, &rule_id, body, position).await?;
    Ok(Json(json!({})))
}

pub async fn delete(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check_scope(&scope)?;
    services.account_data.delete_push_rule(&session.user_id, &kind, &rule_id).await?;
    Ok(Json(json!({})))
}

/// `GET .../enabled` and `GET .../actions`: one attribute of a rule.
pub async fn get_attribute(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((scope, kind, rule_id, attribute)): Path<(String, String, String, String)>,
) -> Result<Json<Value>> {
    check_scope(&scope)?;
    check_attribute(&attribute)?;
    let rule = services.account_data.push_rule(&session.user_id, &kind, &rule_id)?;
    Ok(Json(json!({ attribute.as_str(): rule[attribute.as_str()] })))
}

#[derive(Deserialize)]
pub struct Attributes {
    enabled: Option<bool>,
    actions: Option<Vec<Action>>,
}

/// `PUT .../enabled` (`{"enabled": bool}`) and `PUT .../actions` (`{"actions": [...]}`).
pub async fn set_attribute(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((scope, kind, rule_id, attribute)): Path<(String, String, String, String)>,
    extract::Json(body): extract::Json<Attributes>,
) -> Result<Json<Value>> {
    check_scope(&scope)?;
    check_attribute(&attribute)?;
    let (user, data) = (&session.user_id, &services.account_data);
    let missing = || Error::missing_param(format!("`{attribute}` is required"));
    match (attribute.as_str(), body) {
        ("enabled", Attributes { enabled: Some(enabled), .. }) => {
            data.set_push_rule_enabled(user, &kind, &rule_id, enabled).await?
        }
        ("actions", Attributes { actions: Some(actions), .. }) => {
            data.set_push_rule_actions(user, &kind, &rule_id, actions).await?
        }
        _ => return Err(missing()),
    }
    Ok(Json(json!({})))
}

fn check_attribute(attribute: &str) -> Result<()> {
    match attribute {
        "enabled" | "actions" => Ok(()),
        _ => Err(Error::new(ErrorKind::Unrecognized, "Unrecognized request")),
    }
}

fn check_scope(scope: &str) -> Result<()> {
    if scope == "global" { Ok(()) } else { Err(Error::invalid_param(format!("Unknown push rule scope {scope}"))) }
}
