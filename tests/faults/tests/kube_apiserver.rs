//! On the Kubernetes test bed, under steady load through the front-end: kube-apiserver
//! stopped (10 s short, 30 s long) and started again. The data plane keeps serving with its
//! last configuration, and once the API is back nothing is torn down. Its own test binary:
//! every test sharing the test bed would see the outage.

use std::time::{Duration, Instant};

use causeway_faults::cluster::HOST;
use causeway_faults::kube::{assert_nothing_torn_down, deploy, gateway_pods};
use causeway_faults::load::LoadSpec;
use causeway_faults::report::{Expect, Fault};
use causeway_faults::{steady_load, window};
use causeway_testbed::TestBed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_stopped() {
    let bed = TestBed::shared().await.expect("the test bed starts");
    let ns = bed
        .namespace("faults-apiserver")
        .await
        .expect("a namespace");
    let deployed = deploy(&ns).await;
    let before = gateway_pods(&ns).await;
    let load = steady_load(LoadSpec::new(deployed.frontend, HOST)).await;

    let fault_at = Instant::now();
    bed.stop_apiserver().await;
    tokio::time::sleep(window(Duration::from_secs(10), Duration::from_secs(30))).await;
    bed.start_apiserver()
        .await
        .expect("kube-apiserver starts again");
    // Watches resume, the operator and the kubelet catch up: give them time to tear
    // something down if they would.
    tokio::time::sleep(window(Duration::from_secs(10), Duration::from_secs(30))).await;
    let outcomes = load.stop().await;
    assert_nothing_torn_down(&before, &gateway_pods(&ns).await);

    // The API server carries no request: nothing may fail.
    Fault::new("apiserver-stopped", &outcomes, 0, fault_at, None).check(
        &outcomes,
        &Expect {
            idempotent_survive: true,
            non_idempotent_max: 0,
            recovery_max: Duration::from_secs(1),
        },
    );
}
