//! Authorization as plain data: [`Rules`] say who may do what to which repositories, and
//! decide for an [`Identity`] without IO. A request's [`Credentials`] are read from its head,
//! and a refusal tells the client what to send with a [`Challenge`] naming the [`Scope`]s it
//! needs. Passwords are checked against [`Htpasswd`] files, tokens by [`jwt::verify`] (the
//! signature by the host's cryptography). [`RulesPolicy`] puts them together as the access
//! hook, and runs the token service at `/token` when it has an [`Issuing`] key.

mod authenticate;
mod credentials;
pub(crate) mod glob;
mod htpasswd;
pub mod jwt;
mod policy;
mod rules;
mod scope;
mod service;
mod settings;
#[cfg(test)]
mod tests;
mod token;

pub use authenticate::{
    Authenticated, Authenticator, ClaimMapping, Refused, TokenIssuer, VERIFIED_FOR,
};
pub use credentials::{Challenge, Credentials, MalformedCredentials};
pub use htpasswd::{Htpasswd, HtpasswdError};
pub use policy::{KEY_REFETCH_INTERVAL, LoginScheme, RulesPolicy};
pub use rules::{Identity, Members, Policy, Principal, RepositoryRules, Rules, RulesError};
pub use scope::Scope;
pub use service::TOKEN_FORM_LIMIT;
pub use settings::{EVERY_USER_EVERYTHING, IssuerSettings, Settings, TokenSettings};
#[cfg(feature = "tokens")]
pub use token::SigningKey;
pub use token::{
    ACCESS_TOKEN_LIFETIME, Issuing, REFRESH_TOKEN_LIFETIME, STORED_KEY, TokenSigner, rfc3339,
    stored_key, x5c_from_pem,
};
