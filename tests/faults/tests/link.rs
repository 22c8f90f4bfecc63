//! TMP links failing under steady GET + POST load, across network namespaces joined by
//! `causeway-linkem` (chain `back0 — front — back1`, one back-end with its own two origins in
//! each `back` namespace, the front-end and the clients in `front`): the link to `back0` cut
//! for 5 s, and the same link at 10% loss with 300 ms of jitter. Needs root (CI runs as root).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use causeway_faults::load::{Kind, LoadSpec};
use causeway_faults::report::{Expect, Fault};
use causeway_faults::{build_causeway, steady_load, wait_serving, window};
use causeway_linkem::{Impairment, NetLab};
use causeway_test_support::lab::{self, Spawned, lab_slot, spawn_in};
use causeway_test_support::{
    binary::causeway_bin,
    origin::Origin,
    pki::LinkPki,
    scratch::write_scratch,
    site::{SiteYaml, manifest},
};

const HOST: &str = "link.test";
const BACKS: [&str; 2] = ["back0", "back1"];

/// The lab's base link: a short WAN hop.
fn wan() -> Impairment {
    Impairment::delay(Duration::from_millis(10))
}

fn lab(seed: u64) -> NetLab {
    NetLab::builder()
        .namespace(BACKS[0])
        .namespace("front")
        .namespace(BACKS[1])
        .link("front", BACKS[0], wan())
        .link("front", BACKS[1], wan())
        .seed(seed)
        .build()
        .expect("lab")
}

/// Builds the `causeway` binary, outside the lab (a build needs no namespace).
fn build() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build runtime")
        .block_on(build_causeway());
}

/// Both directions of the link between `front` and `back`.
fn impair(lab: &NetLab, back: &str, impairment: Impairment) {
    lab.set_impairment("front", back, impairment)
        .expect("impair front → back");
    lab.set_impairment(back, "front", impairment)
        .expect("impair back → front");
}

struct LinkSite {
    _origins: Vec<Origin>,
    _tiers: Vec<Spawned>,
    _pki: LinkPki,
    frontend: SocketAddr,
}

fn start_site(lab: &NetLab) -> LinkSite {
    let pki = LinkPki::new();
    let bin = causeway_bin().display().to_string();
    let mut origins = Vec::new();
    let mut tiers = Vec::new();
    let mut links = Vec::new();
    let mut site_file = None;
    for (i, ns) in BACKS.iter().enumerate() {
        // Origins named after their back-end (b0o0, b0o1, b1o0, ...): each answer says which
        // link carried it.
        let local = lab::start_origins(lab, ns, &format!("b{i}o"), 2);
        for origin in &local {
            origin.state.set_delay(Duration::from_millis(20));
        }
        let file = write_scratch(
            "site.yaml",
            &manifest(&[SiteYaml::new("link", HOST).origins(&local, "")]),
        );
        let link = SocketAddr::new(IpAddr::V4(lab.address(ns)), 4433);
        let qos = ["--qos-interval".to_owned(), "200ms".to_owned()];
        let name = format!("be-{i}");
        let args = pki.tier_args("backend", link, "127.0.0.1:9902", &name, &qos, &file);
        tiers.push(spawn_in(lab, ns, &bin, &args));
        links.push(link);
        site_file.get_or_insert(file);
        origins.extend(local);
    }
    let frontend = SocketAddr::new(IpAddr::V4(lab.address("front")), 8080);
    let mut extra: Vec<String> = ["--qos-interval", "200ms", "--link-idle-timeout", "3s"]
        .map(str::to_owned)
        .to_vec();
    for link in &links {
        extra.extend(["--backend".to_owned(), link.to_string()]);
    }
    let site_file = site_file.expect("a site file");
    let args = pki.tier_args(
        "frontend",
        frontend,
        "127.0.0.1:9901",
        "fe-0",
        &extra,
        &site_file,
    );
    tiers.push(spawn_in(lab, "front", &bin, &args));
    LinkSite {
        _origins: origins,
        _tiers: tiers,
        _pki: pki,
        frontend,
    }
}

