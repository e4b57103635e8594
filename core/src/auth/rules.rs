//! Access rules as plain data: who may do what to which repositories. A pure decision,
//! evaluated in microseconds in every host.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::glob::Glob;
use crate::access::Action;

/// Who is asking: someone authenticated, or no one in particular.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials.
    Anonymous,
    /// Authenticated.
    Principal(Principal),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    /// The user name (htpasswd, a token's `sub`).
    pub subject: String,
    /// Groups the credential itself names (a token's claims), besides the rules' own groups.
    pub groups: Vec<String>,
}

/// The rules, as written (TOML for `berth serve --access`, JSON for the other hosts):
///
/// ```toml
/// [groups]
/// team-a = ["alice", "bob"]
///
/// [repositories."team-a/**"]
/// policies = [
///   { users = ["alice"], actions = ["pull", "push", "overwrite", "delete"] },
///   { groups = ["team-a"], actions = ["pull", "push"] },
/// ]
/// default = []            # what any other authenticated caller may do here
/// anonymous = []          # what callers without credentials may do here
///
/// [repositories."public/**"]
/// default = ["pull"]
/// anonymous = ["pull"]
///
/// [admin]
/// users = ["root"]        # every action on every repository
/// ```
///
/// Of the repository patterns that match a name, the longest wins (`team-a/secret/**` over
/// `team-a/**`); a name no pattern matches allows nothing but to admins. `*` matches within
/// one path component, `**` across components.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Groups by name: their members.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Rules by repository pattern.
    #[serde(default)]
    pub repositories: BTreeMap<String, RepositoryRules>,
    /// Who may do everything, the whole catalog included.
    #[serde(default)]
    pub admin: Members,
}

/// The rules of the repositories one pattern matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryRules {
    /// Named users and groups, and what they may do.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// What any authenticated caller may do.
    #[serde(default)]
    pub default: BTreeSet<Action>,
    /// What a caller without credentials may do.
    #[serde(default)]
    pub anonymous: BTreeSet<Action>,
    /// Tags no one may move or delete, as patterns (`*` matches any characters): `v*`,
    /// `release-*`, `latest`.
    #[serde(default, rename = "immutable-tags")]
    pub immutable_tags: Vec<String>,
}

/// Users and groups, and the actions they are granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// User names.
    #[serde(default)]
    pub users: Vec<String>,
    /// Group names (the rules' groups, or groups a credential names).
    #[serde(default)]
    pub groups: Vec<String>,
    /// What they may do.
    pub actions: BTreeSet<Action>,
}

/// Users and groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Members {
    /// User names.
    #[serde(default)]
    pub users: Vec<String>,
    /// Group names.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Rules that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError(String);

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RulesError {}

impl Rules {
    /// Reads rules written as JSON, and checks them ([`Rules::check`]).
    pub fn from_json(text: &str) -> Result<Self, RulesError> {
        let rules: Self =
            serde_json::from_str(text).map_err(|e| RulesError(format!("access rules: {e}")))?;
        rules.check()?;
        Ok(rules)
    }

    /// Refuses rules that say what their author cannot have meant: an empty pattern, a
    /// policy for no one, or `catalog`/`admin` granted per repository.
    pub fn check(&self) -> Result<(), RulesError> {
        for (pattern, rules) in &self.repositories {
            if pattern.is_empty() {
                return Err(RulesError(
                    "access rules: an empty repository pattern".into(),
                ));
            }
            let all = rules
                .policies
                .iter()
                .flat_map(|policy| &policy.actions)
                .chain(&rules.default)
                .chain(&rules.anonymous);
            for action in all {
                if matches!(action, Action::Catalog | Action::Admin) {
                    return Err(RulesError(format!(
                        "access rules for {pattern:?}: {action} is not granted per repository \
                         (the catalog lists what a caller may pull; admins are listed in [admin])"
                    )));
                }
            }
            for policy in &rules.policies {
                if policy.users.is_empty() && policy.groups.is_empty() {
                    return Err(RulesError(format!(
                        "access rules for {pattern:?}: a policy names no users and no groups"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether `who` may do `action` on `repository` (`None` for the registry itself: the
    /// catalog, administration).
    pub fn allows(&self, who: &Identity, repository: Option<&str>, action: Action) -> bool {
        if let Identity::Principal(principal) = who
            && self.is_member(principal, &self.admin)
        {
            return true;
        }
        match (repository, action) {
            (_, Action::Admin) => false,
            // Everyone may ask; what they see is filtered by `Pull`.
            (None, Action::Catalog) => true,
            (None, _) | (Some(_), Action::Catalog) => false,
            (Some(name), action) => self.granted(who, name).contains(&action),
        }
    }

    /// Everything `who` may do on `repository`, by the longest pattern that matches it.
    pub fn granted(&self, who: &Identity, repository: &str) -> BTreeSet<Action> {
        let Some(rules) = self.rules_for(repository) else {
            return BTreeSet::new();
        };
        match who {
            Identity::Anonymous => rules.anonymous.clone(),
            Identity::Principal(principal) => {
                let mut actions = rules.default.clone();
                for policy in &rules.policies {
                    if self.names(principal, &policy.users, &policy.groups) {
                        actions.extend(policy.actions.iter().copied());
                    }
                }
                actions
            }
        }
    }

    /// Whether the rules for `repository` make `tag` immutable.
    pub fn is_immutable(&self, repository: &str, tag: &str) -> bool {
        self.rules_for(repository).is_some_and(|rules| {
            rules
                .immutable_tags
                .iter()
                .any(|pattern| tag_matches(pattern.as_bytes(), tag.as_bytes()))
        })
    }

    fn rules_for(&self, repository: &str) -> Option<&RepositoryRules> {
        self.repositories
            .iter()
            .map(|(pattern, rules)| (Glob::new(pattern), rules))
            .filter(|(glob, _)| glob.matches(repository))
            .max_by_key(|(glob, _)| glob.specificity())
            .map(|(_, rules)| rules)
    }

    fn is_member(&self, principal: &Principal, members: &Members) -> bool {
        self.names(principal, &members.users, &members.groups)
    }

    /// Whether `users` name the principal, or `groups` one of its groups (the rules' groups,
    /// or those its credential names).
    fn names(&self, principal: &Principal, users: &[String], groups: &[String]) -> bool {
        users.contains(&principal.subject)
            || groups.iter().any(|group| {
                principal.groups.contains(group)
                    || self
                        .groups
                        .get(group)
                        .is_some_and(|names| names.contains(&principal.subject))
            })
    }
}

/// A tag pattern: `*` matches any characters (a tag has no `/`), everything else itself.
fn tag_matches(pattern: &[u8], tag: &[u8]) -> bool {
    match pattern {
        [] => tag.is_empty(),
        [b'*', rest @ ..] => (0..=tag.len()).any(|skip| tag_matches(rest, &tag[skip..])),
        [literal, rest @ ..] => tag
            .split_first()
            .is_some_and(|(first, tail)| first == literal && tag_matches(rest, tail)),
    }
}
