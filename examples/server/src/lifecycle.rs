//! Storage lifecycle settings of `berth serve`: garbage collection, retention and quota
//! rules.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// How `serve --gc` collects garbage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GcSettings {
    /// Seconds between collections.
    pub(crate) interval: u64,
    /// Seconds an unreferenced blob (or an untagged manifest) is kept.
    pub(crate) grace: u64,
    /// Whether untagged manifests are collected.
    pub(crate) untagged: bool,
    /// Whether referrers whose subject goes are collected (with `untagged`).
    pub(crate) orphaned_referrers: bool,
    /// The retention rules' file.
    pub(crate) retention: Option<PathBuf>,
}

impl GcSettings {
    /// The retention rules.
    pub(crate) fn retention(&self) -> Result<berth::retention::Retention, String> {
        read_rules(
            self.retention.as_deref(),
            berth::retention::Retention::from_json,
            berth::retention::Retention::new,
        )
    }

    /// A collection step's settings.
    pub(crate) fn collection(&self) -> berth::Collection {
        berth::Collection {
            grace: self.grace,
            untagged: self.untagged,
            orphaned_referrers: self.orphaned_referrers,
            ..berth::Collection::default()
        }
    }
}

/// The quota rules (none without a file).
pub(crate) fn quotas(path: Option<&Path>) -> Result<berth::quota::Quotas, String> {
    read_rules(
        path,
        berth::quota::Quotas::from_json,
        berth::quota::Quotas::new,
    )
}

/// Reads a rules file: TOML (`[[rule]]` tables) or, named `*.json`, JSON; or takes the rules
/// as JSON text (as the other hosts' `BERTH_RETENTION` and `BERTH_QUOTAS` hold them). No
/// file, no rules.
fn read_rules<Rule: DeserializeOwned, Rules: Default>(
    path: Option<&Path>,
    from_json: fn(&str) -> Result<Rules, String>,
    from_rules: fn(Vec<Rule>) -> Result<Rules, String>,
) -> Result<Rules, String> {
    read_tables(path, "rule", from_json, from_rules)
}

/// Reads a file of rules, each a TOML table named `table` (`[[rule]]`), or JSON as
/// [`read_rules`] does.
pub(crate) fn read_tables<Rule: DeserializeOwned, Rules: Default>(
    path: Option<&Path>,
    table: &str,
    from_json: fn(&str) -> Result<Rules, String>,
    from_rules: fn(Vec<Rule>) -> Result<Rules, String>,
) -> Result<Rules, String> {
    let Some(path) = path else {
        return Ok(Rules::default());
    };
    let given = path.to_string_lossy();
    if given.trim_start().starts_with(['[', '{']) {
        return from_json(&given);
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if path
        .extension()
        .is_some_and(|extension| extension == "json")
    {
        return from_json(&text).map_err(|e| format!("{}: {e}", path.display()));
    }
    let mut file: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let rules = file.remove(table).unwrap_or(toml::Value::Array(Vec::new()));
    if let Some(unknown) = file.keys().next() {
        return Err(format!(
            "{}: unknown key {unknown:?} (expected [[{table}]] tables)",
            path.display()
        ));
    }
    let rules: Vec<Rule> = rules
        .try_into()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    from_rules(rules).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_come_as_toml_json_files_or_json_text() {
        let dir = std::env::temp_dir().join(format!("berth-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml = dir.join("quotas.toml");
        std::fs::write(&toml, "[[rule]]\nnamespace = \"team\"\nlimit = \"1GiB\"\n").unwrap();
        let json = dir.join("quotas.json");
        std::fs::write(&json, r#"[{"repositories": "team/*", "limit": 10}]"#).unwrap();
        for path in [
            toml.as_path(),
            json.as_path(),
            Path::new(r#"[{"namespace": "team", "limit": 5}]"#),
        ] {
            let quotas = quotas(Some(path)).unwrap();
            assert_eq!(quotas.limits_for("team/app").len(), 1, "{}", path.display());
        }
        std::fs::write(&toml, "[[rule]]\nnamespace = \"team\"\n").unwrap();
        assert!(quotas(Some(&toml)).unwrap_err().contains("limit"));
        assert!(quotas(None).unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
