//! The admin server on a loopback socket: it answers HTTP/1.1, and once shutdown is asked
//! for it stops accepting while a request already in progress still gets its answer.

use std::sync::Arc;
use std::time::Duration;

use causeway_admin::{Admin, reply};
use http::StatusCode;
use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn exchange(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request written");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .expect("answer read");
    answer
}

#[tokio::test]
async fn serves_then_drains_on_shutdown() {
    let listener = causeway_admin::bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("binds");
    let address = listener.local_addr().expect("bound address");
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (entered, entering) = tokio::sync::oneshot::channel::<()>();
    let slot = Arc::new(tokio::sync::Mutex::new(Some((entered, released))));
    let admin = Admin::new(Registry::new())
        .drain(Duration::from_secs(30))
        .route("/slow", move |_request| {
            let slot = Arc::clone(&slot);
            async move {
                if let Some((entered, released)) = slot.lock().await.take() {
                    let _ = entered.send(());
                    let _ = released.await;
                }
                reply(StatusCode::OK, "text/plain", "done\n")
            }
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Arc::new(admin).serve(listener, async move {
        let _ = stopped.await;
    }));

    let mut health = TcpStream::connect(address).await.expect("connects");
    let answer = exchange(&mut health, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");

    // A request in progress when shutdown comes still gets its answer.
    let mut slow = TcpStream::connect(address).await.expect("connects");
    let in_progress = tokio::spawn(async move { exchange(&mut slow, "/slow").await });
    entering
        .await
        .expect("the slow request reaches its handler");
    let _ = stop.send(());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(address).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting 20 s after shutdown was asked for"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = release.send(());
    let answer = in_progress.await.expect("the slow exchange ends");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("done\n"), "{answer}");
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server returns after the drain")
        .expect("the server task ends cleanly");
}
