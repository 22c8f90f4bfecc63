"""Finding, installing and building the programs a benchmark needs.

* nginx and HAProxy come from Debian (``apt-get``). Debian's packages would start their
  own services on port 80; a temporary ``policy-rc.d`` forbids that during the install.
  The benchmark only ever runs its own instances with its own config files.
* oha comes from crates.io (``cargo install oha --locked``, into ``~/.cargo/bin``).
* iperf3, nftables, openssl and curl (the WAN scenarios) come from Debian too; the WAN link
  emulator ``causeway-linkem`` is built from this workspace (or ``LINKEM_BIN``).
* Causeway is built from this workspace (``cargo build --release -p causeway``),
  unless ``CAUSEWAY_BIN`` names a binary to use as is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .peers import Tools
from .procs import HarnessError

SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
OHA_FLAGS = ("--output-format", "--latency-correction", "--db-url", "--worker-threads")


def ensure_tools(repo: Path, causeway_subcommands: tuple[str, ...]) -> Tools:
    """Return every tool's path, installing or building what is missing."""
    missing = [pkg for prog, pkg in (("nginx", "nginx-light"), ("haproxy", "haproxy")) if not _which(prog)]
    if missing:
        _apt_install(missing)
    return Tools(
        nginx=_require("nginx"),
        haproxy=_require("haproxy"),
        oha=_ensure_oha(),
        causeway=_ensure_causeway(repo, causeway_subcommands),
    )


def ensure_wan_tools(repo: Path) -> dict[str, str]:
    """What the WAN scenarios add: causeway-linkem, iperf3, nft and openssl (Debian)."""
    wanted = (("iperf3", "iperf3"), ("nft", "nftables"), ("openssl", "openssl"), ("curl", "curl"))
    missing = [pkg for prog, pkg in wanted if not _which(prog)]
    if missing:
        _apt_install(missing)
    return {
        "linkem": _ensure_linkem(repo),
        "iperf3": _require("iperf3"),
        "nft": _require("nft"),
        "openssl": _require("openssl"),
    }


def _ensure_linkem(repo: Path) -> str:
    """The WAN link emulator (tests/linkem), built in release mode unless ``LINKEM_BIN`` names one."""
    override = os.environ.get("LINKEM_BIN")
    if override:
        binary = Path(override)
    else:
        _log("building causeway-linkem: cargo build --release -p causeway-linkem")
        try:
            _check_call(["cargo", "build", "--release", "-p", "causeway-linkem"], None, cwd=repo)
        except HarnessError as err:
            raise HarnessError(f"could not build causeway-linkem ({err}; cargo's errors are above)") from None
        target = Path(os.environ.get("CARGO_TARGET_DIR", repo / "target"))
        binary = target / "release" / "causeway-linkem"
    if not binary.is_file():
        raise HarnessError(f"causeway-linkem binary not found at {binary}")
    return str(binary)


def _which(prog: str) -> str | None:
    return shutil.which(prog, path=SBIN_PATH)


def _require(prog: str) -> str:
    path = _which(prog)
    if not path:
        raise HarnessError(f"{prog} is still missing after installation")
    return path


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _apt_install(packages: list[str]) -> None:
    """``apt-get update`` once, then install ``packages`` without starting their services."""
    if os.geteuid() != 0:
        raise HarnessError(f"need root to install {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _log(f"installing {' '.join(packages)} from Debian")
    _check_call(["apt-get", "update", "-q"], env)
    placed_policy = not POLICY_RC_D.exists()
    if placed_policy:
        POLICY_RC_D.write_text("#!/bin/sh\n# bench/run: do not start services while installing\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        try:
            _check_call(["apt-get", "install", "-y", "-q", *packages], env)
        except HarnessError:
            if "nginx-light" not in packages:
                raise
            fallback = ["nginx" if p == "nginx-light" else p for p in packages]
            _check_call(["apt-get", "install", "-y", "-q", *fallback], env)
    finally:
        if placed_policy:
            POLICY_RC_D.unlink(missing_ok=True)


def _ensure_oha() -> str:
    """oha from PATH or ``~/.cargo/bin``, installed with cargo if absent; its flags checked."""
    cargo_bin = Path.home() / ".cargo" / "bin" / "oha"
    path = shutil.which("oha") or (str(cargo_bin) if cargo_bin.exists() else None)
    if not path:
        _log("installing oha with `cargo install oha --locked` (compiles for several minutes)")
        _check_call(["cargo", "install", "oha", "--locked"], None)
        path = str(cargo_bin)
    help_text = subprocess.run([path, "--help"], capture_output=True, text=True, check=False).stdout
    lacking = [flag for flag in OHA_FLAGS if flag not in help_text]
    if lacking:
        raise HarnessError(f"{path} lacks {', '.join(lacking)}; update it: cargo install oha --locked --force")
    return path


def _ensure_causeway(repo: Path, subcommands: tuple[str, ...]) -> str:
    """The causeway binary (built in release mode), checked to have ``subcommands``."""
    override = os.environ.get("CAUSEWAY_BIN")
    if override:
        binary = Path(override)
    else:
        _log("building causeway: cargo build --release -p causeway")
        try:
            _check_call(["cargo", "build", "--release", "-p", "causeway"], None, cwd=repo)
        except HarnessError as err:
            raise HarnessError(f"could not build causeway ({err}; cargo's errors are above)") from None
        target = Path(os.environ.get("CARGO_TARGET_DIR", repo / "target"))
        binary = target / "release" / "causeway"
    if not binary.is_file():
        raise HarnessError(f"causeway binary not found at {binary}")
    for sub in subcommands:
        probe = subprocess.run([str(binary), sub, "--help"], capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            raise HarnessError(
                f"{binary} has no working `{sub}` subcommand yet (`causeway {sub} --help` exited "
                f"{probe.returncode}: {(probe.stderr or probe.stdout).strip()[:300]})"
            )
    return str(binary)


def _check_call(argv: list[str], env: dict[str, str] | None, cwd: Path | None = None) -> None:
    """Run ``argv`` with output to stderr; raise :class:`HarnessError` if it fails."""
    result = subprocess.run(argv, env=env, cwd=cwd, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if result.returncode != 0:
        raise HarnessError(f"`{' '.join(argv)}` failed with code {result.returncode}")
