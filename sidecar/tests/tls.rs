//! TLS on the client side of the real gateway: ALPN picks HTTP/2 or HTTP/1.1 on one
//! listener, both reach the origin, and a client that does not trust the certificate gets
//! no answer.

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
