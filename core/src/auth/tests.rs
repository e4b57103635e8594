//! The access matrix of the design notes (principals × operations × the repositories of two
//! teams and a public one), and random identities × repositories × actions against an oracle
//! written as the rules read.

use proptest::prelude::*;

use super::*;
use crate::access::Action;

const RULES: &str = r#"{
  "groups": { "team-a": ["reader", "pusher", "maint"] },
  "repositories": {
    "team-a/**": {
      "policies": [
        { "groups": ["team-a"], "actions": ["pull"] },
        { "users": ["pusher", "maint"], "actions": ["pull", "push"] },
        { "users": ["maint"], "actions": ["overwrite", "delete"] }
      ]
    },
    "team-a/secret/**": {
      "policies": [ { "users": ["maint"], "actions": ["pull"] } ]
    },
    "team-b/**": {
      "policies": [ { "groups": ["team-b"], "actions": ["pull", "push"] } ]
    },
    "public/**": { "default": ["pull"], "anonymous": ["pull"] }
  },
  "admin": { "users": ["admin"] }
}"#;

fn rules() -> Rules {
    Rules::from_json(RULES).unwrap()
}

fn user(name: &str) -> Identity {
    Identity::Principal(Principal {
        subject: name.to_owned(),
        groups: Vec::new(),
    })
}

/// `other` is in team-b through its credential (a token's groups claim), not the rules.
fn other() -> Identity {
    Identity::Principal(Principal {
        subject: "other".to_owned(),
        groups: vec!["team-b".to_owned()],
    })
}

#[test]
fn the_design_matrix() {
    use Action::*;
    let rules = rules();
    let who = [
        ("anon", Identity::Anonymous),
        ("reader", user("reader")),
        ("pusher", user("pusher")),
        ("maint", user("maint")),
        ("other", other()),
        ("admin", user("admin")),
    ];
    // For each repository: the actions each principal has, in the order of `who`.
    let expected: [(&str, [&[Action]; 6]); 4] = [
        (
            "team-a/x",
            [
                &[],
                &[Pull],
                &[Pull, Push],
                &[Pull, Push, Overwrite, Delete],
                &[],
                &[Pull, Push, Overwrite, Delete],
            ],
        ),
        // The longer pattern wins: only maint reads, and no one but admins writes.
        (
            "team-a/secret/y",
            [
                &[],
                &[],
                &[],
                &[Pull],
                &[],
                &[Pull, Push, Overwrite, Delete],
            ],
        ),
        (
            "team-b/y",
            [
                &[],
                &[],
                &[],
                &[],
                &[Pull, Push],
                &[Pull, Push, Overwrite, Delete],
            ],
        ),
        (
            "public/z",
            [
                &[Pull],
                &[Pull],
                &[Pull],
                &[Pull],
                &[Pull],
                &[Pull, Push, Overwrite, Delete],
            ],
        ),
    ];
    for (repository, rows) in expected {
        for ((name, identity), allowed) in who.iter().zip(rows) {
            for action in [Pull, Push, Overwrite, Delete] {
                assert_eq!(
                    rules.allows(identity, Some(repository), action),
                    allowed.contains(&action),
                    "{name} {action} {repository}"
                );
            }
        }
    }
    // Unmatched names allow nothing; the catalog is open (and filtered); admin is admin's.
    assert!(!rules.allows(&user("maint"), Some("elsewhere/app"), Pull));
    assert!(rules.allows(&user("admin"), Some("elsewhere/app"), Delete));
    for (_, identity) in &who {
        assert!(rules.allows(identity, None, Catalog));
    }
    assert!(rules.allows(&user("admin"), None, Admin));
    assert!(!rules.allows(&user("maint"), None, Admin));
    assert!(!rules.allows(&user("maint"), Some("team-a/x"), Admin));
}

#[test]
fn rules_that_cannot_be_meant_are_refused() {
    let refused = [
        r#"{"repositories": {"": {}}}"#,
        r#"{"repositories": {"a/**": {"policies": [{"actions": ["pull"]}]}}}"#,
        r#"{"repositories": {"a/**": {"default": ["catalog"]}}}"#,
        r#"{"repositories": {"a/**": {"anonymous": ["admin"]}}}"#,
        r#"{"repositories": {"a/**": {"default": ["read"]}}}"#,
        r#"{"repository": {}}"#,
    ];
    for text in refused {
        assert!(Rules::from_json(text).is_err(), "{text}");
    }
    assert_eq!(Rules::from_json("{}").unwrap(), Rules::default());
}

