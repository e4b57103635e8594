//! Authorization as plain data: [`Rules`] say who may do what to which repositories, and
//! decide for an [`Identity`] without IO. (Authentication, the step that turns a request's
//! credentials into an identity, and the token service build on this.)

mod glob;
mod rules;
#[cfg(test)]
mod tests;

pub use rules::{Identity, Members, Policy, Principal, RepositoryRules, Rules, RulesError};