/// Waits until both back-ends serve through the front-end, then starts the load.
async fn load_on_both_links(frontend: SocketAddr) -> causeway_faults::load::Load {
    wait_serving(frontend, HOST, Duration::from_secs(20)).await;
    let load = steady_load(LoadSpec::new(frontend, HOST)).await;
    let since = load.started;
    for i in 0..BACKS.len() {
        assert!(
            load.wait_served_by(&format!("b{i}o"), since, Duration::from_secs(20))
                .await
                .is_some(),
            "back-end {i} never served through its link"
        );
    }
    load
}

#[test]
fn link_cut_for_five_seconds() {
    let Some(_slot) = lab_slot() else { return };
    build();
    let lab = lab(31);
    let site = start_site(&lab);
    let frontend = site.frontend;
    let (fault, outcomes) = lab::run_in(&lab, "front", async {
        let load = load_on_both_links(frontend).await;
        let in_flight = load.in_flight(Kind::NonIdempotent) + load.in_flight(Kind::Idempotent);
        let fault_at = Instant::now();
        impair(&lab, BACKS[0], Impairment::NONE.with_loss(1.0));
        tokio::time::sleep(Duration::from_secs(5)).await;
        impair(&lab, BACKS[0], wan());
        let repaired = Instant::now();
        let restored = load
            .wait_served_by("b0o", repaired, Duration::from_secs(30))
            .await;
        assert!(
            restored.is_some(),
            "the cut link never carried traffic again"
        );
        tokio::time::sleep(window(Duration::from_secs(2), Duration::from_secs(20))).await;
        let outcomes = load.stop().await;
        // The cut is silent: until the front-end sees the link stall (no ACK for
        // `stall_after` its RTT: 250 ms here, plus a busy host's scheduling), what it sends
        // there is lost with the link. The load cannot tell which link a request took, so
        // every POST open at the cut or sent in that window is the bound — far below the
        // POSTs of the 3 s the link's idle timeout would take.
        let unseen = Duration::from_millis(600);
        let posts = outcomes.open_or_sent_within(Kind::NonIdempotent, fault_at, unseen);
        let fault = Fault::new("link-cut-5s", &outcomes, in_flight, fault_at, restored);
        ((fault, posts), outcomes)
    });
    let (fault, posts) = fault;
    fault.check(
        &outcomes,
        &Expect {
            idempotent_survive: true,
            non_idempotent_max: posts,
            recovery_max: window(Duration::from_secs(20), Duration::from_secs(40)),
        },
    );
}

#[test]
fn link_at_ten_percent_loss_and_300ms_jitter() {
    let Some(_slot) = lab_slot() else { return };
    build();
    let lab = lab(32);
    let site = start_site(&lab);
    let frontend = site.frontend;
    let (fault, outcomes) = lab::run_in(&lab, "front", async {
        let load = load_on_both_links(frontend).await;
        let in_flight = load.in_flight(Kind::NonIdempotent) + load.in_flight(Kind::Idempotent);
        let fault_at = Instant::now();
        let bad = wan()
            .with_jitter(Duration::from_millis(300))
            .with_loss(0.10);
        impair(&lab, BACKS[0], bad);
        tokio::time::sleep(window(Duration::from_secs(8), Duration::from_secs(90))).await;
        impair(&lab, BACKS[0], wan());
        tokio::time::sleep(window(Duration::from_secs(2), Duration::from_secs(20))).await;
        let outcomes = load.stop().await;
        let fault = Fault::new(
            "link-loss10-jitter300",
            &outcomes,
            in_flight,
            fault_at,
            None,
        );
        (fault, outcomes)
    });
    let lost = lab.stats("front", BACKS[0]).expect("stats").lost;
    assert!(
        lost > 0,
        "the link dropped nothing: the case proved nothing"
    );
    // Nothing broke: QUIC carries every channel through loss and jitter, so nothing may fail.
    fault.check(
        &outcomes,
        &Expect {
            idempotent_survive: true,
            non_idempotent_max: 0,
            recovery_max: window(Duration::from_secs(15), Duration::from_secs(100)),
        },
    );
}
