//! What a request carries to say who sends it (`Authorization`), and what a refused one is
//! told (`WWW-Authenticate`).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::scope::Scope;
use crate::request::RequestHead;

/// The credentials of a request.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Basic`: a user and a password (which may be a token: clients that only store a user
    /// and a password, such as Kubernetes pull secrets, send one so).
    Basic {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// `Bearer`: a token.
    Bearer(String),
}

impl fmt::Debug for Credentials {
    /// Never prints a secret, so that credentials cannot leak through a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { user, .. } => write!(f, "Basic({user:?}, <password>)"),
            Self::Bearer(_) => f.write_str("Bearer(<token>)"),
        }
    }
}

/// An `Authorization` header that is there but cannot be read: the request is refused as
/// unauthenticated (401), never treated as anonymous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedCredentials(pub &'static str);

impl fmt::Display for MalformedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the Authorization header {}", self.0)
    }
}

impl std::error::Error for MalformedCredentials {}

impl Credentials {
    /// The request's credentials: `None` without an `Authorization` header.
    pub fn from_head(head: &RequestHead) -> Result<Option<Self>, MalformedCredentials> {
        let Some(value) = head.header("Authorization") else {
            return Ok(None);
        };
        let (scheme, rest) = value
            .trim()
            .split_once(' ')
            .ok_or(MalformedCredentials("names no scheme and credentials"))?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = STANDARD
                .decode(rest)
                .map_err(|_| MalformedCredentials("holds Basic credentials that are not base64"))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| MalformedCredentials("holds Basic credentials that are not UTF-8"))?;
            let (user, password) = text.split_once(':').ok_or(MalformedCredentials(
                "holds Basic credentials without a ':'",
            ))?;
            if user.is_empty() {
                return Err(MalformedCredentials(
                    "holds Basic credentials without a user",
                ));
            }
            return Ok(Some(Self::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            }));
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            let token_chars = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
            if rest.is_empty() || !rest.bytes().all(token_chars) {
                return Err(MalformedCredentials(
                    "holds a Bearer token that is no token",
                ));
            }
            return Ok(Some(Self::Bearer(rest.to_owned())));
        }
        Err(MalformedCredentials(
            "uses a scheme other than Basic or Bearer",
        ))
    }
}

/// What a `WWW-Authenticate` header asks of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Send a user and a password.
    Basic {
        /// The protection space's name.
        realm: String,
    },
    /// Fetch a token from `realm` for `service` with these scopes, then send it.
    Bearer {
        /// The token service's absolute URL.
        realm: String,
        /// The service the token is for (its audience).
        service: String,
        /// Every scope the request needs; none on `/v2/` (clients' logins break otherwise).
        scopes: Vec<Scope>,
        /// `invalid_token` or `insufficient_scope`, when a token was sent.
        error: Option<&'static str>,
    },
}

impl fmt::Display for Challenge {
    /// The header's value. Parameters are quoted strings, with `"` and `\` escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { realm } => write!(f, "Basic realm={}", Quoted(realm)),
            Self::Bearer {
                realm,
                service,
                scopes,
                error,
            } => {
                write!(
                    f,
                    "Bearer realm={},service={}",
                    Quoted(realm),
                    Quoted(service)
                )?;
                if !scopes.is_empty() {
                    let scopes: Vec<String> = scopes.iter().map(ToString::to_string).collect();
                    write!(f, ",scope={}", Quoted(&scopes.join(" ")))?;
                }
                if let Some(error) = error {
                    write!(f, ",error={}", Quoted(error))?;
                }
                Ok(())
            }
        }
    }
}

/// An RFC 9110 quoted string.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            // Control characters cannot be sent in a header at all.
            if !c.is_control() {
                write!(f, "{c}")?;
            }
        }
        f.write_str("\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Action;
    use crate::request::Method;

    fn head(authorization: &str) -> RequestHead {
        RequestHead::from_target(Method::Get, "/v2/").with_header("Authorization", authorization)
    }

    #[test]
    fn reads_basic_and_bearer() {
        let basic = STANDARD.encode("alice:s3cr:et");
        assert_eq!(
            Credentials::from_head(&head(&format!("Basic {basic}"))).unwrap(),
            Some(Credentials::Basic {
                user: "alice".into(),
                password: "s3cr:et".into()
            })
        );
        assert_eq!(
            Credentials::from_head(&head("bearer eyJ.abc-_.x9")).unwrap(),
            Some(Credentials::Bearer("eyJ.abc-_.x9".into()))
        );
        let none = RequestHead::from_target(Method::Get, "/v2/");
        assert_eq!(Credentials::from_head(&none).unwrap(), None);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let no_colon = STANDARD.encode("alice");
        let no_user = STANDARD.encode(":password");
        for value in [
            "Basic".to_owned(),
            "Basic !!!".to_owned(),
            format!("Basic {no_colon}"),
            format!("Basic {no_user}"),
            "Bearer".to_owned(),
            "Bearer a b".to_owned(),
            "Bearer \"quoted\"".to_owned(),
            "Digest username=alice".to_owned(),
        ] {
            assert!(Credentials::from_head(&head(&value)).is_err(), "{value:?}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let basic = Credentials::Basic {
            user: "alice".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{basic:?}").contains("s3cret"));
        let bearer = Credentials::Bearer("eyJ-sekret".into());
        assert!(!format!("{bearer:?}").contains("sekret"));
    }

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::Basic {
                realm: "berth \"x\"".into()
            }
            .to_string(),
            r#"Basic realm="berth \"x\"""#
        );
        let mount = Challenge::Bearer {
            realm: "https://r.example/token".into(),
            service: "r.example".into(),
            scopes: vec![
                Scope::repository("dst", &[Action::Pull, Action::Push]),
                Scope::repository("src", &[Action::Pull]),
            ],
            error: Some("insufficient_scope"),
        };
        assert_eq!(
            mount.to_string(),
            "Bearer realm=\"https://r.example/token\",service=\"r.example\",\
             scope=\"repository:dst:pull,push repository:src:pull\",error=\"insufficient_scope\""
        );
        let ping = Challenge::Bearer {
            realm: "https://r.example/token".into(),
            service: "r.example".into(),
            scopes: vec![],
            error: None,
        };
        assert!(!ping.to_string().contains("scope"));
    }
}
