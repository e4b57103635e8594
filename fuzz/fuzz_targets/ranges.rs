//! `Range` and `Content-Range` headers: parsing never panics; what berth plans to send stays
//! within the blob, is never empty, and the multipart layout's length is its bytes' length.
//!
//! Input: the blob's size (8 bytes, little-endian; kept small) then the header value.
#![no_main]

use berth::{ContentRange, MAX_RANGES, Multipart, RangePlan, plan_ranges};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) % (1 << 40);
    let header = String::from_utf8_lossy(&data[8..]);
    if let Ok(range) = header.parse::<ContentRange>() {
        assert!(range.start <= range.end);
    }
    let Ok(plan) = plan_ranges(Some(&header), size) else {
        return;
    };
    match plan {
        RangePlan::Whole | RangePlan::Unsatisfiable => {}
        RangePlan::One(span) => assert!(span.start < span.end && span.end <= size),
        RangePlan::Many(spans) => {
            assert!(spans.len() >= 2 && spans.len() <= MAX_RANGES);
            assert!(spans.iter().all(|s| s.start < s.end && s.end <= size));
            assert!(spans.iter().map(|s| s.end - s.start).sum::<u64>() <= size);
            let layout = Multipart::new(&spans, size, "b");
            let heads: u64 = layout.parts.iter().map(|(head, _)| head.len() as u64).sum();
            let bytes: u64 = spans.iter().map(|s| s.end - s.start).sum();
            assert_eq!(layout.len(), heads + bytes + layout.closing.len() as u64);
        }
    }
});
