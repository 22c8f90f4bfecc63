//! TLS on the client side of the real gateway: ALPN picks HTTP/2 or HTTP/1.1 on one
//! listener, both reach the origin, the protocol ALPN agreed is the only one served, and a
//! client that does not trust the certificate gets no answer.

use std::net::SocketAddr;
use std::sync::Arc;

use causeway_test_support::{
    gateway::Gateway,
    origin::Origin,
    scratch::{free_addr, write_scratch},
    site::{SiteYaml, manifest},
};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio_rustls::TlsConnector;

struct Certificate {
    cert_pem: String,
    key_pem: String,
}

fn certificate() -> Certificate {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .expect("generate a certificate");
    Certificate {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    }
}

fn connector(trusted: Option<&Certificate>, alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(trusted) = trusted {
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(trusted.cert_pem.as_bytes()) {
            roots
                .add(cert.expect("a PEM certificate"))
                .expect("a usable root");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("a DNS name");
    connector.connect(name, tcp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_selects_h2_or_http11_and_an_untrusted_client_gets_nothing() {
    let origin = Origin::start("tls").await;
    let certificate = certificate();
    let cert = write_scratch("cert.pem", &certificate.cert_pem);
    let key = write_scratch("key.pem", &certificate.key_pem);
    let tls_addr = free_addr();
    let (tls_text, cert_text, key_text) = (
        tls_addr.to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let gateway = Gateway::start_with(
        &manifest(&[SiteYaml::new("tls", "localhost").origin(&origin, "")]),
        &[
            "--tls-listen",
            &tls_text,
            "--tls-cert",
            &cert_text,
            "--tls-key",
            &key_text,
        ],
    )
    .await;

    // HTTP/2 by ALPN: the authority carries the host.
    let stream = connect(tls_addr, &connector(Some(&certificate), b"h2"))
        .await
        .expect("TLS to the gateway");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2");
    tokio::spawn(connection);
    let request = Request::get("https://localhost/over-h2")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("an h2 answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"tls\n", "the origin's answer");

    // HTTP/1.1 by ALPN on the same listener.
    let stream = connect(tls_addr, &connector(Some(&certificate), b"http/1.1"))
        .await
        .expect("TLS to the gateway");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http/1.1");
    tokio::spawn(connection);
    let request = Request::get("/over-h1")
        .header("host", "localhost")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender
        .send_request(request)
        .await
        .expect("an HTTP/1.1 answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_11);

    // The origin saw both, marked as having come over TLS.
    let seen = origin.state.seen();
    let forwarded: Vec<_> = seen
        .iter()
        .filter_map(|s| s.headers.get("x-forwarded-proto").cloned())
        .collect();
    assert!(
        seen.iter().any(|s| s.path == "/over-h2") && seen.iter().any(|s| s.path == "/over-h1"),
        "{seen:?}"
    );
    assert!(
        forwarded.iter().all(|p| p == "https") && forwarded.len() >= 2,
        "{forwarded:?}"
    );

    // A client that does not trust the certificate cannot complete the handshake.
    assert!(connect(tls_addr, &connector(None, b"h2")).await.is_err());
    drop(gateway);
}

/// Over TLS with ALPN `alpn`, writes `bytes` and reads until the gateway closes (or 10 s
/// pass, which fails the test): what the gateway sent back.
async fn tls_exchange(
    addr: SocketAddr,
    certificate: &Certificate,
    alpn: &[u8],
    bytes: &[u8],
) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = connect(addr, &connector(Some(certificate), alpn))
        .await
        .expect("TLS to the gateway");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
    stream.write_all(bytes).await.expect("write");
    stream.flush().await.expect("flush");
    let mut read = Vec::new();
    let mut buffer = [0u8; 4096];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buffer).await {
                // A close without close_notify is a close too.
                Ok(0) | Err(_) => return,
                Ok(n) => read.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the gateway kept the connection open after {:?}",
        String::from_utf8_lossy(&read)
    );
    read
}

/// What a server sends a client whose HTTP/2 preface is wrong: an empty SETTINGS frame,
/// then GOAWAY with last stream 0 and PROTOCOL_ERROR (RFC 9113 §3.4, §6.8).
const SETTINGS_THEN_GOAWAY: [u8; 26] = [
    0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_alpn_agreed_is_the_only_one_served() {
    let origin = Origin::start("alpn").await;
    let certificate = certificate();
    let cert = write_scratch("cert.pem", &certificate.cert_pem);
    let key = write_scratch("key.pem", &certificate.key_pem);
    let tls_addr = free_addr();
    let (tls_text, cert_text, key_text) = (
        tls_addr.to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let _gateway = Gateway::start_with(
        &manifest(&[SiteYaml::new("alpn", "localhost").origin(&origin, "")]),
        &[
            "--tls-listen",
            &tls_text,
            "--tls-cert",
            &cert_text,
            "--tls-key",
            &key_text,
        ],
    )
    .await;
    let get = b"GET /h1-on-h2 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

    // ALPN h2, then HTTP/1.1: GOAWAY, no HTTP/1.1 answer, nothing reaches the origin.
    let answer = tls_exchange(tls_addr, &certificate, b"h2", get).await;
    assert_eq!(
        answer,
        SETTINGS_THEN_GOAWAY,
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // ALPN h2 and a broken preface: the same.
    let broken = tls_exchange(
        tls_addr,
        &certificate,
        b"h2",
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
    )
    .await;
    assert_eq!(
        broken,
        SETTINGS_THEN_GOAWAY,
        "{:?}",
        String::from_utf8_lossy(&broken)
    );

    // ALPN http/1.1, then the HTTP/2 preface: closed, no HTTP/2 SETTINGS and no 400.
    let answer = tls_exchange(tls_addr, &certificate, b"http/1.1", preface).await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));

    // Each protocol still works where ALPN agreed on it.
    let served = tls_exchange(
        tls_addr,
        &certificate,
        b"http/1.1",
        b"GET /h1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        served.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&served)
    );
    let stream = connect(tls_addr, &connector(Some(&certificate), b"h2"))
        .await
        .expect("TLS to the gateway");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2");
    tokio::spawn(connection);
    let request = Request::get("https://localhost/h2")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("an h2 answer");
    assert_eq!(response.status(), StatusCode::OK);

    let paths: Vec<String> = origin.state.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        ["/h1", "/h2"],
        "only the requests in the agreed protocol"
    );
}
