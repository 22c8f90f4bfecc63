//! A TMP link carrying N channels shares a bottleneck with TCP without starving either side:
//! on an emulated 50 Mbit/s, 50 ms RTT link (`causeway-linkem`, drop-tail queue of one
//! bandwidth-delay product), N long downloads through the two tiers run against 4 `iperf3`
//! TCP flows (reno when the kernel has it) going the same way, and the link's share of the
//! bytes over N / (N + 4) stays within 0.4–2.5×: the link neither starves against TCP nor
//! starves it. This is a behavioural check, not a measurement: on two busy cores a debug
//! build's share moves with CPU load (0.76–1.51× seen at N = 4), so a tight ratio would fail
//! for reasons that are not the controller's. The precise goal (0.8–1.25×, release build,
//! quiet cores, against Reno, CUBIC and BBR) is the benchmark, `bench/run tmp-fairness`; the
//! controller's share arithmetic is unit-tested on a simulated bottleneck in
//! `link/src/congestion/model.rs`. Needs root, /dev/net/tun and iperf3 (scripts/test.sh
//! installs it); skipped otherwise, except in CI.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use causeway_linkem::{Impairment, NetLab};
use causeway_test_support::lab::{self, Spawned, spawn_in};
use causeway_test_support::{
    binary,
    client::{client, get_request, send},
    origin::Origin,
    pki::LinkPki,
    site::{SiteYaml, manifest},
};
use http::StatusCode;
use http_body_util::BodyExt;

const RATE_BPS: u64 = 50_000_000;
const ONE_WAY: Duration = Duration::from_millis(25);
const TCP_FLOWS: usize = 4;
/// How long the downloads and iperf3 run together.
const RUN: Duration = Duration::from_secs(40);
/// Shares are measured from here (slow start and the link's growth are over)…
const WINDOW_START: Duration = Duration::from_secs(12);
/// …to here (iperf3's last interval is still full).
const WINDOW_END: Duration = Duration::from_secs(39);
const IPERF_PORT: u16 = 5201;
const HOST: &str = "fair.test";
/// Below this fraction of N flows' share the link starves against TCP…
const STARVED: f64 = 0.4;
/// …and above this multiple it starves the TCP flows.
const STARVING: f64 = 2.5;

/// One lab at a time: the shares are only honest when nothing else competes for the cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn lab_slot() -> Option<MutexGuard<'static, ()>> {
    let iperf = std::process::Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !(lab::can_build_labs() && iperf) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the fairness test as root with /dev/net/tun and iperf3"
        );
        eprintln!("skipped: needs root, /dev/net/tun and iperf3");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|p| p.into_inner()))
}

/// reno when the kernel offers it (the classic AIMD the link's controller scales), else cubic.
fn tcp_congestion_control() -> &'static str {
    let available = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .unwrap_or_default();
    if available.split_whitespace().any(|c| c == "reno") {
        "reno"
    } else {
        "cubic"
    }
}

/// The two tiers across the lab: back-end and origin in `back`, front-end in `front`.
struct Tiers {
    _origins: Vec<Origin>,
    _backend: Spawned,
    _frontend: Spawned,
    _pki: LinkPki,
    frontend: SocketAddr,
}