/// The rules as a reader would apply them by hand, written apart from `Rules::allows`.
fn oracle(rules: &Rules, who: &Identity, repository: &str, action: Action) -> bool {
    let (subject, own_groups) = match who {
        Identity::Anonymous => (None, &[][..]),
        Identity::Principal(p) => (Some(p.subject.as_str()), p.groups.as_slice()),
    };
    let in_group = |group: &String| {
        own_groups.contains(group)
            || subject.is_some_and(|s| {
                rules
                    .groups
                    .get(group)
                    .is_some_and(|m| m.iter().any(|u| u == s))
            })
    };
    let names = |users: &[String], groups: &[String]| {
        subject.is_some_and(|s| users.iter().any(|u| u == s)) || groups.iter().any(in_group)
    };
    if names(&rules.admin.users, &rules.admin.groups) {
        return true;
    }
    let mut best: Option<(&String, &RepositoryRules)> = None;
    for (pattern, r) in &rules.repositories {
        let matches = pattern_matches(pattern, repository);
        if matches && best.is_none_or(|(p, _)| pattern.len() > p.len()) {
            best = Some((pattern, r));
        }
    }
    let Some((_, r)) = best else { return false };
    match who {
        Identity::Anonymous => r.anonymous.contains(&action),
        Identity::Principal(_) => {
            r.default.contains(&action)
                || r.policies
                    .iter()
                    .any(|p| names(&p.users, &p.groups) && p.actions.contains(&action))
        }
    }
}

/// Globs by regular-expression rules: `**` is `.*`, `*` is `[^/]*`, and `**/` may vanish.
fn pattern_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        if p.is_empty() {
            return n.is_empty();
        }
        if p.len() >= 2 && p[0] == '*' && p[1] == '*' {
            let rest = &p[2..];
            if rest.first() == Some(&'/') && go(&rest[1..], n) {
                return true;
            }
            return (0..=n.len()).any(|i| go(rest, &n[i..]));
        }
        if p[0] == '*' {
            let end = n.iter().position(|c| *c == '/').unwrap_or(n.len());
            return (0..=end).any(|i| go(&p[1..], &n[i..]));
        }
        !n.is_empty() && n[0] == p[0] && go(&p[1..], &n[1..])
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

fn arb_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Pull),
        Just(Action::Push),
        Just(Action::Overwrite),
        Just(Action::Delete),
    ]
}

fn arb_identity() -> impl Strategy<Value = Identity> {
    prop_oneof![
        Just(Identity::Anonymous),
        (
            prop::sample::select(vec!["reader", "pusher", "maint", "other", "admin", "x"]),
            prop::collection::vec(prop::sample::select(vec!["team-a", "team-b", "z"]), 0..2),
        )
            .prop_map(|(subject, groups)| Identity::Principal(Principal {
                subject: subject.to_owned(),
                groups: groups.into_iter().map(str::to_owned).collect(),
            })),
    ]
}

fn arb_repository() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["team-a", "team-b", "public", "elsewhere", "team-ab"]),
        prop::collection::vec(prop::sample::select(vec!["x", "secret", "y"]), 0..3),
    )
        .prop_map(|(first, rest)| {
            std::iter::once(first)
                .chain(rest)
                .collect::<Vec<_>>()
                .join("/")
        })
}

proptest! {
    #[test]
    fn decisions_agree_with_the_oracle(
        who in arb_identity(),
        repository in arb_repository(),
        action in arb_action(),
    ) {
        let rules = rules();
        prop_assert_eq!(
            rules.allows(&who, Some(&repository), action),
            oracle(&rules, &who, &repository, action),
            "{:?} {} {}", who, action, repository
        );
    }
}

#[test]
fn immutable_tags_by_pattern() {
    let rules = Rules::from_json(
        r#"{"repositories": {
            "team-a/**": {"immutable-tags": ["v*", "release-*-final", "latest"]},
            "team-a/scratch/**": {}
        }}"#,
    )
    .unwrap();
    for (tag, immutable) in [
        ("v1", true),
        ("v1.2.3", true),
        ("v", true),
        ("latest", true),
        ("latest2", false),
        ("release-2026-final", true),
        ("release-2026", false),
        ("dev", false),
    ] {
        assert_eq!(rules.is_immutable("team-a/app", tag), immutable, "{tag}");
    }
    // The longer pattern's rules apply, and they make nothing immutable.
    assert!(!rules.is_immutable("team-a/scratch/x", "v1"));
    assert!(!rules.is_immutable("elsewhere", "v1"));
}
