//! Quotas: how many bytes a repository, or a namespace of repositories, may hold (no IO here;
//! the registry counts usage in storage and asks these rules what the limits are).
//!
//! ```json
//! [
//!   {"repositories": "team-a/*", "limit": "10GiB"},
//!   {"namespace": "team-a", "limit": "50GiB"}
//! ]
//! ```
//!
//! A `repositories` rule limits each repository its glob matches; of several that match, the
//! longest pattern applies (as with access and retention rules). A `namespace` rule limits
//! all repositories below a prefix together (`team-a` covers `team-a` and `team-a/...`);
//! every namespace rule that covers a repository applies. A repository holds the bytes of
//! each distinct blob and manifest linked into it: a layer shared by two repositories counts
//! in each, a layer shared by two images of one repository counts once.

use serde::Deserialize;

use crate::auth::glob::Glob;

/// One rule, as written in the rules' JSON (or `berth serve --quotas`' TOML).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuotaRule {
    /// Limits each repository this glob matches (`*` within a path component, `**` across).
    #[serde(default)]
    pub repositories: Option<String>,
    /// Limits the repositories below this prefix together.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Bytes: a number, or `500MB`, `10GiB` (`k`, `M`, `G`, `T` are powers of 1000; `Ki`,
    /// `Mi`, `Gi`, `Ti` of 1024; the `B` is optional).
    #[serde(deserialize_with = "size")]
    pub limit: u64,
}

/// What a limit covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaScope {
    /// One repository (the rule's glob is given, for messages).
    Repository {
        /// The rule's glob.
        pattern: String,
    },
    /// All repositories below a prefix.
    Namespace {
        /// The prefix.
        namespace: String,
    },
}

/// A limit that applies to a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaLimit {
    /// What it covers.
    pub scope: QuotaScope,
    /// Bytes.
    pub limit: u64,
}

/// A set of quota rules, checked.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    repositories: Vec<(Glob, String, u64)>,
    namespaces: Vec<(String, u64)>,
}

impl Quotas {
    /// Checks rules: each names repositories or a namespace, not both.
    pub fn new(rules: Vec<QuotaRule>) -> Result<Self, String> {
        let mut quotas = Self::default();
        for rule in rules {
            match (rule.repositories, rule.namespace) {
                (Some(pattern), None) => {
                    quotas
                        .repositories
                        .push((Glob::new(&pattern), pattern, rule.limit));
                }
                (None, Some(namespace)) => {
                    let namespace = namespace.trim_end_matches('/').to_owned();
                    if namespace.is_empty() || namespace.parse::<crate::RepositoryName>().is_err() {
                        return Err(format!(
                            "quota for namespace {namespace:?}: not a repository name prefix"
                        ));
                    }
                    quotas.namespaces.push((namespace, rule.limit));
                }
                _ => {
                    return Err(
                        "a quota rule names either \"repositories\" (a glob) or \"namespace\""
                            .to_owned(),
                    );
                }
            }
        }
        // Outermost first, as `limits_for` lists them.
        quotas
            .namespaces
            .sort_by_key(|(namespace, _)| namespace.len());
        Ok(quotas)
    }

    /// Parses rules from JSON: a list of rules, or `{"rules": [...]}`. (Read field by field
    /// rather than derived: the edge build carries this path, and the derived one costs it
    /// several KiB more.)
    pub fn from_json(text: &str) -> Result<Self, String> {
        use serde_json::Value;
        let document: Value =
            serde_json::from_str(text).map_err(|e| format!("quota rules: {e}"))?;
        let rules = match &document {
            Value::Array(rules) => rules,
            Value::Object(object) => match object.get("rules") {
                Some(Value::Array(rules)) => rules,
                _ => return Err("quota rules: a list of rules, or {\"rules\": [...]}".into()),
            },
            _ => return Err("quota rules: a list of rules, or {\"rules\": [...]}".into()),
        };
        let mut parsed = Vec::with_capacity(rules.len());
        for rule in rules {
            let Value::Object(fields) = rule else {
                return Err(format!("quota rule {rule}: not an object"));
            };
            let mut repositories = None;
            let mut namespace = None;
            let mut limit = None;
            for (field, value) in fields {
                match (field.as_str(), value) {
                    ("repositories", Value::String(glob)) => repositories = Some(glob.clone()),
                    ("namespace", Value::String(prefix)) => namespace = Some(prefix.clone()),
                    ("limit", Value::Number(bytes)) if bytes.is_u64() => limit = bytes.as_u64(),
                    ("limit", Value::String(text)) if parse_size(text).is_some() => {
                        limit = parse_size(text);
                    }
                    ("limit", _) => {
                        return Err(format!(
                            "quota rule {rule}: the limit is bytes, or a number with kB, MB, GB, TB, KiB, MiB, GiB or TiB"
                        ));
                    }
                    _ => return Err(format!("quota rule {rule}: unknown field {field:?}")),
                }
            }
            parsed.push(QuotaRule {
                repositories,
                namespace,
                limit: limit.ok_or_else(|| format!("quota rule {rule}: no limit"))?,
            });
        }
        Self::new(parsed)
    }

    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        self.repositories.is_empty() && self.namespaces.is_empty()
    }

    /// The limits on `repository`: its repository rule (the longest glob that matches), then
    /// every namespace that covers it, outermost first.
    pub fn limits_for(&self, repository: &str) -> Vec<QuotaLimit> {
        let mut limits: Vec<QuotaLimit> = self
            .repositories
            .iter()
            .filter(|(glob, _, _)| glob.matches(repository))
            .max_by_key(|(glob, _, _)| glob.specificity())
            .map(|(_, pattern, limit)| QuotaLimit {
                scope: QuotaScope::Repository {
                    pattern: pattern.clone(),
                },
                limit: *limit,
            })
            .into_iter()
            .collect();
        let namespaces = self
            .namespaces
            .iter()
            .filter(|(namespace, _)| covers(namespace, repository));
        limits.extend(namespaces.map(|(namespace, limit)| QuotaLimit {
            scope: QuotaScope::Namespace {
                namespace: namespace.clone(),
            },
            limit: *limit,
        }));
        limits
    }
}

