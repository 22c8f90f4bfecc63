//! A two-tier deployment ([`TwoTier`]): back-end processes and a front-end linked to all of
//! them over TMP, started and waited for until every link is up.

use std::time::{Duration, Instant};

use crate::gateway::Gateway;
use crate::pki::LinkPki;

/// A two-tier deployment: back-ends, and a front-end linked to all of them.
pub struct TwoTier {
    /// The front-end (its `addr` takes client HTTP).
    pub frontend: Gateway,
    /// The back-ends (their `addr` is the UDP link address).
    pub backends: Vec<Gateway>,
    pki: LinkPki,
    manifest: String,
    frontend_args: Vec<String>,
}

impl TwoTier {
    /// Starts `backends` back-ends and one front-end serving `manifest`, and waits until the
    /// front-end's links are all up.
    pub async fn start(manifest: &str, backends: usize, frontend_args: &[&str]) -> Self {
        let pki = LinkPki::new();
        let backend_args = pki.args("backend");
        let mut started = Vec::new();
        for i in 0..backends {
            let mut args: Vec<&str> = backend_args.iter().map(String::as_str).collect();
            let name = format!("be-{i}");
            args.extend(["--name", name.as_str(), "--qos-interval", "200ms"]);
            started.push(Gateway::launch("backend", "--link-listen", manifest, &args).await);
        }
        let frontend_args: Vec<String> = frontend_args.iter().map(|a| (*a).to_owned()).collect();
        let frontend =
            Self::launch_frontend(&pki, &started, manifest, &frontend_args, "fe-0").await;
        let tiers = Self {
            frontend,
            backends: started,
            pki,
            manifest: manifest.to_owned(),
            frontend_args,
        };
        tiers.wait_links(backends, Duration::from_secs(10)).await;
        tiers
    }

    /// Starts one more front-end named `name`, linked to the same back-ends with the same
    /// arguments, and waits until it serves.
    pub async fn another_frontend(&self, name: &str) -> Gateway {
        Self::launch_frontend(
            &self.pki,
            &self.backends,
            &self.manifest,
            &self.frontend_args,
            name,
        )
        .await
    }

    async fn launch_frontend(
        pki: &LinkPki,
        backends: &[Gateway],
        manifest: &str,
        extra_args: &[String],
        name: &str,
    ) -> Gateway {
        let mut args: Vec<String> = pki.args("frontend");
        args.extend([
            "--name".into(),
            name.into(),
            "--qos-interval".into(),
            "200ms".into(),
        ]);
        args.extend(["--link-idle-timeout".into(), "3s".into()]);
        for backend in backends {
            args.push("--backend".into());
            args.push(backend.addr.to_string());
        }
        args.extend(extra_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Gateway::launch("frontend", "--listen", manifest, &args).await
    }

    /// Waits until the front-end reports `count` links up.
    pub async fn wait_links(&self, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let qos: serde_json::Value =
                serde_json::from_str(&self.frontend.admin_get("/qos").await).expect("/qos JSON");
            let up = qos["links"].as_array().map_or(0, Vec::len);
            if up >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {up} of {count} links up: {qos}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
