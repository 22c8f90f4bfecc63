//! `causeway top`: the live view an operator looks at first during an incident — every Site
//! and Frontend with its pods, their QoS figures, the Degraded reason and the QoS loop's last
//! decision, refreshed in the terminal from the resources' status (what the operator
//! writes), so it needs only read access to Sites and Frontends.
//!
//! [`render`] is a pure function of the resources; [`run`] lists them and redraws.

use std::fmt::Write as _;
use std::time::Duration;

use causeway_api::status::PodQos;
use causeway_api::{Frontend, Site};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

/// Why the view could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// No cluster configuration, or the API refused the list.
    #[error("reading Sites and Frontends: {0}")]
    Api(#[from] kube::Error),
    /// The kubeconfig could not be read.
    #[error("cluster configuration: {0}")]
    Config(String),
}

/// What to show and how often.
#[derive(Clone, Debug)]
pub struct TopOptions {
    /// One namespace, or every namespace.
    pub namespace: Option<String>,
    /// Time between redraws.
    pub interval: Duration,
    /// Print once and exit (for scripts and `watch`).
    pub once: bool,
}

/// Lists the resources and draws the view, once or until interrupted.
///
/// # Errors
/// When there is no cluster to talk to, or a list fails on the first draw (later failures
/// are shown in the view and retried).
pub async fn run(options: TopOptions) -> Result<(), TopError> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| TopError::Config(e.to_string()))?;
    let (sites, frontends): (Api<Site>, Api<Frontend>) = match &options.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let mut first = true;
    loop {
        let listed = async {
            let sites = sites.list(&ListParams::default()).await?;
            let frontends = frontends.list(&ListParams::default()).await?;
            Ok::<_, kube::Error>((sites.items, frontends.items))
        }
        .await;
        let text = match listed {
            Ok((sites, frontends)) => render(&sites, &frontends),
            Err(error) if first => return Err(error.into()),
            Err(error) => format!("causeway top: {error}; retrying\n"),
        };
        first = false;
        if options.once {
            print!("{text}");
            return Ok(());
        }
        // Home the cursor and clear the screen, then draw: no flicker of a scrolling log.
        print!("\x1b[H\x1b[2J{text}");
        tokio::time::sleep(options.interval).await;
    }
}

fn condition<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == kind)
}

/// The health word and reason of a resource's conditions.
fn health(conditions: &[Condition]) -> String {
    match (
        condition(conditions, "Ready"),
        condition(conditions, "Degraded"),
    ) {
        (_, Some(d)) if d.status == "True" => format!("DEGRADED {}: {}", d.reason, d.message),
        (Some(r), _) if r.status == "True" => "ok".to_owned(),
        (Some(r), _) => format!("NOT READY {}: {}", r.reason, r.message),
        (None, _) => "pending".to_owned(),
    }
}

fn pod_lines(out: &mut String, qos: &[PodQos]) {
    for pod in qos {
        let _ = write!(
            out,
            "    {:<40} {:<8} {:>8.1}/s {:>6.1} err/s  p50 {:>7.1}ms  p99 {:>7.1}ms  inflight {:>4}  queued {:>4}",
            pod.pod,
            format!("{:?}", pod.role).to_lowercase(),
            pod.request_rate,
            pod.error_rate,
            pod.p50_ms,
            pod.p99_ms,
            pod.in_flight,
            pod.queued,
        );
        if !pod.links.is_empty() {
            let _ = write!(
                out,
                "  link rtt {:.1}ms loss {:.2}%",
                pod.rtt_ms,
                pod.loss * 100.0
            );
        }
        out.push('\n');
        for origin in &pod.origins {
            let _ = writeln!(
                out,
                "      origin {:<30} {:<9} ewma {:>7.1}ms  inflight {:>4}",
                origin.name,
                if origin.healthy {
                    "healthy"
                } else {
                    "UNHEALTHY"
                },
                origin.latency_ms,
                origin.in_flight,
            );
        }
    }
}

