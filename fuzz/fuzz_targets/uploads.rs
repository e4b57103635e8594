//! Random sequences of upload operations (start, PATCH with right and wrong ranges, PUT with
//! right, wrong and malformed digests, one-request pushes, cancel, status, and a restart of
//! the registry over the same storage), checked against a model after every step: no panic,
//! no 5xx, a session's offset is always the bytes it accepted, a blob exists only under the
//! digest of exactly the bytes pushed, and bytes refused are never found.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use berth::{Algorithm, MemoryStorage, Method, RequestHead};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Range {
    /// No `Content-Range`: a streamed chunk, appended.
    Absent,
    /// The range that follows what the session holds.
    Next,
    /// A range starting this far from where it should.
    Off(i8),
}

#[derive(Arbitrary, Debug)]
enum DigestChoice {
    /// The digest of what the session holds (and the last chunk).
    Right,
    /// The digest of other bytes.
    Wrong,
    /// The right one under the other algorithm.
    OtherAlgorithm,
    /// Not a digest at all.
    Malformed,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Start {
        sha512: bool,
    },
    Patch {
        session: u8,
        range: Range,
        data: Vec<u8>,
        split: u8,
    },
    Put {
        session: u8,
        digest: DigestChoice,
        last_chunk: Vec<u8>,
    },
    Push {
        digest: DigestChoice,
        data: Vec<u8>,
    },
    Cancel {
        session: u8,
    },
    Status {
        session: u8,
    },
    Restart,
}

struct Session {
    location: String,
    algorithm: Algorithm,
    bytes: Vec<u8>,
}

struct Model {
    /// Sessions by creation order; `None` once finished or cancelled.
    sessions: Vec<Option<Session>>,
    /// Blobs pushed to the repository: digest → bytes.
    blobs: BTreeMap<String, Vec<u8>>,
    /// Digests of bytes that were refused (and not pushed since).
    refused: BTreeMap<String, ()>,
}

impl Model {
    /// `bytes` were stored under `digest`.
    fn accept(&mut self, digest: String, bytes: Vec<u8>) {
        self.refused.remove(&digest);
        self.blobs.insert(digest, bytes);
    }

    /// `bytes` were refused under `claimed`: neither their own digests nor the claimed one
    /// may turn up, unless pushed before.
    fn refuse(&mut self, bytes: &[u8], claimed: &str) {
        let mut digests: Vec<String> = [Algorithm::Sha256, Algorithm::Sha512]
            .iter()
            .map(|algorithm| algorithm.digest(bytes).to_string())
            .collect();
        if claimed.parse::<berth::Digest>().is_ok() {
            digests.push(claimed.to_owned());
        }
        for digest in digests {
            if !self.blobs.contains_key(&digest) {
                self.refused.insert(digest, ());
            }
        }
    }
}

fn digest_of(choice: &DigestChoice, algorithm: Algorithm, bytes: &[u8]) -> String {
    let other = match algorithm {
        Algorithm::Sha256 => Algorithm::Sha512,
        Algorithm::Sha512 => Algorithm::Sha256,
    };
    match choice {
        DigestChoice::Right => algorithm.digest(bytes).to_string(),
        DigestChoice::Wrong => algorithm.digest(&[bytes, b"!"].concat()).to_string(),
        DigestChoice::OtherAlgorithm => other.digest(bytes).to_string(),
        DigestChoice::Malformed => "sha256:nope".to_owned(),
    }
}

fn range_value(offset: usize, len: usize) -> String {
    format!("{offset}-{}", offset + len - 1)
}

