//! The state machine's transitions and plans, without storage.

use super::*;
use bytes::Bytes;
use proptest::prelude::*;

use crate::digest::{Algorithm, Hasher};
use crate::error::{Error, ErrorCode};
use crate::ids::PartId;
use crate::reference::RepositoryName;

fn name() -> RepositoryName {
    "library/app".parse().unwrap()
}

/// Advances a session by `bytes`, hashed in full.
fn receive(session: &mut UploadSession, bytes: &[u8]) {
    let mut hasher = session.hasher().unwrap();
    hasher.update(bytes);
    session.chunk_received(bytes.len() as u64, &hasher).unwrap();
}

#[test]
fn range_header_and_order() {
    let mut session = UploadSession::start(Algorithm::Sha256, &name(), 7);
    assert_eq!(session.range(), "0-0");
    assert_eq!(session.check_chunk(None).unwrap(), None);
    assert_eq!(session.check_chunk(Some("0-9")).unwrap(), Some(10));
    receive(&mut session, &[0; 10]);
    assert_eq!(session.range(), "0-9");
    let error = session.check_chunk(Some("0-9")).unwrap_err();
    assert_eq!(
        (error.code(), error.status()),
        (ErrorCode::BlobUploadInvalid, 416)
    );
    assert_eq!(session.check_chunk(Some("10-19")).unwrap(), Some(10));
    assert_eq!(session.check_chunk(Some("x")).unwrap_err().status(), 416);
    // A full-width digit is no digit: refused like any other malformed range.
    assert_eq!(
        session
            .check_chunk(Some("\u{ff10}-9"))
            .unwrap_err()
            .status(),
        416
    );
}

#[test]
fn record_round_trips() {
    let mut session = UploadSession::start(Algorithm::Sha512, &name(), 1);
    assert_eq!(UploadSession::decode(&session.encode()).unwrap(), session);
    session.claim("writer".into(), 60, 1).unwrap();
    assert_eq!(UploadSession::decode(&session.encode()).unwrap(), session);
    assert_eq!(
        UploadSession::decode(b"{").unwrap_err().code(),
        ErrorCode::BlobUploadUnknown
    );
}

/// A record as earlier versions stored it reads back the same, and is stored the same.
#[test]
fn earlier_records_read_back() {
    let hash_state = Hasher::new(Algorithm::Sha256).save();
    let stored = format!(
        r#"{{"repository":"library/app","offset":5,"hash_state":"{hash_state}","hashed":0,"parts_upload":"u1","parts":["p1"],"tail":{{"key":"t","len":2}},"started_at":9,"writer":{{"token":"w","until":70}}}}"#
    );
    let session = UploadSession::decode(stored.as_bytes()).unwrap();
    assert_eq!(
        (session.offset(), session.hashed_offset(), session.parts()),
        (5, 0, &[PartId::new("p1")][..])
    );
    assert_eq!(session.tail().map(|t| t.len), Some(2));
    assert!(session.is_claimed(69) && !session.is_claimed(70));
    assert_eq!(&session.encode()[..], stored.as_bytes());
    let published = r#"{"repository":"r","offset":0,"hash_state":"x","parts":[],"started_at":0,"published":"sha256:00"}"#;
    let session = UploadSession::decode(published.as_bytes()).unwrap();
    assert_eq!(session.published(), Some("sha256:00"));
    assert_eq!(&session.encode()[..], published.as_bytes());
}

#[test]
fn adopts_algorithm_only_when_empty() {
    let mut session = UploadSession::start(Algorithm::Sha256, &name(), 0);
    assert!(session.adopt_algorithm(Algorithm::Sha512).unwrap());
    assert_eq!(session.hasher().unwrap().algorithm(), Algorithm::Sha512);
    receive(&mut session, b"x");
    assert!(!session.adopt_algorithm(Algorithm::Sha256).unwrap());
    assert!(session.adopt_algorithm(Algorithm::Sha512).unwrap());
}

#[test]
fn claims_hold_until_released_or_lapsed() {
    let mut session = UploadSession::start(Algorithm::Sha256, &name(), 0);
    session.claim("a".into(), 100, 10).unwrap();
    assert!(session.has_writer());
    let busy = session.clone().claim("b".into(), 200, 99).unwrap_err();
    assert_eq!(
        (busy.code(), busy.status()),
        (ErrorCode::BlobUploadInvalid, 416)
    );
    // A claim whose request died lapses.
    session.claim("b".into(), 200, 100).unwrap();
    assert!(session.release());
    assert!(!session.release() && !session.is_claimed(0));
}

#[test]
fn illegal_transitions_are_refused() {
    let mut session = UploadSession::start(Algorithm::Sha256, &name(), 0);
    let illegal = session.part_written("p1".into()).unwrap_err();
    assert_eq!(illegal.event, "a part before its parts upload");
    session.parts_created("u".into()).unwrap();
    assert!(session.parts_created("v".into()).is_err());
    session.part_written("p1".into()).unwrap();
    assert_eq!(session.next_part_number(), 2);
    let tail = StagedTail {
        key: "t".into(),
        len: 1,
    };
    session.tail_staged(tail.clone()).unwrap();
    assert!(session.tail_staged(tail.clone()).is_err());
    assert_eq!(session.tail_consumed(), Some(tail));

    let digest = Algorithm::Sha256.digest(b"");
    session.claim("w".into(), 10, 0).unwrap();
    session.content_published(&digest).unwrap();
    assert_eq!(session.published(), Some(digest.as_str()));
    assert!(!session.has_writer());
    session.content_published(&digest).unwrap();
    let other = Algorithm::Sha256.digest(b"other");
    assert_eq!(
        session.content_published(&other).unwrap_err().event,
        "a second digest"
    );
    let hasher = session.hasher().unwrap();
    let illegal = session.chunk_received(1, &hasher).unwrap_err();
    assert_eq!(illegal.state, "published");
    let error = Error::from(illegal);
    assert_eq!(
        (error.code(), error.status()),
        (ErrorCode::BlobUploadInvalid, 409)
    );
    assert!(session.claim("x".into(), 10, 0).is_err());
    assert_eq!(session.offset(), 0, "a refused transition changes nothing");
}

