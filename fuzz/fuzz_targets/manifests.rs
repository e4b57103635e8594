//! Manifests of any bytes under any content type: parsing never panics, and a manifest that
//! parses names only well-formed blobs (they are typed) with sizes it can report.
//!
//! Input: the content type on the first line, then the body.
#![no_main]

use berth::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let content_type = std::str::from_utf8(&data[..split])
        .ok()
        .filter(|t| !t.is_empty());
    let body = data.get(split + 1..).unwrap_or_default();
    if let Ok(manifest) = Manifest::parse(body, content_type) {
        for blob in manifest.required_blobs() {
            assert_eq!(
                blob.digest.to_string().parse::<berth::Digest>().as_ref(),
                Ok(&blob.digest)
            );
        }
        // What parses once parses again the same way.
        let again = Manifest::parse(body, content_type).expect("parses again");
        assert_eq!(again, manifest);
    }
});
