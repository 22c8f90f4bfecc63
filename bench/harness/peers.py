"""The servers under test and the origins behind them: config files and start-up.

Every proxy — Causeway, nginx, HAProxy — runs with one worker/thread pinned to the proxy core
and is configured alike: the same origins, upstream keep-alive, a 2 s connect and 5 s
response timeout, no access log, and the same Host name. Origins are either nginx instances
returning a small static body (throughput) or Causeway's demo origin (tail, which needs a
slow phase). Config files are written into a per-run temporary directory.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

from .procs import Proc, ProcessGroup, free_port, wait_http_ok

HOSTNAME = "bench.local"
ORIGIN_BODY = "hello from the origin\\n"
CONNECT_TIMEOUT_S = 2
RESPONSE_TIMEOUT_S = 5
UPSTREAM_KEEPALIVE = 64


@dataclass(frozen=True)
class Endpoint:
    """A listening HTTP server on 127.0.0.1."""

    name: str
    port: int

    @property
    def addr(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/``."""
        return f"http://{self.addr}/"


@dataclass(frozen=True)
class Tools:
    """Paths of the programs the harness runs."""

    nginx: str
    haproxy: str
    oha: str
    causeway: str


@dataclass(frozen=True)
class SlowPhase:
    """A window, measured from an origin's start, during which it adds ``delay_s`` to every answer."""

    after_s: float
    duration_s: float
    delay_s: float


# --------------------------------------------------------------------------- origins


def start_nginx_origin(group: ProcessGroup, tools: Tools, workdir: Path, name: str, cpus: str) -> tuple[Endpoint, Proc]:
    """Start an nginx origin (one worker) answering ``200`` with a small static body on every path.

    Returns at once; call :func:`wait_origins` before use.
    """
    ep = Endpoint(name, free_port())
    conf = _nginx_main(
        workdir / name,
        f"""
        server {{
            listen {ep.addr} backlog=4096;
            location / {{ return 200 "{ORIGIN_BODY}"; }}
        }}
        """,
    )
    return ep, group.start(name, [tools.nginx, "-c", str(conf), "-e", "stderr"], cpus)


def start_causeway_origin(
    group: ProcessGroup,
    tools: Tools,
    name: str,
    cpus: str,
    slow: SlowPhase | None,
    delay_s: float = 0.0,
    port: int | None = None,
) -> tuple[Endpoint, Proc]:
    """Start Causeway's demo origin, answering after ``delay_s``, optionally with a slow phase
    counted from its start; on ``port`` (to restart one in its place) or a free one.

    Returns at once (so several origins start together); call :func:`wait_origins` before use.
    """
    ep = Endpoint(name, port or free_port())
    argv = [tools.causeway, "origin", "--workers", "1", "--listen", ep.addr, "--delay", f"{delay_s * 1000:.0f}ms"]
    if slow:
        argv += [
            "--slow-after", f"{slow.after_s * 1000:.0f}ms",
            "--slow-for", f"{slow.duration_s * 1000:.0f}ms",
            "--slow-delay", f"{slow.delay_s * 1000:.0f}ms",
        ]  # fmt: skip
    return ep, group.start(name, argv, cpus)


def wait_origins(origins: list[tuple[Endpoint, Proc]]) -> list[Endpoint]:
    """Wait until every origin answers; return their endpoints."""
    for ep, proc in origins:
        wait_http_ok(ep.url, None, proc)
    return [ep for ep, _ in origins]


# --------------------------------------------------------------------------- proxies


@dataclass(frozen=True)
class Queueing:
    """A concurrency limit per origin and a queue in front of it, configured alike in each proxy.

    Causeway: ``maxInFlight`` per origin, ``spec.queue`` (``timeout``, ``maxLength``) and one
    ``spec.priority`` rule per class. HAProxy: ``maxconn`` per server, ``timeout queue`` (its
    backend queue has no length bound) and ``http-request set-priority-class`` per class
    (class K → K − 2, so the default class 2 is HAProxy's default 0; lower goes first).
    nginx (open source) has neither a queue nor classes.
    """

    per_origin: int
    timeout_s: float
    max_length: int
    classes: tuple[tuple[str, int], ...] = ()  # (path prefix, class 0..4); other paths are class 2
    # Causeway's ``queue.standingWait`` (shorter waits while the queue stands); HAProxy has no
    # counterpart. ``None`` keeps Causeway's default.
    standing_wait_s: float | None = None


