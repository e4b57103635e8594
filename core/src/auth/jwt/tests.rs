//! Keys, thumbprints and verification against RFC vectors and forged tokens.

use super::*;

/// RFC 8037, appendix A.2 and A.3: an Ed25519 public key and its thumbprint.
fn rfc8037_key() -> Jwk {
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
        y: None,
        kid: None,
    }
}

fn p256_key(kid: &str) -> Jwk {
    Jwk {
        kty: "EC".into(),
        crv: "P-256".into(),
        x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU".into(),
        y: Some("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0".into()),
        kid: Some(kid.into()),
    }
}

#[test]
fn thumbprints_as_rfc_8037() {
    assert_eq!(
        rfc8037_key().thumbprint(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn key_sets_keep_the_keys_berth_can_use() {
    let jwks = Jwks::from_json(
        r#"{"keys": [
            {"kty": "RSA", "n": "0vx7", "e": "AQAB", "kid": "rsa"},
            {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "kid": "ec"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#,
    )
    .unwrap();
    assert_eq!(jwks.keys.len(), 2);
    assert!(jwks.find("ec").is_some());
    assert!(jwks.find("rsa").is_none());
    // A key without a kid is found by its thumbprint.
    assert!(
        jwks.find("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k")
            .is_some()
    );
    assert!(Jwks::from_json("{").is_err());
}

/// A stand-in for the host's cryptography, for the claim checks: a "signature" is the
/// message's SHA-256 twice, and only a key whose x is "good" signs.
struct Digests;

impl SignatureCheck for Digests {
    fn verify(&self, _: Algorithm, key: &Jwk, message: &[u8], signature: &[u8]) -> bool {
        let digest = Sha256::digest(message);
        key.kid.as_deref() != Some("revoked") && signature == [&digest[..], &digest[..]].concat()
    }
}

fn token(header: &str, claims: &str) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let digest = Sha256::digest(signed.as_bytes());
    format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode([&digest[..], &digest[..]].concat())
    )
}

const NOW: u64 = 1_800_000_000;

fn claims_json(extra: &str) -> String {
    format!(
        r#"{{"iss":"berth","sub":"alice","aud":["reg.example"],"exp":{},"nbf":{},{extra}"groups":["team-a"],"access":[{{"type":"repository","name":"team-a/app","actions":["pull","push"]}}]}}"#,
        NOW + 300,
        NOW - 10
    )
}

fn validation() -> Validation {
    Validation {
        issuers: vec!["berth".into()],
        audience: "reg.example".into(),
        leeway: 60,
    }
}

fn check(token: &str) -> Result<Claims, TokenError> {
    let keys = Jwks {
        keys: vec![p256_key("k1"), rfc8037_key(), p256_key("revoked")],
    };
    verify(token, &keys, &Digests, &validation(), NOW)
}

#[test]
fn accepts_a_good_token_and_reads_its_grants() {
    let claims = check(&token(r#"{"alg":"ES256","kid":"k1"}"#, &claims_json(""))).unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.groups.as_slice()),
        ("alice", &["team-a".to_owned()][..])
    );
    let scopes: Vec<String> = claims.scopes().iter().map(ToString::to_string).collect();
    assert_eq!(scopes, ["repository:team-a/app:pull,push"]);
    let thumbprint = rfc8037_key().thumbprint();
    let header = format!(r#"{{"alg":"EdDSA","kid":"{thumbprint}"}}"#);
    assert!(check(&token(&header, &claims_json(""))).is_ok());
}

#[test]
fn refuses_what_the_design_notes_list() {
    let good = claims_json("");
    let cases = [
        (
            token(r#"{"alg":"none","kid":"k1"}"#, &good),
            TokenError::Algorithm("none".into()),
        ),
        (
            token(r#"{"alg":"HS256","kid":"k1"}"#, &good),
            TokenError::Algorithm("HS256".into()),
        ),
        (
            token(r#"{"alg":"RS256","kid":"k1"}"#, &good),
            TokenError::Algorithm("RS256".into()),
        ),
        // An EdDSA header over a P-256 key: algorithm confusion.
        (
            token(r#"{"alg":"EdDSA","kid":"k1"}"#, &good),
            TokenError::Algorithm("EdDSA".into()),
        ),
        (
            token(r#"{"alg":"ES256","kid":"other"}"#, &good),
            TokenError::UnknownKey,
        ),
        (token(r#"{"alg":"ES256"}"#, &good), TokenError::UnknownKey),
        (
            token(r#"{"alg":"ES256","kid":"revoked"}"#, &good),
            TokenError::Signature,
        ),
        (
            token(
                r#"{"alg":"ES256","kid":"k1"}"#,
                &good.replace(&(NOW + 300).to_string(), &(NOW - 61).to_string()),
            ),
            TokenError::Expired,
        ),
        (
            token(
                r#"{"alg":"ES256","kid":"k1"}"#,
                &good.replace(&format!(r#""exp":{},"#, NOW + 300), ""),
            ),
            TokenError::Expired,
        ),
        (
            token(
                r#"{"alg":"ES256","kid":"k1"}"#,
                &good.replace(&(NOW - 10).to_string(), &(NOW + 61).to_string()),
            ),
            TokenError::NotYetValid,
        ),
        (
            token(
                r#"{"alg":"ES256","kid":"k1"}"#,
                &good.replace(r#""iss":"berth""#, r#""iss":"evil""#),
            ),
            TokenError::Issuer,
        ),
        (
            token(
                r#"{"alg":"ES256","kid":"k1"}"#,
                &good.replace("reg.example", "other.example"),
            ),
            TokenError::Audience,
        ),
        ("a.b".to_owned(), TokenError::Malformed),
        ("a.b.c.d".to_owned(), TokenError::Malformed),
        ("!!.!!.!!".to_owned(), TokenError::Malformed),
    ];
    for (token, expected) in cases {
        assert_eq!(check(&token), Err(expected.clone()), "{expected}");
    }
    // Within the leeway: a minute late or early is forgiven.
    let late = good.replace(&(NOW + 300).to_string(), &(NOW - 59).to_string());
    assert!(check(&token(r#"{"alg":"ES256","kid":"k1"}"#, &late)).is_ok());
    // A tampered payload no longer matches its signature.
    let genuine = token(r#"{"alg":"ES256","kid":"k1"}"#, &good);
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(good.replace("team-a/app", "team-b/app"));
    parts[1] = &forged;
    assert_eq!(check(&parts.join(".")), Err(TokenError::Signature));
}

/// Tokens minted by PyJWT 2.15.1 (cryptography 51.0.1) with fresh keys, and those keys.
#[cfg(feature = "tokens")]
#[test]
fn verifies_what_pyjwt_signed() {
    let keys = Jwks::from_json(
        r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "nm3_JJ9V4cROuKKXclysOymjQf39ZnZoLzv5nX9F4OI", "y": "xUZhS7Fcsd6FVDxDbxx-lu0DfRl1r2Rqe31CaNAV2Ic", "kid": "ec-1"}, {"x": "V8yG0Pl0bu8RbdVja6pgPakhJX9GFXYmPnH-N1lwapU", "kty": "OKP", "crv": "Ed25519", "kid": "ed-1"}]}"#,
    )
    .unwrap();
    let es256 = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjLTEiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJweWp3dCIsInN1YiI6ImFsaWNlIiwiYXVkIjoicmVnLmV4YW1wbGUiLCJleHAiOjE4MDAwMDAzMDAsIm5iZiI6MTc5OTk5OTk5MCwiYWNjZXNzIjpbeyJ0eXBlIjoicmVwb3NpdG9yeSIsIm5hbWUiOiJ0ZWFtLWEvYXBwIiwiYWN0aW9ucyI6WyJwdWxsIl19XX0.5jZaAW40xdlUZ5kKZs2Aeq7dL5c_gJ78EI0erCetdpGfX1F9_VP57VeoN5Lx5mWaUD7qNccS0VDBP5du8Ljyiw";
    let eddsa = "eyJhbGciOiJFZERTQSIsImtpZCI6ImVkLTEiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJweWp3dCIsInN1YiI6ImFsaWNlIiwiYXVkIjoicmVnLmV4YW1wbGUiLCJleHAiOjE4MDAwMDAzMDAsIm5iZiI6MTc5OTk5OTk5MCwiYWNjZXNzIjpbeyJ0eXBlIjoicmVwb3NpdG9yeSIsIm5hbWUiOiJ0ZWFtLWEvYXBwIiwiYWN0aW9ucyI6WyJwdWxsIl19XX0.U2DBU4SnYgwtcHD2Lf1Js04xffvrhz12ALOfrAzfXRUQQKTLt7cAQ0Db5cIY5tSYwMaAOJFM2Q-UD00Pi9QQBQ";
    let validation = Validation {
        issuers: vec!["pyjwt".into()],
        audience: "reg.example".into(),
        leeway: 60,
    };
    for token in [es256, eddsa] {
        let claims = verify(token, &keys, &NativeCheck, &validation, NOW).unwrap();
        assert_eq!(claims.sub, "alice");
        // One flipped bit anywhere in the signed part, or in the signature, and it fails.
        let signature_at = token.rfind('.').unwrap() + 1;
        for at in [10, signature_at - 5, signature_at + 3] {
            let mut bytes = token.as_bytes().to_vec();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(verify(&tampered, &keys, &NativeCheck, &validation, NOW).is_err());
        }
    }
    // The Ed25519 token's payload and signature, claimed for the Ed25519 key under an
    // ES256 header, and then under its own header for the P-256 key: refused both ways.
    let (_, rest) = eddsa.split_once('.').unwrap();
    for header in [
        r#"{"alg":"ES256","kid":"ed-1"}"#,
        r#"{"alg":"EdDSA","kid":"ec-1"}"#,
    ] {
        let swapped = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header));
        let refused = verify(&swapped, &keys, &NativeCheck, &validation, NOW);
        assert!(
            matches!(refused, Err(TokenError::Algorithm(_))),
            "{refused:?}"
        );
    }
}
