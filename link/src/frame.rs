//! The wire format of a TMP channel: the head that opens a channel, the response head that
//! answers it, and the control messages, each a length-prefixed frame.
//!
//! Bodies are not framed: after the heads, a channel's bytes are the body itself and the QUIC
//! stream's end is the body's end, so a large download costs no per-chunk framing. Every
//! decoder here is a pure function of bytes with hard limits, because a peer is trusted only
//! as far as its certificate goes: a bug or a hostile build on the other side must cost one
//! channel, never the process.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// Version byte that starts every channel head; a peer speaking another version is refused
/// per channel with a clear reason instead of being misread.
pub const WIRE_VERSION: u8 = 1;

/// The largest head frame accepted (request or response head, or a control message). The
/// HTTP side already limits client heads to far less; this bounds what a peer can make us
/// buffer before any check runs.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// The most header fields a head may carry.
pub const MAX_HEADER_FIELDS: usize = 512;

/// Priority classes run from 0 (most urgent) to this value.
pub const LOWEST_CLASS: u8 = 4;

/// Why bytes from a peer are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame ended before a field it announced.
    #[error("frame truncated while reading {0}")]
    Truncated(&'static str),
    /// The length prefix exceeds [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// Bytes left over after the last field.
    #[error("{0} unexpected bytes after the frame's last field")]
    TrailingBytes(usize),
    /// The head was written by another protocol version.
    #[error("unsupported wire version {0} (this build speaks {WIRE_VERSION})")]
    Version(u8),
    /// The channel kind byte is unknown.
    #[error("unknown channel kind {0}")]
    Kind(u8),
    /// The priority class is outside 0..=4.
    #[error("priority class {0} is outside 0..={LOWEST_CLASS}")]
    Class(u8),
    /// The method is not a valid HTTP token.
    #[error("invalid method")]
    Method,
    /// The request target is empty or not an origin-form path.
    #[error("invalid request target")]
    Target,
    /// A header name or value is not valid HTTP.
    #[error("invalid header field {0}")]
    Header(usize),
    /// More header fields than [`MAX_HEADER_FIELDS`].
    #[error("{0} header fields exceed the limit of {MAX_HEADER_FIELDS}")]
    TooManyHeaders(usize),
    /// The status code is not in 100..=999.
    #[error("invalid status code {0}")]
    Status(u16),
    /// A text field is not UTF-8.
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    /// A port field is zero.
    #[error("port 0 is not a destination")]
    Port,
}

/// What a channel carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    /// One HTTP exchange: a request head, its body, then the response.
    Http(RequestHead),
    /// A tunnelled TCP connection to one of the Site's TCP ports.
    Tcp(TcpTarget),
}

/// The first frame on every channel the opener sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelHead {
    /// Priority class, 0 (most urgent) to [`LOWEST_CLASS`].
    pub class: u8,
    /// Request type as an index into the Site's type list (static, dynamic, …); the receiver
    /// checks it against its own list.
    pub request_type: u8,
    /// The opener can decode a zstd-compressed response body.
    pub accepts_zstd: bool,
    /// What the channel carries.
    pub kind: ChannelKind,
}

/// An HTTP request head as it crosses the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Request method.
    pub method: Method,
    /// Origin-form target: path and query.
    pub target: String,
    /// Header fields, hop-by-hop ones already removed by the front-end.
    pub headers: HeaderMap,
    /// The request has no body: the channel's stream ends right after the head. The back-end
    /// can then send the request to an origin again when a kept-alive connection fails under
    /// it, without waiting for the stream's end to learn there is nothing to replay. A peer
    /// that does not know the flag leaves it clear, which only costs that replay.
    pub empty_body: bool,
}

/// Where a tunnelled TCP channel goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpTarget {
    /// The Site whose origins serve the connection.
    pub site: String,
    /// The Site's TCP port as front-ends listen on it; the back-end maps it to the origins'
    /// port, so a front-end can reach only the ports the Site lists.
    pub port: u16,
}