@dataclass(frozen=True)
class ProxySpec:
    """One proxy configuration under test: a program (``kind``) and its balancing policy."""

    kind: str  # "causeway" | "nginx" | "haproxy"
    policy: str  # in the program's own words: "qos", "least_conn", "random(2)", ...

    @property
    def label(self) -> str:
        """A short unique label, e.g. ``haproxy/leastconn``."""
        return f"{self.kind}/{self.policy}"


def start_proxy(
    group: ProcessGroup,
    tools: Tools,
    workdir: Path,
    spec: ProxySpec,
    origins: list[Endpoint],
    cpus: str,
    queueing: Queueing | None = None,
    name: str | None = None,
    wrapper: list[str] | None = None,
    ready_timeout_s: float = 15.0,
) -> tuple[Endpoint, Proc]:
    """Start one proxy over ``origins`` and return once a request through it succeeds.

    ``queueing`` limits each origin's concurrency and queues the rest (Causeway and HAProxy).
    ``wrapper`` is a command the proxy runs under (such as ``valgrind``).
    """
    name = name or spec.label.replace("/", "-").replace("(", "").replace(")", "")
    ep = Endpoint(name, free_port())
    conf_dir = workdir / name
    conf_dir.mkdir(parents=True, exist_ok=True)
    if spec.kind == "nginx":
        if queueing:
            raise ValueError("nginx has no queue")
        argv = [tools.nginx, "-c", str(_nginx_proxy_conf(conf_dir, ep, spec.policy, origins)), "-e", "stderr"]
    elif spec.kind == "haproxy":
        argv = [tools.haproxy, "-db", "-f", str(_haproxy_conf(conf_dir, ep, spec.policy, origins, queueing))]
    elif spec.kind == "causeway":
        admin = free_port()
        site = _causeway_site(conf_dir, spec.policy, origins, queueing)
        argv = [
            tools.causeway, "gateway",
            "--listen", ep.addr,
            "--admin-listen", f"127.0.0.1:{admin}",
            "--workers", "1",
            str(site),
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown proxy kind {spec.kind}")
    proc = group.start(name, [*(wrapper or []), *argv], cpus)
    if spec.kind == "causeway":
        wait_http_ok(f"http://127.0.0.1:{admin}/healthz", None, proc, ready_timeout_s)
    wait_http_ok(ep.url, HOSTNAME, proc, ready_timeout_s)
    return ep, proc


def _nginx_main(conf_dir: Path, http_block: str) -> Path:
    """Write an nginx.conf for one foreground worker whose files all live in ``conf_dir``."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    temp = conf_dir / "tmp"
    temp.mkdir(exist_ok=True)
    conf = conf_dir / "nginx.conf"
    # A root master would hand its worker to `nobody`; keeping the worker under the harness's
    # own user changes nothing it measures, and lets Valgrind's gdbserver reach it.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        user
        + textwrap.dedent(
            f"""\
            daemon off;
            master_process on;
            worker_processes 1;
            worker_rlimit_nofile 20000;
            pid {conf_dir}/nginx.pid;
            error_log stderr warn;
            events {{ worker_connections 16384; }}
            http {{
                access_log off;
                client_body_temp_path {temp}/body;
                proxy_temp_path {temp}/proxy;
                fastcgi_temp_path {temp}/fastcgi;
                uwsgi_temp_path {temp}/uwsgi;
                scgi_temp_path {temp}/scgi;
                keepalive_requests 1000000;
                keepalive_timeout 60s;
            """
        )
        + textwrap.indent(textwrap.dedent(http_block), "    ")
        + "}\n"
    )
    return conf


def _nginx_proxy_conf(conf_dir: Path, ep: Endpoint, policy: str, origins: list[Endpoint]) -> Path:
    """nginx as a reverse proxy: ``policy`` is ``round-robin`` or ``least_conn``."""
    if policy not in ("round-robin", "least_conn"):
        raise ValueError(f"nginx policy {policy}")
    method = "least_conn;" if policy == "least_conn" else ""
    servers = "\n".join(f"            server {o.addr};" for o in origins)
    return _nginx_main(
        conf_dir,
        f"""
        upstream origins {{
            {method}
{servers}
            keepalive {UPSTREAM_KEEPALIVE};
            keepalive_requests 1000000;
        }}
        server {{
            listen {ep.addr} backlog=4096;
            location / {{
                proxy_pass http://origins;
                proxy_http_version 1.1;
                proxy_set_header Connection "";
                proxy_set_header Host $host;
                proxy_connect_timeout {CONNECT_TIMEOUT_S}s;
                proxy_read_timeout {RESPONSE_TIMEOUT_S}s;
            }}
        }}
        """,
    )


def _haproxy_conf(
    conf_dir: Path, ep: Endpoint, balance: str, origins: list[Endpoint], queueing: Queueing | None = None
) -> Path:
    """HAProxy with one thread; ``balance`` is its own keyword (``roundrobin``, ``leastconn``, ...)."""
    limit = f" maxconn {queueing.per_origin}" if queueing else ""
    servers = "\n".join(f"    server {o.name} {o.addr}{limit}" for o in origins)
    if queueing:
        servers = (
            f"    timeout queue {queueing.timeout_s * 1000:.0f}ms\n"
            + "".join(
                f"    http-request set-priority-class int({cls - 2}) if {{ path_beg {prefix} }}\n"
                for prefix, cls in queueing.classes
            )
            + servers
        )
    conf = conf_dir / "haproxy.cfg"
    conf.write_text(
        textwrap.dedent(
            f"""\
            global
                nbthread 1
                maxconn 9000
            defaults
                mode http
                timeout connect {CONNECT_TIMEOUT_S}s
                timeout server {RESPONSE_TIMEOUT_S}s
                timeout client 60s
                timeout http-keep-alive 60s
            frontend bench
                bind {ep.addr}
                default_backend origins
            backend origins
                balance {balance}
                http-reuse always
            """
        )
        + servers
        + "\n"
    )
    return conf


def _causeway_site(conf_dir: Path, policy: str, origins: list[Endpoint], queueing: Queueing | None = None) -> Path:
    """A Site manifest for ``causeway gateway``; ``policy`` is ``qos``, ``least-request`` or ``round-robin``."""
    mark = queueing.per_origin if queueing else 1000
    lines = [
        "apiVersion: causeway.dev/v1alpha1",
        "kind: Site",
        "metadata: { name: bench }",
        "spec:",
        f"  hostnames: [{HOSTNAME}]",
        f"  loadBalancing: {{ policy: {policy} }}",
        "  origins:",
        *(f'    - {{ name: {o.name}, url: "http://{o.addr}", maxInFlight: {mark} }}' for o in origins),
        f"  limits: {{ connectTimeout: {CONNECT_TIMEOUT_S}s, responseTimeout: {RESPONSE_TIMEOUT_S}s }}",
    ]
    if queueing:
        standing = (
            f", standingWait: {queueing.standing_wait_s * 1000:.0f}ms" if queueing.standing_wait_s is not None else ""
        )
        lines.append(
            f"  queue: {{ maxLength: {queueing.max_length}, timeout: {queueing.timeout_s * 1000:.0f}ms{standing} }}"
        )
        rules = "".join(f"\n      - {{ class: {c}, match: {{ pathPrefix: {p} }} }}" for p, c in queueing.classes)
        lines.append(f"  priority:\n    defaultClass: 2\n    rules:{rules or ' []'}")
    site = conf_dir / "site.yaml"
    site.write_text("\n".join(lines) + "\n")
    return site
