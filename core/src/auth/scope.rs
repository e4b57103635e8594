//! Token scopes, as the distribution token spec writes them: `repository:<name>:<actions>`
//! (`pull`, `push`, `delete`, `*`, comma-separated) and `registry:catalog:*`. Clients send
//! them as repeated `scope` parameters or space-separated in one, and challenges name them.

use std::collections::BTreeSet;
use std::fmt;

use crate::access::Action;

/// One scope: a resource and the actions asked for (or granted) on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Scope {
    /// `repository`, or `registry` for the catalog.
    pub kind: String,
    /// The repository name, or `catalog`. A name may hold a `:` (a registry's port).
    pub name: String,
    /// The actions, as the spec names them (`pull`, `push`, `delete`, `*`), without repeats.
    pub actions: BTreeSet<String>,
}

impl Scope {
    /// A repository scope for berth's actions, as a challenge names what a request needs.
    pub fn repository(name: &str, actions: &[Action]) -> Self {
        Self {
            kind: "repository".to_owned(),
            name: name.to_owned(),
            actions: actions
                .iter()
                .map(|action| token_action(*action).to_owned())
                .collect(),
        }
    }

    /// The catalog's scope, `registry:catalog:*`.
    pub fn catalog() -> Self {
        Self {
            kind: "registry".to_owned(),
            name: "catalog".to_owned(),
            actions: BTreeSet::from(["*".to_owned()]),
        }
    }

    /// Parses one scope; `None` when it is not `<kind>:<name>:<actions>` with a kind, a
    /// name and at least one action.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, rest) = text.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let actions: BTreeSet<String> = actions
            .split(',')
            .filter(|action| !action.is_empty())
            .map(str::to_owned)
            .collect();
        let valid_kind = !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase());
        (valid_kind && !name.is_empty() && !actions.is_empty()).then(|| Self {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions,
        })
    }

    /// Every scope in `values` (repeated parameters, each possibly space-separated), merged
    /// by resource; malformed ones are dropped, as a token service grants nothing for them.
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Self> {
        let mut scopes: Vec<Self> = Vec::new();
        for scope in values
            .into_iter()
            .flat_map(str::split_whitespace)
            .filter_map(Self::parse)
        {
            match scopes
                .iter_mut()
                .find(|known| known.kind == scope.kind && known.name == scope.name)
            {
                Some(known) => known.actions.extend(scope.actions),
                None => scopes.push(scope),
            }
        }
        scopes
    }

    /// Whether the scope grants berth's `action` on repository `name` (`*` grants them all;
    /// `push` also grants moving a tag, which the token format cannot tell apart).
    pub fn grants(&self, name: &str, action: Action) -> bool {
        if self.kind != "repository" || self.name != name {
            return false;
        }
        self.actions.contains("*")
            || match action {
                Action::Overwrite => self.actions.contains("push"),
                other => self.actions.contains(token_action(other)),
            }
    }
}

/// The token spec's name for berth's action.
fn token_action(action: Action) -> &'static str {
    match action {
        Action::Pull => "pull",
        Action::Push | Action::Overwrite => "push",
        Action::Delete => "delete",
        Action::Catalog | Action::Admin => "*",
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actions: Vec<&str> = self.actions.iter().map(String::as_str).collect();
        write!(f, "{}:{}:{}", self.kind, self.name, actions.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let scope = Scope::parse("repository:team-a/app:push,pull").unwrap();
        assert_eq!(scope.to_string(), "repository:team-a/app:pull,push");
        let with_port = Scope::parse("repository:localhost:5000/app:pull").unwrap();
        assert_eq!(with_port.name, "localhost:5000/app");
        assert_eq!(Scope::parse("registry:catalog:*"), Some(Scope::catalog()));
        for malformed in [
            "",
            "repository",
            "repository:app",
            "repository::pull",
            ":a:pull",
            "repository:app:",
            "Repository:app:pull",
        ] {
            assert_eq!(Scope::parse(malformed), None, "{malformed:?}");
        }
    }

    #[test]
    fn merges_repeated_and_space_separated_scopes() {
        let scopes = Scope::parse_all([
            "repository:a:pull repository:b:pull",
            "repository:a:push",
            "nonsense",
        ]);
        let printed: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["repository:a:pull,push", "repository:b:pull"]);
    }

    #[test]
    fn grants() {
        let scope = Scope::parse("repository:a:pull,push").unwrap();
        assert!(scope.grants("a", Action::Pull));
        assert!(scope.grants("a", Action::Overwrite));
        assert!(!scope.grants("a", Action::Delete));
        assert!(!scope.grants("b", Action::Pull));
        let all = Scope::parse("repository:a:*").unwrap();
        assert!(all.grants("a", Action::Delete));
        assert!(!Scope::catalog().grants("catalog", Action::Pull));
        assert_eq!(
            Scope::repository("a", &[Action::Push, Action::Pull, Action::Overwrite]).to_string(),
            "repository:a:pull,push"
        );
    }
}