/// The back-end's answer to an HTTP channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Response status.
    pub status: StatusCode,
    /// The body that follows is a zstd stream.
    pub zstd: bool,
    /// Header fields.
    pub headers: HeaderMap,
}

const KIND_HTTP: u8 = 1;
const KIND_TCP: u8 = 2;
const FLAG_ZSTD: u8 = 1;
/// In a channel head's flags: the HTTP request has no body ([`RequestHead::empty_body`]).
const FLAG_EMPTY_BODY: u8 = 2;

/// Wraps an encoded payload in its length prefix.
fn framed(payload: BytesMut) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + payload.len());
    // Payloads are built from bounded fields; a head larger than u32 cannot be produced.
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&payload);
    out.freeze()
}

/// Reads a frame's length prefix and checks it against [`MAX_FRAME_BYTES`].
pub fn frame_length(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let length = u32::from_be_bytes(prefix) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(length));
    }
    Ok(length)
}

impl ChannelHead {
    /// Encodes the head as one length-prefixed frame.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(256);
        out.put_u8(WIRE_VERSION);
        out.put_u8(match self.kind {
            ChannelKind::Http(_) => KIND_HTTP,
            ChannelKind::Tcp(_) => KIND_TCP,
        });
        out.put_u8(self.class);
        out.put_u8(self.request_type);
        let mut flags = if self.accepts_zstd { FLAG_ZSTD } else { 0 };
        if matches!(&self.kind, ChannelKind::Http(head) if head.empty_body) {
            flags |= FLAG_EMPTY_BODY;
        }
        out.put_u8(flags);
        match &self.kind {
            ChannelKind::Http(head) => {
                put_short(&mut out, head.method.as_str().as_bytes());
                put_long(&mut out, head.target.as_bytes());
                put_headers(&mut out, &head.headers);
            }
            ChannelKind::Tcp(target) => {
                put_short(&mut out, target.site.as_bytes());
                out.put_u16(target.port);
            }
        }
        framed(out)
    }

    /// Decodes a head from a frame's payload (the bytes after the length prefix).
    pub fn decode(mut payload: &[u8]) -> Result<Self, FrameError> {
        let buf = &mut payload;
        let version = get_u8(buf, "version")?;
        if version != WIRE_VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = get_u8(buf, "kind")?;
        let class = get_u8(buf, "class")?;
        if class > LOWEST_CLASS {
            return Err(FrameError::Class(class));
        }
        let request_type = get_u8(buf, "request type")?;
        let flags = get_u8(buf, "flags")?;
        let kind = match kind {
            KIND_HTTP => {
                let method = Method::from_bytes(get_short(buf, "method")?)
                    .map_err(|_| FrameError::Method)?;
                let target = std::str::from_utf8(get_long(buf, "target")?)
                    .map_err(|_| FrameError::Utf8("target"))?;
                if !target.starts_with('/') && target != "*" {
                    return Err(FrameError::Target);
                }
                let target = target.to_owned();
                let headers = get_headers(buf)?;
                ChannelKind::Http(RequestHead {
                    method,
                    target,
                    headers,
                    empty_body: flags & FLAG_EMPTY_BODY != 0,
                })
            }
            KIND_TCP => {
                let site = std::str::from_utf8(get_short(buf, "site")?)
                    .map_err(|_| FrameError::Utf8("site"))?
                    .to_owned();
                let port = get_u16(buf, "port")?;
                if port == 0 {
                    return Err(FrameError::Port);
                }
                ChannelKind::Tcp(TcpTarget { site, port })
            }
            other => return Err(FrameError::Kind(other)),
        };
        finish(buf)?;
        Ok(Self {
            class,
            request_type,
            accepts_zstd: flags & FLAG_ZSTD != 0,
            kind,
        })
    }
}

