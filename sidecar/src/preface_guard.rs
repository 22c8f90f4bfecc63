//! The first bytes of a client connection, checked against the protocol it must speak.
//!
//! hyper-util's server reads the first bytes and serves HTTP/2 if they are the HTTP/2
//! connection preface, HTTP/1.1 otherwise — whatever TLS's ALPN agreed. So a client that
//! negotiated `h2` could speak HTTP/1.1 and be answered in it, one that negotiated
//! `http/1.1` could open HTTP/2, and a broken preface (`PRI * HTTP/2.0` with the rest
//! wrong) fell through to the HTTP/1.1 parser and got an HTTP/1.1 `400` (RFC 9113 §3.4:
//! an invalid preface is a connection error). This module decides from those first bytes,
//! before hyper sees them, whether the connection goes on; the server then refuses it:
//! SETTINGS and GOAWAY(PROTOCOL_ERROR) to a client that meant HTTP/2, a plain close to one
//! that agreed on HTTP/1.1.

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes of the preface that are its request line, `PRI * HTTP/2.0`: a client that sent
/// them meant HTTP/2, whatever follows.
const PRI_LINE: usize = 14;

/// What a server says to a client that meant HTTP/2 but sent a wrong preface: its own
/// preface (an empty SETTINGS frame, which must come first) and GOAWAY with last stream 0
/// and PROTOCOL_ERROR (RFC 9113 §3.4, §6.8).
pub const GOAWAY_PROTOCOL_ERROR: [u8; 26] = [
    0, 0, 0, 0x4, 0, 0, 0, 0, 0, // SETTINGS, empty, stream 0
    0, 0, 8, 0x7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes, stream 0
    0, 0, 0, 0, // last stream id 0
    0, 0, 0, 1, // PROTOCOL_ERROR
];

/// The protocol a connection must speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// TLS with ALPN `http/1.1`.
    Http1,
    /// TLS with ALPN `h2`.
    Http2,
    /// Cleartext, or TLS without ALPN: HTTP/2 with prior knowledge or HTTP/1.1.
    Either,
}

impl Expected {
    /// What the protocol ALPN agreed on (`None`: no ALPN) leaves open.
    pub fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Self::Http2,
            Some(b"http/1.1") => Self::Http1,
            _ => Self::Either,
        }
    }
}

/// What the first bytes decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// More bytes are needed to tell.
    Undecided,
    /// The connection speaks what it must; nothing more is checked on it.
    Pass,
    /// A client meaning HTTP/2 with a wrong preface: [`GOAWAY_PROTOCOL_ERROR`], then close.
    GoAway,
    /// HTTP/2 where ALPN agreed on HTTP/1.1: close, sending nothing (no HTTP/1.1 answer
    /// either: the client is not speaking it).
    Close,
}

/// Judges `first`, every byte the connection has sent so far (only the first 24 matter).
pub fn judge(expected: Expected, first: &[u8]) -> Verdict {
    let seen = first.len().min(PREFACE.len());
    let matched = first
        .iter()
        .zip(PREFACE)
        .take_while(|(got, want)| got == want)
        .count();
    let diverged = matched < seen;
    match expected {
        Expected::Http2 if diverged => Verdict::GoAway,
        Expected::Http2 if matched == PREFACE.len() => Verdict::Pass,
        Expected::Http1 if matched >= PRI_LINE => Verdict::Close,
        Expected::Either if matched == PREFACE.len() => Verdict::Pass,
        Expected::Either if matched >= PRI_LINE && diverged => Verdict::GoAway,
        Expected::Http1 | Expected::Either if diverged => Verdict::Pass,
        _ => Verdict::Undecided,
    }
}

/// The first bytes of one connection, gathered until [`judge`] decides.
#[derive(Debug)]
pub struct PrefaceGuard {
    expected: Expected,
    first: [u8; 24],
    seen: usize,
    verdict: Verdict,
}

impl PrefaceGuard {
    /// A guard for a connection that must speak `expected`.
    pub fn new(expected: Expected) -> Self {
        Self {
            expected,
            first: [0; 24],
            seen: 0,
            verdict: Verdict::Undecided,
        }
    }