/// While the last chunk is still being hashed, the record keeps the furthest midstate it
/// is told of, never one beyond the bytes received.
#[test]
fn lagging_hash_keeps_the_furthest_midstate() {
    let mut session = UploadSession::start(Algorithm::Sha256, &name(), 0);
    let midstate = |covers: u64| Midstate {
        covers,
        state: format!("m{covers}"),
    };
    session
        .chunk_received_hashing(10, [midstate(4), midstate(7), midstate(11)])
        .unwrap();
    assert_eq!((session.offset(), session.hashed_offset()), (10, 7));
    assert_eq!(session.midstate(), midstate(7));
    session.chunk_received_hashing(5, []).unwrap();
    assert_eq!((session.offset(), session.hashed_offset()), (15, 7));
    let round_trip = UploadSession::decode(&session.encode()).unwrap();
    assert_eq!(round_trip, session);
    assert!(session.verify(&Algorithm::Sha256.digest(b"")).is_err());
}

#[test]
fn plans_decide_before_the_body() {
    let mut session = UploadSession::start(Algorithm::Sha256, &name(), 0);
    let patch = ChunkRequest {
        content_range: Some("0-99"),
        chunk_max_length: Some(50),
        ..ChunkRequest::default()
    };
    let too_large = session.plan_chunk(&patch).unwrap_err();
    assert_eq!(
        (too_large.code(), too_large.status()),
        (ErrorCode::SizeInvalid, 413)
    );
    let plan = session
        .plan_chunk(&ChunkRequest {
            content_length: Some(20),
            hash_offload: true,
            parts_read_back: true,
            ..ChunkRequest::default()
        })
        .unwrap();
    assert_eq!(
        plan,
        ChunkPlan {
            expected: None,
            max: None,
            last: false,
            hashing_may_lag: true,
            hashed_as_named: true,
        }
    );
    receive(&mut session, b"abc");
    let sha512 = Algorithm::Sha512.digest(b"abc");
    let finish = ChunkRequest {
        finish: Some(&sha512),
        hash_offload: true,
        parts_read_back: true,
        ..ChunkRequest::default()
    };
    let plan = session.plan_chunk(&finish).unwrap();
    assert!(plan.last && !plan.hashing_may_lag && !plan.hashed_as_named);
    let out_of_order = ChunkRequest {
        content_range: Some("0-1"),
        ..finish
    };
    assert_eq!(session.plan_chunk(&out_of_order).unwrap_err().status(), 416);
}

/// A transcript: three chunks, each resumed from the stored record, verify at the end.
#[test]
fn chunked_transcript_verifies() {
    let data: Vec<u8> = (0..100u8).collect();
    let mut session = UploadSession::start(Algorithm::Sha256, &name(), 0);
    let mut stored = Vec::new();
    for chunk in data.chunks(40) {
        let end = session.offset() + chunk.len() as u64 - 1;
        let range = format!("{}-{end}", session.offset());
        let plan = session
            .plan_chunk(&ChunkRequest {
                content_range: Some(&range),
                ..ChunkRequest::default()
            })
            .unwrap();
        let mut writer = PartWriter::new(session.hasher().unwrap(), 16);
        for part in writer.push(Bytes::copy_from_slice(chunk)) {
            stored.extend_from_slice(&part.concat());
        }
        assert_eq!(Some(writer.received()), plan.expected);
        let received = writer.received();
        let (hasher, rest) = writer.finish();
        stored.extend_from_slice(&rest.unwrap_or_default().concat());
        session.chunk_received(received, &hasher).unwrap();
        session = UploadSession::decode(&session.encode()).unwrap();
    }
    assert_eq!(stored, data);
    session.verify(&Algorithm::Sha256.digest(&data)).unwrap();
    let wrong = session
        .verify(&Algorithm::Sha256.digest(b"other"))
        .unwrap_err();
    assert_eq!(wrong.code(), ErrorCode::DigestInvalid);
}

proptest! {
    #[test]
    fn parts_reassemble(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..10), part_size in 1usize..40) {
        let mut writer = PartWriter::new(Hasher::new(Algorithm::Sha256), part_size);
        let mut out = Vec::new();
        for chunk in &chunks {
            for part in writer.push(Bytes::from(chunk.clone())) {
                let part = part.concat();
                prop_assert_eq!(part.len(), part_size);
                out.extend_from_slice(&part);
            }
        }
        let (hasher, rest) = writer.finish();
        if let Some(rest) = rest {
            let rest = rest.concat();
            prop_assert!(!rest.is_empty() && rest.len() < part_size);
            out.extend_from_slice(&rest);
        }
        let all: Vec<u8> = chunks.concat();
        prop_assert_eq!(&out, &all);
        prop_assert_eq!(hasher.finish(), Algorithm::Sha256.digest(&all));
    }
}
