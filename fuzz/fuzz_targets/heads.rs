//! Any request head and body, routed and answered by a registry over fresh memory storage:
//! no panic, no 5xx, every error with a spec code, every `Content-Length` true.
//!
//! Input: `METHOD target` on the first line, then `Name: value` lines, a blank line and the
//! body (the seed corpus is the transcripts' requests in this form).
#![no_main]

use std::sync::Arc;

use berth::{MemoryStorage, Method, RequestHead};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let (method, target) = request_line
        .split_once(' ')
        .unwrap_or((request_line, "/v2/"));
    let mut head = RequestHead::from_target(Method::parse(method), target);
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        head = head.with_header(name.trim(), value.trim());
    }
    // Two registries over one storage: the second sees what the first left behind.
    let storage = Arc::new(MemoryStorage::new());
    let first = berth_fuzz::registry(Arc::clone(&storage));
    let body = body.as_bytes().to_vec();
    let split = body.len() / 2;
    berth_fuzz::send(
        &first,
        head.clone(),
        vec![body[..split].to_vec(), body[split..].to_vec()],
    );
    let second = berth_fuzz::registry(storage);
    berth_fuzz::send(&second, head, vec![body]);
});
