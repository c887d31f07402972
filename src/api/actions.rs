//! Every in-scope action with its HTTP routes (PROTOCOL.md §4.8), in one table.
//!
//! The table drives dispatch (step 14), the HTTP router, `server:publicApi` and
//! `server:openapi`. An action without a handler is not implemented yet: it is absent
//! from the router and from `publicApi`, and calling it is `action_not_found`.

use futures_util::future::LocalBoxFuture;

use super::{ActionResult, Call};
use crate::api::{api_keys, auth, cluster, credentials, realtime, roles, search, security, server};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
            Verb::Head => "HEAD",
        }
    }

    pub fn parse(method: &str) -> Option<Verb> {
        Some(match method {
            "GET" => Verb::Get,
            "POST" => Verb::Post,
            "PUT" => Verb::Put,
            "PATCH" => Verb::Patch,
            "DELETE" => Verb::Delete,
            "HEAD" => Verb::Head,
            _ => return None,
        })
    }
}

pub type Handler = for<'a> fn(&'a Call<'a>) -> LocalBoxFuture<'a, ActionResult>;

pub struct Action {
    pub controller: &'static str,
    pub name: &'static str,
    pub routes: &'static [(Verb, &'static str)],
    pub handler: Option<Handler>,
}

use Verb::*;

const fn action(
    controller: &'static str,
    name: &'static str,
    routes: &'static [(Verb, &'static str)],
    handler: Handler,
) -> Action {
    Action {
        controller,
        name,
        routes,
        handler: Some(handler),
    }
}

