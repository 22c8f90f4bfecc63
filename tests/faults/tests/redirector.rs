//! The DNS redirector killed and started again on the same address under a steady query
//! load: answers resume within a bound, and are the same as before.

#[path = "../../../redirector/tests/support/mod.rs"]
mod dns_support;

use std::time::{Duration, Instant};

use causeway_faults::dns::DnsLoad;
use causeway_faults::report::{Expect, Fault};
use causeway_faults::window;
use dns_support::{Redirector, Scratch, have};

const DIRECTORY: &str = r#"
zones:
  - name: example.com
    nameservers:
      - { name: ns1.example.com, addresses: [127.0.0.53] }
sites:
  - name: shop
    hostnames: [shop.example.com]
frontends:
  - name: edge-eu
    region: eu
    sites: [shop]
    endpoints:
      - { address: 192.0.2.1 }
      - { address: 192.0.2.2 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirector_restarted() {
    if !have("dig", "bind9-dnsutils") {
        return;
    }
    causeway_testbed::testbed::workspace_binary(
        "causeway-redirector",
        "causeway-redirector",
        "CAUSEWAY_REDIRECTOR_BIN",
    )
    .await
    .unwrap_or_else(|e| panic!("the redirector binary: {e}"));
    let scratch = Scratch::new("faults");
    let directory = scratch.path("directory.yaml");
    std::fs::write(&directory, DIRECTORY).expect("write the directory");
    let mut redirector = Redirector::start(&directory, &[]);
    let before = redirector.dig(&["shop.example.com", "A"]).addresses();
    assert_eq!(before.len(), 2, "both front-ends answered: {before:?}");

    let load = DnsLoad::start(
        redirector.dns,
        "shop.example.com",
        4,
        Duration::from_secs(1),
    );
    assert!(
        load.wait_answered_since(load.started, Duration::from_secs(10))
            .await
            .is_some(),
        "the redirector never answered the load"
    );
    tokio::time::sleep(window(Duration::from_secs(2), Duration::from_secs(20))).await;
    let fault_at = Instant::now();
    tokio::task::block_in_place(|| redirector.restart());
    let restored = load
        .wait_answered_since(Instant::now(), Duration::from_secs(10))
        .await;
    assert!(
        restored.is_some(),
        "answers did not resume after the restart"
    );
    tokio::time::sleep(window(Duration::from_secs(2), Duration::from_secs(20))).await;
    let outcomes = load.stop().await;
    let mut after = redirector.dig(&["shop.example.com", "A"]).addresses();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(before, after, "the restarted redirector answers as before");

    // One redirector: queries during its restart go unanswered (a resolver asks another name
    // server or again); what is bounded is how long that lasts.
    Fault::new("redirector-restarted", &outcomes, 0, fault_at, restored).check(
        &outcomes,
        &Expect {
            idempotent_survive: false,
            non_idempotent_max: 0,
            recovery_max: Duration::from_secs(5),
        },
    );
}
