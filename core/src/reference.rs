//! Repository names, tags and manifest references, parsed per the distribution spec.
//!
//! ```text
//! name      ::= [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
//! tag       ::= [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
//! reference ::= tag | digest
//! ```

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// Longest repository name berth accepts. The spec suggests clients keep names under 255
/// characters (with the host name); registry:2 enforces the same bound.
pub const MAX_NAME_LEN: usize = 255;

/// Longest path component of a repository name. Every storage key berth derives from a name
/// must fit every backend, and a filesystem's file names stop at 255 bytes: the catalog
/// index names each repository's entry by the name and a one-byte terminator
/// (`berth/catalog/<name>!`), so a one-component name of 255 characters would not fit.
pub const MAX_NAME_COMPONENT_LEN: usize = MAX_NAME_LEN - 1;

/// A repository name such as `library/alpine`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

/// A string is not a valid repository name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameError;

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid repository name: use lower-case path components of [a-z0-9] \
             joined by '.', '_', '__' or '-', separated by '/', each at most \
             {MAX_NAME_COMPONENT_LEN} characters and {MAX_NAME_LEN} in all"
        )
    }
}

impl std::error::Error for NameError {}

impl RepositoryName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepositoryName {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, NameError> {
        let component = |c: &str| c.len() <= MAX_NAME_COMPONENT_LEN && is_path_component(c);
        if text.is_empty() || text.len() > MAX_NAME_LEN || !text.split('/').all(component) {
            return Err(NameError);
        }
        Ok(Self(text.to_owned()))
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // One run of alphanumerics.
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // One separator: '.', '_', '__' or one or more '-'.
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += if bytes.get(i + 1) == Some(&b'_') {
                    2
                } else {
                    1
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepositoryName({})", self.0)
    }
}

/// A tag such as `latest` or `v1.2.3`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

/// A string is not a valid tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagError;

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "invalid tag: up to 128 characters of [a-zA-Z0-9_.-], not starting with '.' or '-'",
        )
    }
}

impl std::error::Error for TagError {}

impl Tag {
    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = TagError;

    fn from_str(text: &str) -> Result<Self, TagError> {
        let bytes = text.as_bytes();
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let valid = !bytes.is_empty()
            && bytes.len() <= 128
            && word(bytes[0])
            && bytes[1..]
                .iter()
                .all(|&b| word(b) || b == b'.' || b == b'-');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(TagError)
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A mutable name for a manifest.
    Tag(Tag),
    /// A manifest's content address.
    Digest(Digest),
}

/// A string is neither a tag nor a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceError {
    /// It has a ':' and so was read as a digest, which is malformed or unsupported.
    Digest(DigestError),
    /// It was read as a tag, which is invalid.
    Tag(TagError),
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Digest(e) => e.fmt(f),
            Self::Tag(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReferenceError {}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, ReferenceError> {
        // A tag cannot contain ':', so the colon decides which grammar applies.
        if text.contains(':') {
            text.parse()
                .map(Self::Digest)
                .map_err(ReferenceError::Digest)
        } else {
            text.parse().map(Self::Tag).map_err(ReferenceError::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(tag) => tag.fmt(f),
            Self::Digest(digest) => digest.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        for good in [
            "a",
            "library/alpine",
            "a.b_c__d---e/f0",
            "blobs/manifests/tags",
            "x/uploads",
        ] {
            assert!(good.parse::<RepositoryName>().is_ok(), "{good}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a_", "a___b", "a..b", "-a", "a.-b", "a b", "ä",
        ] {
            assert_eq!(bad.parse::<RepositoryName>(), Err(NameError), "{bad}");
        }
        assert!(
            "a".repeat(MAX_NAME_LEN + 1)
                .parse::<RepositoryName>()
                .is_err()
        );
        // At the exact limits: 255 in all, 254 in one component.
        let longest = format!("a/{}", "b".repeat(MAX_NAME_LEN - 2));
        assert!(longest.parse::<RepositoryName>().is_ok());
        assert!(
            "b".repeat(MAX_NAME_COMPONENT_LEN)
                .parse::<RepositoryName>()
                .is_ok()
        );
        assert!("b".repeat(MAX_NAME_LEN).parse::<RepositoryName>().is_err());
    }

    #[test]
    fn tags() {
        for good in ["latest", "v1.2.3", "_x", "A-b.c_d", &"t".repeat(128)] {
            assert!(good.parse::<Tag>().is_ok(), "{good}");
        }
        for bad in ["", ".a", "-a", "a:b", "a/b", &"t".repeat(129)] {
            assert_eq!(bad.parse::<Tag>(), Err(TagError), "{bad}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!("latest".parse(), Ok(Reference::Tag(_))));
        assert!(matches!(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse(),
            Ok(Reference::Digest(_))
        ));
        assert!(matches!(
            "sha256:zz".parse::<Reference>(),
            Err(ReferenceError::Digest(_))
        ));
    }

    proptest! {
        #[test]
        fn generated_names_parse(name in "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,3}(/[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,3}){0,3}") {
            prop_assume!(name.len() <= MAX_NAME_LEN);
            prop_assert!(name.parse::<RepositoryName>().is_ok());
        }

        #[test]
        fn arbitrary_names_never_panic(name in "[a-z0-9._/-]{0,40}") {
            if let Ok(parsed) = name.parse::<RepositoryName>() {
                prop_assert!(!parsed.as_str().starts_with('/') && !parsed.as_str().ends_with('/'));
                prop_assert!(!parsed.as_str().contains("//") && !parsed.as_str().contains("___"));
            }
        }

        #[test]
        fn generated_tags_parse(tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}") {
            prop_assert!(tag.parse::<Tag>().is_ok());
        }

        #[test]
        fn arbitrary_tags_never_panic(tag in ".{0,140}") {
            let _ = tag.parse::<Reference>();
        }
    }
}
