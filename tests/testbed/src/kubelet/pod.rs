//! One pod on the test kubelet: prepares its token and environment, runs its init containers
//! and then its containers as local processes on the pod's loopback address, probes them,
//! restarts them per `restartPolicy`, reports status, and stops them with the grace period
//! when the pod is deleted.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Shared;
use super::container::{self, Addresses, LocalCommand, Sources};
use super::node::NodeSpec;
use super::probe::{self, ProbeSpec, ProbeState};
use super::volumes;
use crate::kubeconfig::{self, Credentials};
use crate::process::{Exit, Guarded, Spec};

/// How long a failed preparation (missing service account, ConfigMap...) waits before a retry.
const RETRY_PREPARE: Duration = Duration::from_secs(1);
/// The longest restart back-off; the kubelet's is 5 minutes, too slow for tests.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A container that ran this long gets its back-off reset.
const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// The current time as a Kubernetes timestamp.
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Where a container is in its life.
#[derive(Debug, Clone)]
enum RunState {
    Waiting { reason: String, message: String },
    Running { since: String },
    Terminated(Termination),
}

/// How a container run ended.
#[derive(Debug, Clone)]
struct Termination {
    exit: Exit,
    started: String,
    finished: String,
    pid: i32,
}

impl Termination {
    fn to_json(&self) -> Value {
        let reason = if self.exit.success() {
            "Completed"
        } else {
            "Error"
        };
        let mut value = json!({
            "exitCode": self.exit.code(),
            "reason": reason,
            "startedAt": self.started,
            "finishedAt": self.finished,
            "containerID": format!("testbed://{}", self.pid),
        });
        if let Exit::Signal(signal) = self.exit {
            value["signal"] = json!(signal);
        }
        value
    }
}

/// One container of the pod.
struct ContainerRun {
    spec: Container,
    init: bool,
    command: Option<LocalCommand>,
    env: Vec<(String, String)>,
    process: Option<Guarded>,
    generation: u64,
    state: RunState,
    started_at: Option<Instant>,
    restart_count: i32,
    last_termination: Option<Termination>,
    restart_at: Option<Instant>,
    backoff: Duration,
    readiness: Option<ProbeState>,
    liveness: Option<ProbeState>,
    /// The container's mounts (mountPath, host dir), for rewriting exec probe commands.
    mounts: Vec<(String, PathBuf)>,
}

impl ContainerRun {
    fn new(spec: Container, init: bool) -> Self {
        Self {
            spec,
            init,
            command: None,
            env: Vec::new(),
            process: None,
            generation: 0,
            state: RunState::Waiting {
                reason: "ContainerCreating".to_owned(),
                message: String::new(),
            },
            started_at: None,
            restart_count: 0,
            last_termination: None,
            restart_at: None,
            backoff: Duration::from_secs(1),
            readiness: None,
            liveness: None,
            mounts: Vec::new(),
        }
    }

    fn ready(&self) -> bool {
        matches!(self.state, RunState::Running { .. })
            && self
                .readiness
                .as_ref()
                .is_none_or(|p| p.result == Some(true))
    }

    fn status_json(&self) -> Value {
        let state = match &self.state {
            RunState::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            RunState::Running { since } => json!({"running": {"startedAt": since}}),
            RunState::Terminated(termination) => json!({"terminated": termination.to_json()}),
        };
        let image = self.spec.image.clone().unwrap_or_default();
        let mut value = json!({
            "name": self.spec.name,
            "image": image,
            "imageID": format!("causeway-testbed://{image}"),
            "ready": self.ready(),
            "started": matches!(self.state, RunState::Running { .. }),
            "restartCount": self.restart_count,
            "state": state,
        });
        if let Some(process) = &self.process {
            value["containerID"] = json!(format!("testbed://{}", process.pid()));
        }
        if let Some(last) = &self.last_termination {
            value["lastState"] = json!({"terminated": last.to_json()});
        }
        value
    }
}

/// Why the pod cannot start; reported on its containers' waiting state.
struct SetupError {
    reason: &'static str,
    message: String,
    /// Whether trying again may help (a ConfigMap may appear; an image will not change).
    retry: bool,
}

