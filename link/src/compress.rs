//! Optional zstd compression of response bodies on a channel: only for content types that
//! compress (text, JSON, JavaScript, CSS, SVG, XML) and only when the origin did not compress
//! the body already. The front-end decompresses, so clients see the origin's bytes.

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};

/// zstd level: fast enough to keep up with a link, most of the gain on text.
const LEVEL: i32 = 3;

/// True when a response with these headers is worth compressing on the link.
pub fn worth_compressing(headers: &HeaderMap) -> bool {
    if headers
        .get(CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return false;
    }
    let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/ecmascript"
                | "application/xml"
                | "image/svg+xml"
                | "application/x-ndjson"
        )
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
}

/// Streaming compressor: each chunk comes out as a flushed piece of one zstd frame, so the
/// receiver can pass bytes on without waiting for the body's end.
pub struct Compressor {
    inner: zstd::stream::raw::Encoder<'static>,
}

/// Streaming decompressor for [`Compressor`]'s output.
pub struct Decompressor {
    inner: zstd::stream::raw::Decoder<'static>,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compressor")
    }
}

impl std::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decompressor")
    }
}

impl Compressor {
    /// A new compressor.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            inner: zstd::stream::raw::Encoder::new(LEVEL)?,
        })
    }

    /// Compresses a chunk and flushes, returning what is ready to send.
    pub fn chunk(&mut self, input: &[u8]) -> std::io::Result<Bytes> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut output = Vec::with_capacity(input.len() / 2 + 64);
        let mut scratch = vec![0u8; zstd::zstd_safe::CCtx::out_size().max(1024)];
        let mut source = InBuffer::around(input);
        while source.pos < input.len() {
            let mut sink = OutBuffer::around(&mut scratch[..]);
            self.inner.run(&mut source, &mut sink)?;
            let written = sink.pos();
            output.extend_from_slice(&scratch[..written]);
        }
        loop {
            let mut sink = OutBuffer::around(&mut scratch[..]);
            let remaining = self.inner.flush(&mut sink)?;
            let written = sink.pos();
            output.extend_from_slice(&scratch[..written]);
            if remaining == 0 {
                break;
            }
        }
        Ok(Bytes::from(output))
    }

    /// Ends the zstd frame, returning the last bytes.
    pub fn finish(&mut self) -> std::io::Result<Bytes> {
        use zstd::stream::raw::{Operation, OutBuffer};
        let mut output = Vec::new();
        let mut scratch = vec![0u8; 1024];
        loop {
            let mut sink = OutBuffer::around(&mut scratch[..]);
            let remaining = self.inner.finish(&mut sink, true)?;
            let written = sink.pos();
            output.extend_from_slice(&scratch[..written]);
            if remaining == 0 {
                break;
            }
        }
        Ok(Bytes::from(output))
    }
}

/// The most a decompressed chunk may grow to per input byte; a peer's zstd bomb ends the
/// channel instead of exhausting memory.
const MAX_EXPANSION: usize = 1024;

impl Decompressor {
    /// A new decompressor.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            inner: zstd::stream::raw::Decoder::new()?,
        })
    }

    /// Decompresses a chunk, returning the bytes it yields.
    pub fn chunk(&mut self, input: &[u8]) -> std::io::Result<Bytes> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let limit = input.len().saturating_mul(MAX_EXPANSION).max(1 << 20);
        let mut output = Vec::with_capacity(input.len() * 4);
        let mut scratch = vec![0u8; 64 * 1024];
        let mut source = InBuffer::around(input);
        loop {
            let mut sink = OutBuffer::around(&mut scratch[..]);
            self.inner.run(&mut source, &mut sink)?;
            let written = sink.pos();
            output.extend_from_slice(&scratch[..written]);
            if output.len() > limit {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "compressed body expands beyond the limit",
                ));
            }
            if source.pos >= input.len() && written < scratch.len() {
                break;
            }
        }
        Ok(Bytes::from(output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(content_type: &str, encoding: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("valid"),
        );
        if let Some(encoding) = encoding {
            headers.insert(
                CONTENT_ENCODING,
                HeaderValue::from_str(encoding).expect("valid"),
            );
        }
        headers
    }

    #[test]
    fn only_compressible_uncompressed_types_are_chosen() {
        assert!(worth_compressing(&headers(
            "text/html; charset=utf-8",
            None
        )));
        assert!(worth_compressing(&headers("application/json", None)));
        assert!(worth_compressing(&headers("application/ld+json", None)));
        assert!(worth_compressing(&headers("image/svg+xml", None)));
        assert!(worth_compressing(&headers("text/css", Some("identity"))));
        assert!(!worth_compressing(&headers("text/html", Some("gzip"))));
        assert!(!worth_compressing(&headers("image/jpeg", None)));
        assert!(!worth_compressing(&headers(
            "application/octet-stream",
            None
        )));
        assert!(!worth_compressing(&HeaderMap::new()));
    }

    #[test]
    fn chunks_round_trip_as_they_come() {
        let mut compressor = Compressor::new().expect("encoder");
        let mut decompressor = Decompressor::new().expect("decoder");
        let mut original = Vec::new();
        let mut restored = Vec::new();
        let mut on_wire = 0;
        for i in 0..50 {
            let chunk = format!("{{\"item\":{i},\"name\":\"catalogue entry {i}\"}}\n").repeat(40);
            original.extend_from_slice(chunk.as_bytes());
            let compressed = compressor.chunk(chunk.as_bytes()).expect("compress");
            on_wire += compressed.len();
            // Each chunk decodes at once: nothing waits for the end of the body.
            let piece = decompressor.chunk(&compressed).expect("decompress");
            assert_eq!(piece.len(), chunk.len());
            restored.extend_from_slice(&piece);
        }
        let tail = compressor.finish().expect("finish");
        restored.extend_from_slice(&decompressor.chunk(&tail).expect("tail"));
        assert_eq!(restored, original);
        assert!(
            on_wire * 5 < original.len(),
            "{on_wire} of {}",
            original.len()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut decompressor = Decompressor::new().expect("decoder");
        assert!(decompressor.chunk(b"definitely not zstd").is_err());
    }
}
