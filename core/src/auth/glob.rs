//! Repository globs: `*` matches within one path component, `**` across components.

/// A repository pattern, as written in the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    pattern: String,
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_owned(),
        }
    }

    /// How specific the pattern is: its length. Of several patterns that match a repository,
    /// the longest wins (as in zot), so `team-a/secret/**` overrides `team-a/**`.
    pub(crate) fn specificity(&self) -> usize {
        self.pattern.len()
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        matches(self.pattern.as_bytes(), name.as_bytes())
    }
}

/// Matches by backtracking over the two wildcards; patterns and names are short (a name is
/// at most 255 bytes), so the worst case stays small.
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern {
        [] => name.is_empty(),
        [b'*', b'*', rest @ ..] => {
            // `**/` also matches nothing at all, so `a/**/b` matches `a/b`.
            if let [b'/', after @ ..] = rest
                && matches(after, name)
            {
                return true;
            }
            (0..=name.len()).any(|skip| matches(rest, &name[skip..]))
        }
        [b'*', rest @ ..] => {
            let component = name.iter().position(|&b| b == b'/').unwrap_or(name.len());
            (0..=component).any(|skip| matches(rest, &name[skip..]))
        }
        [literal, rest @ ..] => name
            .split_first()
            .is_some_and(|(first, tail)| first == literal && matches(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let cases = [
            ("team-a/app", "team-a/app", true),
            ("team-a/app", "team-a/app2", false),
            ("team-a/*", "team-a/app", true),
            ("team-a/*", "team-a/app/nested", false),
            ("team-a/**", "team-a/app/nested", true),
            ("team-a/**", "team-a", false),
            ("team-*/app", "team-b/app", true),
            ("team-*/app", "team-b/x/app", false),
            ("**", "anything/at/all", true),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "a/x/y/c", false),
            ("*", "library", true),
            ("*", "library/alpine", false),
            ("", "", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(name),
                expected,
                "{pattern} ~ {name}"
            );
        }
    }
}