pub static ACTIONS: &[Action] = &[
    action("auth", "checkToken", &[(Post, "/_checkToken")], |c| {
        Box::pin(auth::check_token(c))
    }),
    action(
        "auth",
        "createMyCredentials",
        &[
            (Post, "/_me/credentials/:strategy/_create"),
            (Post, "/credentials/:strategy/_me/_create"),
        ],
        |c| Box::pin(auth::create_my_credentials(c)),
    ),
    action(
        "auth",
        "credentialsExist",
        &[
            (Get, "/_me/credentials/:strategy/_exists"),
            (Get, "/credentials/:strategy/_me/_exists"),
        ],
        |c| Box::pin(auth::credentials_exist(c)),
    ),
    action(
        "auth",
        "deleteMyCredentials",
        &[
            (Delete, "/_me/credentials/:strategy"),
            (Delete, "/credentials/:strategy/_me"),
        ],
        |c| Box::pin(auth::delete_my_credentials(c)),
    ),
    action(
        "auth",
        "getCurrentUser",
        &[(Get, "/_me"), (Get, "/users/_me")],
        |c| Box::pin(auth::get_current_user(c)),
    ),
    action(
        "auth",
        "getMyCredentials",
        &[
            (Get, "/_me/credentials/:strategy"),
            (Get, "/credentials/:strategy/_me"),
        ],
        |c| Box::pin(auth::get_my_credentials(c)),
    ),
    action(
        "auth",
        "getMyRights",
        &[(Get, "/_me/_rights"), (Get, "/users/_me/_rights")],
        |c| Box::pin(auth::get_my_rights(c)),
    ),
    action("auth", "getStrategies", &[(Get, "/strategies")], |c| {
        Box::pin(auth::get_strategies(c))
    }),
    action(
        "auth",
        "login",
        &[(Get, "/_login/:strategy"), (Post, "/_login/:strategy")],
        |c| Box::pin(auth::login(c)),
    ),
    action("auth", "logout", &[(Post, "/_logout")], |c| {
        Box::pin(auth::logout(c))
    }),
    action("auth", "refreshToken", &[(Post, "/_refreshToken")], |c| {
        Box::pin(auth::refresh_token(c))
    }),
    action(
        "auth",
        "updateMyCredentials",
        &[
            (Put, "/_me/credentials/:strategy/_update"),
            (Put, "/credentials/:strategy/_me/_update"),
        ],
        |c| Box::pin(auth::update_my_credentials(c)),
    ),
    action(
        "auth",
        "updateSelf",
        &[(Put, "/_me"), (Put, "/_updateSelf")],
        |c| Box::pin(auth::update_self(c)),
    ),
    action(
        "auth",
        "validateMyCredentials",
        &[
            (Post, "/_me/credentials/:strategy/_validate"),
            (Post, "/credentials/:strategy/_me/_validate"),
        ],
        |c| Box::pin(auth::validate_my_credentials(c)),
    ),
    action("auth", "checkRights", &[(Post, "/_checkRights")], |c| {
        Box::pin(auth::check_rights(c))
    }),
    action(
        "auth",
        "createApiKey",
        &[(Post, "/api-keys/_create")],
        |c| Box::pin(api_keys::auth_create(c)),
    ),
    action("auth", "createToken", &[(Post, "/_createToken")], |c| {
        Box::pin(api_keys::create_token(c))
    }),
    action("auth", "deleteApiKey", &[(Delete, "/api-keys/:_id")], |c| {
        Box::pin(api_keys::auth_delete(c))
    }),
    action(
        "auth",
        "searchApiKeys",
        &[(Post, "/api-keys/_search")],
        |c| Box::pin(api_keys::auth_search(c)),
    ),
    action(
        "security",
        "createFirstAdmin",
        &[
            (Post, "/_createFirstAdmin"),
            (Post, "/_createFirstAdmin/:_id"),
        ],
        |c| Box::pin(security::create_first_admin(c)),
    ),
    action("security", "restrictDefaultRights", &[], |c| {
        Box::pin(security::restrict_default_rights(c))
    }),
    action(
        "security",
        "createUser",
        &[(Post, "/users/_create"), (Post, "/users/:_id/_create")],
        |c| Box::pin(security::create_user(c)),
    ),
    action(
        "security",
        "createRestrictedUser",
        &[
            (Post, "/users/_createRestricted"),
            (Post, "/users/:_id/_createRestricted"),
        ],
        |c| Box::pin(security::create_restricted_user(c)),
    ),
    action("security", "getUser", &[(Get, "/users/:_id")], |c| {
        Box::pin(security::get_user(c))
    }),
    action(
        "security",
        "updateUser",
        &[(Put, "/users/:_id/_update")],
        |c| Box::pin(security::update_user(c)),
    ),
    action(
        "security",
        "replaceUser",
        &[(Put, "/users/:_id/_replace")],
        |c| Box::pin(security::replace_user(c)),
    ),
    action("security", "deleteUser", &[(Delete, "/users/:_id")], |c| {
        Box::pin(security::delete_user(c))
    }),
    action(
        "security",
        "searchUsers",
        &[(Post, "/users/_search")],
        |c| Box::pin(search::search_users(c)),
    ),
    action(
        "security",
        "updateCredentials",
        &[(Put, "/credentials/:strategy/:_id/_update")],
        |c| Box::pin(security::update_credentials(c)),
    ),
    action(
        "security",
        "createOrReplaceRole",
        &[(Put, "/roles/:_id")],
        |c| Box::pin(roles::create_or_replace_role(c)),
    ),
    action("security", "getRole", &[(Get, "/roles/:_id")], |c| {
        Box::pin(roles::get_role(c))
    }),
    action("security", "deleteRole", &[(Delete, "/roles/:_id")], |c| {
        Box::pin(roles::delete_role(c))
    }),
    action(
        "security",
        "createOrReplaceProfile",
        &[(Put, "/profiles/:_id")],
        |c| Box::pin(roles::create_or_replace_profile(c)),
    ),
    action("security", "getProfile", &[(Get, "/profiles/:_id")], |c| {
        Box::pin(roles::get_profile(c))
    }),
    action(
        "security",
        "deleteProfile",
        &[(Delete, "/profiles/:_id")],
        |c| Box::pin(roles::delete_profile(c)),
    ),
    action(
        "security",
        "checkRights",
        &[(Post, "/_checkRights/:userId")],
        |c| Box::pin(security::check_rights(c)),
    ),
    action(
        "security",
        "createApiKey",
        &[(Post, "/users/:userId/api-keys/_create")],
        |c| Box::pin(api_keys::security_create(c)),
    ),
    action(
        "security",
        "searchApiKeys",
        &[(Post, "/users/:userId/api-keys/_search")],
        |c| Box::pin(api_keys::security_search(c)),
    ),
    action(
        "security",
        "deleteApiKey",
        &[(Delete, "/users/:userId/api-keys/:_id")],
        |c| Box::pin(api_keys::security_delete(c)),
    ),
    action(
        "security",
        "createRole",
        &[(Post, "/roles/:_id/_create")],
        |c| Box::pin(roles::create_role(c)),
    ),
    action(
        "security",
        "updateRole",
        &[(Put, "/roles/:_id/_update")],
        |c| Box::pin(roles::update_role(c)),
    ),
    action("security", "mGetRoles", &[(Post, "/roles/_mGet")], |c| {
        Box::pin(roles::m_get_roles(c))
    }),
    action(
        "security",
        "searchRoles",
        &[(Post, "/roles/_search")],
        |c| Box::pin(search::search_roles(c)),
    ),
    action(
        "security",
        "mDeleteRoles",
        &[(Post, "/roles/_mDelete")],
        |c| Box::pin(roles::m_delete_roles(c)),
    ),
    action(
        "security",
        "getRoleMapping",
        &[(Get, "/roles/_mapping")],
        |c| Box::pin(roles::get_mapping(c)),
    ),
    action(
        "security",
        "updateRoleMapping",
        &[(Put, "/roles/_mapping")],
        |c| Box::pin(roles::update_mapping(c)),
    ),
    action(
        "security",
        "createProfile",
        &[(Post, "/profiles/:_id/_create")],
        |c| Box::pin(roles::create_profile(c)),
    ),
    action(
        "security",
        "updateProfile",
        &[(Put, "/profiles/:_id/_update")],
        |c| Box::pin(roles::update_profile(c)),
    ),
    action(
        "security",
        "mGetProfiles",
        &[(Post, "/profiles/_mGet")],
        |c| Box::pin(roles::m_get_profiles(c)),
    ),
    action(
        "security",
        "searchProfiles",
        &[(Post, "/profiles/_search")],
        |c| Box::pin(search::search_profiles(c)),
    ),
    action(
        "security",
        "scrollProfiles",
        &[(Get, "/profiles/_scroll/:scrollId")],
        |c| Box::pin(search::scroll_profiles(c)),
    ),
    action(
        "security",
        "mDeleteProfiles",
        &[(Post, "/profiles/_mDelete")],
        |c| Box::pin(roles::m_delete_profiles(c)),
    ),
    action(
        "security",
        "getProfileRights",
        &[(Get, "/profiles/:_id/_rights")],
        |c| Box::pin(roles::get_profile_rights(c)),
    ),
    action(
        "security",
        "getProfileMapping",
        &[(Get, "/profiles/_mapping")],
        |c| Box::pin(roles::get_mapping(c)),
    ),
    action(
        "security",
        "updateProfileMapping",
        &[(Put, "/profiles/_mapping")],
        |c| Box::pin(roles::update_mapping(c)),
    ),
    action(
        "security",
        "mGetUsers",
        &[(Get, "/users/_mGet"), (Post, "/users/_mGet")],
        |c| Box::pin(security::m_get_users(c)),
    ),
    action(
        "security",
        "mDeleteUsers",
        &[(Post, "/users/_mDelete")],
        |c| Box::pin(security::m_delete_users(c)),
    ),
    action(
        "security",
        "upsertUser",
        &[(Post, "/users/:_id/_upsert")],
        |c| Box::pin(security::upsert_user(c)),
    ),
    action(
        "security",
        "scrollUsers",
        &[(Get, "/users/_scroll/:scrollId")],
        |c| Box::pin(search::scroll_users(c)),
    ),
    action(
        "security",
        "getUserRights",
        &[(Get, "/users/:_id/_rights")],
        |c| Box::pin(security::get_user_rights(c)),
    ),
    action(
        "security",
        "getUserStrategies",
        &[(Get, "/users/:_id/_strategies")],
        |c| Box::pin(security::get_user_strategies(c)),
    ),
    action(
        "security",
        "revokeTokens",
        &[(Delete, "/users/:_id/tokens")],
        |c| Box::pin(security::revoke_tokens(c)),
    ),
    action(
        "security",
        "getUserMapping",
        &[(Get, "/users/_mapping")],
        |c| Box::pin(roles::get_mapping(c)),
    ),
    action(
        "security",
        "updateUserMapping",
        &[(Put, "/users/_mapping")],
        |c| Box::pin(roles::update_mapping(c)),
    ),
    action(
        "security",
        "createCredentials",
        &[(Post, "/credentials/:strategy/:_id/_create")],
        |c| Box::pin(credentials::create_credentials(c)),
    ),
    action(
        "security",
        "deleteCredentials",
        &[(Delete, "/credentials/:strategy/:_id")],
        |c| Box::pin(credentials::delete_credentials(c)),
    ),
    action(
        "security",
        "getCredentials",
        &[(Get, "/credentials/:strategy/:_id")],
        |c| Box::pin(credentials::get_credentials(c)),
    ),
    action(
        "security",
        "getCredentialsById",
        &[(Get, "/credentials/:strategy/:_id/_byId")],
        |c| Box::pin(credentials::get_credentials_by_id(c)),
    ),
    action(
        "security",
        "hasCredentials",
        &[(Get, "/credentials/:strategy/:_id/_exists")],
        |c| Box::pin(credentials::has_credentials(c)),
    ),
    action(
        "security",
        "validateCredentials",
        &[(Post, "/credentials/:strategy/:_id/_validate")],
        |c| Box::pin(credentials::validate_credentials(c)),
    ),
    action(
        "security",
        "getCredentialFields",
        &[(Get, "/credentials/:strategy/_fields")],
        |c| Box::pin(credentials::get_credential_fields(c)),
    ),
    action(
        "security",
        "getAllCredentialFields",
        &[(Get, "/credentials/_fields")],
        |c| Box::pin(credentials::get_all_credential_fields(c)),
    ),
    action(
        "security",
        "searchUsersByCredentials",
        &[(Post, "/credentials/:strategy/users/_search")],
        |c| Box::pin(credentials::search_users_by_credentials(c)),
    ),
    action(
        "security",
        "refresh",
        &[(Post, "/_security/:collection/_refresh")],
        |c| Box::pin(roles::refresh(c)),
    ),
    action("realtime", "count", &[], |c| Box::pin(realtime::count(c))),
    action("realtime", "join", &[], |c| Box::pin(realtime::join(c))),
    action("realtime", "list", &[(Get, "/_listSubscriptions")], |c| {
        Box::pin(realtime::list(c))
    }),
    action(
        "realtime",
        "publish",
        &[(Post, "/:index/:collection/_publish")],
        |c| Box::pin(realtime::publish(c)),
    ),
    action("realtime", "subscribe", &[], |c| {
        Box::pin(realtime::subscribe(c))
    }),
    action("realtime", "unsubscribe", &[], |c| {
        Box::pin(realtime::unsubscribe(c))
    }),
    action("realtime", "validate", &[], |c| {
        Box::pin(realtime::validate(c))
    }),
    action("server", "adminExists", &[(Get, "/_adminExists")], |c| {
        Box::pin(server::admin_exists(c))
    }),
    action("server", "capabilities", &[(Get, "/_capabilities")], |c| {
        Box::pin(server::capabilities(c))
    }),
    action("server", "getAllStats", &[(Get, "/_getAllStats")], |c| {
        Box::pin(server::get_all_stats(c))
    }),
    action("server", "getLastStats", &[(Get, "/_getLastStats")], |c| {
        Box::pin(server::get_last_stats(c))
    }),
    action("server", "getStats", &[(Get, "/_getStats")], |c| {
        Box::pin(server::get_stats(c))
    }),
    action("server", "getConfig", &[(Get, "/_getConfig")], |c| {
        Box::pin(server::get_config(c))
    }),
    action("server", "healthCheck", &[(Get, "/_healthCheck")], |c| {
        Box::pin(server::health_check(c))
    }),
    action(
        "server",
        "info",
        &[(Get, "/"), (Get, "/_serverInfo")],
        |c| Box::pin(server::info(c)),
    ),
    action("server", "metrics", &[(Get, "/_metrics")], |c| {
        Box::pin(server::metrics(c))
    }),
    action("server", "now", &[(Get, "/_now")], |c| {
        Box::pin(server::now(c))
    }),
    action("server", "openapi", &[(Get, "/_openapi")], |c| {
        Box::pin(server::openapi(c))
    }),
    action("server", "publicApi", &[(Get, "/_publicApi")], |c| {
        Box::pin(server::public_api(c))
    }),
    action("cluster", "metrics", &[(Get, "/cluster/_metrics")], |c| {
        Box::pin(cluster::metrics(c))
    }),
    action("cluster", "status", &[(Get, "/cluster/_status")], |c| {
        Box::pin(cluster::status(c))
    }),
];

