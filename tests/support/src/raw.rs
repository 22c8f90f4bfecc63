//! Raw TCP exchanges, for what an HTTP client library would refuse to send: malformed
//! framing, oversized heads, smuggling attempts; and [`RawOrigin`], for answers an HTTP
//! server library would refuse to send.

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// An origin on loopback that reads each request head (requests without a body) and
/// answers it with the same raw bytes, then closes the connection.
pub struct RawOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RawOrigin {
    /// Starts one answering every request with `answer`.
    pub async fn start(answer: &[u8]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a raw origin on loopback");
        let addr = listener.local_addr().expect("raw origin address");
        let answer = answer.to_vec();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let _ = stream.write_all(&answer).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { addr, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

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