impl ResponseHead {
    /// Encodes the head as one length-prefixed frame.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(256);
        out.put_u16(self.status.as_u16());
        out.put_u8(if self.zstd { FLAG_ZSTD } else { 0 });
        put_headers(&mut out, &self.headers);
        framed(out)
    }

    /// Decodes a head from a frame's payload.
    pub fn decode(mut payload: &[u8]) -> Result<Self, FrameError> {
        let buf = &mut payload;
        let code = get_u16(buf, "status")?;
        let status = StatusCode::from_u16(code).map_err(|_| FrameError::Status(code))?;
        let flags = get_u8(buf, "flags")?;
        let headers = get_headers(buf)?;
        finish(buf)?;
        Ok(Self {
            status,
            zstd: flags & FLAG_ZSTD != 0,
            headers,
        })
    }
}

/// Encodes a control message (a JSON document) as one frame.
pub fn encode_control(json: &[u8]) -> Bytes {
    framed(BytesMut::from(json))
}

fn put_short(out: &mut BytesMut, bytes: &[u8]) {
    let length = bytes.len().min(usize::from(u16::MAX));
    out.put_u16(length as u16);
    out.extend_from_slice(&bytes[..length]);
}

fn put_long(out: &mut BytesMut, bytes: &[u8]) {
    let length = bytes.len().min(MAX_FRAME_BYTES);
    out.put_u32(length as u32);
    out.extend_from_slice(&bytes[..length]);
}

fn put_headers(out: &mut BytesMut, headers: &HeaderMap) {
    let count = headers.len().min(MAX_HEADER_FIELDS);
    out.put_u16(count as u16);
    for (name, value) in headers.iter().take(count) {
        put_short(out, name.as_str().as_bytes());
        put_short(out, value.as_bytes());
    }
}

fn get_u8(buf: &mut &[u8], field: &'static str) -> Result<u8, FrameError> {
    if buf.remaining() < 1 {
        return Err(FrameError::Truncated(field));
    }
    Ok(buf.get_u8())
}

fn get_u16(buf: &mut &[u8], field: &'static str) -> Result<u16, FrameError> {
    if buf.remaining() < 2 {
        return Err(FrameError::Truncated(field));
    }
    Ok(buf.get_u16())
}

fn get_slice<'a>(
    buf: &mut &'a [u8],
    length: usize,
    field: &'static str,
) -> Result<&'a [u8], FrameError> {
    if buf.len() < length {
        return Err(FrameError::Truncated(field));
    }
    let (head, rest) = buf.split_at(length);
    *buf = rest;
    Ok(head)
}

fn get_short<'a>(buf: &mut &'a [u8], field: &'static str) -> Result<&'a [u8], FrameError> {
    let length = usize::from(get_u16(buf, field)?);
    get_slice(buf, length, field)
}

fn get_long<'a>(buf: &mut &'a [u8], field: &'static str) -> Result<&'a [u8], FrameError> {
    if buf.remaining() < 4 {
        return Err(FrameError::Truncated(field));
    }
    let length = buf.get_u32() as usize;
    if length > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(length));
    }
    get_slice(buf, length, field)
}