fuzz_target!(|ops: Vec<Op>| {
    let storage = Arc::new(MemoryStorage::new());
    let mut registry = berth_fuzz::registry(Arc::clone(&storage));
    let mut model = Model {
        sessions: Vec::new(),
        blobs: BTreeMap::new(),
        refused: BTreeMap::new(),
    };
    for op in ops.into_iter().take(64) {
        match op {
            Op::Start { sha512 } => {
                let target = if sha512 {
                    "/v2/f/blobs/uploads/?digest-algorithm=sha512"
                } else {
                    "/v2/f/blobs/uploads/"
                };
                let answer = berth_fuzz::send(
                    &registry,
                    RequestHead::from_target(Method::Post, target),
                    vec![],
                );
                assert_eq!(answer.status, 202, "{answer:?}");
                let location = answer.header("Location").expect("a Location").to_owned();
                let algorithm = if sha512 {
                    Algorithm::Sha512
                } else {
                    Algorithm::Sha256
                };
                model.sessions.push(Some(Session {
                    location,
                    algorithm,
                    bytes: Vec::new(),
                }));
            }
            Op::Patch {
                session,
                range,
                data,
                split,
            } => {
                let index = session as usize % model.sessions.len().max(1);
                let Some(Some(s)) = model.sessions.get_mut(index) else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                let mut head = RequestHead::from_target(Method::Patch, &s.location);
                let expected = match range {
                    Range::Absent => 202,
                    Range::Next => {
                        head = head
                            .with_header("Content-Range", range_value(s.bytes.len(), data.len()));
                        202
                    }
                    Range::Off(delta) => {
                        let start = s.bytes.len() as i64 + i64::from(delta);
                        if delta == 0 || start < 0 {
                            continue;
                        }
                        head = head
                            .with_header("Content-Range", range_value(start as usize, data.len()));
                        416
                    }
                };
                let at = split as usize % data.len();
                let answer = berth_fuzz::send(
                    &registry,
                    head,
                    vec![data[..at].to_vec(), data[at..].to_vec()],
                );
                assert_eq!(answer.status, expected, "{answer:?}");
                if expected == 202 {
                    s.bytes.extend_from_slice(&data);
                }
                let end = s.bytes.len().saturating_sub(1);
                assert_eq!(
                    answer.header("Range"),
                    Some(format!("0-{end}").as_str()),
                    "{answer:?}"
                );
            }
            Op::Put {
                session,
                digest,
                last_chunk,
            } => {
                let index = session as usize % model.sessions.len().max(1);
                let Some(Some(s)) = model.sessions.get(index) else {
                    continue;
                };
                if matches!(digest, DigestChoice::Malformed) && !last_chunk.is_empty() {
                    continue;
                }
                let whole = [s.bytes.as_slice(), &last_chunk].concat();
                let claimed = digest_of(&digest, s.algorithm, &whole);
                let head = RequestHead::from_target(
                    Method::Put,
                    &format!("{}?digest={claimed}", s.location),
                );
                let body = if last_chunk.is_empty() {
                    vec![]
                } else {
                    vec![last_chunk.clone()]
                };
                let answer = berth_fuzz::send(&registry, head, body);
                match digest {
                    DigestChoice::Right | DigestChoice::OtherAlgorithm => {
                        // berth verifies either algorithm (it rehashes for the other).
                        assert_eq!(answer.status, 201, "{answer:?}");
                        model.accept(claimed, whole);
                        model.sessions[index] = None;
                    }
                    DigestChoice::Wrong => {
                        assert_eq!(answer.status, 400, "{answer:?}");
                        assert_eq!(answer.error_code().as_deref(), Some("DIGEST_INVALID"));
                        model.refuse(&whole, &claimed);
                        model.sessions[index] = None;
                    }
                    DigestChoice::Malformed => {
                        // Refused before anything changes: the session goes on.
                        assert_eq!(answer.status, 400, "{answer:?}");
                        assert_eq!(answer.error_code().as_deref(), Some("DIGEST_INVALID"));
                    }
                }
            }
            Op::Push { digest, data } => {
                let claimed = digest_of(&digest, Algorithm::Sha256, &data);
                let head = RequestHead::from_target(
                    Method::Post,
                    &format!("/v2/f/blobs/uploads/?digest={claimed}"),
                )
                .with_header("Content-Length", data.len().to_string());
                let body = if data.is_empty() {
                    vec![]
                } else {
                    vec![data.clone()]
                };
                let answer = berth_fuzz::send(&registry, head, body);
                match digest {
                    DigestChoice::Right | DigestChoice::OtherAlgorithm => {
                        assert_eq!(answer.status, 201, "{answer:?}");
                        model.accept(claimed, data);
                    }
                    DigestChoice::Wrong | DigestChoice::Malformed => {
                        assert_eq!(answer.status, 400, "{answer:?}");
                        assert_eq!(answer.error_code().as_deref(), Some("DIGEST_INVALID"));
                        model.refuse(&data, &claimed);
                    }
                }
            }
            Op::Cancel { session } => {
                let index = session as usize % model.sessions.len().max(1);
                let Some(slot) = model.sessions.get_mut(index) else {
                    continue;
                };
                let location = match slot {
                    Some(s) => s.location.clone(),
                    None => continue,
                };
                let answer = berth_fuzz::send(
                    &registry,
                    RequestHead::from_target(Method::Delete, &location),
                    vec![],
                );
                assert_eq!(answer.status, 204, "{answer:?}");
                *slot = None;
                let again = berth_fuzz::send(
                    &registry,
                    RequestHead::from_target(Method::Get, &location),
                    vec![],
                );
                assert_eq!(again.status, 404, "{again:?}");
            }
            Op::Status { session } => {
                let Some(Some(s)) = model
                    .sessions
                    .get(session as usize % model.sessions.len().max(1))
                else {
                    continue;
                };
                let answer = berth_fuzz::send(
                    &registry,
                    RequestHead::from_target(Method::Get, &s.location),
                    vec![],
                );
                assert_eq!(answer.status, 204, "{answer:?}");
                let end = s.bytes.len().saturating_sub(1);
                assert_eq!(
                    answer.header("Range"),
                    Some(format!("0-{end}").as_str()),
                    "{answer:?}"
                );
            }
            Op::Restart => registry = berth_fuzz::registry(Arc::clone(&storage)),
        }
    }
    // Every blob pushed is there, whole; nothing refused can be found.
    for (digest, bytes) in &model.blobs {
        let answer = berth_fuzz::send(
            &registry,
            RequestHead::from_target(Method::Get, &format!("/v2/f/blobs/{digest}")),
            vec![],
        );
        assert_eq!(answer.status, 200, "{digest}: {answer:?}");
        assert_eq!(&answer.body, bytes, "{digest}");
    }
    for digest in model.refused.keys() {
        let answer = berth_fuzz::send(
            &registry,
            RequestHead::from_target(Method::Head, &format!("/v2/f/blobs/{digest}")),
            vec![],
        );
        assert_eq!(answer.status, 404, "refused bytes found under {digest}");
    }
});
