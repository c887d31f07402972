//! Roles and profiles: validation with the documented errors, the rights check,
//! `auth:getMyRights` and the per-user rate limit. Pure logic, no storage.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value, json};

use crate::protocol::errors::{self, ApiError};

/// `controllers` → `actions` → allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub controllers: BTreeMap<String, BTreeMap<String, bool>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Restriction {
    pub index: String,
    pub collections: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub role_id: String,
    pub restricted_to: Option<Vec<Restriction>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub policies: Vec<Policy>,
    pub rate_limit: u64,
}

/// Kuzzle's native controllers and the action names roles may name (Appendix A).
const NATIVE_ACTIONS: &[(&str, &[&str])] = &[
    (
        "auth",
        &[
            "checkRights",
            "checkToken",
            "createApiKey",
            "createMyCredentials",
            "createToken",
            "credentialsExist",
            "deleteApiKey",
            "deleteMyCredentials",
            "getCurrentUser",
            "getMyCredentials",
            "getMyRights",
            "getStrategies",
            "login",
            "logout",
            "refreshToken",
            "searchApiKeys",
            "updateMyCredentials",
            "updateSelf",
            "validateMyCredentials",
        ],
    ),
    (
        "security",
        &[
            "checkRights",
            "createApiKey",
            "createCredentials",
            "createFirstAdmin",
            "createOrReplaceProfile",
            "createOrReplaceRole",
            "createProfile",
            "createRestrictedUser",
            "createRole",
            "createUser",
            "deleteApiKey",
            "deleteCredentials",
            "deleteProfile",
            "deleteRole",
            "deleteUser",
            "getAllCredentialFields",
            "getCredentialFields",
            "getCredentials",
            "getCredentialsById",
            "getProfile",
            "getProfileMapping",
            "getProfileRights",
            "getRole",
            "getRoleMapping",
            "getUser",
            "getUserMapping",
            "getUserRights",
            "getUserStrategies",
            "hasCredentials",
            "mDeleteProfiles",
            "mDeleteRoles",
            "mDeleteUsers",
            "mGetProfiles",
            "mGetRoles",
            "mGetUsers",
            "refresh",
            "replaceUser",
            "restrictDefaultRights",
            "revokeTokens",
            "scrollProfiles",
            "scrollUsers",
            "searchApiKeys",
            "searchProfiles",
            "searchRoles",
            "searchUsers",
            "searchUsersByCredentials",
            "updateCredentials",
            "updateProfile",
            "updateProfileMapping",
            "updateRole",
            "updateRoleMapping",
            "updateUser",
            "updateUserMapping",
            "upsertUser",
            "validateCredentials",
        ],
    ),
    (
        "realtime",
        &[
            "count",
            "join",
            "list",
            "publish",
            "subscribe",
            "unsubscribe",
            "validate",
        ],
    ),
    (
        "server",
        &[
            "adminExists",
            "capabilities",
            "getAllStats",
            "getConfig",
            "getLastStats",
            "getStats",
            "healthCheck",
            "info",
            "metrics",
            "now",
            "openapi",
            "publicApi",
        ],
    ),
    ("cluster", &["status"]),
];

/// Out-of-scope Kuzzle controllers: any action name is accepted (CN-44).
const OPEN_CONTROLLERS: &[&str] = &[
    "document",
    "index",
    "collection",
    "bulk",
    "admin",
    "memoryStorage",
    "ms",
    "debug",
];

