//! Byte ranges: the `Content-Range` of an upload chunk and the `Range` of a blob GET.
//!
//! ```text
//! content-range ::= [ "bytes " | "bytes=" ] start "-" end     (inclusive; spec.md#pushing-a-blob-in-chunks)
//! range         ::= "bytes=" range-spec *( OWS "," OWS range-spec )       (RFC 9110 §14.1.2)
//! range-spec    ::= start "-" [ end ] | "-" suffix-length
//! ```
//!
//! A GET with several ranges is answered with `multipart/byteranges` (RFC 9110 §14.6):
//! [`plan_ranges`] decides what to send, [`Multipart`] lays the body out.

use std::fmt;
use std::str::FromStr;

/// The inclusive byte span a chunk claims to cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte offset.
    pub start: u64,
    /// Last byte offset, inclusive.
    pub end: u64,
}

impl ContentRange {
    /// How many bytes the range covers.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true: a parsed range covers at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A Content-Range or Range header that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeError;

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid range: expected <start>-<end> with start <= end")
    }
}

impl std::error::Error for RangeError {}

fn number(text: &str) -> Result<u64, RangeError> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError);
    }
    text.parse().map_err(|_| RangeError)
}

/// A position in a `Range` header: any run of digits, a number past `u64::MAX` read as
/// `u64::MAX` (RFC 9110 §14.1.1: a last position past the end means the end, a suffix longer
/// than the content means all of it, a first position past the end is unsatisfiable).
fn position(text: &str) -> Result<u64, RangeError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError);
    }
    Ok(text.bytes().fold(0u64, |n, digit| {
        n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
    }))
}

impl FromStr for ContentRange {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Self, RangeError> {
        let text = text.trim();
        let text = text
            .strip_prefix("bytes ")
            .or_else(|| text.strip_prefix("bytes="))
            .unwrap_or(text);
        // Some clients append "/<total>" as in RFC 9110's Content-Range; it adds nothing here.
        let span = text.split_once('/').map_or(text, |(span, _)| span);
        let (start, end) = span.split_once('-').ok_or(RangeError)?;
        let (start, end) = (number(start)?, number(end)?);
        if start > end {
            return Err(RangeError);
        }
        Ok(Self { start, end })
    }
}

/// A single-range request of a blob GET, before it is resolved against the blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-` or `bytes=start-end`.
    FromTo {
        /// First byte.
        start: u64,
        /// Last byte, inclusive, if given.
        end: Option<u64>,
    },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl FromStr for ByteRange {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Self, RangeError> {
        let spec = text.trim().strip_prefix("bytes=").ok_or(RangeError)?;
        if spec.contains(',') {
            return Err(RangeError);
        }
        let (start, end) = spec.trim().split_once('-').ok_or(RangeError)?;
        if start.is_empty() {
            return Ok(Self::Suffix(position(end)?));
        }
        let start = position(start)?;
        let end = if end.is_empty() {
            None
        } else {
            Some(position(end)?)
        };
        if end.is_some_and(|end| end < start) {
            return Err(RangeError);
        }
        Ok(Self::FromTo { start, end })
    }
}

impl ByteRange {
    /// The half-open span `[start, end)` within a blob of `size` bytes, or `None` when the
    /// range is unsatisfiable (RFC 9110 §14.1.1) and the answer is 416.
    pub fn resolve(self, size: u64) -> Option<std::ops::Range<u64>> {
        match self {
            Self::FromTo { start, end } => {
                if start >= size {
                    return None;
                }
                let end = end.map_or(size, |end| end.saturating_add(1).min(size));
                Some(start..end)
            }
            // No suffix of an empty blob has a byte in it (RFC 9110 §14.1.1).
            Self::Suffix(0) => None,
            Self::Suffix(_) if size == 0 => None,
            Self::Suffix(n) => Some(size.saturating_sub(n)..size),
        }
    }
}

/// The most ranges one GET may ask for; past this the whole blob is sent (RFC 9110 §14.2
/// lets a server ignore a Range header). podman asks for a few hundred at most.
pub const MAX_RANGES: usize = 1000;

/// What a blob GET sends for its `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangePlan {
    /// No Range, a unit other than bytes, or one the server ignores: 200 with every byte.
    Whole,
    /// One satisfiable range (half-open): 206 with that span.
    One(std::ops::Range<u64>),
    /// Several satisfiable ranges, in the order asked: 206 `multipart/byteranges`.
    Many(Vec<std::ops::Range<u64>>),
    /// No range can be satisfied: 416.
    Unsatisfiable,
}