/// Whether `namespace` covers `repository`: the same name, or a prefix ending at a `/`.
pub fn covers(namespace: &str, repository: &str) -> bool {
    repository
        .strip_prefix(namespace)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Bytes from a number or a string with a unit.
fn size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(bytes) => Ok(bytes),
        Size::Text(text) => parse_size(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a size: bytes, or a number with kB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ))
        }),
    }
}

/// Parses `1048576`, `500MB`, `1.5GiB`, `10G` into bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    let unit = unit.strip_suffix(['B', 'b']).unwrap_or(unit);
    let scale: u64 = match unit {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000_u64.pow(2),
        "G" => 1000_u64.pow(3),
        "T" => 1000_u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    // In integers: float parsing and printing would add tens of KiB to the wasm build.
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') {
        return None;
    }
    let mut bytes = whole.parse::<u64>().ok()?.checked_mul(scale)?;
    if !fraction.is_empty() {
        // At most 12 digits: times a scale of at most 2^40 it stays within a u64.
        let digits = u32::try_from(fraction.len()).ok().filter(|&n| n <= 12)?;
        let part = fraction.parse::<u64>().ok()?.checked_mul(scale)? / 10u64.pow(digits);
        bytes = bytes.checked_add(part)?;
    }
    Some(bytes)
}

/// Bytes as people read them: `512 B`, `1.5 MiB`, `10.0 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    while unit < UNITS.len() - 1 && bytes >= 1024 << (10 * (unit + 1)) {
        unit += 1;
    }
    let scale = 1u64 << (10 * (unit + 1));
    // Tenths, rounded: the whole units, then the remainder's tenths (no overflow, no float).
    let mut whole = bytes / scale;
    let mut tenths = ((bytes % scale) / (scale / 1024) * 10 + 512) / 1024;
    if tenths == 10 {
        whole += 1;
        tenths = 0;
    }
    format!("{whole}.{tenths} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases = [
            ("1048576", Some(1 << 20)),
            ("500MB", Some(500_000_000)),
            ("500 MB", Some(500_000_000)),
            ("10GiB", Some(10 << 30)),
            ("10Gi", Some(10 << 30)),
            ("1.5KiB", Some(1536)),
            ("2k", Some(2000)),
            ("10XB", None),
            ("", None),
            ("GiB", None),
            ("-1", None),
            ("99999999999TiB", None),
            ("1.2.3", None),
            (".5k", None),
            ("0.001k", Some(1)),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), bytes, "{text}");
        }
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(10 << 30), "10.0 GiB");
        assert_eq!(format_size(1024 * 1024 - 1), "1024.0 KiB");
        assert_eq!(format_size(3000), "2.9 KiB");
        assert_eq!(format_size(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn limits_by_repository_and_namespace() {
        let quotas = Quotas::from_json(
            r#"[
                {"repositories": "team-a/*", "limit": "10GiB"},
                {"repositories": "team-a/big", "limit": "100GiB"},
                {"namespace": "team-a", "limit": "50GiB"},
                {"namespace": "team-a/ml/", "limit": 1000},
                {"repositories": "**", "limit": "1GiB"}
            ]"#,
        )
        .unwrap();
        let describe = |repository: &str| -> Vec<(String, u64)> {
            quotas
                .limits_for(repository)
                .into_iter()
                .map(|limit| match limit.scope {
                    QuotaScope::Repository { pattern } => (pattern, limit.limit),
                    QuotaScope::Namespace { namespace } => (format!("ns {namespace}"), limit.limit),
                })
                .collect()
        };
        assert_eq!(
            describe("team-a/app"),
            [
                ("team-a/*".into(), 10 << 30),
                ("ns team-a".into(), 50 << 30)
            ]
        );
        assert_eq!(
            describe("team-a/big"),
            [
                ("team-a/big".into(), 100 << 30),
                ("ns team-a".into(), 50 << 30)
            ]
        );
        assert_eq!(
            describe("team-a/ml/model"),
            [
                ("**".into(), 1 << 30),
                ("ns team-a".into(), 50 << 30),
                ("ns team-a/ml".into(), 1000)
            ]
        );
        assert_eq!(describe("team-ab/app"), [("**".into(), 1 << 30)]);
        assert_eq!(
            describe("team-a"),
            [("**".into(), 1 << 30), ("ns team-a".into(), 50 << 30)]
        );
        assert!(Quotas::default().limits_for("x").is_empty());
    }

    #[test]
    fn bad_rules_are_refused() {
        for rules in [
            r#"[{"limit": 10}]"#,
            r#"[{"repositories": "a", "namespace": "a", "limit": 10}]"#,
            r#"[{"namespace": "A/B", "limit": 10}]"#,
            r#"[{"namespace": "a", "limit": "ten"}]"#,
            r#"[{"namespace": "a", "limit": 10, "keep-last": 3}]"#,
        ] {
            assert!(Quotas::from_json(rules).is_err(), "{rules}");
        }
        assert!(Quotas::from_json(r#"{"rules": []}"#).unwrap().is_empty());
    }
}