/// The pod worker's state.
struct Worker {
    shared: Arc<Shared>,
    node: NodeSpec,
    ip: Option<Ipv4Addr>,
    name: String,
    namespace: String,
    uid: String,
    dir: PathBuf,
    restart_policy: String,
    grace: Duration,
    containers: Vec<ContainerRun>,
    prepared: bool,
    setup_error: Option<SetupError>,
    retry_prepare_at: Option<Instant>,
    start_time: String,
    transitions: HashMap<&'static str, (bool, String)>,
    last_status: Option<Value>,
    exits: mpsc::UnboundedSender<(usize, u64, Exit)>,
    terminal: bool,
    pods: Api<Pod>,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    /// Events to publish: (warning?, reason, note).
    events: Vec<(bool, &'static str, String)>,
}

/// Runs the pod that `pod` carries until it is deleted or the kubelet stops (its sender is
/// dropped), and returns its uid.
pub(crate) async fn run(
    shared: Arc<Shared>,
    node: NodeSpec,
    mut pod: watch::Receiver<Option<Pod>>,
) -> String {
    let Some(initial) = pod.borrow_and_update().clone() else {
        return String::new();
    };
    let (exits_tx, mut exits) = mpsc::unbounded_channel();
    let mut worker = Worker::new(shared, node, &initial, exits_tx);
    let uid = worker.uid.clone();
    worker.shared.journal.log(format!(
        "pod {}/{} ({}) on {}",
        worker.namespace, worker.name, uid, worker.node.name
    ));

    if initial.metadata.deletion_timestamp.is_some() {
        worker.finish_deletion().await;
        return uid;
    }
    if worker.terminal {
        worker.release_address();
    } else {
        worker.prepare(&initial).await;
        worker.start_due();
    }
    let mut latest = initial;

    loop {
        worker.publish_events().await;
        worker.write_status().await;
        let wake = worker.next_wake();
        tokio::select! {
            changed = pod.changed() => {
                if changed.is_err() {
                    // The kubelet is stopping: dropping the processes stops them.
                    break;
                }
                let current = pod.borrow_and_update().clone();
                match current {
                    None => {
                        worker.stop_all(Duration::ZERO).await;
                        break;
                    }
                    Some(current) if current.metadata.deletion_timestamp.is_some() => {
                        let grace = current
                            .metadata
                            .deletion_grace_period_seconds
                            .and_then(|s| u64::try_from(s).ok())
                            .map_or(worker.grace, Duration::from_secs);
                        worker.stop_all(grace).await;
                        worker.finish_deletion().await;
                        break;
                    }
                    Some(current) => latest = current,
                }
            }
            Some((index, generation, exit)) = exits.recv() => worker.on_exit(index, generation, exit),
            () = tokio::time::sleep_until(wake) => {
                worker.run_due_probes().await;
                if !worker.prepared
                    && worker.retry_prepare_at.is_some_and(|at| at <= Instant::now())
                {
                    worker.prepare(&latest).await;
                }
                worker.start_due();
            }
        }
    }
    worker.release_address();
    let _ = std::fs::remove_dir_all(&worker.dir);
    uid
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        node: NodeSpec,
        pod: &Pod,
        exits: mpsc::UnboundedSender<(usize, u64, Exit)>,
    ) -> Self {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| ContainerRun::new(c.clone(), true))
            .chain(
                spec.containers
                    .iter()
                    .map(|c| ContainerRun::new(c.clone(), false)),
            )
            .collect();
        let ip = if terminal {
            None
        } else {
            shared.allocate(&node)
        };
        let short_uid: String = uid.chars().take(8).collect();
        let dir = shared
            .dir
            .join("pods")
            .join(format!("{namespace}_{name}_{short_uid}"));
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or_else(now, |t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        Self {
            pods: Api::namespaced(shared.client.clone(), &namespace),
            reference: pod.object_ref(&()),
            events: Vec::new(),
            shared,
            node,
            ip,
            name,
            namespace,
            uid,
            dir,
            restart_policy: spec.restart_policy.unwrap_or_else(|| "Always".to_owned()),
            grace: Duration::from_secs(
                spec.termination_grace_period_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(30),
            ),
            containers,
            prepared: false,
            setup_error: None,
            retry_prepare_at: None,
            start_time,
            transitions: HashMap::new(),
            last_status: None,
            exits,
            terminal,
        }
    }

