//! Authorization as plain data: [`Rules`] say who may do what to which repositories, and
//! decide for an [`Identity`] without IO. A request's [`Credentials`] are read from its head,
//! and a refusal tells the client what to send with a [`Challenge`] naming the [`Scope`]s it
//! needs. Passwords are checked against [`Htpasswd`] files, tokens by [`jwt::verify`] (the
//! signature by the host's cryptography). (Wiring these into requests, and the token
//! service, build on them.)

mod authenticate;
mod credentials;
mod glob;
mod htpasswd;
pub mod jwt;
mod policy;
mod rules;
mod scope;
#[cfg(test)]
mod tests;

pub use authenticate::{Authenticated, Authenticator, Refused, TokenIssuer, VERIFIED_FOR};
pub use credentials::{Challenge, Credentials, MalformedCredentials};
pub use htpasswd::{Htpasswd, HtpasswdError};
pub use policy::{LoginScheme, RulesPolicy};
pub use rules::{Identity, Members, Policy, Principal, RepositoryRules, Rules, RulesError};
pub use scope::Scope;