fn get_headers(buf: &mut &[u8]) -> Result<HeaderMap, FrameError> {
    let count = usize::from(get_u16(buf, "header count")?);
    if count > MAX_HEADER_FIELDS {
        return Err(FrameError::TooManyHeaders(count));
    }
    let mut headers = HeaderMap::with_capacity(count);
    for index in 0..count {
        let name = HeaderName::from_bytes(get_short(buf, "header name")?)
            .map_err(|_| FrameError::Header(index))?;
        let value = HeaderValue::from_bytes(get_short(buf, "header value")?)
            .map_err(|_| FrameError::Header(index))?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn finish(buf: &[u8]) -> Result<(), FrameError> {
    if buf.is_empty() {
        Ok(())
    } else {
        Err(FrameError::TrailingBytes(buf.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &Bytes) -> &[u8] {
        let prefix: [u8; 4] = frame[..4].try_into().expect("prefix");
        assert_eq!(frame_length(prefix), Ok(frame.len() - 4));
        &frame[4..]
    }

    fn http_head() -> ChannelHead {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("shop.example"));
        headers.append("cookie", HeaderValue::from_static("a=1"));
        headers.append("cookie", HeaderValue::from_static("b=2"));
        ChannelHead {
            class: 1,
            request_type: 2,
            accepts_zstd: true,
            kind: ChannelKind::Http(RequestHead {
                method: Method::POST,
                target: "/cart?item=7".to_owned(),
                headers,
                empty_body: false,
            }),
        }
    }

    #[test]
    fn request_heads_round_trip_with_repeated_headers() {
        let head = http_head();
        assert_eq!(ChannelHead::decode(payload(&head.encode())), Ok(head));
    }

    #[test]
    fn an_empty_body_is_announced_in_the_flags_beside_zstd() {
        let mut head = http_head();
        let ChannelKind::Http(request) = &mut head.kind else {
            unreachable!("http_head is an HTTP head");
        };
        request.empty_body = true;
        let encoded = head.encode();
        // Length prefix, then version, kind, class, request type, flags.
        assert_eq!(encoded[4 + 4], FLAG_ZSTD | FLAG_EMPTY_BODY);
        assert_eq!(ChannelHead::decode(payload(&encoded)), Ok(head));
    }

    #[test]
    fn tcp_heads_round_trip() {
        let head = ChannelHead {
            class: 4,
            request_type: 0,
            accepts_zstd: false,
            kind: ChannelKind::Tcp(TcpTarget {
                site: "mail".to_owned(),
                port: 25,
            }),
        };
        assert_eq!(ChannelHead::decode(payload(&head.encode())), Ok(head));
    }

    #[test]
    fn response_heads_round_trip() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/html"));
        let head = ResponseHead {
            status: StatusCode::NOT_FOUND,
            zstd: true,
            headers,
        };
        assert_eq!(ResponseHead::decode(payload(&head.encode())), Ok(head));
    }

    #[test]
    fn oversized_length_prefixes_are_refused_before_buffering() {
        assert_eq!(
            frame_length(u32::MAX.to_be_bytes()),
            Err(FrameError::TooLarge(u32::MAX as usize))
        );
    }

    #[test]
    fn every_truncation_of_a_valid_head_is_an_error() {
        let frame = http_head().encode();
        let body = payload(&frame);
        for cut in 0..body.len() {
            assert!(
                ChannelHead::decode(&body[..cut]).is_err(),
                "accepted a head cut at {cut}"
            );
        }
    }

    #[test]
    fn hostile_fields_are_named() {
        let frame = http_head().encode();
        let mut body = payload(&frame).to_vec();
        body[0] = 9;
        assert_eq!(ChannelHead::decode(&body), Err(FrameError::Version(9)));
        let mut body = payload(&frame).to_vec();
        body[2] = 5;
        assert_eq!(ChannelHead::decode(&body), Err(FrameError::Class(5)));
        let mut body = payload(&frame).to_vec();
        body[1] = 7;
        assert_eq!(ChannelHead::decode(&body), Err(FrameError::Kind(7)));
        let mut body = payload(&frame).to_vec();
        body.push(0);
        assert_eq!(
            ChannelHead::decode(&body),
            Err(FrameError::TrailingBytes(1))
        );
    }

    #[test]
    fn invalid_header_bytes_are_refused() {
        let mut out = BytesMut::new();
        out.put_u16(200);
        out.put_u8(0);
        out.put_u16(1);
        put_short(&mut out, b"bad name");
        put_short(&mut out, b"v");
        assert_eq!(ResponseHead::decode(&out), Err(FrameError::Header(0)));
    }

    #[test]
    fn targets_must_be_origin_form() {
        let mut head = http_head();
        if let ChannelKind::Http(request) = &mut head.kind {
            request.target = "http://elsewhere/".to_owned();
        }
        let frame = head.encode();
        assert_eq!(
            ChannelHead::decode(payload(&frame)),
            Err(FrameError::Target)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let valid = http_head().encode();
        for _ in 0..20_000 {
            let mut bytes = payload(&valid).to_vec();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..bytes.len());
                bytes[at] = rng.u8(..);
            }
            let _ = ChannelHead::decode(&bytes);
            let _ = ResponseHead::decode(&bytes);
        }
    }
}
