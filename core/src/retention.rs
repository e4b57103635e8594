//! Retention rules: which tags of a repository a collection removes, decided from the tags'
//! push times alone (no IO here; the collector reads the tags and deletes what this names).
//!
//! ```json
//! [
//!   {"repositories": "team/**", "keep-last": 10, "keep-tags": ["latest", "v*"]},
//!   {"repositories": "ci/*", "remove-older-than": "14d", "keep-tags": ["main"]}
//! ]
//! ```
//!
//! Of the rules whose `repositories` glob matches a repository, the longest pattern applies
//! (as with access rules). A tag goes when it matches none of `keep-tags`, is not among the
//! `keep-last` most recently pushed of the others, and (with `remove-older-than`) was pushed
//! longer ago than that. Signature, attestation and SBOM tags (`sha256-<hex>.sig` and the like, as
//! cosign names them) are neither counted nor aged: one goes exactly when no tag the
//! repository keeps points at its subject. Removing tags frees nothing by itself: with
//! untagged collection on, the manifests they held, then their blobs, follow.

use serde::Deserialize;

use crate::auth::glob::Glob;

/// One rule, as written in the rules' JSON (or `berth serve --retention`'s TOML).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetentionRule {
    /// The repositories it covers: a glob (`*` within a path component, `**` across).
    pub repositories: String,
    /// Keep this many of the most recently pushed tags.
    #[serde(default)]
    pub keep_last: Option<usize>,
    /// Keep tags matching any of these globs (`*` matches any run of characters).
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// Remove tags pushed longer ago than this: seconds, or `90m`, `12h`, `30d`.
    #[serde(default, deserialize_with = "age")]
    pub remove_older_than: Option<u64>,
}

/// A set of retention rules, checked.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    rules: Vec<(Glob, RetentionRule)>,
}

/// A tag as the collector found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagState {
    /// The tag.
    pub name: String,
    /// The digest it points at.
    pub digest: String,
    /// When it was last pushed, in milliseconds by the storage's clock.
    pub pushed: u64,
}

impl Retention {
    /// Checks rules: each keeps something by count or by age (a rule with neither would
    /// remove every tag it does not name).
    pub fn new(rules: Vec<RetentionRule>) -> Result<Self, String> {
        let mut checked = Vec::with_capacity(rules.len());
        for rule in rules {
            if rule.keep_last.is_none() && rule.remove_older_than.is_none() {
                return Err(format!(
                    "retention rule for {:?}: give keep-last, remove-older-than or both",
                    rule.repositories
                ));
            }
            checked.push((Glob::new(&rule.repositories), rule));
        }
        Ok(Self { rules: checked })
    }

    /// Parses rules from JSON: a list of rules, or `{"rules": [...]}`.
    pub fn from_json(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Document {
            List(Vec<RetentionRule>),
            Object { rules: Vec<RetentionRule> },
        }
        let document: Document =
            serde_json::from_str(text).map_err(|e| format!("retention rules: {e}"))?;
        Self::new(match document {
            Document::List(rules) | Document::Object { rules } => rules,
        })
    }

    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule for `repository`: of those that match, the longest pattern.
    pub fn rule_for(&self, repository: &str) -> Option<&RetentionRule> {
        self.rules
            .iter()
            .filter(|(glob, _)| glob.matches(repository))
            .max_by_key(|(glob, _)| glob.specificity())
            .map(|(_, rule)| rule)
    }

    /// The tags of `repository` its rule removes at `now` (milliseconds by the storage's
    /// clock), in the order given.
    pub fn expired<'a>(&self, repository: &str, tags: &'a [TagState], now: u64) -> Vec<&'a str> {
        let Some(rule) = self.rule_for(repository) else {
            return Vec::new();
        };
        let mut images: Vec<&TagState> = tags
            .iter()
            .filter(|tag| signature_subject(&tag.name).is_none())
            .collect();
        // Newest first. Push times have the storage's resolution (S3's is a second): of tags
        // pushed at the same time, the greater name counts as the newer (`v3` after `v2`),
        // so the decision never depends on listing order.
        images.sort_by(|a, b| b.pushed.cmp(&a.pushed).then_with(|| b.name.cmp(&a.name)));
        let named = |tag: &str| rule.keep_tags.iter().any(|glob| tag_matches(glob, tag));
        let mut going = Vec::new();
        // Tags kept by name take no place among the last ones kept.
        let unnamed = images.iter().filter(|tag| !named(&tag.name));
        for (rank, tag) in unnamed.enumerate() {
            let kept = rule.keep_last.is_some_and(|last| rank < last)
                || rule
                    .remove_older_than
                    .is_some_and(|age| now.saturating_sub(tag.pushed) < age.saturating_mul(1000));
            if !kept {
                going.push(tag.name.as_str());
            }
        }
        let kept_digests: Vec<&str> = images
            .iter()
            .filter(|tag| !going.contains(&tag.name.as_str()))
            .map(|tag| tag.digest.as_str())
            .collect();
        for tag in tags {
            if let Some(subject) = signature_subject(&tag.name)
                && !named(&tag.name)
                && !kept_digests.contains(&subject.as_str())
            {
                going.push(tag.name.as_str());
            }
        }
        tags.iter()
            .map(|tag| tag.name.as_str())
            .filter(|name| going.contains(name))
            .collect()
    }
}

