//! Links over loopback: channels, QoS at both ends, mutual TLS, hostile frames, reconnection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use causeway_link::frame::ResponseHead;
use causeway_link::{
    Channel, ChannelHandler, ChannelHead, ChannelKind, Dialer, Link, LinkCredentials, LinkError,
    LinkSettings, Listener, Load, LoadProbe, RequestHead, Role,
};
use causeway_pki::LinkAuthority;
use http::{HeaderMap, Method, StatusCode};

/// Answers every HTTP channel with 200 and the request body, echoed.
#[derive(Clone)]
struct Echo;

impl ChannelHandler for Echo {
    fn serve(
        &self,
        _link: Arc<Link>,
        _head: ChannelHead,
        channel: Channel,
    ) -> impl Future<Output = ()> + Send + 'static {
        echo(channel)
    }
}

async fn echo(mut channel: Channel) {
    let head = ResponseHead {
        status: StatusCode::OK,
        zstd: false,
        headers: HeaderMap::new(),
    };
    if channel.sender.send_frame(head.encode()).await.is_err() {
        return;
    }
    while let Ok(Some(chunk)) = channel.receiver.read_chunk().await {
        if channel.sender.send(chunk).await.is_err() {
            return;
        }
    }
    let _ = channel.sender.finish();
}

fn settings(name: &str) -> LinkSettings {
    LinkSettings {
        name: name.to_owned(),
        qos_interval: Duration::from_millis(200),
        reconnect_initial: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(200),
        ..LinkSettings::default()
    }
}

fn load(in_flight: u64) -> LoadProbe {
    Arc::new(move || Load {
        in_flight,
        queued: 0,
    })
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

struct Pair {
    listener: Arc<Listener>,
    address: SocketAddr,
    dialer: Dialer,
}

fn pair(authority: &LinkAuthority) -> Pair {
    let backend =
        LinkCredentials::issued_by(authority, &["causeway-backend"]).expect("backend credentials");
    let frontend = LinkCredentials::issued_by(authority, &["fe-1"]).expect("frontend credentials");
    let listener =
        Arc::new(Listener::bind(loopback(), &backend, settings("be-1"), load(7)).expect("bind"));
    let address = listener.local_addr().expect("address");
    let serving = listener.clone();
    tokio::spawn(async move { serving.serve(Echo).await });
    let dialer = Dialer::new(loopback(), &frontend, settings("fe-1"), load(3)).expect("dialer");
    Pair {
        listener,
        address,
        dialer,
    }
}

fn get(class: u8) -> ChannelHead {
    ChannelHead {
        class,
        request_type: 1,
        accepts_zstd: false,
        kind: ChannelKind::Http(RequestHead {
            method: Method::POST,
            target: "/echo".to_owned(),
            headers: HeaderMap::new(),
            empty_body: false,
        }),
    }
}

async fn exchange(link: &Link, body: &[u8]) -> Result<(StatusCode, Vec<u8>), LinkError> {
    let mut channel = link.open(&get(2)).await?;
    channel.sender.send(Bytes::copy_from_slice(body)).await?;
    channel.sender.finish()?;
    let head = ResponseHead::decode(&channel.receiver.read_frame().await?)?;
    let mut received = Vec::new();
    while let Some(chunk) = channel.receiver.read_chunk().await? {
        received.extend_from_slice(&chunk);
    }
    Ok((head.status, received))
}

#[tokio::test]
async fn channels_carry_exchanges_in_parallel() {
    let authority = LinkAuthority::generate("test CA").expect("CA");
    let pair = pair(&authority);
    let link = pair.dialer.connect(pair.address).await.expect("link");
    assert_eq!(link.peer_name(), "be-1");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let link = link.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move { exchange(&link, &body).await }));
    }
    for task in tasks {
        let (status, received) = task.await.expect("joined").expect("exchange");
        assert_eq!(status, StatusCode::OK);
        assert!(received == body, "echo differs");
    }
    drop(pair.listener);
}

