//! Starts and stops the control plane: etcd, kube-apiserver and kube-controller-manager on
//! loopback ports, with per-run certificates, RBAC, the default admission plugins and
//! service-account token signing, as in a normal cluster.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;

use crate::binaries::Binaries;
use crate::error::{Error, IoContext, Result};
use crate::kubeconfig::{self, Credentials};
use crate::pki::{self, Pki};
use crate::process::{Guarded, Spec};
use crate::slot;

/// How long the control plane may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The service-account issuer and audience of the test bed's tokens.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A running control plane. Dropping it stops every process (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct ControlPlane {
    server: String,
    kubeconfig: PathBuf,
    pki: Pki,
    logs: Vec<(&'static str, PathBuf)>,
    // Stopped in reverse order of start when dropped; kept for their Drop. The API server
    // can be stopped and started again (fault tests), hence the slot.
    _controller_manager: Guarded,
    apiserver: std::sync::Mutex<Option<Guarded>>,
    apiserver_spec: Spec,
    _etcd: Guarded,
}

impl ControlPlane {
    /// Generates certificates in `dir`, starts etcd, kube-apiserver and kube-controller-manager
    /// on free loopback ports, writes `dir/admin.kubeconfig` and waits until the API server is
    /// ready and the controllers run (the `default` service account exists).
    ///
    /// # Errors
    /// When a process cannot start, exits early (the error holds its log) or is not ready in time.
    pub async fn start(binaries: &Binaries, dir: &Path, slot: u8) -> Result<Self> {
        let started = Instant::now();
        let pki = pki::generate(&dir.join("pki"))?;
        let [etcd_client, etcd_peer, apiserver_port, kcm_port] = free_ports()?;
        let logs_dir = dir.join("logs");
        std::fs::create_dir_all(&logs_dir)
            .context(|| format!("creating {}", logs_dir.display()))?;
        let log = |name: &str| logs_dir.join(format!("{name}.log"));

        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd = Guarded::spawn(&Spec::new(binaries.path("etcd"), dir, log("etcd")).args([
            "--name=testbed".to_owned(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=testbed={peer_url}"),
            // Test data need not survive a power cut; fsync dominates small writes.
            "--unsafe-no-fsync=true".to_owned(),
            "--log-level=warn".to_owned(),
        ]))?;

        let server = format!("https://127.0.0.1:{apiserver_port}");
        let sa_key = pki.service_account_key.display().to_string();
        let apiserver_spec = Spec::new(binaries.path("kube-apiserver"), dir, log("kube-apiserver"))
            .args([
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".to_owned(),
                "--advertise-address=127.0.0.1".to_owned(),
                format!("--secure-port={apiserver_port}"),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", pki.apiserver.cert.display()),
                format!("--tls-private-key-file={}", pki.apiserver.key.display()),
                format!("--client-ca-file={}", pki.ca.cert.display()),
                // The front-proxy settings every cluster has; extension API servers and the
                // controller manager's delegated authentication read them.
                format!("--requestheader-client-ca-file={}", pki.ca.cert.display()),
                "--requestheader-allowed-names=front-proxy-client".to_owned(),
                "--requestheader-username-headers=X-Remote-User".to_owned(),
                "--requestheader-group-headers=X-Remote-Group".to_owned(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_owned(),
                "--authorization-mode=Node,RBAC".to_owned(),
                format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
                format!(
                    "--service-account-key-file={}",
                    pki.service_account_public_key.display()
                ),
                format!("--service-account-signing-key-file={sa_key}"),
                format!("--service-cluster-ip-range={}", slot::service_range(slot)),
                "--allow-privileged=true".to_owned(),
                "--profiling=false".to_owned(),
                "--event-ttl=30m".to_owned(),
            ]);
        let apiserver = Guarded::spawn(&apiserver_spec)?;

        let kubeconfig_path = dir.join("admin.kubeconfig");
        kubeconfig::write(
            &kubeconfig_path,
            &server,
            &pki.ca.cert,
            "admin",
            Credentials::ClientCertificate(&pki.admin),
            None,
        )?;
        let kcm_kubeconfig = dir.join("controller-manager.kubeconfig");
        kubeconfig::write(
            &kcm_kubeconfig,
            &server,
            &pki.ca.cert,
            "system:kube-controller-manager",
            Credentials::ClientCertificate(&pki.controller_manager),
            None,
        )?;

        let mut logs = vec![
            ("etcd", log("etcd")),
            ("kube-apiserver", log("kube-apiserver")),
        ];
        let client = admin_client(&kubeconfig_path).await?;
        wait_ready(
            &client,
            &[("etcd", &etcd), ("kube-apiserver", &apiserver)],
            &logs,
            started,
        )
        .await?;

        let kcm = kcm_kubeconfig.display().to_string();
        let controller_manager = Guarded::spawn(
            &Spec::new(
                binaries.path("kube-controller-manager"),
                dir,
                log("kube-controller-manager"),
            )
            .args([
                format!("--kubeconfig={kcm}"),
                format!("--authentication-kubeconfig={kcm}"),
                format!("--authorization-kubeconfig={kcm}"),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={kcm_port}"),
                format!("--cert-dir={}", dir.join("kcm-certs").display()),
                "--leader-elect=false".to_owned(),
                "--use-service-account-credentials=true".to_owned(),
                format!("--service-account-private-key-file={sa_key}"),
                format!("--root-ca-file={}", pki.ca.cert.display()),
                format!("--cluster-signing-cert-file={}", pki.ca.cert.display()),
                format!("--cluster-signing-key-file={}", pki.ca.key.display()),
                // No real kubelets send heartbeats, so node lifecycle would evict every pod.
                "--controllers=*,-node-lifecycle-controller,-node-ipam-controller".to_owned(),
                "--kube-api-qps=200".to_owned(),
                "--kube-api-burst=400".to_owned(),
            ]),
        )?;
        logs.push(("kube-controller-manager", log("kube-controller-manager")));
        wait_for_default_service_account(
            &client,
            &[
                ("etcd", &etcd),
                ("kube-apiserver", &apiserver),
                ("kube-controller-manager", &controller_manager),
            ],
            &logs,
            started,
        )
        .await?;

        Ok(Self {
            server,
            kubeconfig: kubeconfig_path,
            pki,
            logs,
            _controller_manager: controller_manager,
            apiserver: std::sync::Mutex::new(Some(apiserver)),
            apiserver_spec,
            _etcd: etcd,
        })
    }

    /// Stops kube-apiserver (SIGTERM, SIGKILL after 5 s): clients see refused connections
    /// until [`ControlPlane::start_apiserver`]. etcd and the controller manager keep running.
    pub async fn stop_apiserver(&self) {
        let running = self
            .apiserver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(apiserver) = running {
            apiserver.stop(Duration::from_secs(5)).await;
        }
    }

    /// Starts kube-apiserver again as it first ran (same port, certificates and etcd) and
    /// waits until it is ready. Must run on the runtime that owns the test bed's processes.
    ///
    /// # Errors
    /// When it cannot start, exits early or is not ready in time.
    pub async fn start_apiserver(&self) -> Result<()> {
        let started = Instant::now();
        let apiserver = Guarded::spawn(&self.apiserver_spec)?;
        let client = admin_client(&self.kubeconfig).await?;
        wait_ready(
            &client,
            &[("kube-apiserver", &apiserver)],
            &self.logs,
            started,
        )
        .await?;
        *self
            .apiserver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(apiserver);
        Ok(())
    }

    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The admin kubeconfig (`system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The run's certificates and keys.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Each component's name and log file.
    pub fn logs(&self) -> &[(&'static str, PathBuf)] {
        &self.logs
    }
}

/// A client for the admin kubeconfig at `path`.
///
/// # Errors
/// When the kubeconfig cannot be read or the client cannot be built.
pub async fn admin_client(path: &Path) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// Reserves `N` distinct free loopback ports (they are free when this returns; a race with
/// another process taking one in between is possible but unlikely).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
        .collect::<std::io::Result<Vec<_>>>()
        .context(|| "reserving loopback ports".to_owned())?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .context(|| "reading a reserved port".to_owned())?
            .port();
    }
    Ok(ports)
}

/// Fails with the component's log when one of `processes` has exited.
fn check_running(processes: &[(&str, &Guarded)], logs: &[(&str, PathBuf)]) -> Result<()> {
    for (name, process) in processes {
        if let Some(exit) = process.exit() {
            let log = logs
                .iter()
                .find(|(log_name, _)| log_name == name)
                .map(|(_, path)| tail(path, 40))
                .unwrap_or_default();
            return Err(Error::Exited {
                component: (*name).to_owned(),
                status: exit.to_string(),
                log,
            });
        }
    }
    Ok(())
}

fn timed_out(started: Instant, what: &str) -> Result<()> {
    if started.elapsed() > READY_TIMEOUT {
        Err(Error::Timeout {
            what: what.to_owned(),
            seconds: READY_TIMEOUT.as_secs(),
        })
    } else {
        Ok(())
    }
}

async fn wait_ready(
    client: &kube::Client,
    processes: &[(&str, &Guarded)],
    logs: &[(&str, PathBuf)],
    started: Instant,
) -> Result<()> {
    loop {
        check_running(processes, logs)?;
        let request = http::Request::get("/readyz").body(Vec::new());
        if let Ok(request) = request
            && let Ok(body) = client.request_text(request).await
            && body.trim() == "ok"
        {
            return Ok(());
        }
        timed_out(started, "kube-apiserver /readyz")?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_default_service_account(
    client: &kube::Client,
    processes: &[(&str, &Guarded)],
    logs: &[(&str, PathBuf)],
    started: Instant,
) -> Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    loop {
        check_running(processes, logs)?;
        if let Ok(Some(_)) = accounts.get_opt("default").await {
            return Ok(());
        }
        timed_out(
            started,
            "the default service account (kube-controller-manager)",
        )?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `lines` lines of the file at `path`, or a note that it cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("({}: {err})", path.display()),
    }
}
