//! A minimal HTTP/1.1 GET over a fresh TCP connection, for readiness probes and for tests that
//! check a pod answers. It reads only the status line: that is all a probe looks at.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::error::{Error, IoContext, Result};

/// Sends `GET path` to `addr` with `Host: host` and returns the response's status code.
///
/// # Errors
/// When the connection fails, `timeout` passes, or the answer is not HTTP.
pub async fn get_status(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .context(|| format!("connecting to {addr}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: causeway-testbed\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .context(|| format!("sending to {addr}"))?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .await
            .context(|| format!("reading from {addr}"))?;
        parse_status_line(&line).ok_or_else(|| Error::Invalid {
            what: format!("HTTP answer from {addr}"),
            message: format!("status line {line:?}"),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Error::Timeout {
            what: format!("GET {path} from {addr}"),
            seconds: timeout.as_secs(),
        })?
}

/// The status code of an HTTP/1.x status line such as `HTTP/1.1 200 OK`.
fn parse_status_line(line: &str) -> Option<u16> {
    let mut words = line.split_whitespace();
    let version = words.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status_line("HTTP/1.0 503 Service Unavailable"),
            Some(503)
        );
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line(""), None);
    }
}