/// Validates a role body; `force` accepts unknown controllers (the caller logs a warning).
pub fn validate_role(role_id: &str, body: &Value, force: bool) -> Result<Role, ApiError> {
    let controllers_path = format!("{role_id}.controllers");
    let controllers = match body.get("controllers") {
        None | Some(Value::Null) => return Err(ApiError::missing_argument(&controllers_path)),
        Some(Value::Object(map)) if map.is_empty() => {
            return Err(ApiError::new(errors::EMPTY_ARGUMENT, [controllers_path]));
        }
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ApiError::invalid_type(&controllers_path, "object")),
    };
    let mut role = Role {
        controllers: BTreeMap::new(),
    };
    for (controller, entry) in controllers {
        let entry = match entry {
            Value::Object(map) if map.is_empty() => {
                return Err(ApiError::new(errors::EMPTY_ARGUMENT, [controller.as_str()]));
            }
            Value::Object(map) => map,
            _ => return Err(ApiError::invalid_type(controller, "object")),
        };
        let actions_path = format!("{controller}.actions");
        let actions = match entry.get("actions") {
            None => return Err(ApiError::missing_argument(&actions_path)),
            Some(Value::Object(map)) if map.is_empty() => {
                return Err(ApiError::new(errors::EMPTY_ARGUMENT, [actions_path]));
            }
            Some(Value::Object(map)) => map,
            Some(_) => return Err(ApiError::invalid_type(&actions_path, "object")),
        };
        let mut allowed = BTreeMap::new();
        for (action, value) in actions {
            let Value::Bool(value) = value else {
                return Err(ApiError::invalid_type(
                    &format!("{actions_path}.{action}"),
                    "boolean",
                ));
            };
            allowed.insert(action.clone(), *value);
        }
        role.controllers.insert(controller.clone(), allowed);
    }
    if role_id == "anonymous" && !role_allows(&role, "auth", "login") {
        return Err(ApiError::plain(errors::ROLE_LOGIN_REQUIRED));
    }
    for (controller, actions) in &role.controllers {
        let unknown_action = |action: &str| {
            ApiError::new(
                errors::ROLE_UNKNOWN_ACTION,
                [role_id, action, controller.as_str(), ""],
            )
        };
        if controller == "*" {
            if let Some(action) = actions.keys().find(|a| *a != "*") {
                return Err(unknown_action(action));
            }
        } else if let Some((_, known)) = NATIVE_ACTIONS.iter().find(|(c, _)| c == controller) {
            if let Some(action) = actions
                .keys()
                .find(|a| *a != "*" && !known.contains(&a.as_str()))
            {
                return Err(unknown_action(action));
            }
        } else if !OPEN_CONTROLLERS.contains(&controller.as_str()) && !force {
            return Err(ApiError::new(
                errors::ROLE_UNKNOWN_CONTROLLER,
                [role_id, controller.as_str(), ""],
            ));
        }
    }
    Ok(role)
}

/// Validates a profile body; `role_exists` answers for the stored roles.
pub fn validate_profile(
    profile_id: &str,
    body: &Value,
    role_exists: impl Fn(&str) -> bool,
) -> Result<Profile, ApiError> {
    let policies = match body.get("policies") {
        None | Some(Value::Null) => return Err(ApiError::missing_argument("body.policies")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::invalid_type("body.policies", "array")),
    };
    for policy in policies {
        if let Some(role_id) = policy.get("roleId").and_then(Value::as_str)
            && !role_exists(role_id)
        {
            return Err(ApiError::new(errors::ROLE_NOT_FOUND, [role_id]));
        }
    }
    let rate_limit = match body.get("rateLimit") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(v), _, _) => v,
            (None, Some(_), _) => {
                return Err(ApiError::new(
                    errors::INVALID_ARGUMENT,
                    ["rateLimit", "positive integer, or zero"],
                ));
            }
            _ => return Err(ApiError::invalid_type("rateLimit", "integer")),
        },
        Some(_) => return Err(ApiError::invalid_type("rateLimit", "integer")),
    };
    let defaulted = [json!({"roleId": "default"})];
    let policies: &[Value] = if policies.is_empty() {
        &defaulted
    } else {
        policies
    };
    let mut out = Vec::with_capacity(policies.len());
    for (i, policy) in policies.iter().enumerate() {
        let here = format!("{profile_id}.policies[{i}]");
        let Value::Object(policy) = policy else {
            return Err(ApiError::invalid_type(&here, "object"));
        };
        if let Some(key) = policy
            .keys()
            .find(|k| *k != "roleId" && *k != "restrictedTo")
        {
            return Err(ApiError::new(
                errors::UNEXPECTED_ARGUMENT,
                [key.as_str(), "\"roleId\", \"restrictedTo\""],
            ));
        }
        let Some(Value::String(role_id)) = policy.get("roleId") else {
            return Err(ApiError::missing_argument(&format!("{here}.roleId")));
        };
        let restricted_to = match policy.get("restrictedTo") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                Some(restrictions(items, &format!("{here}.restrictedTo"))?)
            }
            Some(_) => {
                return Err(ApiError::invalid_type(
                    &format!("{here}.restrictedTo"),
                    "array",
                ));
            }
        };
        out.push(Policy {
            role_id: role_id.clone(),
            restricted_to,
        });
    }
    if profile_id == "anonymous" && !out.iter().any(|p| p.role_id == "anonymous") {
        return Err(ApiError::plain(errors::PROFILE_MISSING_ANONYMOUS_ROLE));
    }
    Ok(Profile {
        policies: out,
        rate_limit,
    })
}

