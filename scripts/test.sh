#!/usr/bin/env bash
# Causeway's test command: installs what the tests need (cached when already there), then
# checks formatting, runs clippy with warnings as errors, and runs every test — unit tests,
# gateway integration tests against real processes, and the Kubernetes test bed's tests
# against a real control plane built from Go modules.
#
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*" >&2; }
started=$SECONDS

# A fresh clone gains nothing from incremental compilation, whose caches take gigabytes.
if [[ -n "${CI:-}" ]]; then
    export CARGO_INCREMENTAL=0
fi
log "disk free where the build goes: $(df -h --output=avail . | tail -n 1 | tr -d ' ')"

# Debian packages the tests use; only missing ones are installed.
packages=(bind9 bind9-dnsutils ca-certificates curl dnsperf iperf3 iproute2 procps prometheus util-linux)
# Tests that drive these tools fail, rather than skip, when one is missing.
export CAUSEWAY_REQUIRE_TOOLS=1
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing Debian packages: ${missing[*]} (run as root, or install them first)"
        exit 1
    fi
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The control plane builds from Go modules while cargo compiles; both are cached.
mkdir -p target
log "provisioning the Kubernetes test bed in the background (log: target/provision.log)"
# Job control gives the provisioning its own process group, so an interrupted run can stop
# the Go compilers it started too, not only the script.
set -m
bash tests/testbed/provision.sh >target/provision.log 2>&1 &
provision_pid=$!
set +m
trap 'kill -- "-$provision_pid" 2>/dev/null || true' EXIT

log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo build (binaries the tests start)"
cargo build --workspace --all-targets --locked
# The test bed runs this binary in its pods; naming it spares the harness a second build
# with another feature set.
CAUSEWAY_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/causeway"
# The same for the fault suite's redirector: building it there alone (`cargo build -p`) would
# compile its dependencies again with another feature set.
CAUSEWAY_REDIRECTOR_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/causeway-redirector"
export CAUSEWAY_BIN CAUSEWAY_REDIRECTOR_BIN

log "waiting for the test bed's binaries"
if ! wait "$provision_pid"; then
    log "provisioning the test bed failed:"
    tail -n 50 target/provision.log >&2
    exit 1
fi
trap - EXIT
CAUSEWAY_K8S_BIN="$(bash tests/testbed/provision.sh --print-bin-dir)"
export CAUSEWAY_K8S_BIN

log "cargo test"
cargo test --workspace --locked "$@"
log "all checks passed in $((SECONDS - started)) s"