/// The implemented actions, in table order.
pub fn implemented() -> impl Iterator<Item = &'static Action> {
    ACTIONS.iter().filter(|a| a.handler.is_some())
}

/// Step 14: controller lookup, then action lookup.
pub enum Lookup {
    Found(Handler),
    NoController,
    NoAction,
}

pub fn lookup(controller: &str, action: &str) -> Lookup {
    let mut controller_known = false;
    for a in implemented() {
        if a.controller == controller {
            controller_known = true;
            if a.name == action
                && let Some(handler) = a.handler
            {
                return Lookup::Found(handler);
            }
        }
    }
    if controller_known {
        Lookup::NoAction
    } else {
        Lookup::NoController
    }
}

/// Routes of implemented actions, in the order of PROTOCOL.md §4.8.
pub fn routes() -> Vec<(Verb, &'static str, &'static Action)> {
    ROUTE_ORDER
        .iter()
        .filter_map(|(verb, path)| {
            implemented()
                .find(|a| a.routes.contains(&(*verb, *path)))
                .map(|a| (*verb, *path, a))
        })
        .collect()
}

/// The order in which §4.8 lists routes; `publicApi` and `openapi` follow it.
const ROUTE_ORDER: &[(Verb, &str)] = &[
    (Get, "/_me"),
    (Get, "/users/_me"),
    (Get, "/_me/_rights"),
    (Get, "/users/_me/_rights"),
    (Get, "/_me/credentials/:strategy"),
    (Get, "/credentials/:strategy/_me"),
    (Get, "/_me/credentials/:strategy/_exists"),
    (Get, "/credentials/:strategy/_me/_exists"),
    (Get, "/strategies"),
    (Get, "/_login/:strategy"),
    (Post, "/_login/:strategy"),
    (Post, "/_logout"),
    (Post, "/_checkToken"),
    (Post, "/_refreshToken"),
    (Post, "/_me/credentials/:strategy/_create"),
    (Post, "/credentials/:strategy/_me/_create"),
    (Post, "/_me/credentials/:strategy/_validate"),
    (Post, "/credentials/:strategy/_me/_validate"),
    (Put, "/_me/credentials/:strategy/_update"),
    (Put, "/credentials/:strategy/_me/_update"),
    (Delete, "/_me/credentials/:strategy"),
    (Delete, "/credentials/:strategy/_me"),
    (Put, "/_me"),
    (Put, "/_updateSelf"),
    (Post, "/_checkRights"),
    (Post, "/api-keys/_create"),
    (Post, "/_createToken"),
    (Delete, "/api-keys/:_id"),
    (Post, "/api-keys/_search"),
    (Post, "/_createFirstAdmin"),
    (Post, "/_createFirstAdmin/:_id"),
    (Post, "/users/_create"),
    (Post, "/users/:_id/_create"),
    (Post, "/users/_createRestricted"),
    (Post, "/users/:_id/_createRestricted"),
    (Get, "/users/:_id"),
    (Put, "/users/:_id/_update"),
    (Put, "/users/:_id/_replace"),
    (Delete, "/users/:_id"),
    (Post, "/users/_search"),
    (Put, "/credentials/:strategy/:_id/_update"),
    (Put, "/roles/:_id"),
    (Get, "/roles/:_id"),
    (Delete, "/roles/:_id"),
    (Put, "/profiles/:_id"),
    (Get, "/profiles/:_id"),
    (Delete, "/profiles/:_id"),
    (Post, "/_checkRights/:userId"),
    (Post, "/users/:userId/api-keys/_create"),
    (Post, "/users/:userId/api-keys/_search"),
    (Delete, "/users/:userId/api-keys/:_id"),
    (Post, "/roles/:_id/_create"),
    (Put, "/roles/:_id/_update"),
    (Post, "/roles/_mGet"),
    (Post, "/roles/_search"),
    (Post, "/roles/_mDelete"),
    (Get, "/roles/_mapping"),
    (Put, "/roles/_mapping"),
    (Post, "/profiles/:_id/_create"),
    (Put, "/profiles/:_id/_update"),
    (Post, "/profiles/_mGet"),
    (Post, "/profiles/_search"),
    (Get, "/profiles/_scroll/:scrollId"),
    (Post, "/profiles/_mDelete"),
    (Get, "/profiles/:_id/_rights"),
    (Get, "/profiles/_mapping"),
    (Put, "/profiles/_mapping"),
    (Get, "/users/_mGet"),
    (Post, "/users/_mGet"),
    (Post, "/users/_mDelete"),
    (Post, "/users/:_id/_upsert"),
    (Get, "/users/_scroll/:scrollId"),
    (Get, "/users/:_id/_rights"),
    (Get, "/users/:_id/_strategies"),
    (Delete, "/users/:_id/tokens"),
    (Get, "/users/_mapping"),
    (Put, "/users/_mapping"),
    (Post, "/credentials/:strategy/:_id/_create"),
    (Delete, "/credentials/:strategy/:_id"),
    (Get, "/credentials/:strategy/:_id"),
    (Get, "/credentials/:strategy/:_id/_byId"),
    (Get, "/credentials/:strategy/:_id/_exists"),
    (Post, "/credentials/:strategy/:_id/_validate"),
    (Get, "/credentials/:strategy/_fields"),
    (Get, "/credentials/_fields"),
    (Post, "/credentials/:strategy/users/_search"),
    (Post, "/_security/:collection/_refresh"),
    (Get, "/_listSubscriptions"),
    (Post, "/:index/:collection/_publish"),
    (Get, "/"),
    (Get, "/_serverInfo"),
    (Get, "/_now"),
    (Get, "/_healthCheck"),
    (Get, "/_publicApi"),
    (Get, "/_openapi"),
    (Get, "/_getConfig"),
    (Get, "/_getAllStats"),
    (Get, "/_getLastStats"),
    (Get, "/_getStats"),
    (Get, "/_metrics"),
    (Get, "/_capabilities"),
    (Get, "/_adminExists"),
    (Get, "/cluster/_metrics"),
    (Get, "/cluster/_status"),
];

