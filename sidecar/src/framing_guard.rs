//! A second look at HTTP/1 request framing, against request smuggling.
//!
//! hyper resolves a request that carries both `Content-Length` and `Transfer-Encoding` the
//! way RFC 9112 §6.1 allows — it drops the length and closes the connection afterwards —
//! and hands the request on without a trace of the conflict. Such a request is almost always
//! an attack on a proxy chain, and users of nginx expect it refused with 400. This module
//! follows the framing of the byte stream as hyper reads it, notes the position of any
//! request whose head had both headers, and the proxy answers that request 400.
//!
//! The tracker stops looking (and never flags anything) once the stream is not HTTP/1
//! (an HTTP/2 preface), cannot be parsed, or after the first flagged request — hyper closes
//! the connection after that one anyway.

use std::sync::atomic::{AtomicU64, Ordering};

/// Most headers inspected in one head; hyper refuses more than this by default.
const MAX_HEADERS: usize = 100;

/// Where the tracker is in the request stream.
#[derive(Debug)]
enum Phase {
    /// Collecting a request head until its blank line.
    Head(Vec<u8>),
    /// Skipping a body of known length.
    Fixed(u64),
    /// Reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Skipping chunk data, then its CRLF (`remaining` counts the CRLF too).
    ChunkData(u64),
    /// Reading trailer lines after the last chunk, until an empty line.
    Trailers(Vec<u8>),
    /// No longer tracking.
    Done,
}

/// Follows HTTP/1 request framing over a byte stream and records which request, counted
/// from 0, first had both `Content-Length` and `Transfer-Encoding`.
#[derive(Debug)]
pub struct FramingTracker {
    phase: Phase,
    heads: u64,
    max_head_bytes: usize,
}

/// What a fed slice revealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Nothing of note.
    Nothing,
    /// The request with this index has an ambiguous length.
    Ambiguous(u64),
}

enum HeadVerdict {
    NoBody,
    Fixed(u64),
    Chunked,
    Ambiguous,
    GiveUp,
}

fn inspect_head(head: &[u8]) -> HeadVerdict {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return HeadVerdict::GiveUp,
    }
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let Some(value) = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            else {
                return HeadVerdict::GiveUp;
            };
            length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            chunked_last = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    match (transfer_encoding, length) {
        (true, Some(_)) => HeadVerdict::Ambiguous,
        (true, None) if chunked_last => HeadVerdict::Chunked,
        // hyper refuses a non-chunked transfer coding itself.
        (true, None) => HeadVerdict::GiveUp,
        (false, Some(0)) | (false, None) => HeadVerdict::NoBody,
        (false, Some(n)) => HeadVerdict::Fixed(n),
    }
}

/// Longest chunk-size or trailer line followed.
const MAX_LINE: usize = 4096;

/// Appends `bytes` to a partial line; once the line's CRLF is in, returns how many of
/// `bytes` the line used and the length of its text without the CRLF.
fn complete_line(line: &mut Vec<u8>, bytes: &[u8]) -> Option<(usize, usize)> {
    let before = line.len();
    let start = before.saturating_sub(1);
    line.extend_from_slice(bytes);
    let text_len = start + line[start..].windows(2).position(|w| w == b"\r\n")?;
    Some((text_len + 2 - before, text_len))
}

impl FramingTracker {
    /// A tracker that gives up on heads longer than `max_head_bytes`.
    pub fn new(max_head_bytes: usize) -> Self {
        Self {
            phase: Phase::Head(Vec::new()),
            heads: 0,
            max_head_bytes,
        }
    }

