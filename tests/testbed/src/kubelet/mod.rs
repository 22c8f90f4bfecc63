//! The test kubelet: registers Nodes, binds unscheduled pods to them (standing in for
//! kube-scheduler), and runs each pod's containers as local processes on a loopback address
//! of the pod's own, reporting status so that Deployments, ReplicaSets and EndpointSlices
//! behave as in a real cluster.
//!
//! Images are mapped, not pulled: see [`container::ImageMap`]. Volumes are written into the
//! pod dir and their mount paths rewritten in the container's command line and environment:
//! see [`volumes`]. Containers reach the API server through `KUBECONFIG`, a kubeconfig holding
//! a token of the pod's service account from the TokenRequest API.

pub mod container;
pub mod ipam;
pub mod node;
pub mod pod;
pub mod probe;
pub mod scheduler;
pub mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Display;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::container::ImageMap;
use self::ipam::NodeAddresses;
use self::node::NodeSpec;
use crate::error::{Error, IoContext, Result};

/// The field manager of everything the test kubelet writes.
const FIELD_MANAGER: &str = "causeway-test-kubelet";

/// An append-only log of what the kubelet does, shown when a test fails.
#[derive(Debug, Clone)]
pub struct Journal {
    file: Arc<Mutex<std::fs::File>>,
    echo: bool,
}

impl Journal {
    /// Appends to `path`; with `echo`, lines also go to stderr.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path, echo: bool) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            file: Arc::new(Mutex::new(file)),
            echo,
        })
    }

    /// Logs one line, with a timestamp.
    pub fn log(&self, message: impl Display) {
        let line = format!(
            "{} {message}\n",
            k8s_openapi::jiff::Timestamp::now().strftime("%H:%M:%S%.3f")
        );
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(line.as_bytes());
        }
        if self.echo {
            eprint!("{line}");
        }
    }
}

/// What the kubelet needs to know.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The nodes to register and run pods for.
    pub nodes: Vec<NodeSpec>,
    /// How images map to local binaries.
    pub images: ImageMap,
    /// Where pod dirs (kubeconfig, logs, HOME) are made.
    pub dir: PathBuf,
    /// The API server URL written into pod kubeconfigs.
    pub server: String,
    /// The CA certificate written into pod kubeconfigs.
    pub ca_cert: PathBuf,
    /// The kubelet's log.
    pub journal: Journal,
}

/// State shared by the kubelet's loop and its pod workers.
pub(crate) struct Shared {
    client: Client,
    images: ImageMap,
    dir: PathBuf,
    server: String,
    ca_cert: PathBuf,
    journal: Journal,
    recorder: kube::runtime::events::Recorder,
    addresses: Mutex<HashMap<String, NodeAddresses>>,
}

impl Shared {
    fn allocate(&self, node: &NodeSpec) -> Option<Ipv4Addr> {
        let mut pools = self.addresses.lock().ok()?;
        pools
            .entry(node.name.clone())
            .or_insert_with(|| NodeAddresses::new(node.address))
            .allocate()
    }

    fn release(&self, node: &NodeSpec, address: Ipv4Addr) {
        if let Ok(mut pools) = self.addresses.lock()
            && let Some(pool) = pools.get_mut(&node.name)
        {
            pool.release(address);
        }
    }

    /// The host of the API server URL.
    fn server_host(&self) -> String {
        self.server_authority()
            .rsplit_once(':')
            .map(|(host, _)| host.to_owned())
            .unwrap_or_default()
    }

    /// The port of the API server URL.
    fn server_port(&self) -> String {
        self.server_authority()
            .rsplit_once(':')
            .map(|(_, port)| port.to_owned())
            .unwrap_or_else(|| "443".to_owned())
    }

    fn server_authority(&self) -> &str {
        let rest = self
            .server
            .split_once("://")
            .map_or(self.server.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
    }
}

/// Registers the nodes (or refreshes them, when they exist) and marks them Ready.
///
/// # Errors
/// When the API server refuses a node or its status.
pub async fn register_nodes(client: &Client, nodes: &[NodeSpec], journal: &Journal) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let version = crate::binaries::kubernetes_version();
    for spec in nodes {
        let mut node = node::node_object(spec);
        node.metadata.managed_fields = None;
        let body = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": node.metadata,
        });
        api.patch(&spec.name, &params, &Patch::Apply(&body)).await?;
        let status = node::node_status(spec, version, &Time(k8s_openapi::jiff::Timestamp::now()));
        let body = json!({ "apiVersion": "v1", "kind": "Node", "status": status });
        api.patch_status(&spec.name, &params, &Patch::Apply(&body))
            .await?;
        journal.log(format!(
            "registered node {} ({}/{}, {})",
            spec.name, spec.region, spec.zone, spec.address
        ));
    }
    Ok(())
}

/// Runs the kubelet for nodes already registered with [`register_nodes`] until its watch of
/// pods ends (it does not, short of an error); dropping the future stops every pod's processes.
///
/// # Errors
/// When the pod watch ends.
pub async fn run(client: Client, config: KubeletConfig) -> Result<()> {
    let shared = Arc::new(Shared {
        client: client.clone(),
        images: config.images,
        dir: config.dir,
        server: config.server,
        ca_cert: config.ca_cert,
        journal: config.journal,
        recorder: kube::runtime::events::Recorder::new(client.clone(), FIELD_MANAGER.into()),
        addresses: Mutex::new(HashMap::new()),
    });
    let mut kubelet = Loop {
        shared,
        nodes: config.nodes,
        pods: Api::all(client),
        workers: HashMap::new(),
        tasks: JoinSet::new(),
        unscheduled: BTreeMap::new(),
        unschedulable_reported: HashSet::new(),
        placement: HashMap::new(),
    };
    kubelet.run().await
}