#[tokio::test]
async fn both_ends_know_the_whole_link() {
    let authority = LinkAuthority::generate("test CA").expect("CA");
    let pair = pair(&authority);
    let link = pair.dialer.connect(pair.address).await.expect("link");
    // Three reporting intervals: each end has sent reports and received the peer's third
    // (reports count from 1).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let backend_link = loop {
        let accepted = pair.listener.registry().links().pop();
        if let Some(backend_link) = accepted
            && link.qos().backend.is_some_and(|report| report.seq >= 3)
            && backend_link
                .qos()
                .frontend
                .is_some_and(|report| report.seq >= 3)
        {
            break backend_link;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "three reports each way within 20 s: {:?}",
            link.qos()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let front_view = link.qos();
    let back_view = backend_link.qos();
    let front_own = front_view.frontend.clone().expect("front-end's own report");
    let front_seen_by_back = back_view
        .frontend
        .clone()
        .expect("back-end saw the front-end");
    let back_own = back_view.backend.clone().expect("back-end's own report");
    let back_seen_by_front = front_view
        .backend
        .clone()
        .expect("front-end saw the back-end");
    // Each end holds the other's latest report or the one before (one interval apart).
    assert!(
        front_own.seq - front_seen_by_back.seq <= 1,
        "{front_own:?} vs {front_seen_by_back:?}"
    );
    assert!(
        back_own.seq - back_seen_by_front.seq <= 1,
        "{back_own:?} vs {back_seen_by_front:?}"
    );
    assert_eq!(
        back_seen_by_front.in_flight, 7,
        "the back-end's load travels"
    );
    assert_eq!(
        front_seen_by_back.in_flight, 3,
        "the front-end's load travels"
    );
    assert_eq!(front_seen_by_back.role, Role::Frontend);
    assert!(front_own.rtt_ms > 0.0 && front_own.cwnd_bytes > 0);
    if front_own.seq == front_seen_by_back.seq {
        assert_eq!(front_own, front_seen_by_back);
    }
}

#[tokio::test]
async fn a_peer_from_another_ca_is_refused() {
    let authority = LinkAuthority::generate("test CA").expect("CA");
    let pair = pair(&authority);
    let stranger = LinkAuthority::generate("stranger CA").expect("CA");
    // The stranger trusts the real CA (so it would accept the back-end) but its own
    // certificate is signed by another CA: the back-end must refuse it.
    let pem = stranger.issue_pem(&["fe-evil"]).expect("issued");
    let dir = std::env::temp_dir().join(format!("causeway-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("ca.pem"), authority.ca_pem()).expect("write");
    std::fs::write(dir.join("cert.pem"), &pem.cert).expect("write");
    std::fs::write(dir.join("key.pem"), &pem.key).expect("write");
    let credentials = LinkCredentials::from_pem_files(
        &dir.join("ca.pem"),
        &dir.join("cert.pem"),
        &dir.join("key.pem"),
    )
    .expect("credentials");
    let dialer =
        Dialer::new(loopback(), &credentials, settings("fe-evil"), load(0)).expect("dialer");
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        let link = dialer.connect(pair.address).await?;
        // TLS 1.3 clients learn of a refused certificate only after the handshake: the
        // first exchange must fail.
        exchange(&link, b"hello").await
    })
    .await
    .expect("no hang");
    assert!(refused.is_err(), "a foreign certificate got a link");
    assert!(pair.listener.registry().links().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn hostile_heads_cost_one_channel_not_the_link() {
    let authority = LinkAuthority::generate("test CA").expect("CA");
    let pair = pair(&authority);
    let link = pair.dialer.connect(pair.address).await.expect("link");
    let garbage: [&[u8]; 4] = [
        b"\x00\x00\x00\x03\x09\x01\x00",         // wrong version
        b"\xff\xff\xff\xff",                     // absurd length
        b"\x00\x00\x00\x05\x01\x01\x07\x00\x00", // class 7
        b"\x00\x00\x00\x02\x01",                 // truncated
    ];
    for bytes in garbage {
        let mut channel = link.open_unframed().await.expect("channel");
        channel
            .sender
            .send_frame(Bytes::from_static(bytes))
            .await
            .ok();
        let _ = channel.sender.finish();
        let answer = tokio::time::timeout(Duration::from_secs(5), channel.receiver.read_frame())
            .await
            .expect("the back-end answers promptly");
        assert!(answer.is_err(), "a hostile head got an answer");
    }
    let (status, body) = exchange(&link, b"still here").await.expect("link survives");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"still here");
}

#[tokio::test]
async fn front_ends_redial_a_restarted_back_end() {
    let authority = LinkAuthority::generate("test CA").expect("CA");
    let pair = pair(&authority);
    let handle = pair.dialer.spawn(pair.address);
    let first = handle
        .wait_up(Duration::from_secs(5))
        .await
        .expect("link up");
    exchange(&first, b"one").await.expect("first exchange");
    // The back-end goes away and comes back on the same port.
    pair.listener.close();
    drop(pair.listener);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let backend =
        LinkCredentials::issued_by(&authority, &["causeway-backend"]).expect("credentials");
    // The old endpoint lets go of its socket once its connections have drained.
    let rebind_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let listener = loop {
        match Listener::bind(pair.address, &backend, settings("be-2"), load(0)) {
            Ok(listener) => break Arc::new(listener),
            Err(error) if tokio::time::Instant::now() < rebind_deadline => {
                eprintln!("rebind: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("rebind: {error}"),
        }
    };
    let serving = listener.clone();
    tokio::spawn(async move { serving.serve(Echo).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(link) = handle.current()
            && link.peer_name() == "be-2"
        {
            let (status, _) = exchange(&link, b"two")
                .await
                .expect("exchange after restart");
            assert_eq!(status, StatusCode::OK);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