    /// Whether the connection has already passed (the read path's one branch after that).
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }

    /// The verdict so far.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Feeds the next bytes read and returns the verdict so far.
    pub fn feed(&mut self, bytes: &[u8]) -> Verdict {
        if self.verdict != Verdict::Undecided {
            return self.verdict;
        }
        let take = bytes.len().min(self.first.len() - self.seen);
        self.first[self.seen..self.seen + take].copy_from_slice(&bytes[..take]);
        self.seen += take;
        self.verdict = judge(self.expected, &self.first[..self.seen]);
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const BROKEN: &[u8] = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n";

    #[test]
    fn alpn_h2_takes_only_the_preface() {
        assert_eq!(judge(Expected::Http2, PREFACE), Verdict::Pass);
        assert_eq!(judge(Expected::Http2, GET), Verdict::GoAway);
        assert_eq!(judge(Expected::Http2, BROKEN), Verdict::GoAway);
        assert_eq!(judge(Expected::Http2, &PREFACE[..10]), Verdict::Undecided);
        assert_eq!(judge(Expected::Http2, b""), Verdict::Undecided);
        // The preface followed by frames: decided on the first 24 bytes.
        let frames = [&PREFACE[..], &[0, 0, 0, 4, 0, 0, 0, 0, 0]].concat();
        assert_eq!(judge(Expected::Http2, &frames), Verdict::Pass);
    }

    #[test]
    fn alpn_http11_refuses_http2() {
        assert_eq!(judge(Expected::Http1, GET), Verdict::Pass);
        assert_eq!(judge(Expected::Http1, PREFACE), Verdict::Close);
        assert_eq!(judge(Expected::Http1, BROKEN), Verdict::Close);
        assert_eq!(judge(Expected::Http1, b"PRI * HTTP/2.0"), Verdict::Close);
        // A method that begins like PRI is decided as soon as it differs.
        assert_eq!(judge(Expected::Http1, b"PRI /x HTTP/1.1"), Verdict::Pass);
        assert_eq!(judge(Expected::Http1, b"PRI * HTTP"), Verdict::Undecided);
        assert_eq!(judge(Expected::Http1, b"G"), Verdict::Pass);
    }

    #[test]
    fn cleartext_takes_either_but_not_a_broken_preface() {
        assert_eq!(judge(Expected::Either, GET), Verdict::Pass);
        assert_eq!(judge(Expected::Either, PREFACE), Verdict::Pass);
        assert_eq!(judge(Expected::Either, BROKEN), Verdict::GoAway);
        assert_eq!(
            judge(Expected::Either, b"PRI * HTTP/2.0\r\n"),
            Verdict::Undecided
        );
        assert_eq!(judge(Expected::Either, b"PRI * HTTP/1.1"), Verdict::Pass);
    }

    #[test]
    fn the_guard_gathers_bytes_across_reads_and_keeps_its_verdict() {
        let mut guard = PrefaceGuard::new(Expected::Http2);
        for byte in &PREFACE[..23] {
            assert_eq!(guard.feed(&[*byte]), Verdict::Undecided);
        }
        assert!(!guard.passed());
        assert_eq!(guard.feed(&PREFACE[23..]), Verdict::Pass);
        assert!(guard.passed());
        assert_eq!(guard.feed(GET), Verdict::Pass, "decided once");

        let mut broken = PrefaceGuard::new(Expected::Either);
        assert_eq!(broken.feed(&BROKEN[..16]), Verdict::Undecided);
        assert_eq!(broken.feed(&BROKEN[16..]), Verdict::GoAway);
        assert_eq!(broken.feed(PREFACE), Verdict::GoAway);
    }

    #[test]
    fn the_goaway_is_a_settings_frame_then_goaway_protocol_error() {
        let (settings, goaway) = GOAWAY_PROTOCOL_ERROR.split_at(9);
        assert_eq!(settings[3], 0x4, "SETTINGS");
        assert_eq!(&settings[..3], &[0, 0, 0], "empty");
        assert_eq!(goaway[3], 0x7, "GOAWAY");
        assert_eq!(usize::from(goaway[2]), goaway.len() - 9, "its length");
        assert_eq!(&goaway[13..], &[0, 0, 0, 1], "PROTOCOL_ERROR");
    }
}
