//! Readiness and liveness probes: HTTP GET, TCP and exec probes with the kubelet's timing
//! (initial delay, period, timeout, success and failure thresholds).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::time::Instant;

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// An HTTP GET that must answer 200–399.
    Http {
        /// The request path.
        path: String,
        /// The port on the pod's address.
        port: u16,
    },
    /// A TCP connection that must be accepted.
    Tcp {
        /// The port on the pod's address.
        port: u16,
    },
    /// A local command that must exit 0.
    Exec {
        /// The command and its arguments.
        command: Vec<String>,
    },
}

/// A probe with its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// What is checked.
    pub check: Check,
    /// Time before the first check.
    pub initial_delay: Duration,
    /// Time between checks.
    pub period: Duration,
    /// Time a check may take.
    pub timeout: Duration,
    /// Consecutive successes that make the result a success.
    pub success_threshold: u32,
    /// Consecutive failures that make the result a failure.
    pub failure_threshold: u32,
}

impl ProbeSpec {
    /// Reads a Kubernetes probe of `container`, resolving named ports.
    ///
    /// # Errors
    /// A message when the probe has no supported handler or names an unknown port.
    pub fn from_probe(probe: &Probe, container: &Container) -> Result<Self, String> {
        let port = |port: &IntOrString| -> Result<u16, String> {
            match port {
                IntOrString::Int(number) => u16::try_from(*number)
                    .map_err(|_| format!("probe port {number} is out of range")),
                IntOrString::String(name) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok())
                    .ok_or_else(|| format!("probe port {name:?} is not a port of the container")),
            }
        };
        let check = if let Some(http) = &probe.http_get {
            if http
                .scheme
                .as_deref()
                .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
            {
                return Err("HTTPS probes are not supported by the test kubelet".to_owned());
            }
            Check::Http {
                path: http.path.clone().unwrap_or_else(|| "/".to_owned()),
                port: port(&http.port)?,
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            Check::Tcp {
                port: port(&tcp.port)?,
            }
        } else if let Some(exec) = &probe.exec {
            Check::Exec {
                command: exec.command.clone().unwrap_or_default(),
            }
        } else {
            return Err("only httpGet, tcpSocket and exec probes are supported".to_owned());
        };
        let seconds = |value: Option<i32>, default: u64| {
            Duration::from_secs(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        let count = |value: Option<i32>, default: u32| {
            value
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Ok(Self {
            check,
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        })
    }
}

/// A probe's running state for one container run.
#[derive(Debug, Clone)]
pub struct ProbeState {
    /// The probe.
    pub spec: ProbeSpec,
    /// When the next check is due.
    pub due: Instant,
    successes: u32,
    failures: u32,
    /// The current result: `Some(true)` passing, `Some(false)` failing, `None` not yet known.
    pub result: Option<bool>,
}

impl ProbeState {
    /// A probe for a container that started at `started`.
    pub fn new(spec: ProbeSpec, started: Instant) -> Self {
        Self {
            due: started + spec.initial_delay,
            spec,
            successes: 0,
            failures: 0,
            result: None,
        }
    }

    /// Records one check's outcome at `now` and returns whether the result changed.
    pub fn record(&mut self, passed: bool, now: Instant) -> bool {
        self.due = now + self.spec.period;
        let before = self.result;
        if passed {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= self.spec.success_threshold {
                self.result = Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.spec.failure_threshold {
                self.result = Some(false);
            }
        }
        before != self.result
    }
}

/// Runs one check against the pod at `pod_ip`, in `cwd` for exec probes.
pub async fn run(
    check: &Check,
    pod_ip: Ipv4Addr,
    timeout: Duration,
    cwd: &std::path::Path,
) -> bool {
    match check {
        Check::Http { path, port } => {
            let addr = SocketAddr::new(IpAddr::V4(pod_ip), *port);
            let host = format!("{pod_ip}:{port}");
            matches!(
                crate::http::get_status(addr, &host, path, timeout).await,
                Ok(200..=399)
            )
        }
        Check::Tcp { port } => {
            let addr = SocketAddr::new(IpAddr::V4(pod_ip), *port);
            matches!(
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            )
        }
        Check::Exec { command } => {
            let Some((program, args)) = command.split_first() else {
                return false;
            };
            let status = tokio::process::Command::new(program)
                .args(args)
                .current_dir(cwd)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status();
            matches!(tokio::time::timeout(timeout, status).await, Ok(Ok(s)) if s.success())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "c",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2,
                "failureThreshold": 2},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn reads_probes_with_named_ports() -> Result<(), String> {
        let container = container();
        let probe = container.readiness_probe.clone().ok_or("probe")?;
        let spec = ProbeSpec::from_probe(&probe, &container)?;
        assert_eq!(
            spec.check,
            Check::Http {
                path: "/healthz".to_owned(),
                port: 8080
            }
        );
        assert_eq!(spec.period, Duration::from_secs(2));
        assert_eq!(spec.failure_threshold, 2);
        Ok(())
    }

    #[test]
    fn thresholds_decide_flips() -> Result<(), String> {
        let container = container();
        let probe = container.readiness_probe.clone().ok_or("probe")?;
        let now = Instant::now();
        let mut state = ProbeState::new(ProbeSpec::from_probe(&probe, &container)?, now);
        assert!(state.record(true, now));
        assert_eq!(state.result, Some(true));
        assert!(!state.record(false, now));
        assert!(state.record(false, now));
        assert_eq!(state.result, Some(false));
        Ok(())
    }
}
