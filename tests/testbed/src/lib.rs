//! Test bed: a real Kubernetes control plane and a kubelet that runs pods as local processes.