/// The view of `sites` and `frontends`, as text.
pub fn render(sites: &[Site], frontends: &[Frontend]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "SITES ({})                                              causeway top",
        sites.len()
    );
    for site in sites {
        let status = site.status.clone().unwrap_or_default();
        let p99 = status
            .latency_p99
            .map_or("-".to_owned(), |d| format!("{}ms", d.get().as_millis()));
        let goal = site
            .spec
            .qos
            .latency_p99
            .map_or("none".to_owned(), |d| format!("{}ms", d.get().as_millis()));
        let _ = writeln!(
            out,
            "{}/{}  back-ends {}/{} ready  p99 {p99} (goal {goal})  {}",
            site.namespace().unwrap_or_default(),
            site.name_any(),
            status.ready_backends,
            status.desired_backends,
            health(&status.conditions),
        );
        if let Some(decision) = status
            .scaling
            .as_ref()
            .filter(|s| !s.last_decision.is_empty())
        {
            let _ = writeln!(out, "  last scaling: {}", decision.last_decision);
        }
        pod_lines(&mut out, &status.qos);
    }
    let _ = writeln!(out, "\nFRONTENDS ({})", frontends.len());
    for frontend in frontends {
        let status = frontend.status.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "{}/{}  region {}  pods {}/{} ready (floor {}, max {})  sites [{}]  {}",
            frontend.namespace().unwrap_or_default(),
            frontend.name_any(),
            frontend.spec.region,
            status.ready_replicas,
            status.desired_replicas.unwrap_or(frontend.spec.replicas),
            frontend.spec.replicas,
            frontend
                .spec
                .max_replicas
                .map_or("-".to_owned(), |m| m.to_string()),
            status.sites.join(", "),
            health(&status.conditions),
        );
        if let Some(decision) = status
            .scaling
            .as_ref()
            .filter(|s| !s.last_decision.is_empty())
        {
            let _ = writeln!(out, "  last scaling: {}", decision.last_decision);
        }
        pod_lines(&mut out, &status.qos);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_shows_health_figures_and_decisions() {
        let site: Site = serde_json::from_value(serde_json::json!({
            "apiVersion": "causeway.dev/v1alpha1", "kind": "Site",
            "metadata": {"name": "shop", "namespace": "web"},
            "spec": {"hostnames": ["shop.example"], "origins": [{"name": "o", "url": "http://192.0.2.1"}],
                     "qos": {"latencyP99": "250ms"}},
            "status": {
                "desiredBackends": 2, "readyBackends": 2, "latencyP99": "480ms",
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Available", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    {"type": "Degraded", "status": "True", "reason": "LatencyGoalMissed",
                     "message": "p99 480ms over the goal of 250ms (pod shop-backend-1)", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "scaling": {"lastDecision": "p99 480ms over the goal of 250ms for 10s: added a pod (1 → 2)"},
                "qos": [{"pod": "shop-backend-1", "role": "Backend", "rttMs": 0.0, "loss": 0.0, "p50Ms": 400.0,
                         "p99Ms": 480.0, "requestRate": 42.0, "inFlight": 8, "queued": 0,
                         "origins": [{"name": "o", "healthy": true, "latencyMs": 401.0, "inFlight": 8}],
                         "updated": "2026-01-01T00:00:00Z"}]
            }
        }))
        .expect("a Site");
        let text = render(&[site], &[]);
        assert!(
            text.contains("web/shop  back-ends 2/2 ready  p99 480ms (goal 250ms)"),
            "{text}"
        );
        assert!(text.contains("DEGRADED LatencyGoalMissed"), "{text}");
        assert!(text.contains("added a pod (1 → 2)"), "{text}");
        assert!(text.contains("shop-backend-1"), "{text}");
        assert!(text.contains("origin o"), "{text}");
        assert!(text.contains("FRONTENDS (0)"), "{text}");
    }
}
