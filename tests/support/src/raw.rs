//! Raw TCP exchanges, for what an HTTP client library would refuse to send: malformed
//! framing, oversized heads, smuggling attempts.

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Writes `bytes` on a fresh connection to `addr` and reads until the peer closes, 5 s pass,
/// or a complete head has arrived and nothing more comes for 300 ms. Returns what was read.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the gateway");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeout");
    // The peer may close before taking everything (an oversized head): that is an answer too.
    let _ = stream.write_all(bytes);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut read = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => read.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if read.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&read).into_owned()
}

/// The status code of the first response in `raw`, if any.
pub fn raw_status(raw: &str) -> Option<u16> {
    raw.strip_prefix("HTTP/1.1 ")
        .or_else(|| raw.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()
}