fn restrictions(items: &[Value], path: &str) -> Result<Vec<Restriction>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(j, item)| {
            let here = format!("{path}[{j}]");
            let Value::Object(map) = item else {
                return Err(ApiError::invalid_type(&here, "object"));
            };
            if let Some(key) = map.keys().find(|k| *k != "index" && *k != "collections") {
                return Err(ApiError::new(
                    errors::UNEXPECTED_ARGUMENT,
                    [key.as_str(), "\"index\", \"collections\""],
                ));
            }
            let Some(Value::String(index)) = map.get("index") else {
                return Err(ApiError::missing_argument(&format!("{here}.index")));
            };
            let collections = match map.get("collections") {
                None | Some(Value::Null) => None,
                Some(Value::Array(c)) if c.iter().all(Value::is_string) => Some(
                    c.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                ),
                Some(_) => {
                    return Err(ApiError::invalid_type(
                        &format!("{here}.collections"),
                        "string[]",
                    ));
                }
            };
            Ok(Restriction {
                index: index.clone(),
                collections,
            })
        })
        .collect()
}

/// The role's own answer: `controllers[c]` else `controllers["*"]`, then `actions[a]` else
/// `actions["*"]`; only an explicit `true` allows.
pub fn role_allows(role: &Role, controller: &str, action: &str) -> bool {
    let Some(actions) = role
        .controllers
        .get(controller)
        .or_else(|| role.controllers.get("*"))
    else {
        return false;
    };
    actions.get(action).or_else(|| actions.get("*")).copied() == Some(true)
}

fn restriction_matches(policy: &Policy, index: Option<&str>, collection: Option<&str>) -> bool {
    let (Some(restrictions), Some(index)) = (&policy.restricted_to, index) else {
        return true;
    };
    restrictions.iter().any(|r| {
        r.index == index
            && r.collections
                .as_ref()
                .is_none_or(|cs| collection.is_some_and(|c| cs.iter().any(|x| x == c)))
    })
}

/// The rights check (step 12): any policy of any profile whose role allows the action and
/// whose restrictions match. A user with no profiles is never allowed.
pub fn is_allowed(
    profiles: &[&Profile],
    roles: &HashMap<String, Role>,
    controller: &str,
    action: &str,
    index: Option<&str>,
    collection: Option<&str>,
) -> bool {
    profiles.iter().flat_map(|p| &p.policies).any(|policy| {
        roles
            .get(&policy.role_id)
            .is_some_and(|role| role_allows(role, controller, action))
            && restriction_matches(policy, index, collection)
    })
}

/// `auth:getMyRights`: every (controller, action, index, collection) with `*` for no
/// restriction; entries met more than once are allowed if any of them is.
pub fn rights(profiles: &[&Profile], roles: &HashMap<String, Role>) -> Value {
    let mut merged: BTreeMap<(String, String, String, String), bool> = BTreeMap::new();
    for policy in profiles.iter().flat_map(|p| &p.policies) {
        let Some(role) = roles.get(&policy.role_id) else {
            continue;
        };
        let places: Vec<(String, String)> = match &policy.restricted_to {
            None => vec![("*".into(), "*".into())],
            Some(rs) => rs
                .iter()
                .flat_map(|r| match &r.collections {
                    None => vec![(r.index.clone(), "*".to_owned())],
                    Some(cs) => cs.iter().map(|c| (r.index.clone(), c.clone())).collect(),
                })
                .collect(),
        };
        for (controller, actions) in &role.controllers {
            for (action, allowed) in actions {
                for (index, collection) in &places {
                    let key = (
                        controller.clone(),
                        action.clone(),
                        index.clone(),
                        collection.clone(),
                    );
                    *merged.entry(key).or_insert(false) |= *allowed;
                }
            }
        }
    }
    let hits: Vec<Value> = merged
        .into_iter()
        .map(|((controller, action, index, collection), allowed)| {
            json!({"action": action, "collection": collection, "controller": controller, "index": index,
                "value": if allowed { "allowed" } else { "denied" }})
        })
        .collect();
    json!({"total": hits.len(), "hits": hits})
}

/// Requests per second for a user: the highest `rateLimit` of its profiles; None
/// (unlimited) when any profile says 0 or there is none.
pub fn user_rate_limit(profiles: &[&Profile]) -> Option<u64> {
    if profiles.is_empty() || profiles.iter().any(|p| p.rate_limit == 0) {
        return None;
    }
    profiles.iter().map(|p| p.rate_limit).max()
}