    fn release_address(&mut self) {
        if let Some(ip) = self.ip.take() {
            self.shared.release(&self.node, ip);
        }
    }

    /// Resolves images, the token, the kubeconfig and the environment. On failure the reason
    /// goes to the status and, when it may help, a retry is scheduled.
    async fn prepare(&mut self, pod: &Pod) {
        match self.try_prepare(pod).await {
            Ok(()) => {
                self.prepared = true;
                self.setup_error = None;
                self.retry_prepare_at = None;
            }
            Err(error) => {
                self.shared.journal.log(format!(
                    "pod {}/{}: {}: {}",
                    self.namespace, self.name, error.reason, error.message
                ));
                self.retry_prepare_at = error.retry.then(|| Instant::now() + RETRY_PREPARE);
                let repeated = self
                    .setup_error
                    .as_ref()
                    .is_some_and(|previous| previous.message == error.message);
                if !repeated {
                    self.events.push((
                        true,
                        "Failed",
                        format!("{}: {}", error.reason, error.message),
                    ));
                }
                self.setup_error = Some(error);
            }
        }
    }

    async fn try_prepare(&mut self, pod: &Pod) -> Result<(), SetupError> {
        let Some(ip) = self.ip else {
            return Err(SetupError {
                reason: "NoAddress",
                message: format!("node {} has no free pod address", self.node.name),
                retry: true,
            });
        };
        // The image decides first: it is the one error no retry fixes.
        for run in &self.containers {
            let mut bare = run.spec.clone();
            bare.command = None;
            bare.args = None;
            if let Err(message) = self.shared.images.command(&bare, &[]) {
                return Err(SetupError {
                    reason: "ErrImagePull",
                    message,
                    retry: false,
                });
            }
        }
        let io_error = |what: &str, err: std::io::Error| SetupError {
            reason: "CreateContainerConfigError",
            message: format!("{what}: {err}"),
            retry: true,
        };
        std::fs::create_dir_all(self.dir.join("tmp")).map_err(|e| io_error("pod dir", e))?;

        let spec = pod.spec.clone().unwrap_or_default();
        let mut base_env: Vec<(String, String)> = vec![
            (
                "PATH".to_owned(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned()),
            ),
            ("HOME".to_owned(), self.dir.display().to_string()),
            (
                "TMPDIR".to_owned(),
                self.dir.join("tmp").display().to_string(),
            ),
            ("HOSTNAME".to_owned(), self.name.clone()),
            (
                "KUBERNETES_SERVICE_HOST".to_owned(),
                self.shared.server_host(),
            ),
            (
                "KUBERNETES_SERVICE_PORT".to_owned(),
                self.shared.server_port(),
            ),
        ];
        if let Ok(value) = std::env::var("RUST_BACKTRACE") {
            base_env.push(("RUST_BACKTRACE".to_owned(), value));
        }
        let mut token = None;
        if spec.automount_service_account_token != Some(false) {
            let issued = self.token(&spec).await?;
            let token = token.insert(issued);
            let path = self.dir.join("kubeconfig");
            kubeconfig::write(
                &path,
                &self.shared.server,
                &self.shared.ca_cert,
                &format!("system:serviceaccount:{}", self.namespace),
                Credentials::Token(token),
                Some(&self.namespace),
            )
            .map_err(|e| SetupError {
                reason: "CreateContainerConfigError",
                message: e.to_string(),
                retry: true,
            })?;
            base_env.push(("KUBECONFIG".to_owned(), path.display().to_string()));
        }

        let sources = self.sources(pod).await?;
        let addresses = Addresses {
            pod_ip: ip,
            host_ip: self.node.address,
        };
        let config_error = |message: String| SetupError {
            reason: "CreateContainerConfigError",
            message,
            retry: true,
        };
        let ca_pem = std::fs::read_to_string(&self.shared.ca_cert).unwrap_or_default();
        let volumes_dir = self.dir.join("volumes");
        let context = volumes::Context {
            pod,
            addresses,
            token: token.as_deref(),
            ca_pem: &ca_pem,
        };
        for volume in spec.volumes.iter().flatten() {
            let files = volumes::volume_files(volume, &sources, context)
                .map_err(|e| config_error(format!("volume {:?}: {e}", volume.name)))?
                .unwrap_or_default();
            volumes::write_files(&volumes_dir.join(&volume.name), &files)
                .map_err(|e| config_error(format!("volume {:?}: {e}", volume.name)))?;
        }
        for run in &mut self.containers {
            let mounts = volumes::mounts(&run.spec, &volumes_dir);
            let declared = container::container_env(pod, &run.spec, addresses, &sources).map_err(
                |message| SetupError {
                    reason: "CreateContainerConfigError",
                    message,
                    retry: true,
                },
            )?;
            let env: Vec<(String, String)> = base_env
                .iter()
                .cloned()
                .chain(declared)
                .map(|(name, value)| (name, volumes::rewrite(&value, &mounts)))
                .collect();
            let mut command = self
                .shared
                .images
                .command(&run.spec, &env)
                .map_err(|message| SetupError {
                    reason: "ErrImagePull",
                    message,
                    retry: false,
                })?;
            command.program = volumes::rewrite(&command.program, &mounts);
            for arg in &mut command.args {
                *arg = volumes::rewrite(arg, &mounts);
            }
            run.command = Some(command);
            run.env = env;
            run.mounts = mounts;
            run.restart_at = Some(Instant::now());
        }
        Ok(())
    }

