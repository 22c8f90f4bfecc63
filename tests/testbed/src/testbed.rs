//! The harness tests use: [`TestBed::shared`] starts the control plane and the test kubelet
//! once per test binary and reuses them; [`TestBed::namespace`] gives a test its own namespace
//! and prints the logs when the test fails.
//!
//! The test bed runs on a runtime of its own, so it outlives each `#[tokio::test]` runtime.
//! A janitor process removes the run dir once the test binary and every process it started
//! have exited, and holds the run's slot until then, so the next run gets a clean one.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;
use tokio::sync::OnceCell;

use crate::binaries::Binaries;
use crate::controlplane::{self, ControlPlane};
use crate::error::{Error, IoContext, Result};
use crate::kubelet::container::ImageMap;
use crate::kubelet::node::NodeSpec;
use crate::kubelet::{self, Journal, KubeletConfig};
use crate::slot::{self, Slot};

/// Removes the run dir `$1` once its owner is gone (end of file on stdin) and no process runs
/// in it any more; its stdout is the slot's lock file, which keeps the slot taken until then.
const JANITOR: &str = r#"
dir="$1"
cat >/dev/null 2>&1
i=0
while [ "$i" -lt 300 ]; do
    busy=""
    for p in /proc/[0-9]*; do
        case "$(readlink "$p/cwd" 2>/dev/null)" in
            "$dir" | "$dir"/*) busy=1; break ;;
        esac
    done
    [ -z "$busy" ] && break
    sleep 0.1
    i=$((i + 1))
done
rm -rf "$dir"
"#;

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
static SHARED: OnceCell<std::result::Result<Arc<TestBed>, String>> = OnceCell::const_new();

/// The test bed's own runtime: it runs the kubelet and reaps processes for the life of the
/// test binary, whichever test's runtime comes and goes.
fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("causeway-testbed")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Start(format!("building the test bed's runtime: {e}")))
}

/// A running control plane and test kubelet.
#[derive(Debug)]
pub struct TestBed {
    slot: Slot,
    binaries: Binaries,
    control_plane: ControlPlane,
    nodes: Vec<NodeSpec>,
    causeway_bin: PathBuf,
    kubelet_log: PathBuf,
    namespaces: AtomicU32,
    startup: Duration,
    _janitor: std::process::ChildStdin,
}

impl TestBed {
    /// The test bed of this test binary: started on the first call, reused afterwards (also
    /// by concurrent callers, which wait for the one start).
    ///
    /// # Errors
    /// When the start fails, with the reason, for example that provision.sh must be run first;
    /// every later call gets the same error.
    pub async fn shared() -> Result<Arc<Self>> {
        let bed = SHARED
            .get_or_init(|| async {
                let handle = match runtime() {
                    Ok(runtime) => runtime.spawn(Self::start()),
                    Err(err) => return Err(err.to_string()),
                };
                match handle.await {
                    Ok(Ok(bed)) => Ok(Arc::new(bed)),
                    Ok(Err(err)) => Err(err.to_string()),
                    Err(err) => Err(format!("the start task failed: {err}")),
                }
            })
            .await;
        bed.clone().map_err(Error::Start)
    }

    async fn start() -> Result<Self> {
        let started = Instant::now();
        let binaries = Binaries::locate()?;
        let causeway_bin = causeway_binary().await?;
        let built = started.elapsed();
        let slot = Slot::acquire(&slot::default_base())?;
        let dir = slot.dir().to_path_buf();
        let janitor = spawn_janitor(&slot)?;

        let control_plane = ControlPlane::start(&binaries, &dir, slot.index()).await?;
        let nodes = default_nodes(slot.index());
        let kubelet_log = dir.join("logs/test-kubelet.log");
        let journal = Journal::open(&kubelet_log, false)?;
        let client = controlplane::admin_client(control_plane.kubeconfig()).await?;
        kubelet::register_nodes(&client, &nodes, &journal).await?;
        let config = KubeletConfig {
            nodes: nodes.clone(),
            images: ImageMap::new(&causeway_bin),
            dir: dir.clone(),
            server: control_plane.server().to_owned(),
            ca_cert: control_plane.pki().ca.cert.clone(),
            journal: journal.clone(),
        };
        tokio::spawn(async move {
            if let Err(err) = kubelet::run(client, config).await {
                journal.log(format!("the test kubelet stopped: {err}"));
            }
        });
        let startup = started.elapsed();
        eprintln!(
            "causeway-testbed: Kubernetes {} up at {} in {:.1} s ({:.1} s of it building causeway; \
             slot {}, run dir {})",
            crate::binaries::kubernetes_version(),
            control_plane.server(),
            startup.as_secs_f64(),
            built.as_secs_f64(),
            slot.index(),
            dir.display()
        );
        Ok(Self {
            slot,
            binaries,
            control_plane,
            nodes,
            causeway_bin,
            kubelet_log,
            namespaces: AtomicU32::new(0),
            startup,
            _janitor: janitor,
        })
    }

    /// How long the start took.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// The run dir (certificates, etcd data, logs, pod dirs).
    pub fn dir(&self) -> &Path {
        self.slot.dir()
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        self.control_plane.kubeconfig()
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        self.control_plane.server()
    }

    /// The nodes of the test kubelet.
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    /// The binary that Causeway's images run as.
    pub fn causeway_bin(&self) -> &Path {
        &self.causeway_bin
    }

    /// Stops kube-apiserver (SIGTERM, SIGKILL after 5 s), leaving etcd, the controller
    /// manager, the kubelet and every pod running: for tests of what survives an API outage.
    /// Every other test of this test binary sees the outage too.
    pub async fn stop_apiserver(&self) {
        self.control_plane.stop_apiserver().await;
    }

    /// Starts kube-apiserver again after [`TestBed::stop_apiserver`], on the test bed's own
    /// runtime (which owns its processes), and waits until it is ready.
    ///
    /// # Errors
    /// When it cannot start or is not ready in time.
    pub async fn start_apiserver(self: &Arc<Self>) -> Result<()> {
        let bed = self.clone();
        runtime()?
            .spawn(async move { bed.control_plane.start_apiserver().await })
            .await
            .map_err(|e| Error::Start(format!("the start task failed: {e}")))?
    }

    /// The dir of the control-plane binaries (kubectl, helm...).
    pub fn bin_dir(&self) -> &Path {
        self.binaries.dir()
    }

    /// An admin client, bound to the calling runtime.
    ///
    /// # Errors
    /// When the kubeconfig cannot be read.
    pub async fn client(&self) -> Result<Client> {
        controlplane::admin_client(self.kubeconfig()).await
    }

    /// A `kubectl` command (the provisioned one) set up for this test bed.
    pub fn kubectl_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(self.binaries.path("kubectl"));
        command
            .env("KUBECONFIG", self.kubeconfig())
            .kill_on_drop(true);
        command
    }

    /// A `helm` command (the provisioned one) set up for this test bed.
    pub fn helm_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(self.binaries.path("helm"));
        command
            .env("KUBECONFIG", self.kubeconfig())
            .env("HELM_CACHE_HOME", self.dir().join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir().join("helm/config"))
            .env("HELM_DATA_HOME", self.dir().join("helm/data"))
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl with `args` (and `stdin`, if given) and returns its stdout.
    ///
    /// # Errors
    /// [`Error::Command`] with kubectl's stderr when it fails.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        run_command(self.kubectl_command(), "kubectl", args, stdin).await
    }

    /// Applies the CustomResourceDefinitions in `documents` (server-side, one YAML document
    /// each) and waits until every one of them is Established, so that objects of their kinds
    /// can be created right after.
    ///
    /// # Errors
    /// [`Error::Command`] when the API server refuses one, or one is not Established in 60 s.
    pub async fn install_crds(&self, documents: impl IntoIterator<Item = String>) -> Result<()> {
        let crds = documents.into_iter().collect::<Vec<_>>().join("---\n");
        // `-o name` lists what was applied, so the wait below covers exactly those CRDs.
        let applied = self
            .kubectl(
                &["apply", "--server-side", "-o", "name", "-f", "-"],
                Some(&crds),
            )
            .await?;
        let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        wait.extend(applied.split_whitespace());
        self.kubectl(&wait, None).await.map(drop)
    }

    /// Creates a namespace named after `prefix` for one test, and waits until pods can be
    /// created in it (its `default` service account exists).
    ///
    /// # Errors
    /// When the namespace cannot be created or does not become usable in time.
    pub async fn namespace(self: &Arc<Self>, prefix: &str) -> Result<TestNamespace> {
        let number = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let cleaned: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let name = format!("{}-{number}", cleaned.trim_matches('-'));
        let client = self.client().await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "causeway.dev/test": "true" } }
        }))?;
        namespaces
            .create(&PostParams::default(), &namespace)
            .await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(
            "the default service account of the test namespace",
            Duration::from_secs(30),
            || {
                let accounts = accounts.clone();
                async move { accounts.get_opt("default").await.ok().flatten() }
            },
        )
        .await?;
        Ok(TestNamespace {
            name,
            bed: self.clone(),
            client,
        })
    }

    /// The end of every control-plane log and of the kubelet's, and the logs of the pods of
    /// `namespace` (all pods when `None`): what a failing test prints.
    pub fn failure_report(&self, namespace: Option<&str>) -> String {
        let mut report = format!(
            "==== causeway test bed (run dir {}, API server {}) ====\n",
            self.dir().display(),
            self.server()
        );
        let logs = self
            .control_plane
            .logs()
            .iter()
            .map(|(name, path)| (name.to_string(), path.clone()))
            .chain(std::iter::once((
                "test-kubelet".to_owned(),
                self.kubelet_log.clone(),
            )));
        for (name, path) in logs {
            report.push_str(&format!("---- {name} ({}) ----\n", path.display()));
            report.push_str(&controlplane::tail(&path, 40));
            report.push('\n');
        }
        let pods = self.dir().join("pods");
        if let Ok(entries) = std::fs::read_dir(&pods) {
            for entry in entries.flatten() {
                let pod = entry.file_name().to_string_lossy().into_owned();
                if namespace.is_some_and(|ns| !pod.starts_with(&format!("{ns}_"))) {
                    continue;
                }
                for log in std::fs::read_dir(entry.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let path = log.path();
                    if path.extension().is_some_and(|e| e == "log") {
                        report.push_str(&format!("---- pod {pod}: {} ----\n", path.display()));
                        report.push_str(&controlplane::tail(&path, 40));
                        report.push('\n');
                    }
                }
            }
        }
        report
    }
}

/// One test's namespace. When dropped it is deleted; when dropped during a panic (the test
/// failed), the test bed's logs are printed first.
pub struct TestNamespace {
    name: String,
    bed: Arc<TestBed>,
    client: Client,
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The test bed.
    pub fn bed(&self) -> &Arc<TestBed> {
        &self.bed
    }

    /// An admin client (bound to the runtime of the test that made the namespace).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An API for namespaced resources of kind `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Runs kubectl with `args` in this namespace and returns its stdout.
    ///
    /// # Errors
    /// [`Error::Command`] with kubectl's stderr when it fails.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut all = vec!["--namespace", self.name.as_str()];
        all.extend_from_slice(args);
        self.bed.kubectl(&all, stdin).await
    }

    /// What container `container` of pod `pod` has printed (stdout and stderr), as
    /// `kubectl logs` would show it; empty when the pod has no log (yet, or any more).
    pub fn pod_logs(&self, pod: &str, container: &str) -> String {
        let prefix = format!("{}_{pod}_", self.name);
        std::fs::read_dir(self.bed.dir().join("pods"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
            .filter_map(|entry| std::fs::read(entry.path().join(format!("{container}.log"))).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .collect()
    }

    /// `kubectl get object -o jsonpath=template` in this namespace: one field (or a few)
    /// of `object` (`kind/name`, or a kind for all of them), printed as `template` says.
    ///
    /// # Errors
    /// [`Error::Command`] with kubectl's stderr when the object does not exist or the
    /// template does not parse.
    pub async fn get_jsonpath(&self, object: &str, template: &str) -> Result<String> {
        let output = format!("jsonpath={template}");
        self.kubectl(&["get", object, "-o", &output], None).await
    }

    /// `helm install release chart` into this namespace with `options` (`--set`,
    /// `--values`...), waiting up to 120 s until its pods are ready; returns what helm printed.
    ///
    /// # Errors
    /// [`Error::Command`] with helm's stderr when the install fails or times out.
    pub async fn helm_install(
        &self,
        release: &str,
        chart: &Path,
        options: &[&str],
    ) -> Result<String> {
        let chart = chart.display().to_string();
        let mut args = vec!["install", release, &chart, "--namespace", &self.name];
        args.extend_from_slice(options);
        args.extend(["--wait", "--timeout", "120s"]);
        run_command(self.bed.helm_command(), "helm", &args, None).await
    }

    /// `kubectl apply -f -` of `manifest` in this namespace.
    ///
    /// # Errors
    /// [`Error::Command`] with kubectl's stderr when it fails.
    pub async fn apply(&self, manifest: &str) -> Result<String> {
        self.kubectl(&["apply", "-f", "-"], Some(manifest)).await
    }
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.bed.failure_report(Some(&self.name)));
        }
        let bed = self.bed.clone();
        let name = self.name.clone();
        if let Ok(runtime) = runtime() {
            runtime.spawn(async move {
                if let Ok(client) = bed.client().await {
                    let namespaces: Api<Namespace> = Api::all(client);
                    let _ = namespaces.delete(&name, &DeleteParams::background()).await;
                }
            });
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `timeout`.
///
/// # Errors
/// [`Error::Timeout`] naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pids of processes whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(needle).then_some(pid)
        })
        .collect()
}

/// The nodes of slot `slot`: two zones of one region and one zone of another.
pub fn default_nodes(slot: u8) -> Vec<NodeSpec> {
    [
        ("testbed-eu-west-a", "eu-west", "eu-west-a"),
        ("testbed-eu-west-b", "eu-west", "eu-west-b"),
        ("testbed-us-east-a", "us-east", "us-east-a"),
    ]
    .iter()
    .zip(0u8..)
    .map(|((name, region, zone), index)| NodeSpec {
        name: (*name).to_owned(),
        region: (*region).to_owned(),
        zone: (*zone).to_owned(),
        address: slot::node_address(slot, index),
    })
    .collect()
}

/// The workspace's root, from this crate's location.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Causeway's Helm chart, `charts/causeway` in the workspace.
pub fn chart() -> PathBuf {
    workspace_root().join("charts/causeway")
}

/// The `causeway` binary that Causeway's images map to: `CAUSEWAY_BIN` if set; else the
/// workspace's debug build, which is (re)built first so that tests run the current code.
///
/// # Errors
/// When `CAUSEWAY_BIN` names no file, or the build fails.
pub async fn causeway_binary() -> Result<PathBuf> {
    workspace_binary("causeway", "causeway", "CAUSEWAY_BIN").await
}

/// Binary `bin` of workspace package `package`: the path in `env_var` if set; else the
/// workspace's debug build (in `CARGO_TARGET_DIR` when set), (re)built first.
///
/// # Errors
/// When `env_var` names no file, or the build fails.
pub async fn workspace_binary(package: &str, bin: &str, env_var: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Invalid {
                what: env_var.to_owned(),
                message: format!("{} is not a file", path.display()),
            })
        };
    }
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = tokio::process::Command::new(cargo);
    command
        .current_dir(&root)
        .args(["build", "--quiet", "-p", package, "--bin", bin]);
    run_command(command, "cargo", &[], None).await?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|p| !p.is_empty())
        .map_or_else(|| root.join("target"), PathBuf::from);
    let path = target.join("debug").join(bin);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Invalid {
            what: format!("{bin} binary"),
            message: format!("{} was not built", path.display()),
        })
    }
}

fn spawn_janitor(slot: &Slot) -> Result<std::process::ChildStdin> {
    let lock = slot
        .lock()
        .try_clone()
        .context(|| "sharing the slot lock with the janitor".to_owned())?;
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg(JANITOR)
        .arg("causeway-testbed-janitor")
        .arg(slot.dir())
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(lock)
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context(|| "starting the run-dir janitor".to_owned())?;
    child.stdin.take().ok_or_else(|| Error::Invalid {
        what: "janitor".to_owned(),
        message: "no stdin pipe".to_owned(),
    })
}

/// Runs `command` with `args`, feeding `stdin`, and returns its stdout.
async fn run_command(
    mut command: tokio::process::Command,
    name: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String> {
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = format!("{name} {}", args.join(" "));
    let mut child = command.spawn().context(|| format!("starting `{line}`"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .context(|| format!("writing to `{line}`"))?;
    }
    let output = child
        .wait_with_output()
        .await
        .context(|| format!("running `{line}`"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
