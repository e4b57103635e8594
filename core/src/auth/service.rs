//! The token service at `/token`, as docker, containerd, buildkit, skopeo, podman, crane,
//! oras, regctl and helm call it: GET with Basic credentials (or none, for an anonymous
//! token) and `scope`/`service`/`offline_token` parameters, or a form POST with
//! `grant_type=password` or `refresh_token`. It checks the credentials once and grants the
//! requested scopes the rules allow, in a token every later request presents instead.

use serde::Serialize;

use super::authenticate::{Authenticated, Refused};
use super::credentials::Challenge;
use super::jwt::{self, Access, TokenError, Validation};
use super::policy::RulesPolicy;
use super::rules::{Identity, Principal};
use super::scope::Scope;
use super::token::{Issuing, rfc3339};
use crate::access::Action;
use crate::error::{Error, ErrorCode};
use crate::reference::RepositoryName;
use crate::request::{Method, RequestHead, percent_decode};
use crate::response::Response;

/// The largest token request body read: a form with a password and a few scopes.
pub const TOKEN_FORM_LIMIT: usize = 64 * 1024;

#[derive(Serialize)]
struct Granted<'a> {
    token: &'a str,
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    scope: String,
}

/// A token request's parameters: the query's, then a form body's.
struct Parameters(Vec<(String, String)>);