    /// A token for the pod's service account, bound to the pod (TokenRequest API).
    async fn token(
        &self,
        spec: &k8s_openapi::api::core::v1::PodSpec,
    ) -> Result<String, SetupError> {
        let account = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Pod".to_owned()),
                    name: Some(self.name.clone()),
                    uid: Some(self.uid.clone()),
                }),
                expiration_seconds: Some(24 * 3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let accounts: Api<ServiceAccount> =
            Api::namespaced(self.shared.client.clone(), &self.namespace);
        let answer: TokenRequest = accounts
            .create_subresource("token", &account, &PostParams::default(), &request)
            .await
            .map_err(|e| SetupError {
                reason: "CreateContainerConfigError",
                message: format!("requesting a token for service account {account:?}: {e}"),
                retry: true,
            })?;
        answer
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| SetupError {
                reason: "CreateContainerConfigError",
                message: "the token request answered no token".to_owned(),
                retry: true,
            })
    }

    /// The ConfigMaps and Secrets the containers' environment and the pod's volumes refer to;
    /// missing ones are left out, for the users to judge (they may be optional).
    async fn sources(&self, pod: &Pod) -> Result<Sources, SetupError> {
        let mut sources = Sources::default();
        let config_maps: Api<ConfigMap> =
            Api::namespaced(self.shared.client.clone(), &self.namespace);
        let secrets: Api<Secret> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        let api_error = |e: kube::Error| SetupError {
            reason: "CreateContainerConfigError",
            message: e.to_string(),
            retry: true,
        };
        let wanted = self
            .containers
            .iter()
            .map(|run| container::referenced_sources(&run.spec))
            .chain(std::iter::once(volumes::referenced_sources(pod)));
        for (wanted_maps, wanted_secrets) in wanted {
            for name in wanted_maps {
                if sources.config_maps.contains_key(&name) {
                    continue;
                }
                if let Some(map) = config_maps.get_opt(&name).await.map_err(api_error)? {
                    let data = map.data.unwrap_or_default();
                    sources.config_maps.insert(name, data);
                }
            }
            for name in wanted_secrets {
                if sources.secrets.contains_key(&name) {
                    continue;
                }
                if let Some(secret) = secrets.get_opt(&name).await.map_err(api_error)? {
                    let mut data: std::collections::BTreeMap<String, String> = secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect();
                    data.extend(secret.string_data.unwrap_or_default());
                    sources.secrets.insert(name, data);
                }
            }
        }
        Ok(sources)
    }

    /// The init container that runs or must run next, if the init phase is not over.
    fn pending_init(&self) -> Option<usize> {
        self.containers.iter().position(|run| {
            run.init && !matches!(&run.state, RunState::Terminated(t) if t.exit.success())
        })
    }

    /// Starts the containers whose (re)start is due.
    fn start_due(&mut self) {
        if !self.prepared || self.terminal {
            return;
        }
        let now = Instant::now();
        let only = self.pending_init();
        for index in 0..self.containers.len() {
            let run = &self.containers[index];
            let allowed = match only {
                Some(init) => index == init,
                None => !run.init,
            };
            if allowed && run.process.is_none() && run.restart_at.is_some_and(|at| at <= now) {
                self.start(index);
            }
        }
    }

    fn start(&mut self, index: usize) {
        let dir = self.dir.clone();
        let exits = self.exits.clone();
        let journal = self.shared.journal.clone();
        let pod_name = format!("{}/{}", self.namespace, self.name);
        let Some(run) = self.containers.get_mut(index) else {
            return;
        };
        run.restart_at = None;
        let Some(command) = &run.command else {
            return;
        };
        let spec = Spec {
            program: OsString::from(&command.program),
            args: command.args.iter().map(OsString::from).collect(),
            env: run
                .env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect(),
            clear_env: true,
            cwd: dir.clone(),
            log: dir.join(format!("{}.log", run.spec.name)),
            grace: Duration::from_secs(2),
        };
        match Guarded::spawn(&spec) {
            Ok(process) => {
                journal.log(format!(
                    "pod {pod_name}: started {} (pid {}): {} {}",
                    run.spec.name,
                    process.pid(),
                    command.program,
                    command.args.join(" ")
                ));
                let note = format!(
                    "Started container {} (pid {})",
                    run.spec.name,
                    process.pid()
                );
                self.events.push((false, "Started", note));
                run.generation += 1;
                let generation = run.generation;
                let watch = process.exit_watch();
                tokio::spawn(async move {
                    let exit = watch.wait().await;
                    let _ = exits.send((index, generation, exit));
                });
                let started = Instant::now();
                run.started_at = Some(started);
                run.state = RunState::Running { since: now() };
                run.process = Some(process);
                let probe = |probe: Option<&k8s_openapi::api::core::v1::Probe>| {
                    probe
                        .and_then(|p| ProbeSpec::from_probe(p, &run.spec).ok())
                        .map(|mut spec| {
                            if let probe::Check::Exec { command } = &mut spec.check {
                                for word in command.iter_mut() {
                                    *word = volumes::rewrite(word, &run.mounts);
                                }
                            }
                            ProbeState::new(spec, started)
                        })
                };
                run.readiness = probe(run.spec.readiness_probe.as_ref());
                run.liveness = probe(run.spec.liveness_probe.as_ref());
            }
            Err(err) => {
                journal.log(format!(
                    "pod {pod_name}: cannot start {}: {err}",
                    run.spec.name
                ));
                run.state = RunState::Waiting {
                    reason: "RunContainerError".to_owned(),
                    message: err.to_string(),
                };
                run.restart_at = Some(Instant::now() + run.backoff);
                run.backoff = (run.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    fn on_exit(&mut self, index: usize, generation: u64, exit: Exit) {
        let policy = self.restart_policy.clone();
        let pod_name = format!("{}/{}", self.namespace, self.name);
        let Some(run) = self.containers.get_mut(index) else {
            return;
        };
        if run.generation != generation || run.process.is_none() {
            return;
        }
        let pid = run.process.take().map(|p| p.pid()).unwrap_or_default();
        let started = match &run.state {
            RunState::Running { since } => since.clone(),
            _ => now(),
        };
        let termination = Termination {
            exit,
            started,
            finished: now(),
            pid,
        };
        self.shared
            .journal
            .log(format!("pod {pod_name}: {} {exit}", run.spec.name));
        let ran_long = run
            .started_at
            .is_some_and(|at| at.elapsed() >= BACKOFF_RESET);
        if ran_long {
            run.backoff = Duration::from_secs(1);
        }
        run.readiness = None;
        run.liveness = None;
        let restart = match policy.as_str() {
            "Never" => false,
            "OnFailure" => !exit.success(),
            // An init container that succeeded is done whatever the policy.
            _ => !(run.init && exit.success()),
        };
        if restart {
            run.restart_count += 1;
            run.last_termination = Some(termination);
            run.state = RunState::Waiting {
                reason: "CrashLoopBackOff".to_owned(),
                message: format!(
                    "back-off {}s restarting failed container={}",
                    run.backoff.as_secs(),
                    run.spec.name
                ),
            };
            self.events.push((
                true,
                "BackOff",
                format!(
                    "Back-off {}s restarting failed container {} ({exit})",
                    run.backoff.as_secs(),
                    run.spec.name
                ),
            ));
            run.restart_at = Some(Instant::now() + run.backoff);
            run.backoff = (run.backoff * 2).min(MAX_BACKOFF);
        } else {
            run.state = RunState::Terminated(termination);
        }
        let init_failed = self
            .containers
            .iter()
            .any(|r| r.init && matches!(&r.state, RunState::Terminated(t) if !t.exit.success()));
        let all_done = self
            .containers
            .iter()
            .filter(|r| !r.init)
            .all(|r| matches!(r.state, RunState::Terminated(_)));
        if init_failed || all_done {
            self.terminal = true;
        }
    }

    async fn run_due_probes(&mut self) {
        let Some(ip) = self.ip else {
            return;
        };
        let now = Instant::now();
        let dir = self.dir.clone();
        let pod_name = format!("{}/{}", self.namespace, self.name);
        for run in &mut self.containers {
            if run.process.is_none() {
                continue;
            }
            if let Some(probe) = run.readiness.as_mut().filter(|p| p.due <= now) {
                let passed = probe::run(&probe.spec.check, ip, probe.spec.timeout, &dir).await;
                if probe.record(passed, Instant::now()) {
                    if !passed {
                        self.events.push((
                            true,
                            "Unhealthy",
                            format!("Readiness probe of {} failed", run.spec.name),
                        ));
                    }
                    self.shared.journal.log(format!(
                        "pod {pod_name}: {} readiness {}",
                        run.spec.name,
                        if passed { "passed" } else { "failed" }
                    ));
                }
            }
            let mut kill = false;
            if let Some(probe) = run.liveness.as_mut().filter(|p| p.due <= now) {
                let passed = probe::run(&probe.spec.check, ip, probe.spec.timeout, &dir).await;
                probe.record(passed, Instant::now());
                kill = probe.result == Some(false);
            }
            if kill {
                self.shared.journal.log(format!(
                    "pod {pod_name}: {} failed its liveness probe; restarting it",
                    run.spec.name
                ));
                self.events.push((
                    true,
                    "Unhealthy",
                    format!("Liveness probe of {} failed; restarting it", run.spec.name),
                ));
                run.liveness = None;
                if let Some(process) = &run.process {
                    process.signal(nix::sys::signal::Signal::SIGTERM);
                }
            }
        }
    }

    /// Stops every running container (SIGTERM, SIGKILL after `grace`) and waits for them.
    async fn stop_all(&mut self, grace: Duration) {
        for run in self.containers.iter().filter(|run| run.process.is_some()) {
            self.events.push((
                false,
                "Killing",
                format!(
                    "Stopping container {} (grace {} s)",
                    run.spec.name,
                    grace.as_secs()
                ),
            ));
        }
        self.publish_events().await;
        let stops = self
            .containers
            .iter()
            .filter_map(|run| run.process.as_ref())
            .map(|process| process.stop(grace));
        futures_util::future::join_all(stops).await;
        if self.containers.iter().any(|run| run.process.is_some()) {
            self.shared.journal.log(format!(
                "pod {}/{}: stopped its processes",
                self.namespace, self.name
            ));
        }
        for run in &mut self.containers {
            run.process = None;
        }
    }

    /// Completes the deletion the API server started: deletes the object for good.
    async fn finish_deletion(&mut self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(err) = self.pods.delete(&self.name, &params).await {
            let gone = matches!(&err, kube::Error::Api(status) if status.code == 404 || status.code == 409);
            if !gone {
                self.shared.journal.log(format!(
                    "pod {}/{}: final delete failed: {err}",
                    self.namespace, self.name
                ));
            }
        }
    }

    /// Publishes the queued events on the pod (failures to publish are only logged).
    async fn publish_events(&mut self) {
        for (warning, reason, note) in std::mem::take(&mut self.events) {
            let event = Event {
                type_: if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: reason.to_owned(),
                note: Some(note),
                action: reason.to_owned(),
                secondary: None,
            };
            if let Err(err) = self.shared.recorder.publish(&event, &self.reference).await {
                self.shared.journal.log(format!(
                    "pod {}/{}: event {reason}: {err}",
                    self.namespace, self.name
                ));
            }
        }
    }

    /// When the worker must next wake up on its own: a probe, a restart or a retry.
    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + Duration::from_secs(5);
        for run in &self.containers {
            let probes = [run.readiness.as_ref(), run.liveness.as_ref()];
            for due in probes.into_iter().flatten().map(|p| p.due) {
                wake = wake.min(due);
            }
            if let Some(at) = run.restart_at {
                wake = wake.min(at);
            }
        }
        if let Some(at) = self.retry_prepare_at {
            wake = wake.min(at);
        }
        wake
    }

    fn condition(&mut self, type_: &'static str, status: bool, reason: Option<&str>) -> Value {
        let time = match self.transitions.get(type_) {
            Some((previous, time)) if *previous == status => time.clone(),
            _ => {
                let time = now();
                self.transitions.insert(type_, (status, time.clone()));
                time
            }
        };
        let mut value = json!({
            "type": type_,
            "status": if status { "True" } else { "False" },
            "lastTransitionTime": time,
        });
        if let Some(reason) = reason {
            value["reason"] = json!(reason);
        }
        value
    }

    /// The pod's status as the kubelet would report it.
    fn status(&mut self) -> Value {
        if let Some(error) = &self.setup_error {
            let (reason, message) = (error.reason, error.message.clone());
            for run in &mut self.containers {
                run.state = RunState::Waiting {
                    reason: reason.to_owned(),
                    message: message.clone(),
                };
            }
        }
        let main: Vec<&ContainerRun> = self.containers.iter().filter(|r| !r.init).collect();
        let initialized = self.pending_init().is_none();
        let ready = initialized && !main.is_empty() && main.iter().all(|r| r.ready());
        let any_running = main.iter().any(|r| {
            matches!(r.state, RunState::Running { .. })
                || (r.restart_at.is_some() && r.restart_count > 0)
        });
        let failed =
            |r: &&ContainerRun| matches!(&r.state, RunState::Terminated(t) if !t.exit.success());
        let phase = if self.terminal {
            let init_failed = self
                .containers
                .iter()
                .filter(|r| r.init)
                .any(|r| failed(&r));
            if init_failed || main.iter().any(failed) {
                "Failed"
            } else {
                "Succeeded"
            }
        } else if initialized && any_running {
            "Running"
        } else {
            "Pending"
        };
        let init_statuses: Vec<Value> = self
            .containers
            .iter()
            .filter(|r| r.init)
            .map(ContainerRun::status_json)
            .collect();
        let statuses: Vec<Value> = main.iter().map(|r| r.status_json()).collect();
        let ready_reason = (!ready).then_some("ContainersNotReady");
        let init_reason = (!initialized).then_some("ContainersNotInitialized");
        let conditions = vec![
            self.condition("PodReadyToStartContainers", self.prepared, None),
            self.condition("Initialized", initialized, init_reason),
            self.condition("Ready", ready, ready_reason),
            self.condition("ContainersReady", ready, ready_reason),
            self.condition("PodScheduled", true, None),
        ];
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.node.address.to_string(),
            "hostIPs": [{"ip": self.node.address.to_string()}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
        });
        if !init_statuses.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        if let Some(ip) = self.ip {
            status["podIP"] = json!(ip.to_string());
            status["podIPs"] = json!([{"ip": ip.to_string()}]);
        }
        status
    }

    /// Writes the status when it changed since the last write.
    async fn write_status(&mut self) {
        if self.terminal {
            // The processes are gone: the address may serve another pod.
            let running = self.containers.iter().any(|r| r.process.is_some());
            if !running && self.ip.is_some() {
                let status = self.status();
                self.patch(status).await;
                self.release_address();
                return;
            }
        }
        let status = self.status();
        self.patch(status).await;
    }

    async fn patch(&mut self, status: Value) {
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let patch = json!({ "status": status });
        match self
            .pods
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.last_status = Some(status),
            Err(err) => self.shared.journal.log(format!(
                "pod {}/{}: status update failed: {err}",
                self.namespace, self.name
            )),
        }
    }
}