/// The subject digest a cosign-style tag names (`sha256-<hex>.sig`, `.att`, `.sbom`, ...).
fn signature_subject(tag: &str) -> Option<String> {
    let (head, suffix) = tag.split_once('.')?;
    let (algorithm, hex) = head.split_once('-')?;
    let plausible = algorithm == "sha256"
        && hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && !suffix.is_empty();
    plausible.then(|| format!("{algorithm}:{}", hex.to_ascii_lowercase()))
}

/// Whether `tag` matches `glob`, where `*` matches any run of characters (tags have no `/`).
fn tag_matches(glob: &str, tag: &str) -> bool {
    match glob.split_once('*') {
        None => glob == tag,
        Some((prefix, rest)) => {
            let Some(tail) = tag.strip_prefix(prefix) else {
                return false;
            };
            (0..=tail.len())
                .any(|skip| tail.is_char_boundary(skip) && tag_matches(rest, &tail[skip..]))
        }
    }
}

/// Seconds from a number or a string with a unit (`s`, `m`, `h`, `d`).
fn age<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Age {
        Seconds(u64),
        Text(String),
    }
    let parsed = match Option::<Age>::deserialize(deserializer)? {
        None => return Ok(None),
        Some(Age::Seconds(seconds)) => Some(seconds),
        Some(Age::Text(text)) => parse_age(&text),
    };
    parsed
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("an age: seconds, or a number with s, m, h or d"))
}

/// Parses `90`, `90s`, `15m`, `12h`, `30d` into seconds.
pub fn parse_age(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return None,
    };
    number.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, digest: &str, pushed_days_ago: u64) -> TagState {
        TagState {
            name: name.into(),
            digest: digest.into(),
            pushed: (100 - pushed_days_ago) * 86_400_000,
        }
    }

    const NOW: u64 = 100 * 86_400_000;

    #[test]
    fn rules_decide_by_count_name_and_age() {
        let retention = Retention::from_json(
            r#"[{"repositories": "team/**", "keep-last": 2, "keep-tags": ["latest", "v*"]},
                {"repositories": "team/ci/*", "remove-older-than": "7d"}]"#,
        )
        .unwrap();
        let signed = format!("sha256-{}.sig", "a".repeat(64));
        let orphan_signature = format!("sha256-{}.sig", "f".repeat(64));
        let tags = [
            tag("new", "sha256:1", 1),
            tag("newer", "sha256:2", 0),
            tag("old", "sha256:3", 50),
            tag("latest", "sha256:4", 90),
            tag("v1.0", "sha256:5", 80),
            tag("older", &format!("sha256:{}", "a".repeat(64)), 60),
            tag(&signed, "sha256:6", 99),
            tag(&orphan_signature, "sha256:7", 0),
        ];
        // keep-last 2 (newer, new), names (latest, v1.0); old and older go, and with older
        // the signature of its manifest; the signature of nothing goes too.
        assert_eq!(
            retention.expired("team/app", &tags, NOW),
            vec!["old", "older", signed.as_str(), orphan_signature.as_str()]
        );
        // The longer pattern wins: by age alone.
        assert_eq!(
            retention.expired("team/ci/build", &tags[..6], NOW),
            vec!["old", "latest", "v1.0", "older"]
        );
        assert!(retention.expired("other/app", &tags, NOW).is_empty());
    }

    #[test]
    fn a_signature_of_a_kept_image_stays() {
        let retention =
            Retention::from_json(r#"{"rules": [{"repositories": "**", "keep-last": 1}]}"#).unwrap();
        let digest = format!("sha256:{}", "b".repeat(64));
        let signature = format!("sha256-{}.sig", "b".repeat(64));
        let tags = [
            tag("v2", &digest, 5),
            tag("v1", "sha256:1", 9),
            tag(&signature, "sha256:2", 1),
        ];
        assert_eq!(retention.expired("app", &tags, NOW), vec!["v1"]);
    }

    #[test]
    fn tags_kept_by_name_take_no_place_among_the_last() {
        let retention = Retention::from_json(
            r#"[{"repositories": "app", "keep-last": 2, "keep-tags": ["stable"]}]"#,
        )
        .unwrap();
        let tags = [
            tag("v1", "sha256:1", 3),
            tag("v2", "sha256:2", 2),
            tag("v3", "sha256:3", 1),
            tag("stable", "sha256:1", 0),
        ];
        assert_eq!(retention.expired("app", &tags, NOW), vec!["v1"]);
    }

    #[test]
    fn tags_pushed_in_the_same_second_are_ordered_by_name() {
        let retention =
            Retention::from_json(r#"[{"repositories": "app", "keep-last": 2}]"#).unwrap();
        let tags = [
            tag("v2", "sha256:2", 1),
            tag("v1", "sha256:1", 1),
            tag("v3", "sha256:3", 1),
        ];
        assert_eq!(retention.expired("app", &tags, NOW), vec!["v1"]);
    }

    #[test]
    fn rules_are_checked() {
        assert!(Retention::from_json(r#"[{"repositories": "a"}]"#).is_err());
        assert!(Retention::from_json(r#"[{"repositories": "a", "keep": 1}]"#).is_err());
        assert!(
            Retention::from_json(r#"[{"repositories": "a", "remove-older-than": "3w"}]"#).is_err()
        );
        assert_eq!(parse_age("30d"), Some(2_592_000));
        assert_eq!(parse_age("90"), Some(90));
        assert!(
            tag_matches("v*", "v1.2") && tag_matches("*-rc*", "2.0-rc1") && !tag_matches("v*", "x")
        );
    }
}
