//! Authorization as plain data: [`Rules`] say who may do what to which repositories, and
//! decide for an [`Identity`] without IO. A request's [`Credentials`] are read from its head,
//! and a refusal tells the client what to send with a [`Challenge`] naming the [`Scope`]s it
//! needs. (Verifying credentials, and the token service, build on these.)

mod credentials;
mod glob;
mod htpasswd;
mod rules;
mod scope;
#[cfg(test)]
mod tests;

pub use credentials::{Challenge, Credentials, MalformedCredentials};
pub use htpasswd::{Htpasswd, HtpasswdError};
pub use rules::{Identity, Members, Policy, Principal, RepositoryRules, Rules, RulesError};
pub use scope::Scope;
