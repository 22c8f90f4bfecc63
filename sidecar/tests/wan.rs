//! The two tiers across an emulated WAN (network namespaces joined by `causeway-linkem`):
//! every body arrives intact through loss and jitter, and on a saturated link the classes
//! share the bytes in the proportions of the blender's weights. Needs root (CI runs as root).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use causeway_linkem::{Impairment, NetLab};
use causeway_test_support::lab::{self, Spawned, lab_slot, spawn_in};
use causeway_test_support::{
    binary,
    client::{client, get_request, send},
    origin::{self, Origin},
    pki::LinkPki,
    site::{SiteYaml, manifest},
    wait,
};
use http::StatusCode;
use http_body_util::BodyExt;

fn spawn_tier(lab: &NetLab, ns: &str, args: &[String]) -> Spawned {
    spawn_in(lab, ns, &binary::causeway_bin().display().to_string(), args)
}

/// A front-end in `front` and a back-end plus the test origins in `back`.
struct WanSite {
    _origins: Vec<Origin>,
    _backend: Spawned,
    _frontend: Spawned,
    _pki: LinkPki,
    frontend: SocketAddr,
}

fn start_site(lab: &NetLab, site: impl Fn(&[Origin]) -> SiteYaml) -> WanSite {
    let origins = lab::start_origins(lab, "back", "wan", 2);
    let manifest = manifest(&[site(&origins)]);
    let site_file = std::env::temp_dir().join(format!(
        "causeway-wan-{}-{}.yaml",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::write(&site_file, manifest).expect("site file");
    let pki = LinkPki::new();
    let back = IpAddr::V4(lab.address("back"));
    let link = SocketAddr::new(back, 4433);
    let args = pki.tier_args(
        "backend",
        link,
        "127.0.0.1:9902",
        "wan-back",
        &[],
        &site_file,
    );
    let backend = spawn_tier(lab, "back", &args);
    let front = IpAddr::V4(lab.address("front"));
    let frontend = SocketAddr::new(front, 8080);
    let to_backend = ["--backend".to_owned(), link.to_string()];
    let args = pki.tier_args(
        "frontend",
        frontend,
        "127.0.0.1:9901",
        "wan-front",
        &to_backend,
        &site_file,
    );
    let frontend_tier = spawn_tier(lab, "front", &args);
    WanSite {
        _origins: origins,
        _backend: backend,
        _frontend: frontend_tier,
        _pki: pki,
        frontend,
    }
}

/// Runs `test` on a runtime inside the `front` namespace.
fn in_front<F: Future<Output = ()> + Send>(lab: &NetLab, test: F) {
    lab::run_in(lab, "front", test);
}

async fn wait_serving(frontend: SocketAddr, host: &str) {
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(answer) = send(&client, get_request(frontend, host, "/")).await
            && answer.status == StatusCode::OK
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the two tiers never served across the lab"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn bodies_arrive_intact_over_a_lossy_jittery_link() {
    let Some(_slot) = lab_slot() else { return };
    let wan = Impairment::delay(Duration::from_millis(20))
        .with_jitter(Duration::from_millis(5))
        .with_loss(0.02);
    let lab = NetLab::builder()
        .namespace("front")
        .namespace("back")
        .link("front", "back", wan)
        .seed(11)
        .build()
        .expect("lab");
    let site = start_site(&lab, |origins| {
        SiteYaml::new("wan", "wan.test").origins(origins, "")
    });
    let frontend = site.frontend;
    in_front(&lab, async move {
        wait_serving(frontend, "wan.test").await;
        let client = client();
        let mut downloads = Vec::new();
        for n in 0..16u64 {
            let client = client.clone();
            let size = 500_000 + n * 37_001;
            let path = if n % 2 == 0 {
                format!("/pattern/json?bytes={size}")
            } else {
                format!("/pattern?bytes={size}")
            };
            downloads.push(tokio::spawn(async move {
                let answer = send(&client, get_request(frontend, "wan.test", &path))
                    .await
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                assert_eq!(answer.status, StatusCode::OK, "{path}");
                assert!(answer.body == origin::pattern(size), "{path}: body differs");
            }));
        }
        for download in downloads {
            download.await.expect("download intact");
        }
    });
    let stats = lab.stats("back", "front").expect("stats");
    assert!(
        stats.lost > 0,
        "the link dropped nothing: the test proved nothing ({stats:?})"
    );
}

#[test]
fn class_shares_follow_the_weights_on_a_saturated_link() {
    let Some(_slot) = lab_slot() else { return };
    let wan = Impairment::delay(Duration::from_millis(10))
        .with_rate(20_000_000)
        .with_queue_limit(100_000);
    let lab = NetLab::builder()
        .namespace("front")
        .namespace("back")
        .link("front", "back", wan)
        .seed(12)
        .build()
        .expect("lab");
    let rules: String = (0..5)
        .map(|class| format!(
                "      - {{ class: {class}, match: {{ headers: [{{ name: x-class, value: \"{class}\" }}] }} }}\n"
            ))
        .collect();
    let site = start_site(&lab, |origins| {
        SiteYaml::new("shares", "shares.test")
            .origins(origins, "")
            .spec(&format!(
                "priority:\n    defaultClass: 2\n    rules:\n{rules}"
            ))
    });
    let frontend = site.frontend;
    in_front(&lab, async move {
        wait_serving(frontend, "shares.test").await;
        let client = client();
        let received: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
        for class in 0..5usize {
            let client = client.clone();
            let received = received.clone();
            tokio::spawn(async move {
                let mut request = get_request(
                    frontend,
                    "shares.test",
                    "/download?bytes=400000000&length=1",
                );
                request.headers_mut().insert(
                    "x-class",
                    http::HeaderValue::from_str(&class.to_string()).expect("header"),
                );
                let response = client.request(request).await.expect("download starts");
                let mut body = response.into_body();
                while let Some(Ok(frame)) = body.frame().await {
                    if let Some(data) = frame.data_ref() {
                        received[class].fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
            });
        }
        // Every download is flowing; then 3 s more for each to reach its stride (the link's
        // rate and the blender's shares settle over time, which has no event of its own: a
        // lower bound), then measure a window in which all five are backlogged.
        assert!(
            wait::eventually(Duration::from_secs(30), || async {
                received.iter().all(|r| r.load(Ordering::Relaxed) > 0)
            })
            .await,
            "every class's download is flowing: {received:?}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before: Vec<u64> = received.iter().map(|r| r.load(Ordering::Relaxed)).collect();
        tokio::time::sleep(Duration::from_secs(6)).await;
        let after: Vec<u64> = received.iter().map(|r| r.load(Ordering::Relaxed)).collect();
        let window: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let total: u64 = window.iter().sum();
        let weights = [16.0, 8.0, 4.0, 2.0, 1.0];
        let mut worst = 0.0f64;
        for class in 0..5 {
            let share = window[class] as f64 / total as f64;
            let want = weights[class] / 31.0;
            worst = worst.max((share - want).abs() / want);
        }
        eprintln!(
            "bytes per class in the window {window:?} ({:.1} Mbit/s); worst relative share error {worst:.3}",
            total as f64 * 8.0 / 6.0 / 1e6
        );
        for admin in ["127.0.0.1:9901"] {
            let metrics = client
                .request(get_request(
                    admin.parse().expect("addr"),
                    "admin",
                    "/metrics",
                ))
                .await
                .expect("front metrics");
            let text = metrics
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            for line in String::from_utf8_lossy(&text).lines().filter(|l| {
                (l.contains("link_") || l.contains("requests_total")) && !l.starts_with('#')
            }) {
                eprintln!("{line}");
            }
        }
        assert!(
            total as f64 * 8.0 / 6.0 > 10e6,
            "the link was not saturated: {window:?}"
        );
        assert!(
            worst <= 0.10,
            "class shares off their weights: {window:?} (worst {worst:.3})"
        );
    });
}