/// Decides how to answer a `Range` header for a blob of `size` bytes. A malformed byte range
/// is an error (answered like an unsatisfiable one); other units are ignored (RFC 9110 §14.2).
/// Unsatisfiable ranges among satisfiable ones are left out (§14.1.1). Too many ranges, or
/// ranges that add up to more than the blob (overlaps that would multiply what is sent), are
/// ignored and the whole blob is sent.
pub fn plan_ranges(header: Option<&str>, size: u64) -> Result<RangePlan, RangeError> {
    let Some(text) = header else {
        return Ok(RangePlan::Whole);
    };
    let Some(list) = text.trim().strip_prefix("bytes=") else {
        return Ok(RangePlan::Whole);
    };
    let mut ranges = Vec::new();
    // A list may hold empty elements (RFC 9110 §5.6.1), but not only those.
    for spec in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if ranges.len() == MAX_RANGES {
            return Ok(RangePlan::Whole);
        }
        ranges.push(format!("bytes={spec}").parse::<ByteRange>()?);
    }
    if ranges.is_empty() {
        return Err(RangeError);
    }
    let spans: Vec<_> = ranges.into_iter().filter_map(|r| r.resolve(size)).collect();
    let total: u64 = spans.iter().map(|s| s.end - s.start).sum();
    Ok(match spans.len() {
        0 => RangePlan::Unsatisfiable,
        1 => RangePlan::One(spans[0].clone()),
        _ if total > size => RangePlan::Whole,
        _ => RangePlan::Many(spans),
    })
}

/// The layout of a `multipart/byteranges` body: each part's head, the span of the blob that
/// follows it, and the closing delimiter. The body is streamed part by part from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    /// The boundary, for the `Content-Type` header.
    pub boundary: String,
    /// Each part: the delimiter and part headers to send, then the span of the blob.
    pub parts: Vec<(String, std::ops::Range<u64>)>,
    /// What follows the last part's bytes.
    pub closing: String,
}

impl Multipart {
    /// Lays out `spans` of a blob of `size` bytes. The boundary is derived from the blob's
    /// digest (`tag`): content that held it would have to contain part of its own hash.
    pub fn new(spans: &[std::ops::Range<u64>], size: u64, tag: &str) -> Self {
        let boundary = format!("berth-{tag}");
        let parts = spans
            .iter()
            .enumerate()
            .map(|(i, span)| {
                // Each part after the first begins by ending the previous part's bytes.
                let lead = if i == 0 { "" } else { "\r\n" };
                let head = format!(
                    "{lead}--{boundary}\r\nContent-Type: application/octet-stream\r\n\
                     Content-Range: bytes {}-{}/{size}\r\n\r\n",
                    span.start,
                    span.end - 1
                );
                (head, span.clone())
            })
            .collect();
        let closing = format!("\r\n--{boundary}--\r\n");
        Self {
            boundary,
            parts,
            closing,
        }
    }