fn start_tiers(lab: &NetLab) -> Tiers {
    let origins = lab::start_origins(lab, "back", "fair", 1);
    let site = manifest(&[SiteYaml::new("fair", HOST).origins(&origins, "")]);
    let site_file = std::env::temp_dir().join(format!(
        "causeway-fair-{}-{}.yaml",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::write(&site_file, site).expect("site file");
    let pki = LinkPki::new();
    let link = SocketAddr::new(IpAddr::V4(lab.address("back")), 4433);
    let frontend = SocketAddr::new(IpAddr::V4(lab.address("front")), 8080);
    let causeway = binary::causeway_bin();
    let causeway = causeway.to_str().expect("a UTF-8 binary path");
    let mut args: Vec<String> = [
        "backend",
        "--link-listen",
        &link.to_string(),
        "--admin-listen",
        "127.0.0.1:9902",
        "--name",
        "fair-back",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(pki.args("backend"));
    args.push(site_file.display().to_string());
    let backend = spawn_in(lab, "back", causeway, &args);
    let mut args: Vec<String> = [
        "frontend",
        "--listen",
        &frontend.to_string(),
        "--admin-listen",
        "127.0.0.1:9901",
        "--name",
        "fair-front",
        "--backend",
        &link.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(pki.args("frontend"));
    args.push(site_file.display().to_string());
    let frontend_tier = spawn_in(lab, "front", causeway, &args);
    Tiers {
        _origins: origins,
        _backend: backend,
        _frontend: frontend_tier,
        _pki: pki,
        frontend,
    }
}

async fn wait_serving(frontend: SocketAddr) {
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(answer) = send(&client, get_request(frontend, HOST, "/")).await
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

/// Bytes iperf3's receiver got in its whole 1 s intervals inside `[from, to)` seconds of its
/// test, and the seconds those intervals cover, from its JSON report.
fn iperf_bytes_between(report: &serde_json::Value, from: f64, to: f64) -> (f64, f64) {
    let mut bytes = 0.0;
    let mut seconds = 0.0;
    for interval in report["intervals"].as_array().into_iter().flatten() {
        let start = interval["sum"]["start"].as_f64().unwrap_or(-1.0);
        let end = interval["sum"]["end"].as_f64().unwrap_or(-1.0);
        if start >= from - 0.05 && end <= to + 0.05 {
            bytes += interval["sum"]["bytes"].as_f64().unwrap_or(0.0);
            seconds += end - start;
        }
    }
    (bytes, seconds)
}

/// What one run measured.
#[derive(Debug)]
struct Shares {
    tmp_mbit: f64,
    tcp_mbit: f64,
    ratio: f64,
}

/// N downloads through the link and 4 TCP flows over the same bottleneck; the link's share
/// of the bytes over the window divided by N / (N + 4).
fn measure(channels: usize) -> Option<Shares> {
    let _slot = lab_slot()?;
    let bdp = (RATE_BPS / 8) as f64 * ONE_WAY.as_secs_f64() * 2.0;
    let wan = Impairment::delay(ONE_WAY)
        .with_rate(RATE_BPS)
        .with_queue_limit(bdp as u64);
    let lab = NetLab::builder()
        .namespace("front")
        .namespace("back")
        .link("front", "back", wan)
        .seed(21)
        .build()
        .expect("lab");
    let tiers = start_tiers(&lab);
    let frontend = tiers.frontend;
    let front_ip = lab.address("front").to_string();
    let back_ip = lab.address("back").to_string();

    let report_path = std::env::temp_dir().join(format!(
        "causeway-fair-{}-{}-iperf3.json",
        std::process::id(),
        fastrand::u32(..)
    ));
    let server_args: Vec<String> = vec![
        "-s".into(),
        "-1".into(),
        "-B".into(),
        front_ip.clone(),
        "-p".into(),
        IPERF_PORT.to_string(),
        "-J".into(),
        "--logfile".into(),
        report_path.display().to_string(),
    ];
    let mut server = spawn_in(&lab, "front", "iperf3", &server_args);
    let cc = tcp_congestion_control();
    let client_args: Vec<String> = vec![
        "-c".into(),
        front_ip,
        "-p".into(),
        IPERF_PORT.to_string(),
        "-B".into(),
        back_ip,
        "-P".into(),
        TCP_FLOWS.to_string(),
        "-C".into(),
        cc.into(),
        "-t".into(),
        RUN.as_secs().to_string(),
    ];

    let received = Arc::new(AtomicU64::new(0));
    let downloads = received.clone();
    let (marks, mut sender) = {
        let lab_ref = &lab;
        lab.in_namespace("front", move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("client runtime")
                .block_on(async move {
                    wait_serving(frontend).await;
                    let client = client();
                    for _ in 0..channels {
                        let client = client.clone();
                        let received = downloads.clone();
                        tokio::spawn(async move {
                            let path = "/download?bytes=100000000000&length=1";
                            let Ok(response) =
                                client.request(get_request(frontend, HOST, path)).await
                            else {
                                return;
                            };
                            let mut body = response.into_body();
                            while let Some(Ok(frame)) = body.frame().await {
                                if let Some(data) = frame.data_ref() {
                                    received.fetch_add(data.len() as u64, Ordering::Relaxed);
                                }
                            }
                        });
                    }
                    // The TCP flows start with the downloads; both run RUN long.
                    let started = Instant::now();
                    let sender = spawn_in(lab_ref, "back", "iperf3", &client_args);
                    // Bytes received at the end of every second, for the window and the log.
                    let mut marks = vec![0u64];
                    for second in 1..=WINDOW_END.as_secs() {
                        tokio::time::sleep_until((started + Duration::from_secs(second)).into())
                            .await;
                        marks.push(downloads.load(Ordering::Relaxed));
                    }
                    (marks, sender)
                })
        })
        .expect("enter front")
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while sender.child.try_wait().expect("poll iperf3").is_none() {
        assert!(Instant::now() < deadline, "iperf3 did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    while server.child.try_wait().expect("poll iperf3 -s").is_none() {
        assert!(Instant::now() < deadline, "iperf3 -s did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("iperf3 report"))
            .expect("iperf3 JSON");
    let _ = std::fs::remove_file(&report_path);
    drop(tiers);
    let window = (WINDOW_END - WINDOW_START).as_secs_f64();
    let tmp_bytes = marks[WINDOW_END.as_secs() as usize] - marks[WINDOW_START.as_secs() as usize];
    let tmp_per_second: Vec<u64> = marks
        .windows(2)
        .map(|w| (w[1] - w[0]) * 8 / 1_000_000)
        .collect();
    let tcp_per_second: Vec<u64> = report["intervals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| (i["sum"]["bytes"].as_f64().unwrap_or(0.0) * 8.0 / 1e6) as u64)
        .collect();
    eprintln!("Mbit/s per second — link: {tmp_per_second:?}; TCP: {tcp_per_second:?}");
    let (tcp_bytes, tcp_seconds) = iperf_bytes_between(
        &report,
        WINDOW_START.as_secs_f64(),
        WINDOW_END.as_secs_f64(),
    );
    assert!(tcp_seconds > 5.0, "iperf3 reported too little: {report}");
    let tcp_rate = tcp_bytes / tcp_seconds;
    let tmp_rate = tmp_bytes as f64 / window;
    let measured = tmp_rate / (tmp_rate + tcp_rate);
    let expected = channels as f64 / (channels + TCP_FLOWS) as f64;
    let shares = Shares {
        tmp_mbit: tmp_rate * 8.0 / 1e6,
        tcp_mbit: tcp_rate * 8.0 / 1e6,
        ratio: measured / expected,
    };
    eprintln!(
        "N={channels} vs {TCP_FLOWS}×{cc}: link {:.1} Mbit/s, TCP {:.1} Mbit/s, share {measured:.3} \
         (expected {expected:.3}), ratio {:.3}",
        shares.tmp_mbit, shares.tcp_mbit, shares.ratio
    );
    Some(shares)
}

fn assert_fair(channels: usize) {
    let Some(shares) = measure(channels) else {
        return;
    };
    assert!(
        shares.tmp_mbit + shares.tcp_mbit > 0.8 * RATE_BPS as f64 / 1e6,
        "the bottleneck was not saturated: {shares:?}"
    );
    assert!(
        shares.ratio >= STARVED,
        "a link with {channels} channels starved: {:.2}× the share of {channels} TCP flows: \
         {shares:?}",
        shares.ratio
    );
    assert!(
        shares.ratio <= STARVING,
        "a link with {channels} channels starved the TCP flows: {:.2}× the share of \
         {channels} TCP flows: {shares:?}",
        shares.ratio
    );
}

#[test]
fn four_channels_take_about_four_flows_share() {
    assert_fair(4);
}

/// Slower (about 45 s each); run with `cargo test -p causeway-gateway --test fairness -- --ignored`.
#[test]
#[ignore = "two more 45 s runs; the N = 4 case runs by default"]
fn one_and_sixteen_channels_take_their_flows_share() {
    assert_fair(1);
    assert_fair(16);
}
