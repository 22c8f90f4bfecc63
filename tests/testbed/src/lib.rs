//! Causeway's Kubernetes test bed: a real control plane (etcd, kube-apiserver and
//! kube-controller-manager, built from their Go modules by `provision.sh`) and a test kubelet
//! that runs pods as local processes on loopback addresses.
//!
//! Tests use [`TestBed::shared`], which starts the control plane once per test binary (or
//! reuses it), and [`TestBed::namespace`], which gives each test its own namespace, a
//! [`kube::Client`] and `kubectl`, and prints the control-plane logs when the test fails.
//! Everything the test bed starts is stopped and its data removed when the test binary
//! exits, whether the tests passed, failed or the binary was killed.
//!
//! What Causeway's end-to-end tests share beyond the cluster lives here too, so that the
//! operator's, the redirector's and the fault suite's tests agree: the demo Site's manifests
//! ([`shop`]), pod readiness ([`pods`]), the chart ([`testbed::chart`],
//! [`TestNamespace::helm_install`]) and the CRDs ([`TestBed::install_crds`]).

pub mod binaries;
pub mod controlplane;
pub mod error;
pub mod http;
pub mod kubeconfig;
pub mod kubelet;
pub mod pki;
pub mod pods;
pub mod process;
pub mod shop;
pub mod slot;
pub mod testbed;

pub use binaries::Binaries;
pub use error::{Error, Result};
pub use testbed::{TestBed, TestNamespace};
