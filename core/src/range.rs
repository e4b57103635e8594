//! Byte ranges: the `Content-Range` of an upload chunk and the `Range` of a blob GET.
//!
//! ```text
//! content-range ::= [ "bytes " | "bytes=" ] start "-" end     (inclusive; spec.md#pushing-a-blob-in-chunks)
//! range         ::= "bytes=" ( start "-" [ end ] | "-" suffix-length )   (RFC 9110 §14.1.2, one range)
//! ```

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
            return Ok(Self::Suffix(number(end)?));
        }
        let start = number(start)?;
        let end = if end.is_empty() {
            None
        } else {
            Some(number(end)?)
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
            Self::Suffix(0) => None,
            Self::Suffix(n) => Some(size.saturating_sub(n)..size),
        }
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
        for bad in ["0-9", "bytes=", "bytes=5-1", "bytes=0-1,3-4", "bytes=x-"] {
            assert!(bad.parse::<ByteRange>().is_err(), "{bad}");
        }
    }

    proptest! {
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
