//! htpasswd files of bcrypt hashes (`htpasswd -B` writes `$2y$`; `$2a$` and `$2b$` are the
//! same function for the passwords it can hold), and the bcrypt check itself: Provos and
//! Mazières' EksBlowfish over the blowfish crate's key schedule.

use std::collections::BTreeMap;
use std::fmt;

use blowfish::Blowfish;

/// The users of an htpasswd file, by name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Htpasswd {
    users: BTreeMap<String, BcryptHash>,
}

impl fmt::Debug for Htpasswd {
    /// Names the users, never their hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.users.keys()).finish()
    }
}

/// An htpasswd line that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtpasswdError {
    /// The line's number, from 1.
    pub line: usize,
    /// What is wrong with it (never the hash itself).
    pub reason: String,
}

impl fmt::Display for HtpasswdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "htpasswd line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for HtpasswdError {}

impl Htpasswd {
    /// Reads a file's text: `user:hash` lines; blank lines and `#` comments are skipped. A
    /// line with another kind of hash (`{SHA}`, `$apr1$`, crypt) is an error rather than a
    /// user who can never log in, so that the host says so when it loads the file.
    pub fn parse(text: &str) -> Result<Self, HtpasswdError> {
        let mut users = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |reason: String| HtpasswdError {
                line: line_number,
                reason,
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| error("no ':' between the user and the hash".into()))?;
            if user.is_empty() {
                return Err(error("no user name".into()));
            }
            let hash = BcryptHash::parse(hash).ok_or_else(|| {
                error(format!(
                    "user {user:?} has a hash other than bcrypt ($2y$, $2a$, $2b$; write it \
                     with htpasswd -B)"
                ))
            })?;
            if users.insert(user.to_owned(), hash).is_some() {
                return Err(error(format!("user {user:?} is listed twice")));
            }
        }
        Ok(Self { users })
    }

    /// Whether `user` is listed and `password` is theirs. Costs one bcrypt run (a few
    /// milliseconds at cost 5, doubling with each step): callers cache successes.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|hash| hash.verify(password.as_bytes()))
    }

    /// Whether the file lists `user`.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// How many users the file lists.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether it lists no one.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A parsed bcrypt hash: `$2y$<cost>$<22 characters of salt><31 of digest>`.
#[derive(Clone, PartialEq, Eq)]
struct BcryptHash {
    cost: u32,
    salt: [u8; 16],
    digest: [u8; 23],
}

impl BcryptHash {
    fn parse(text: &str) -> Option<Self> {
        let rest = ["$2y$", "$2b$", "$2a$"]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix))?;
        let (cost, rest) = rest.split_once('$')?;
        if cost.len() != 2 || rest.len() != 53 {
            return None;
        }
        let cost: u32 = cost.parse().ok()?;
        if !(4..=31).contains(&cost) {
            return None;
        }
        let salt = decode::<16>(&rest[..22])?;
        let digest = decode::<23>(&rest[22..])?;
        Some(Self { cost, salt, digest })
    }

    fn verify(&self, password: &[u8]) -> bool {
        // The key is the password and its terminating NUL, cut at 72 bytes.
        let mut key: Vec<u8> = password.iter().copied().chain([0]).take(72).collect();
        let digest = bcrypt(self.cost, &self.salt, &key);
        key.fill(0);
        constant_time_eq(&digest, &self.digest)
    }
}

/// EksBlowfishSetup, then "OrpheanBeholderScryDoubt" encrypted 64 times; the last byte of
/// the 24 is dropped, as every bcrypt does.
fn bcrypt(cost: u32, salt: &[u8; 16], key: &[u8]) -> [u8; 23] {
    let mut state = Blowfish::bc_init_state();
    state.salted_expand_key(salt, key);
    for _ in 0..1u64 << cost {
        state.bc_expand_key(key);
        state.bc_expand_key(salt);
    }
    let mut text = [0u32; 6];
    for (word, bytes) in text.iter_mut().zip(b"OrpheanBeholderScryDoubt".chunks(4)) {
        *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    for block in text.chunks_mut(2) {
        let mut pair = [block[0], block[1]];
        for _ in 0..64 {
            pair = state.bc_encrypt(pair);
        }
        block.copy_from_slice(&pair);
    }
    let mut out = [0u8; 23];
    for (at, word) in text.iter().enumerate() {
        for (offset, byte) in word.to_be_bytes().into_iter().enumerate() {
            if let Some(slot) = out.get_mut(at * 4 + offset) {
                *slot = byte;
            }
        }
    }
    out
}

/// bcrypt's base64: its own alphabet, no padding.
const ALPHABET: &[u8; 64] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Decodes exactly `N` bytes from `text` (22 characters for 16 bytes, 31 for 23).
fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    let mut bits: u32 = 0;
    let mut held = 0;
    let mut filled = 0;
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | value;
        held += 6;
        if held >= 8 {
            held -= 8;
            if filled == N {
                return None;
            }
            out[filled] = (bits >> held) as u8;
            filled += 1;
        }
    }
    (filled == N).then_some(out)
}

