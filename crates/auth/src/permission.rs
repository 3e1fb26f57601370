//! Channel permissions: who may join, publish in, read the history of, or see the presence of
//! a room, decided per message (SPEC §4: "Authorise every message, not only the connection").
//!
//! Rules are checked in order; the first whose room pattern and actions match decides, and no
//! later rule is consulted. When none matches, the default applies: authenticated users are
//! allowed, and anonymous callers too when anonymous access is on.

use serde::Deserialize;
use switchboard_hub::RoomPattern;

use crate::error::Denied;
use crate::identity::Identity;

/// Something done to a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `join` / `subscribe`, an SSE or poll `channels=` entry.
    #[serde(alias = "join")]
    Subscribe,
    /// `publish`, any relayed typed message, `POST /api/publish`.
    Publish,
    /// `history`, `GET /api/history`, replay on join with `since`.
    History,
    /// `presence`, `GET /api/presence`.
    Presence,
}

/// Who a rule lets through.
///
/// In TOML: `allow = "anyone"`, `"authenticated"`, `"nobody"`, `"channels"`, or
/// `allow = { match = "user:{sub}" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Allow {
    /// Everyone, anonymous callers included.
    Anyone,
    /// Any authenticated user.
    Authenticated,
    /// No one (the backend API key bypasses rules altogether).
    Nobody,
    /// Users whose claims make the template equal the room: `user:{sub}` lets `alice` into
    /// `user:alice` only. `{name}` is replaced by the claim `name` (a string or a number); a
    /// missing claim never matches.
    Match(String),
    /// Users whose `channels` claim (or proxy answer) has a pattern matching the room.
    Channels,
}

/// One rule: for rooms matching `rooms`, the `actions` listed are allowed to `allow`.
///
/// ```toml
/// [[auth.permissions]]
/// rooms = "user:*"
/// allow = { match = "user:{sub}" }
///
/// [[auth.permissions]]
/// rooms = "news:*"
/// actions = ["subscribe", "history"]
/// allow = "anyone"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionRule {
    /// A room pattern (`*` matches any run of characters), as for per-room settings.
    pub rooms: String,
    /// The actions this rule decides. Default: all four.
    #[serde(default = "all_actions")]
    pub actions: Vec<Action>,
    /// Who is allowed.
    pub allow: Allow,
}

fn all_actions() -> Vec<Action> {
    vec![
        Action::Subscribe,
        Action::Publish,
        Action::History,
        Action::Presence,
    ]
}

/// The compiled rule table.
#[derive(Debug, Clone)]
pub struct Permissions {
    rules: Vec<Compiled>,
    anonymous_allowed: bool,
}

#[derive(Debug, Clone)]
struct Compiled {
    rooms: RoomPattern,
    actions: Vec<Action>,
    allow: Allow,
}

impl Permissions {
    /// Compiles `rules`. `anonymous_allowed` sets the default for unmatched rooms.
    pub fn new(rules: &[PermissionRule], anonymous_allowed: bool) -> Permissions {
        let rules = rules
            .iter()
            .map(|r| Compiled {
                rooms: RoomPattern::new(&r.rooms),
                actions: r.actions.clone(),
                allow: r.allow.clone(),
            })
            .collect();
        Permissions {
            rules,
            anonymous_allowed,
        }
    }

    /// Whether `who` (`None`: anonymous) may do `action` in `room`.
    pub fn check(&self, who: Option<&Identity>, action: Action, room: &str) -> Result<(), Denied> {
        let rule = self
            .rules
            .iter()
            .find(|r| r.actions.contains(&action) && r.rooms.matches(room));
        let allowed = match (rule.map(|r| &r.allow), who) {
            (None, None) => self.anonymous_allowed,
            (None, Some(_)) => true,
            (Some(Allow::Anyone), _) => true,
            (Some(Allow::Nobody), _) => false,
            (Some(_), None) => false,
            (Some(Allow::Authenticated), Some(_)) => true,
            (Some(Allow::Match(template)), Some(id)) => template_matches(template, id, room),
            (Some(Allow::Channels), Some(id)) => id
                .channel_patterns()
                .is_some_and(|patterns| patterns.iter().any(|p| p.matches(room))),
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied {
                action,
                authenticated: who.is_some(),
            })
        }
    }
}