    /// The `Content-Type` of the body.
    pub fn content_type(&self) -> String {
        format!("multipart/byteranges; boundary={}", self.boundary)
    }

    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        let parts: u64 = self
            .parts
            .iter()
            .map(|(head, span)| head.len() as u64 + span.end - span.start)
            .sum();
        parts + self.closing.len() as u64
    }

    /// Never true: a multipart body has at least its closing delimiter.
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn content_ranges() {
        assert_eq!("0-9".parse(), Ok(ContentRange { start: 0, end: 9 }));
        assert_eq!(
            "bytes 10-19/*".parse(),
            Ok(ContentRange { start: 10, end: 19 })
        );
        for bad in [
            "",
            "-",
            "5-",
            "-5",
            "9-0",
            "a-b",
            "1 - 2",
            "99999999999999999999-1",
        ] {
            assert_eq!(bad.parse::<ContentRange>(), Err(RangeError), "{bad}");
        }
    }

    #[test]
    fn byte_ranges() {
        let range = |s: &str| s.parse::<ByteRange>().unwrap();
        assert_eq!(range("bytes=0-9").resolve(100), Some(0..10));
        assert_eq!(range("bytes=90-").resolve(100), Some(90..100));
        assert_eq!(range("bytes=90-200").resolve(100), Some(90..100));
        assert_eq!(range("bytes=-10").resolve(100), Some(90..100));
        assert_eq!(range("bytes=-200").resolve(100), Some(0..100));
        assert_eq!(range("bytes=100-").resolve(100), None);
        assert_eq!(range("bytes=-0").resolve(100), None);
        // An empty blob has no byte to send, whatever the range (found by fuzz/ranges).
        assert_eq!(range("bytes=-47").resolve(0), None);
        assert_eq!(range("bytes=0-").resolve(0), None);
        // Positions past 2^64: the end, or the whole blob.
        assert_eq!(
            range("bytes=2-99999999999999999999").resolve(10),
            Some(2..10)
        );
        assert_eq!(
            range("bytes=-99999999999999999999").resolve(10),
            Some(0..10)
        );
        assert_eq!(range("bytes=99999999999999999999-").resolve(10), None);
        for bad in ["0-9", "bytes=", "bytes=5-1", "bytes=0-1,3-4", "bytes=x-"] {
            assert!(bad.parse::<ByteRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn range_plans() {
        let plan = |s: &str| plan_ranges(Some(s), 100);
        assert_eq!(plan_ranges(None, 100), Ok(RangePlan::Whole));
        assert_eq!(plan("items=0-1"), Ok(RangePlan::Whole));
        assert_eq!(plan("bytes=0-9"), Ok(RangePlan::One(0..10)));
        // podman's zstd:chunked ranges: adjacent, each satisfiable.
        assert_eq!(
            plan("bytes=0-9,10-19, 50-"),
            Ok(RangePlan::Many(vec![0..10, 10..20, 50..100]))
        );
        // Unsatisfiable ranges among satisfiable ones are left out.
        assert_eq!(plan("bytes=0-9,200-300"), Ok(RangePlan::One(0..10)));
        assert_eq!(plan("bytes=200-300,400-"), Ok(RangePlan::Unsatisfiable));
        // Overlaps that would send more than the blob: the whole blob instead.
        assert_eq!(plan("bytes=0-,0-"), Ok(RangePlan::Whole));
        let many = vec!["0-0"; MAX_RANGES + 1].join(",");
        assert_eq!(plan(&format!("bytes={many}")), Ok(RangePlan::Whole));
        for bad in [
            "bytes=",
            "bytes=,",
            "bytes=5-1",
            "bytes=0-1,x",
            "bytes=\u{ff10}-9",
        ] {
            assert_eq!(plan(bad), Err(RangeError), "{bad}");
        }
    }

    #[test]
    fn multipart_layout() {
        let body = Multipart::new(&[0..2, 5..6], 10, "abc");
        assert_eq!(
            body.content_type(),
            "multipart/byteranges; boundary=berth-abc"
        );
        let blob = b"0123456789";
        let mut text = String::new();
        for (head, span) in &body.parts {
            text += head;
            text += std::str::from_utf8(&blob[span.start as usize..span.end as usize]).unwrap();
        }
        text += &body.closing;
        assert_eq!(
            text,
            "--berth-abc\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
             \r\n--berth-abc\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 5-5/10\r\n\r\n5\
             \r\n--berth-abc--\r\n"
        );
        assert_eq!(body.len(), text.len() as u64);
    }

    proptest! {
        #[test]
        fn range_plans_stay_within_the_blob(text in "bytes=[0-9,\\- ]{0,40}", size in 0u64..200) {
            let spans = match plan_ranges(Some(&text), size) {
                Ok(RangePlan::One(span)) => vec![span],
                Ok(RangePlan::Many(spans)) => {
                    let total: u64 = spans.iter().map(|s| s.end - s.start).sum();
                    prop_assert!(spans.len() > 1 && total <= size);
                    spans
                }
                _ => Vec::new(),
            };
            for span in spans {
                prop_assert!(span.start < span.end && span.end <= size);
            }
        }

        #[test]
        fn content_range_round_trip(start in 0u64..1 << 50, len in 1u64..1 << 30) {
            let end = start + len - 1;
            let parsed: ContentRange = format!("{start}-{end}").parse().unwrap();
            prop_assert_eq!(parsed, ContentRange { start, end });
            prop_assert_eq!(parsed.len(), len);
        }

        #[test]
        fn arbitrary_ranges_never_panic(text in "(bytes[ =])?[0-9-/* ]{0,30}") {
            let _ = text.parse::<ContentRange>();
            if let Ok(range) = text.parse::<ByteRange>()
                && let Some(span) = range.resolve(1000) {
                    prop_assert!(span.start < span.end && span.end <= 1000);
                }
        }
    }
}