/// The action's names as the metrics label them: from this table, "unknown" for an action
/// that does not exist (a label never comes from what a client sends).
pub fn label(controller: &str, action: &str) -> (&'static str, &'static str) {
    ACTIONS
        .iter()
        .find(|a| a.controller == controller && a.name == action)
        .map_or(("unknown", "unknown"), |a| (a.controller, a.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_route_is_listed_once_in_the_route_order() {
        let ordered: HashSet<_> = ROUTE_ORDER.iter().collect();
        assert_eq!(ordered.len(), ROUTE_ORDER.len(), "duplicate in ROUTE_ORDER");
        let declared: Vec<_> = ACTIONS.iter().flat_map(|a| a.routes.iter()).collect();
        let declared_set: HashSet<_> = declared.iter().copied().collect();
        assert_eq!(
            declared.len(),
            declared_set.len(),
            "a route belongs to two actions"
        );
        assert_eq!(declared_set, ordered);
    }

    #[test]
    fn lookup_distinguishes_controller_and_action() {
        assert!(matches!(lookup("server", "now"), Lookup::Found(_)));
        assert!(matches!(lookup("server", "getStats"), Lookup::Found(_)));
        assert!(matches!(lookup("server", "nope"), Lookup::NoAction));
        assert!(matches!(lookup("document", "create"), Lookup::NoController));
    }
}