/// Whether `template` with `{claim}`s substituted from `id` equals `room`, compared piecewise
/// so no string is built per message.
fn template_matches(template: &str, id: &Identity, room: &str) -> bool {
    let mut rest = room;
    let mut tpl = template;
    while let Some(open) = tpl.find('{') {
        let Some(close) = tpl[open..].find('}').map(|c| open + c) else {
            break;
        };
        let (literal, name) = (&tpl[..open], &tpl[open + 1..close]);
        let Some(after) = rest.strip_prefix(literal) else {
            return false;
        };
        let value = match name {
            "sub" => std::borrow::Cow::Borrowed(id.user_id()),
            _ => match id.claim(name) {
                Some(serde_json::Value::String(s)) => std::borrow::Cow::Borrowed(s.as_str()),
                Some(serde_json::Value::Number(n)) => std::borrow::Cow::Owned(n.to_string()),
                _ => return false,
            },
        };
        // An empty value would let `user:{sub}` match the bare `user:` room.
        if value.is_empty() {
            return false;
        }
        let Some(after) = after.strip_prefix(value.as_ref()) else {
            return false;
        };
        rest = after;
        tpl = &tpl[close + 1..];
    }
    rest == tpl
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::identity::AuthMethod;

    fn user(sub: &str, claims: Value) -> Identity {
        let mut map: Map<String, Value> = claims.as_object().cloned().unwrap_or_default();
        map.insert("sub".into(), sub.into());
        Identity::from_claims(sub.into(), map, AuthMethod::Jwt)
    }

    fn rules(toml_like: Value) -> Vec<PermissionRule> {
        serde_json::from_value(toml_like).unwrap()
    }

    fn table() -> Permissions {
        Permissions::new(
            &rules(json!([
                {"rooms": "user:*", "allow": {"match": "user:{sub}"}},
                {"rooms": "team:*", "allow": {"match": "team:{team}:chat"}},
                {"rooms": "news:*", "actions": ["join", "history"], "allow": "anyone"},
                {"rooms": "news:*", "actions": ["publish"], "allow": "nobody"},
                {"rooms": "private:*", "allow": "channels"},
                {"rooms": "members:*", "allow": "authenticated"},
            ])),
            false,
        )
    }

    #[test]
    fn personal_rooms_admit_only_their_owner() {
        let t = table();
        let alice = user("alice", json!({}));
        assert_eq!(
            t.check(Some(&alice), Action::Subscribe, "user:alice"),
            Ok(())
        );
        let denied = t
            .check(Some(&alice), Action::Subscribe, "user:bob")
            .unwrap_err();
        assert_eq!(denied.http_status(), http::StatusCode::FORBIDDEN);
        assert_eq!(denied.code(), "forbidden");
        assert!(t
            .check(Some(&alice), Action::Publish, "user:alice:extra")
            .is_err());
        assert!(t.check(None, Action::Subscribe, "user:alice").is_err());
    }

    #[test]
    fn claim_templates_substitute_any_claim_and_refuse_missing_ones() {
        let t = table();
        assert!(t
            .check(
                Some(&user("a", json!({"team": "red"}))),
                Action::Publish,
                "team:red:chat"
            )
            .is_ok());
        assert!(t
            .check(
                Some(&user("a", json!({"team": 7}))),
                Action::Publish,
                "team:7:chat"
            )
            .is_ok());
        assert!(t
            .check(
                Some(&user("a", json!({"team": "red"}))),
                Action::Publish,
                "team:blue:chat"
            )
            .is_err());
        assert!(t
            .check(Some(&user("a", json!({}))), Action::Publish, "team::chat")
            .is_err());
        assert!(t
            .check(
                Some(&user("a", json!({"team": ""}))),
                Action::Publish,
                "team::chat"
            )
            .is_err());
    }

    #[test]
    fn first_matching_rule_decides_per_action() {
        let t = table();
        assert!(t.check(None, Action::Subscribe, "news:today").is_ok());
        assert!(t.check(None, Action::History, "news:today").is_ok());
        let alice = user("alice", json!({}));
        assert!(
            t.check(Some(&alice), Action::Publish, "news:today")
                .is_err(),
            "nobody publishes"
        );
        // No rule covers presence in news:*: the default (authenticated only, auth on) applies.
        assert!(t
            .check(Some(&alice), Action::Presence, "news:today")
            .is_ok());
        let anon = t.check(None, Action::Presence, "news:today").unwrap_err();
        assert_eq!(anon.http_status(), http::StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn channels_claim_is_an_allowlist_of_patterns() {
        let t = table();
        let id = user("a", json!({"channels": ["private:a*", "private:x"]}));
        assert!(t.check(Some(&id), Action::Subscribe, "private:abc").is_ok());
        assert!(t.check(Some(&id), Action::Subscribe, "private:x").is_ok());
        assert!(t.check(Some(&id), Action::Subscribe, "private:y").is_err());
        assert!(t
            .check(
                Some(&user("b", json!({}))),
                Action::Subscribe,
                "private:abc"
            )
            .is_err());
    }

    #[test]
    fn default_depends_on_anonymous_access() {
        let closed = Permissions::new(&[], false);
        assert!(closed.check(None, Action::Subscribe, "lobby").is_err());
        assert!(closed
            .check(Some(&user("a", json!({}))), Action::Subscribe, "lobby")
            .is_ok());
        let open = Permissions::new(&[], true);
        assert!(open.check(None, Action::Publish, "lobby").is_ok());
        // Rules still bind anonymous callers when anonymous access is on.
        let t = Permissions::new(
            &rules(json!([{"rooms": "members:*", "allow": "authenticated"}])),
            true,
        );
        assert!(t.check(None, Action::Subscribe, "members:x").is_err());
        assert!(t.check(None, Action::Subscribe, "other").is_ok());
    }
}