/// Compares without stopping at the first difference, so the time taken tells nothing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `htpasswd -B` (apache2-utils 2.4.65, Debian 12).
    const FILE: &str = "\
# berth test users
alice:$2y$05$.rlAcDikEk8XeKccN72noubJPp..yyEDMyUo2o0cNG6WJPL0VNHcK
bob:$2y$04$TZjo.EaFWNtBDeujgzVqy.rxWyarArUS7mfxXqtuznVAdGzD55XPW

long:$2y$04$CJf66ylrPLg66qXsrSoR1uc./FRyb9exos0cZq.aJVo96aqmLfmwa
long72:$2y$04$S2UhxKD/aOV0NdrwB0bztuV9pAbCXSENJa7WiAO9GTu9LUBH5N.hi
empty:$2y$04$EgGKqw6ltcLBAK5OB5m1C.t0UBPJ.yqJn38ZK.u0BLwzfoR23xsy.
";

    #[test]
    fn verifies_what_htpasswd_wrote() {
        let users = Htpasswd::parse(FILE).unwrap();
        assert_eq!(users.len(), 5);
        assert!(users.verify("alice", "s3cret"));
        assert!(!users.verify("alice", "s3cret "));
        assert!(!users.verify("alice", "S3cret"));
        assert!(users.verify("bob", "pässwörd with spaces"));
        assert!(users.verify("empty", ""));
        assert!(!users.verify("empty", "x"));
        assert!(!users.verify("nobody", "s3cret"));
        // bcrypt reads 72 bytes of a password: 80 and 72 x's are one key.
        let long = "x".repeat(80);
        assert!(users.verify("long", &long));
        assert!(users.verify("long72", &long));
        assert!(users.verify("long", &"x".repeat(72)));
        assert!(!users.verify("long", &"x".repeat(71)));
        // The other prefixes name the same function.
        let other = FILE.replace("alice:$2y$", "alice:$2b$");
        assert!(Htpasswd::parse(&other).unwrap().verify("alice", "s3cret"));
    }

    #[test]
    fn refuses_lines_it_cannot_use() {
        for (text, line) in [
            ("alice", 1),
            (
                ":$2y$05$.rlAcDikEk8XeKccN72noubJPp..yyEDMyUo2o0cNG6WJPL0VNHcK",
                1,
            ),
            ("# ok\nmd5:$apr1$abc$def", 2),
            ("sha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", 1),
            ("short:$2y$05$tooshort", 1),
            (
                "cost:$2y$99$.rlAcDikEk8XeKccN72noubJPp..yyEDMyUo2o0cNG6WJPL0VNHcK",
                1,
            ),
            (
                "bad:$2y$05$.rlAcDikEk8XeKccN72noubJPp..yyEDMyUo2o0cNG6WJPL0VNHc!",
                1,
            ),
            (
                "twice:$2y$04$TZjo.EaFWNtBDeujgzVqy.rxWyarArUS7mfxXqtuznVAdGzD55XPW\n\
              twice:$2y$04$TZjo.EaFWNtBDeujgzVqy.rxWyarArUS7mfxXqtuznVAdGzD55XPW",
                2,
            ),
        ] {
            let error = Htpasswd::parse(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
            assert!(!error.to_string().contains("rlAcDik"), "{error}");
        }
        assert!(Htpasswd::parse("").unwrap().is_empty());
        assert_eq!(
            format!("{:?}", Htpasswd::parse(FILE).unwrap()),
            r#"{"alice", "bob", "empty", "long", "long72"}"#
        );
    }
}
