//! On the Kubernetes test bed, under steady load through the front-end: the operator
//! SIGKILLed right after `kubectl scale frontend/edge --replicas=3`. The kubelet restarts it;
//! the scale-up completes (the new front-ends get their link certificates from the restarted
//! operator and serve), and nothing is torn down.

use std::time::Instant;

use causeway_faults::cluster::{self, HOST};
use causeway_faults::kube::{
    assert_nothing_torn_down, causeway_processes, deploy, gateway_pods, kill9,
};
use causeway_faults::load::LoadSpec;
use causeway_faults::report::{Expect, Fault};
use causeway_faults::{steady_load, window};
use causeway_testbed::TestBed;
use causeway_testbed::testbed::wait_for;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_during_scale_up() {
    let bed = TestBed::shared().await.expect("the test bed starts");
    let ns = bed.namespace("faults-operator").await.expect("a namespace");
    let deployed = deploy(&ns).await;
    let before = gateway_pods(&ns).await;
    let operator = format!("--watch-namespace={}", ns.name());
    let old = causeway_processes(&operator);
    assert_eq!(old.len(), 1, "one operator process: {old:?}");
    let load = steady_load(LoadSpec::new(deployed.frontend, HOST)).await;

    ns.kubectl(&["scale", "frontend/edge", "--replicas=3"], None)
        .await
        .expect("kubectl scale");
    let fault_at = Instant::now();
    kill9(old[0]);
    wait_for("the operator to run again", cluster::TIMEOUT, || async {
        let now = causeway_processes(&operator);
        (now.len() == 1 && now != old).then_some(())
    })
    .await
    .expect("the kubelet restarts the operator");
    let three = cluster::frontends_serving(&ns, 3, cluster::TIMEOUT).await;
    let restored = Some(Instant::now());
    assert_eq!(three.len(), 3, "the scale-up completed");
    tokio::time::sleep(window(Duration::from_secs(3), Duration::from_secs(30))).await;
    let outcomes = load.stop().await;
    assert_nothing_torn_down(&before, &gateway_pods(&ns).await);

    // The operator carries no request: nothing may fail.
    Fault::new("operator-killed-scale-up", &outcomes, 0, fault_at, restored).check(
        &outcomes,
        &Expect {
            idempotent_survive: true,
            non_idempotent_max: 0,
            recovery_max: window(Duration::from_secs(90), Duration::from_secs(120)),
        },
    );
}