/// A role as stored and returned: `{"controllers": …}`.
pub fn role_to_json(role: &Role) -> Value {
    let controllers: Map<String, Value> = role
        .controllers
        .iter()
        .map(|(c, actions)| (c.clone(), json!({"actions": actions})))
        .collect();
    json!({"controllers": controllers})
}

/// Role ids a profile refers to.
pub fn role_ids(profile: &Profile) -> HashSet<&str> {
    profile
        .policies
        .iter()
        .map(|p| p.role_id.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(result: Result<impl std::fmt::Debug, ApiError>) -> (Option<&'static str>, String) {
        let e = result.expect_err("should be refused");
        (e.id(), e.message())
    }

    #[test]
    fn role_validation_messages() {
        assert_eq!(
            err(validate_role("r", &json!({}), false)),
            (
                Some("api.assert.missing_argument"),
                "Missing argument \"r.controllers\".".into()
            )
        );
        assert_eq!(
            err(validate_role("r", &json!({"controllers": {}}), false)).0,
            Some("api.assert.empty_argument")
        );
        assert_eq!(
            err(validate_role("r", &json!({"controllers": []}), false)).1,
            "Wrong type for argument \"r.controllers\" (expected: object)"
        );
        assert_eq!(
            err(validate_role(
                "r",
                &json!({"controllers": {"auth": {}}}),
                false
            ))
            .1,
            "The argument \"auth\" is empty."
        );
        assert_eq!(
            err(validate_role(
                "r",
                &json!({"controllers": {"auth": {"x": 1}}}),
                false
            ))
            .1,
            "Missing argument \"auth.actions\"."
        );
        assert_eq!(
            err(validate_role(
                "r",
                &json!({"controllers": {"auth": {"actions": {"login": "yes"}}}}),
                false
            ))
            .1,
            "Wrong type for argument \"auth.actions.login\" (expected: boolean)"
        );
        assert_eq!(
            err(validate_role(
                "anonymous",
                &json!({"controllers": {"auth": {"actions": {"logout": true}}}}),
                false
            ))
            .0,
            Some("security.role.login_required")
        );
        assert_eq!(
            err(validate_role(
                "r",
                &json!({"controllers": {"*": {"actions": {"login": true}}}}),
                false
            ))
            .1,
            "Trying to set role r with a non-existing action 'login' in controller '*'. "
        );
        assert_eq!(
            err(validate_role(
                "r",
                &json!({"controllers": {"auth": {"actions": {"fly": true}}}}),
                false
            ))
            .1,
            "Trying to set role r with a non-existing action 'fly' in controller 'auth'. "
        );
        assert_eq!(
            err(validate_role(
                "r",
                &json!({"controllers": {"myPlugin": {"actions": {"go": true}}}}),
                false
            ))
            .1,
            "Trying to set role r with a non-existing controller 'myPlugin'. "
        );
        assert!(
            validate_role(
                "r",
                &json!({"controllers": {"myPlugin": {"actions": {"go": true}}}}),
                true
            )
            .is_ok(),
            "force"
        );
        assert!(
            validate_role(
                "r",
                &json!({"controllers": {"document": {"actions": {"anything": true}}}}),
                false
            )
            .is_ok()
        );
        assert!(
            validate_role(
                "anonymous",
                &json!({"controllers": {"*": {"actions": {"*": true}}}}),
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn profile_validation_messages() {
        let exists = |r: &str| r != "ghost";
        assert_eq!(
            err(validate_profile("p", &json!({}), exists)).1,
            "Missing argument \"body.policies\"."
        );
        assert_eq!(
            err(validate_profile(
                "p",
                &json!({"policies": [{"roleId": "ghost"}]}),
                exists
            ))
            .1,
            "Role \"ghost\" not found."
        );
        assert_eq!(
            err(validate_profile(
                "p",
                &json!({"policies": [], "rateLimit": "x"}),
                exists
            ))
            .1,
            "Wrong type for argument \"rateLimit\" (expected: integer)"
        );
        assert_eq!(
            err(validate_profile(
                "p",
                &json!({"policies": [], "rateLimit": -1}),
                exists
            ))
            .1,
            "Invalid argument \"rateLimit\". Expected: positive integer, or zero"
        );
        assert_eq!(
            err(validate_profile("p", &json!({"policies": [{}]}), exists)).1,
            "Missing argument \"p.policies[0].roleId\"."
        );
        assert_eq!(
            err(validate_profile(
                "p",
                &json!({"policies": [{"roleId": "a", "x": 1}]}),
                exists
            ))
            .1,
            "Unexpected argument \"x\" (accepted arguments: \"roleId\", \"restrictedTo\")"
        );
        assert_eq!(
            err(validate_profile(
                "p",
                &json!({"policies": [{"roleId": "a", "restrictedTo": [{"collections": []}]}]}),
                exists
            ))
            .1,
            "Missing argument \"p.policies[0].restrictedTo[0].index\"."
        );
        assert_eq!(
            err(validate_profile("p", &json!({"policies": [{"roleId": "a", "restrictedTo": [{"index": "i", "collections": "c"}]}]}), exists)).1,
            "Wrong type for argument \"p.policies[0].restrictedTo[0].collections\" (expected: string[])"
        );
        assert_eq!(
            err(validate_profile(
                "anonymous",
                &json!({"policies": [{"roleId": "default"}]}),
                exists
            ))
            .0,
            Some("security.profile.missing_anonymous_role")
        );
        let defaulted = validate_profile("p", &json!({"policies": []}), exists).unwrap();
        assert_eq!(
            defaulted,
            Profile {
                policies: vec![Policy {
                    role_id: "default".into(),
                    restricted_to: None
                }],
                rate_limit: 0
            }
        );
    }

    fn setup() -> (HashMap<String, Role>, Profile, Profile) {
        let mut roles = HashMap::new();
        roles.insert("reader".to_owned(), validate_role("reader", &json!({"controllers": {"realtime": {"actions": {"subscribe": true, "publish": false}}, "*": {"actions": {"*": true}}}}), false).unwrap());
        roles.insert(
            "admin".to_owned(),
            validate_role(
                "admin",
                &json!({"controllers": {"*": {"actions": {"*": true}}}}),
                false,
            )
            .unwrap(),
        );
        let restricted = validate_profile(
            "restricted",
            &json!({"policies": [{"roleId": "reader", "restrictedTo": [{"index": "shop", "collections": ["orders"]}, {"index": "blog"}]}], "rateLimit": 10}),
            |_| true,
        )
        .unwrap();
        let admin = validate_profile("admin", &json!({"policies": [{"roleId": "admin"}]}), |_| {
            true
        })
        .unwrap();
        (roles, restricted, admin)
    }

    #[test]
    fn rights_check() {
        let (roles, restricted, admin) = setup();
        let p = [&restricted];
        assert!(is_allowed(
            &p,
            &roles,
            "realtime",
            "subscribe",
            Some("shop"),
            Some("orders")
        ));
        assert!(!is_allowed(
            &p,
            &roles,
            "realtime",
            "subscribe",
            Some("shop"),
            Some("users")
        ));
        assert!(
            !is_allowed(&p, &roles, "realtime", "subscribe", Some("shop"), None),
            "a listed collection needs one"
        );
        assert!(is_allowed(
            &p,
            &roles,
            "realtime",
            "subscribe",
            Some("blog"),
            Some("any")
        ));
        assert!(
            is_allowed(&p, &roles, "realtime", "subscribe", None, None),
            "no index argument: restrictions pass"
        );
        assert!(
            !is_allowed(&p, &roles, "realtime", "publish", Some("blog"), None),
            "explicit false"
        );
        assert!(
            !is_allowed(&p, &roles, "realtime", "count", Some("blog"), None),
            "realtime has no * action: no fallback to controller *"
        );
        assert!(
            is_allowed(&p, &roles, "server", "now", None, None),
            "controller *"
        );
        assert!(
            !is_allowed(&[], &roles, "server", "now", None, None),
            "no profile, no right"
        );
        assert!(is_allowed(
            &[&admin],
            &roles,
            "security",
            "createUser",
            Some("x"),
            None
        ));
        assert_eq!(user_rate_limit(&[&restricted]), Some(10));
        assert_eq!(
            user_rate_limit(&[&restricted, &admin]),
            None,
            "a 0 means unlimited"
        );
    }

    #[test]
    fn my_rights() {
        let (roles, _, admin) = setup();
        assert_eq!(
            rights(&[&admin], &roles),
            json!({"hits":[{"action":"*","collection":"*","controller":"*","index":"*","value":"allowed"}],"total":1})
        );
        let restricted = validate_profile("r", &json!({"policies": [{"roleId": "reader", "restrictedTo": [{"index": "shop", "collections": ["orders"]}]}]}), |_| true).unwrap();
        let r = rights(&[&restricted], &roles);
        assert_eq!(r["total"], 3);
        assert!(r["hits"].as_array().unwrap().contains(&json!({"action":"publish","collection":"orders","controller":"realtime","index":"shop","value":"denied"})));
    }
}