impl Parameters {
    fn read(head: &RequestHead, form: &[u8]) -> Self {
        let mut pairs = Vec::new();
        let query = head.query.as_deref().unwrap_or("");
        let form = std::str::from_utf8(form).unwrap_or("");
        for text in [query, form] {
            for pair in text.split('&').filter(|pair| !pair.is_empty()) {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                // Forms write a space as `+`; a literal `+` arrives as `%2B`.
                let decode = |part: &str| percent_decode(&part.replace('+', " "));
                pairs.push((decode(name), decode(value)));
            }
        }
        Self(pairs)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn all(&self, name: &'static str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl RulesPolicy {
    /// The token service's answer to `head` (`form`: a POST's body, read up to
    /// [`TOKEN_FORM_LIMIT`]). `None` when this policy issues no tokens.
    pub fn token_response(&self, head: &RequestHead, form: &[u8]) -> Option<Response> {
        let issuing = self.issuing.as_ref()?;
        Some(
            self.answer(issuing, head, form)
                .unwrap_or_else(|refusal| refusal),
        )
    }

    fn answer(
        &self,
        issuing: &Issuing,
        head: &RequestHead,
        form: &[u8],
    ) -> Result<Response, Response> {
        if head.path == crate::TOKEN_KEYS_PATH {
            let keys = jwt::Jwks {
                keys: vec![issuing.signer.public_key().clone()],
            };
            let body = serde_json::to_vec(&keys).unwrap_or_default();
            return Ok(Response::json(200, body));
        }
        let now = (self.clock)();
        let parameters = Parameters::read(
            head,
            if head.method == Method::Post {
                form
            } else {
                &[]
            },
        );
        if let Some(service) = parameters.get("service")
            && service != issuing.service
        {
            return Err(oauth_error(
                400,
                "invalid_request",
                &format!("this token service issues tokens for {:?}", issuing.service),
            ));
        }
        let (who, may_refresh) = match (head.method, parameters.get("grant_type")) {
            (Method::Post, Some("password")) => {
                let user = parameters.get("username").unwrap_or_default().to_owned();
                let password = parameters.get("password").unwrap_or_default();
                let who = self
                    .authenticator
                    .password(user, password, now)
                    .map_err(|refused| refused_answer(issuing, &refused))?;
                (who, true)
            }
            (Method::Post, Some("refresh_token")) => {
                let token = parameters.get("refresh_token").unwrap_or_default();
                (self.refreshed(issuing, token, now)?, true)
            }
            (Method::Post, other) => {
                return Err(oauth_error(
                    400,
                    "unsupported_grant_type",
                    &format!(
                        "grant_type {:?} is not one of password and refresh_token",
                        other.unwrap_or_default()
                    ),
                ));
            }
            _ => {
                let who = self
                    .authenticator
                    .authenticate(head, now)
                    .map_err(|refused| refused_answer(issuing, &refused))?;
                // Refresh tokens stand in for passwords (checked again at each refresh), not
                // for tokens: an identity token's subject may be no user of the password file.
                let by_password = who.grants.is_none()
                    && matches!(&who.identity, Identity::Principal(principal)
                        if self.authenticator.knows_user(&principal.subject));
                (who, by_password)
            }
        };
        let subject = match &who.identity {
            Identity::Anonymous => "",
            Identity::Principal(principal) => principal.subject.as_str(),
        };
        let requested = Scope::parse_all(parameters.all("scope"));
        let access: Vec<Access> = requested
            .iter()
            .filter_map(|scope| self.grant(&who, scope))
            .collect();
        let token = issuing.access_token(subject, &access, now);
        let offline = parameters.get("offline_token") == Some("true")
            || parameters.get("access_type") == Some("offline");
        let refresh_token = (offline && may_refresh && !subject.is_empty())
            .then(|| issuing.refresh_token(subject, now));
        let granted = Granted {
            token: &token,
            access_token: &token,
            token_type: "Bearer",
            expires_in: issuing.lifetime,
            issued_at: rfc3339(now),
            refresh_token,
            scope: access
                .iter()
                .map(|access| {
                    format!(
                        "{}:{}:{}",
                        access.kind,
                        access.name,
                        access.actions.join(",")
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
        };
        let body = serde_json::to_vec(&granted).unwrap_or_default();
        Ok(Response::json(200, body).with_header("Cache-Control", "no-store"))
    }

    /// Who a refresh token speaks for: a user still in the password file.
    fn refreshed(
        &self,
        issuing: &Issuing,
        token: &str,
        now: u64,
    ) -> Result<Authenticated, Response> {
        let validation = Validation {
            issuers: vec![issuing.issuer.clone()],
            audience: issuing.refresh_audience(),
            leeway: 60,
        };
        let own = issuing.verifier();
        let claims = jwt::verify(token, &own.keys, &*own.check, &validation, now)
            .map_err(|error| oauth_error(401, "invalid_grant", &error.to_string()))?;
        if !self.authenticator.knows_user(&claims.sub) {
            return Err(oauth_error(
                401,
                "invalid_grant",
                &TokenError::Subject.to_string(),
            ));
        }
        Ok(Authenticated {
            identity: Identity::Principal(Principal {
                subject: claims.sub,
                groups: Vec::new(),
            }),
            grants: None,
        })
    }

    /// What of `scope` the rules let `who` do, or `None` for nothing.
    fn grant(&self, who: &Authenticated, scope: &Scope) -> Option<Access> {
        let allowed = |action: Action| -> bool {
            match scope.kind.as_str() {
                "registry" => {
                    scope.name == "catalog"
                        && action == Action::Catalog
                        && self.permits(who, None, Action::Catalog)
                }
                "repository" => scope
                    .name
                    .parse::<RepositoryName>()
                    .is_ok_and(|name| self.permits(who, Some(&name), action)),
                _ => false,
            }
        };
        let mut actions: Vec<String> = Vec::new();
        for asked in &scope.actions {
            let granted = match (scope.kind.as_str(), asked.as_str()) {
                ("registry", "*") => allowed(Action::Catalog),
                ("repository", "pull") => allowed(Action::Pull),
                ("repository", "push") => allowed(Action::Push),
                ("repository", "delete") => allowed(Action::Delete),
                // Everything: granted only to whoever may do all three.
                ("repository", "*") => [Action::Pull, Action::Push, Action::Delete]
                    .into_iter()
                    .all(allowed),
                _ => false,
            };
            if granted {
                actions.push(asked.clone());
            }
        }
        (!actions.is_empty()).then(|| Access {
            kind: scope.kind.clone(),
            name: scope.name.clone(),
            actions,
        })
    }
}

/// The answer to credentials that prove nothing: 401, and the challenge that asks for a
/// password.
fn refused_answer(issuing: &Issuing, refused: &Refused) -> Response {
    let error = Error::new(ErrorCode::Unauthorized, refused.to_string());
    let challenge = Challenge::Basic {
        realm: issuing.service.clone(),
    };
    Response::error(&error).with_header("WWW-Authenticate", challenge.to_string())
}

/// An OAuth 2 error answer (RFC 6749 §5.2), which token clients print.
fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    let body = serde_json::json!({
        "error": error,
        "error_description": description,
        "errors": [{"code": "UNAUTHORIZED", "message": description}],
    });
    Response::json(status, serde_json::to_vec(&body).unwrap_or_default())
}

#[cfg(test)]
#[cfg(feature = "tokens")]
mod tests {
    use std::sync::Arc;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::access::{AccessPolicy, Decision};
    use crate::auth::{Authenticator, Htpasswd, Rules, SigningKey};

    fn policy() -> RulesPolicy {
        let users = "alice:$2y$05$.rlAcDikEk8XeKccN72noubJPp..yyEDMyUo2o0cNG6WJPL0VNHcK\n";
        let rules = Rules::from_json(
            r#"{"repositories": {
                "team-a/**": {"policies": [{"users": ["alice"], "actions": ["pull", "push"]}]},
                "public/**": {"anonymous": ["pull"], "default": ["pull"]}
            }}"#,
        )
        .unwrap();
        let authenticator =
            Authenticator::new().with_users(Arc::new(Htpasswd::parse(users).unwrap()));
        let issuing = Issuing::new(
            Arc::new(SigningKey::from_ed25519_seed([3; 32])),
            "berth",
            "registry.test",
        );
        RulesPolicy::new(authenticator, rules, "berth", Arc::new(|| 1_000_000))
            .with_token_service(issuing, "http://{host}/token")
    }

    fn answer(policy: &RulesPolicy, head: RequestHead, form: &str) -> (u16, serde_json::Value) {
        let response = policy.token_response(&head, form.as_bytes()).unwrap();
        let body = match response.body {
            crate::response::Body::Full(bytes) => bytes,
            _ => panic!("a token answer is a full body"),
        };
        (response.status, serde_json::from_slice(&body).unwrap())
    }

    fn bearer(token: &serde_json::Value) -> RequestHead {
        RequestHead::from_target(Method::Get, "/v2/team-a/app/manifests/latest").with_header(
            "Authorization",
            format!("Bearer {}", token.as_str().unwrap()),
        )
    }

    #[test]
    fn grants_what_the_rules_allow_of_what_was_asked() {
        let policy = policy();
        let head = RequestHead::from_target(
            Method::Get,
            "/token?service=registry.test&scope=repository:team-a/app:pull,push,delete\
             &scope=repository:team-b/x:pull+repository:public/z:pull&offline_token=true",
        )
        .with_header(
            "Authorization",
            format!("Basic {}", STANDARD.encode("alice:s3cret")),
        );
        let (status, body) = answer(&policy, head, "");
        assert_eq!(status, 200);
        assert_eq!(body["token"], body["access_token"]);
        assert_eq!(body["expires_in"], 300);
        assert_eq!(body["issued_at"], "1970-01-12T13:46:40Z");
        assert_eq!(
            body["scope"],
            "repository:team-a/app:pull,push repository:public/z:pull"
        );
        let team_a: RepositoryName = "team-a/app".parse().unwrap();
        let with_token = bearer(&body["token"]);
        assert_eq!(
            policy.check(&with_token, Some(&team_a), Action::Push),
            Decision::Allow
        );
        // Asked for, not granted: the client is told which scope it lacks.
        assert!(matches!(
            policy.check(&with_token, Some(&team_a), Action::Delete),
            Decision::Unauthorized { challenge } if challenge.contains("insufficient_scope")
                && challenge.starts_with("Bearer realm=\"http://localhost/token\"")
        ));
        // The refresh token buys a new access token by POST, and is no access token itself.
        let refresh = body["refresh_token"].as_str().unwrap().to_owned();
        assert!(matches!(
            policy.check(&bearer(&body["refresh_token"]), Some(&team_a), Action::Pull),
            Decision::Unauthorized { .. }
        ));
        let post = RequestHead::from_target(Method::Post, "/token");
        let form = format!(
            "grant_type=refresh_token&refresh_token={refresh}&service=registry.test\
             &scope=repository%3Ateam-a%2Fapp%3Apull"
        );
        let (status, body) = answer(&policy, post.clone(), &form);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["scope"], "repository:team-a/app:pull");
        assert_eq!(
            policy.check(&bearer(&body["token"]), Some(&team_a), Action::Pull),
            Decision::Allow
        );
        // Passwords by form, wrong ones refused.
        let (status, _) = answer(
            &policy,
            post.clone(),
            "grant_type=password&username=alice&password=s3cret&scope=repository:team-a/app:pull",
        );
        assert_eq!(status, 200);
        let (status, body) = answer(
            &policy,
            post.clone(),
            "grant_type=password&username=alice&password=nope",
        );
        assert_eq!(
            (status, &body["errors"][0]["code"]),
            (401, &"UNAUTHORIZED".into())
        );
        let (status, _) = answer(&policy, post, "grant_type=client_credentials");
        assert_eq!(status, 400);
    }

    #[test]
    fn anonymous_callers_get_tokens_for_what_anyone_may_do() {
        let policy = policy();
        let head = RequestHead::from_target(
            Method::Get,
            "/token?scope=repository:public/z:pull,push&scope=repository:team-a/app:pull\
             &offline_token=true",
        );
        let (status, body) = answer(&policy, head, "");
        assert_eq!(status, 200);
        assert_eq!(body["scope"], "repository:public/z:pull");
        assert!(body.get("refresh_token").is_none());
        let public: RepositoryName = "public/z".parse().unwrap();
        let team_a: RepositoryName = "team-a/app".parse().unwrap();
        let token = bearer(&body["token"]);
        assert_eq!(
            policy.check(&token, Some(&public), Action::Pull),
            Decision::Allow
        );
        assert!(matches!(
            policy.check(&token, Some(&team_a), Action::Pull),
            Decision::Unauthorized { .. }
        ));
        let other_service =
            RequestHead::from_target(Method::Get, "/token?service=elsewhere&scope=x:y:pull");
        assert_eq!(answer(&policy, other_service, "").0, 400);
    }
}
