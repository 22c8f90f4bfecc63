#!/usr/bin/env bash
# Builds the Kubernetes test bed's binaries from the Go module proxy and caches them:
# kube-apiserver, kube-controller-manager and kubectl (k8s.io/kubernetes), etcd
# (go.etcd.io/etcd/server/v3) and helm (helm.sh/helm/v3). Versions are pinned by the
# wrapper modules under gobuild/ (their go.mod and go.sum); the Kubernetes version is the
# k8s.io/kubernetes line of gobuild/kubernetes/go.mod and is read from there only. A wrapper
# module with a patch.sh (kubernetes: loopback addresses allowed in EndpointSlices, see
# gobuild/kubernetes/patches/) builds from a patched copy of its module kept beside the bin dir.
#
# Idempotent: a bin dir whose stamp matches the wrapper modules, the Go version and this
# script is reused as it is. Progress goes to stderr.
#
# Usage:
#   provision.sh                 build what is missing (prints the bin dir on stdout)
#   provision.sh --print-bin-dir print the bin dir and do nothing else
#
# Environment:
#   CAUSEWAY_K8S_BIN  the bin dir to fill (default ~/.cache/causeway/k8s/<version>/bin)
#   CAUSEWAY_GO_JOBS  parallel Go compile jobs (default: the number of cores)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
gobuild="$here/gobuild"

k8s_version="$(awk '$1 == "require" { $1 = ""; $0 = $0 } $1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' \
    "$gobuild/kubernetes/go.mod")"
if [[ -z "$k8s_version" ]]; then
    echo "provision: no k8s.io/kubernetes requirement in $gobuild/kubernetes/go.mod" >&2
    exit 1
fi
cache_home="${XDG_CACHE_HOME:-$HOME/.cache}"
bin_dir="${CAUSEWAY_K8S_BIN:-$cache_home/causeway/k8s/$k8s_version/bin}"

if [[ "${1:-}" == "--print-bin-dir" ]]; then
    echo "$bin_dir"
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--print-bin-dir]" >&2
    exit 2
fi

log() { echo "provision: $*" >&2; }

if ! command -v go >/dev/null 2>&1; then
    log "the Go toolchain is needed to build the control plane (https://go.dev/dl), and 'go' is not on PATH"
    exit 1
fi

jobs="${CAUSEWAY_GO_JOBS:-$(nproc 2>/dev/null || echo 2)}"
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false -mod=readonly"
go_version="$(go env GOVERSION)"

mkdir -p "$bin_dir"
# One provisioning at a time per bin dir; a second caller waits and then finds it done.
exec 9>"$bin_dir/.lock"
if ! flock -n 9; then
    log "another provision.sh is building into $bin_dir; waiting for it"
    flock 9
fi

# stamp NAME: what the binaries of one wrapper module were built from.
stamp() {
    local name="$1"
    {
        echo "$go_version"
        cat "$gobuild/$name/go.mod" "$gobuild/$name/go.sum"
        if [[ -d "$gobuild/$name/patches" ]]; then cat "$gobuild/$name/patches/"*; fi
        if [[ -f "$gobuild/$name/patch.sh" ]]; then cat "$gobuild/$name/patch.sh"; fi
        cat "$here/provision.sh"
    } | sha256sum | cut -d' ' -f1
}

# up_to_date NAME BIN...: true when every BIN exists and NAME's stamp matches.
up_to_date() {
    local name="$1"
    shift
    [[ -f "$bin_dir/.stamp-$name" && "$(cat "$bin_dir/.stamp-$name")" == "$(stamp "$name")" ]] || return 1
    local bin
    for bin in "$@"; do
        [[ -x "$bin_dir/$bin" ]] || return 1
    done
}

# version_ldflags NAME: stamps the version that the release scripts would, so that
# `kubectl version`, discovery's /version and Helm's kubeVersion checks see the real one.
version_ldflags() {
    if [[ "$1" == helm ]]; then
        local helm_version
        helm_version="$(awk '$1 == "require" { $1 = ""; $0 = $0 } $1 == "helm.sh/helm/v3" { print $2; exit }' \
            "$gobuild/helm/go.mod")"
        printf -- "-X 'helm.sh/helm/v3/internal/version.version=%s'" "$helm_version"
        return
    fi
    if [[ "$1" != kubernetes ]]; then
        return
    fi
    local minor="${k8s_version#v1.}"
    minor="${minor%%.*}"
    local pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        printf -- "-X '%s.gitVersion=%s' -X '%s.gitMajor=1' -X '%s.gitMinor=%s' " \
            "$pkg" "$k8s_version" "$pkg" "$pkg" "$minor"
        printf -- "-X '%s.gitTreeState=clean' -X '%s.buildDate=1970-01-01T00:00:00Z' " "$pkg" "$pkg"
    done
}

# build NAME PACKAGE...: builds the main PACKAGEs of wrapper module NAME into the bin dir,
# through a temporary dir so that an interrupted build leaves nothing half written.
build() {
    local name="$1"
    shift
    local tmp
    tmp="$(mktemp -d "$bin_dir/.build-$name.XXXXXX")"
    local start=$SECONDS
    log "building $name ($*) with $jobs jobs; a cold build takes several minutes"
    (cd "$gobuild/$name" && go mod download >&2)
    # A module with patches builds from a patched copy, kept beside the bin dir.
    local modfile_flag=()
    if [[ -x "$gobuild/$name/patch.sh" ]]; then
        modfile_flag=("-modfile=$("$gobuild/$name/patch.sh" "$bin_dir/../src/$name")")
    fi
    (cd "$gobuild/$name" && \
        go build -p "$jobs" -trimpath -ldflags="-s -w $(version_ldflags "$name")" \
            "${modfile_flag[@]}" -o "$tmp/" "$@" >&2)
    local pkg
    for pkg in "$@"; do
        # Go names a binary after the package's last path element, skipping a major-version
        # suffix: go.etcd.io/etcd/server/v3 becomes "server", which is etcd.
        local bin="${pkg##*/}"
        if [[ "$bin" =~ ^v[0-9]+$ ]]; then
            bin="${pkg%/*}"
            bin="${bin##*/}"
        fi
        local target="$bin"
        if [[ "$pkg" == go.etcd.io/etcd/server/v3 ]]; then
            target=etcd
        fi
        mv "$tmp/$bin" "$bin_dir/$target"
    done
    stamp "$name" >"$bin_dir/.stamp-$name"
    rm -rf "$tmp"
    log "built $name in $((SECONDS - start)) s"
}

# Leftovers of an interrupted build.
rm -rf "$bin_dir"/.build-*
total_start=$SECONDS
if up_to_date kubernetes kube-apiserver kube-controller-manager kubectl; then
    log "kubernetes $k8s_version binaries are up to date"
else
    build kubernetes \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kubectl
fi
if up_to_date etcd etcd; then
    log "etcd is up to date"
else
    build etcd go.etcd.io/etcd/server/v3
fi
if up_to_date helm helm; then
    log "helm is up to date"
else
    build helm helm.sh/helm/v3/cmd/helm
fi
log "bin dir $bin_dir ready in $((SECONDS - total_start)) s"
echo "$bin_dir"