    /// Feeds the next bytes the server read.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Finding {
        while !bytes.is_empty() {
            match &mut self.phase {
                Phase::Done => return Finding::Nothing,
                Phase::Head(buffer) => {
                    // Blank lines before a request line are allowed and skipped (RFC 9112 §2.2).
                    if buffer.is_empty() {
                        let skip = bytes
                            .iter()
                            .take_while(|&&b| b == b'\r' || b == b'\n')
                            .count();
                        bytes = &bytes[skip..];
                        if bytes.is_empty() {
                            break;
                        }
                    }
                    let verdict = if buffer.is_empty()
                        && let Some(end) = head_end(bytes)
                    {
                        // The whole head came in one read, as it nearly always does: look at
                        // it where it lies rather than copy it.
                        let verdict = inspect_head(&bytes[..end]);
                        bytes = &bytes[end..];
                        verdict
                    } else {
                        let start = buffer.len().saturating_sub(3);
                        buffer.extend_from_slice(bytes);
                        let Some(end) = head_end(&buffer[start..]).map(|p| start + p) else {
                            if buffer.len() > self.max_head_bytes {
                                self.phase = Phase::Done;
                            }
                            return Finding::Nothing;
                        };
                        let consumed_now = bytes.len() - (buffer.len() - end);
                        let verdict = inspect_head(&buffer[..end]);
                        bytes = &bytes[consumed_now..];
                        verdict
                    };
                    let index = self.heads;
                    self.heads += 1;
                    self.phase = match verdict {
                        HeadVerdict::NoBody => Phase::Head(Vec::new()),
                        HeadVerdict::Fixed(n) => Phase::Fixed(n),
                        HeadVerdict::Chunked => Phase::ChunkSize(Vec::new()),
                        HeadVerdict::GiveUp => Phase::Done,
                        HeadVerdict::Ambiguous => {
                            self.phase = Phase::Done;
                            return Finding::Ambiguous(index);
                        }
                    };
                }
                Phase::Fixed(left) => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    bytes = &bytes[take as usize..];
                    if *left == 0 {
                        self.phase = Phase::Head(Vec::new());
                    }
                }
                Phase::ChunkData(left) => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    bytes = &bytes[take as usize..];
                    if *left == 0 {
                        self.phase = Phase::ChunkSize(Vec::new());
                    }
                }
                Phase::ChunkSize(line) => {
                    let Some((consumed, text_len)) = complete_line(line, bytes) else {
                        if line.len() > MAX_LINE {
                            self.phase = Phase::Done;
                        }
                        return Finding::Nothing;
                    };
                    let digits = line[..text_len]
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or_default();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| u64::from_str_radix(d.trim(), 16).ok());
                    bytes = &bytes[consumed..];
                    self.phase = match size {
                        Some(0) => Phase::Trailers(Vec::new()),
                        Some(size) => Phase::ChunkData(size.saturating_add(2)),
                        None => Phase::Done,
                    };
                }
                Phase::Trailers(line) => {
                    let Some((consumed, text_len)) = complete_line(line, bytes) else {
                        if line.len() > MAX_LINE {
                            self.phase = Phase::Done;
                        }
                        return Finding::Nothing;
                    };
                    bytes = &bytes[consumed..];
                    self.phase = if text_len == 0 {
                        Phase::Head(Vec::new())
                    } else {
                        Phase::Trailers(Vec::new())
                    };
                }
            }
        }
        Finding::Nothing
    }
}

/// Marks a request whose raw head carried both Content-Length and Transfer-Encoding.
#[derive(Clone, Copy, Debug)]
pub struct AmbiguousLength;

/// Index of the first request with an ambiguous length on a connection; `u64::MAX` for none.
#[derive(Debug)]
pub struct AmbiguousRequest(AtomicU64);

impl Default for AmbiguousRequest {
    fn default() -> Self {
        Self(AtomicU64::new(u64::MAX))
    }
}

impl AmbiguousRequest {
    /// Whether the request with this index (counted from 0) was flagged.
    pub fn is(&self, index: u64) -> bool {
        self.0.load(Ordering::Acquire) == index
    }

    /// Flags the request with this index.
    pub fn flag(&self, index: u64) {
        self.0.store(index, Ordering::Release);
    }
}

/// Where a head ends in `bytes`: just past its blank line, if it is there.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(pieces: &[&[u8]]) -> Vec<Finding> {
        let mut tracker = FramingTracker::new(64 * 1024);
        pieces
            .iter()
            .map(|p| tracker.feed(p))
            .filter(|f| *f != Finding::Nothing)
            .collect()
    }

    /// Feeds the stream one byte at a time, the worst split there is.
    fn feed_bytewise(stream: &[u8]) -> Vec<Finding> {
        let pieces: Vec<&[u8]> = stream.chunks(1).collect();
        feed_all(&pieces)
    }

    const PLAIN: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const FIXED: &[u8] = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    const CHUNKED: &[u8] =
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
    const SMUGGLE: &[u8] =
        b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    #[test]
    fn a_request_with_both_lengths_is_flagged_with_its_position() {
        let stream = [PLAIN, FIXED, CHUNKED, SMUGGLE].concat();
        assert_eq!(feed_all(&[&stream]), [Finding::Ambiguous(3)]);
        assert_eq!(feed_bytewise(&stream), [Finding::Ambiguous(3)]);
    }

    #[test]
    fn the_order_of_the_two_headers_does_not_matter() {
        let te_first =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(feed_all(&[te_first]), [Finding::Ambiguous(0)]);
    }

    #[test]
    fn bodies_that_look_like_smuggling_are_not_flagged() {
        // A body holding the text of a smuggling request is data, not a head.
        let inner = SMUGGLE;
        let head = format!(
            "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            inner.len()
        );
        let stream = [head.as_bytes(), inner, PLAIN].concat();
        assert_eq!(feed_bytewise(&stream), []);
        let chunked = [
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(),
            format!("{:x}\r\n", inner.len()).as_bytes(),
            inner,
            b"\r\n0\r\n\r\n",
            PLAIN,
        ]
        .concat();
        assert_eq!(feed_bytewise(&chunked), []);
    }

    #[test]
    fn http2_and_garbage_stop_the_tracker_quietly() {
        assert_eq!(
            feed_all(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", SMUGGLE]),
            []
        );
        assert_eq!(feed_all(&[b"\x16\x03\x01garbage\r\n\r\n", SMUGGLE]), []);
    }

    #[test]
    fn leading_blank_lines_are_skipped() {
        let stream = [b"\r\n\r\n".as_slice(), SMUGGLE].concat();
        assert_eq!(feed_all(&[&stream]), [Finding::Ambiguous(0)]);
    }

    #[test]
    fn the_flag_matches_only_its_request() {
        let flag = AmbiguousRequest::default();
        assert!(!flag.is(0));
        flag.flag(2);
        assert!(flag.is(2));
        assert!(!flag.is(1));
    }
}