/// The kubelet's event loop.
struct Loop {
    shared: Arc<Shared>,
    nodes: Vec<NodeSpec>,
    pods: Api<Pod>,
    /// Pod uid → the channel to its worker.
    workers: HashMap<String, watch::Sender<Option<Pod>>>,
    tasks: JoinSet<String>,
    /// Pods waiting for a node, by uid.
    unscheduled: BTreeMap<String, Pod>,
    unschedulable_reported: HashSet<String>,
    /// Pod uid → node name, for the scheduler's load count.
    placement: HashMap<String, String>,
}

impl Loop {
    async fn run(&mut self) -> Result<()> {
        let mut events = watcher::watcher(self.pods.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut relisted: Option<HashSet<String>> = None;
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                event = events.next() => match event {
                    None => return Err(Error::Invalid {
                        what: "pod watch".to_owned(),
                        message: "ended".to_owned(),
                    }),
                    Some(Err(err)) => self.shared.journal.log(format!("pod watch: {err}")),
                    Some(Ok(Event::Init)) => relisted = Some(HashSet::new()),
                    Some(Ok(Event::InitApply(pod))) => {
                        if let (Some(seen), Some(uid)) = (relisted.as_mut(), pod.metadata.uid.clone()) {
                            seen.insert(uid);
                        }
                        self.on_pod(pod).await;
                    }
                    Some(Ok(Event::InitDone)) => {
                        if let Some(seen) = relisted.take() {
                            for (uid, worker) in &self.workers {
                                if !seen.contains(uid) {
                                    worker.send_replace(None);
                                }
                            }
                            self.unscheduled.retain(|uid, _| seen.contains(uid));
                            self.placement.retain(|uid, _| seen.contains(uid));
                        }
                    }
                    Some(Ok(Event::Apply(pod))) => self.on_pod(pod).await,
                    Some(Ok(Event::Delete(pod))) => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        self.unscheduled.remove(&uid);
                        self.placement.remove(&uid);
                        if let Some(worker) = self.workers.get(&uid) {
                            worker.send_replace(None);
                        }
                    }
                },
                Some(done) = self.tasks.join_next() => {
                    if let Ok(uid) = done {
                        self.workers.remove(&uid);
                    }
                }
                _ = retry.tick() => self.schedule().await,
            }
        }
    }

    async fn on_pod(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if scheduler::wants_scheduling(&pod) {
            self.unscheduled.insert(uid, pod);
            self.schedule().await;
            return;
        }
        self.unscheduled.remove(&uid);
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let Some(node) = self
            .nodes
            .iter()
            .find(|n| Some(&n.name) == node_name.as_ref())
            .cloned()
        else {
            return;
        };
        self.placement.insert(uid.clone(), node.name.clone());
        if let Some(worker) = self.workers.get(&uid)
            && !worker.is_closed()
        {
            worker.send_replace(Some(pod));
            return;
        }
        let (sender, receiver) = watch::channel(Some(pod));
        self.workers.insert(uid, sender);
        self.tasks
            .spawn(pod::run(self.shared.clone(), node, receiver));
    }

    /// Binds every unscheduled pod that fits a node.
    async fn schedule(&mut self) {
        let waiting: Vec<(String, Pod)> = self
            .unscheduled
            .iter()
            .map(|(uid, pod)| (uid.clone(), pod.clone()))
            .collect();
        for (uid, pod) in waiting {
            let mut load: HashMap<String, usize> = HashMap::new();
            for node in self.placement.values() {
                *load.entry(node.clone()).or_default() += 1;
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let Some(node) = scheduler::pick_node(&pod, &self.nodes, &load).cloned() else {
                if self.unschedulable_reported.insert(uid.clone()) {
                    self.report_unschedulable(&name, &namespace).await;
                }
                continue;
            };
            let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &namespace);
            let binding = json!({
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": { "name": name, "namespace": namespace },
                "target": { "apiVersion": "v1", "kind": "Node", "name": node.name },
            });
            let bound: std::result::Result<serde_json::Value, kube::Error> = api
                .create_subresource("binding", &name, &PostParams::default(), &binding)
                .await;
            match bound {
                Ok(_) => {
                    self.shared
                        .journal
                        .log(format!("bound pod {namespace}/{name} to {}", node.name));
                    let event = kube::runtime::events::Event {
                        type_: kube::runtime::events::EventType::Normal,
                        reason: "Scheduled".to_owned(),
                        note: Some(format!(
                            "Successfully assigned {namespace}/{name} to {}",
                            node.name
                        )),
                        action: "Binding".to_owned(),
                        secondary: None,
                    };
                    let reference = kube::Resource::object_ref(&pod, &());
                    let _ = self.shared.recorder.publish(&event, &reference).await;
                    self.placement.insert(uid.clone(), node.name.clone());
                    self.unscheduled.remove(&uid);
                    self.unschedulable_reported.remove(&uid);
                }
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                    // Gone, or bound meanwhile: the watch tells what happened.
                    self.unscheduled.remove(&uid);
                }
                Err(err) => self
                    .shared
                    .journal
                    .log(format!("binding pod {namespace}/{name}: {err}")),
            }
        }
    }

    async fn report_unschedulable(&self, name: &str, namespace: &str) {
        let message = format!(
            "0/{} nodes match the pod's node selector and affinity",
            self.nodes.len()
        );
        self.shared.journal.log(format!(
            "pod {namespace}/{name} is unschedulable: {message}"
        ));
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), namespace);
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }]}});
        let _ = api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await;
    }
}
