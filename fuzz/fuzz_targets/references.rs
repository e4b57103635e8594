//! Repository names, tags, digests and references: parsing never panics, and what parses
//! prints back as it was read and keeps the grammar's limits.
#![no_main]

use berth::{
    Algorithm, Digest, MAX_NAME_COMPONENT_LEN, MAX_NAME_LEN, Reference, RepositoryName, Tag,
    UploadId,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(name) = text.parse::<RepositoryName>() {
        assert_eq!(name.as_str(), text);
        assert!(text.len() <= MAX_NAME_LEN);
        assert!(
            text.split('/')
                .all(|c| !c.is_empty() && c.len() <= MAX_NAME_COMPONENT_LEN)
        );
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        );
    }
    let tag = text.parse::<Tag>();
    if let Ok(tag) = &tag {
        assert_eq!(tag.as_str(), text);
        assert!(!text.is_empty() && text.len() <= 128);
        assert!(!text.starts_with(['.', '-']));
    }
    let digest = text.parse::<Digest>();
    if let Ok(digest) = &digest {
        assert_eq!(digest.as_str(), text);
        assert_eq!(digest.hex().len(), digest.algorithm().encoded_len());
        assert_eq!(digest.to_string(), text);
    }
    match text.parse::<Reference>() {
        Ok(Reference::Tag(t)) => assert_eq!(Ok(t), tag.clone()),
        Ok(Reference::Digest(d)) => assert_eq!(Ok(d), digest.clone()),
        Err(_) => assert!(tag.is_err() || text.contains(':')),
    }
    if let Some(id) = UploadId::parse(text) {
        assert_eq!(id.as_str(), text);
        assert!(!text.contains(['/', '?', '#', '%']));
    }
    // Hashing and its midstate round trip, whatever the bytes.
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        let mut hasher = berth::Hasher::new(algorithm);
        let (a, b) = text.as_bytes().split_at(text.len() / 2);
        hasher.update(a);
        let mut restored = berth::Hasher::restore(&hasher.save()).expect("a midstate restores");
        restored.update(b);
        assert_eq!(restored.finish(), algorithm.digest(text.as_bytes()));
    }
    let _ = berth::Hasher::restore(text);
});
