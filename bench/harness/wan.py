"""The WAN scenarios' world: three network namespaces joined by emulated links, and the
servers placed in them.

Topology (made fresh by :func:`start_lab` for every link setting)::

    client ns ──1 ms RTT── front ns ══WAN (causeway-linkem: delay, loss, rate)══ back ns
    load generators        front proxies                                       origins, back proxies

* ``client``: the load generators (``netclient.py``, iperf3 receivers).
* ``front``: the front proxies under test — Causeway ``frontend``, nginx, HAProxy — each on
  its own port, pinned to :data:`PROXY_CPUS`.
* ``back``: Causeway demo origins, the TLS-terminating nginx "back" (the peers' far end, and
  the target of clients going straight across the WAN), Causeway ``backend``, iperf3 senders.

Only 127.77.x.y addresses that causeway-linkem gives its namespaces are used; admin ports
listen on each namespace's own 127.0.0.1. Ports are fixed (each namespace is new).

Upstream handshakes on the WAN hop are counted in the back namespace with nftables: new
conntrack flows from the front namespace's address to the back's TLS port (TCP) and to the
TMP port (UDP), plus QUIC Initial packets (long header, type 0) to the TMP port.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from .install import ensure_wan_tools
from .peers import CONNECT_TIMEOUT_S, HOSTNAME, UPSTREAM_KEEPALIVE, Tools
from .procs import HarnessError, Proc, ProcessGroup
from .scenarios import LOAD_CPUS, PROXY_CPUS

BENCH = Path(__file__).resolve().parent.parent
NETCLIENT = Path(__file__).resolve().parent / "netclient.py"
ALL_CPUS = "0,1"
# Long transfers must not hit the peers' response timeouts.
WAN_RESPONSE_TIMEOUT_S = 600

# Fixed ports inside the namespaces.
ORIGIN_PORT = 9000
BACK_TLS_PORT = 8443  # nginx back: TLS (HTTP/1.1 and h2), proxies to the origins
TMP_PORT = 4433  # causeway backend, UDP
IPERF_PORT = 5201
FRONT_PORTS = {"causeway": 8443, "nginx": 9443, "haproxy": 10443, "haproxy-h2": 11443}
FRONT_PLAIN_PORTS = {"causeway": 8080, "nginx": 9080, "haproxy": 10080, "haproxy-h2": 11080}
ADMIN_PORT = 9901
# TCP congestion control in the namespaces (what the peers' TCP connections use). A new
# namespace inherits the host's default (bbr on the machine these numbers come from);
# BENCH_TCP_CC=cubic (or reno) sets it explicitly. A namespace may only pick one listed in
# the host's net.ipv4.tcp_allowed_congestion_control.
TCP_CC_OVERRIDE = os.environ.get("BENCH_TCP_CC")
TCP_CC = TCP_CC_OVERRIDE or Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()


@dataclass(frozen=True)
class WanLink:
    """The front–back link, the same in both directions: RTT, loss per direction, rate."""

    rtt_ms: float
    loss: float = 0.0  # per direction, 0..1
    rate_mbit: float | None = None
    queue_bytes: int | None = None

    @property
    def label(self) -> str:
        """e.g. ``50ms-1%loss`` or ``50ms-0%loss-50mbit``."""
        out = f"{self.rtt_ms:g}ms-{self.loss * 100:g}%loss"
        return out + (f"-{self.rate_mbit:g}mbit" if self.rate_mbit else "")

    def spec(self) -> str:
        """The causeway-linkem SPEC of one direction."""
        parts = [f"delay={self.rtt_ms / 2:g}ms"]
        if self.loss:
            parts.append(f"loss={self.loss * 100:g}%")
        if self.rate_mbit:
            parts.append(f"rate={self.rate_mbit:g}mbit")
        if self.queue_bytes:
            parts.append(f"queue={self.queue_bytes}b")
        return ",".join(parts)


@dataclass
class Lab:
    """A running causeway-linkem lab: namespace names and addresses."""

    proc: Proc
    netns: dict[str, str]
    addr: dict[str, str]
    link: WanLink

    def argv(self, ns: str, argv: list[str]) -> list[str]:
        """``argv`` run inside namespace ``ns``."""
        return ["ip", "netns", "exec", self.netns[ns], *argv]

    def run(self, ns: str, argv: list[str], timeout_s: float = 30.0) -> str:
        """Run a short command inside ``ns``; return its stdout, raise on failure."""
        res = subprocess.run(self.argv(ns, argv), capture_output=True, text=True, timeout=timeout_s, check=False)
        if res.returncode != 0:
            raise HarnessError(f"`{' '.join(argv)}` in {ns} failed ({res.returncode}): {res.stderr.strip()[:400]}")
        return res.stdout


@dataclass(frozen=True)
class WanTools:
    """Programs the WAN scenarios add to :class:`Tools`."""

    base: Tools
    linkem: str
    iperf3: str
    nft: str
    openssl: str
    python: str


def tools(ctx_tools: Tools, repo: Path) -> WanTools:
    """The WAN tools, installed or built when missing."""
    extra = ensure_wan_tools(repo)
    return WanTools(
        base=ctx_tools, python=os.environ.get("BENCH_PYTHON", shutil.which("python3") or "python3"), **extra
    )


def start_lab(group: ProcessGroup, tools: WanTools, link: WanLink, seed: int = 1) -> Lab:
    """Build client — front — back with a 1 ms RTT client link and ``link`` as the WAN."""
    argv = [
        tools.linkem, "--ns", "client,front,back", "--no-stdin", "--seed", str(seed),
        "--link", "client:front=delay=0.5ms",
        "--link", f"front:back={link.spec()}",
    ]  # fmt: skip
    proc = group.start(f"linkem-{link.label}-{time.monotonic_ns()}", argv, ALL_CPUS)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        proc.check_alive()
        for line in proc.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"namespaces"' in line:
                doc = json.loads(line)
                netns = {n["name"]: n["netns"] for n in doc["namespaces"]}
                addr = {n["name"]: n["address"] for n in doc["namespaces"]}
                lab = Lab(proc, netns, addr, link)
                if TCP_CC_OVERRIDE:
                    allowed = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control").read_text().split()
                    if TCP_CC_OVERRIDE not in allowed:
                        raise HarnessError(
                            f"BENCH_TCP_CC={TCP_CC_OVERRIDE} is not in the host's allowed list {allowed}; "
                            f"allow it with: sysctl net.ipv4.tcp_allowed_congestion_control='{' '.join(allowed)} "
                            f"{TCP_CC_OVERRIDE}'"
                        )
                    for ns in netns:
                        lab.run(ns, ["sysctl", "-q", f"net.ipv4.tcp_congestion_control={TCP_CC_OVERRIDE}"])
                return lab
        time.sleep(0.05)
    raise HarnessError(f"causeway-linkem printed no lab within 15 s; log {proc.log_path}:\n{proc.log_tail()}")


# --------------------------------------------------------------------------- certificates


def make_certs(tools: WanTools, workdir: Path) -> Path:
    """A self-signed server certificate for the TLS listeners, and the TMP link's CA and pairs."""
    certs = workdir / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    if not (certs / "server.pem").exists():
        subprocess.run(
            [tools.openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", f"/CN={HOSTNAME}", "-addext", f"subjectAltName=DNS:{HOSTNAME}", "-days", "2",
             "-keyout", str(certs / "server.key"), "-out", str(certs / "server.pem")],
            check=True, capture_output=True,
        )  # fmt: skip
        (certs / "server-combined.pem").write_text(
            (certs / "server.pem").read_text() + (certs / "server.key").read_text()
        )
        subprocess.run([tools.base.causeway, "link-certs", "--out", str(certs)], check=True, capture_output=True)
    return certs


# --------------------------------------------------------------------------- servers


def start_origins(group: ProcessGroup, tools: WanTools, lab: Lab, count: int = 1) -> tuple[list[str], list[Proc]]:
    """Causeway demo origins in the back namespace; returns their ``IP:PORT`` and processes."""
    addrs, procs = [], []
    for i in range(count):
        addr = f"{lab.addr['back']}:{ORIGIN_PORT + i}"
        argv = [tools.base.causeway, "origin", "--workers", "1", "--listen", addr, "--name", f"origin{i + 1}"]
        procs.append(group.start(f"origin{i + 1}-{lab.link.label}", lab.argv("back", argv), LOAD_CPUS))
        addrs.append(addr)
    for addr, proc in zip(addrs, procs, strict=True):
        wait_url(lab, "back", addr, False, proc)
    return addrs, procs


def start_nginx_back(group: ProcessGroup, tools: WanTools, lab: Lab, workdir: Path, origins: list[str]) -> Proc:
    """nginx in the back namespace: TLS (HTTP/1.1, h2) on :data:`BACK_TLS_PORT` → the origins, keep-alive."""
    certs = make_certs(tools, workdir)
    servers = "\n".join(f"    server {o};" for o in origins)
    conf = _nginx_conf(
        workdir / f"nginx-back-{lab.link.label}",
        f"""
upstream origins {{
{servers}
    keepalive {UPSTREAM_KEEPALIVE};
    keepalive_requests 1000000;
}}
server {{
    listen {lab.addr["back"]}:{BACK_TLS_PORT} ssl http2 backlog=4096;
    http2_max_concurrent_streams 256;
    ssl_certificate {certs}/server.pem;
    ssl_certificate_key {certs}/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:back:10m;
    location / {{
        proxy_pass http://origins;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_buffering off;
        proxy_read_timeout {WAN_RESPONSE_TIMEOUT_S}s;
    }}
}}
""",
    )
    return group.start(
        f"nginx-back-{lab.link.label}", lab.argv("back", [tools.base.nginx, "-c", str(conf), "-e", "stderr"]), LOAD_CPUS
    )


def start_nginx_front(group: ProcessGroup, tools: WanTools, lab: Lab, workdir: Path) -> Proc:
    """nginx front: TLS to clients, TLS with upstream keep-alive (HTTP/1.1 pool) to nginx back."""
    certs = make_certs(tools, workdir)
    conf = _nginx_conf(
        workdir / f"nginx-front-{lab.link.label}",
        f"""
upstream back {{
    server {lab.addr["back"]}:{BACK_TLS_PORT};
    keepalive {UPSTREAM_KEEPALIVE};
    keepalive_requests 1000000;
    keepalive_timeout 600s;
}}
server {{
    listen {lab.addr["front"]}:{FRONT_PORTS["nginx"]} ssl backlog=4096;
    listen {lab.addr["front"]}:{FRONT_PLAIN_PORTS["nginx"]} backlog=4096;
    ssl_certificate {certs}/server.pem;
    ssl_certificate_key {certs}/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
        proxy_pass https://back;
        proxy_ssl_protocols TLSv1.2 TLSv1.3;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_ssl_session_reuse on;
        proxy_ssl_server_name on;
        proxy_ssl_name {HOSTNAME};
        proxy_buffering off;
        proxy_connect_timeout {CONNECT_TIMEOUT_S}s;
        proxy_read_timeout {WAN_RESPONSE_TIMEOUT_S}s;
    }}
}}
""",
    )
    return group.start(
        f"nginx-front-{lab.link.label}",
        lab.argv("front", [tools.base.nginx, "-c", str(conf), "-e", "stderr"]),
        PROXY_CPUS,
    )


def start_haproxy_front(group: ProcessGroup, tools: WanTools, lab: Lab, workdir: Path, h2: bool = False) -> Proc:
    """HAProxy front with ``http-reuse always``: TLS to clients and to nginx back.

    With ``h2``, the server side speaks HTTP/2 (ALPN h2) and HAProxy multiplexes every request
    onto **one** TLS connection (``max-reuse -1``, and ``maxconn``/``pool-max-conn`` 1 keeps
    it to a single connection).
    """
    certs = make_certs(tools, workdir)
    kind = "haproxy-h2" if h2 else "haproxy"
    server = f"server back {lab.addr['back']}:{BACK_TLS_PORT} ssl verify none sni str({HOSTNAME})"
    if h2:
        server += " alpn h2 pool-max-conn 1 max-reuse -1"
    conf_dir = workdir / f"{kind}-{lab.link.label}"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = conf_dir / "haproxy.cfg"
    conf.write_text(
        textwrap.dedent(
            f"""\
            global
                nbthread 1
                maxconn 9000
                tune.ssl.default-dh-param 2048
                # HTTP/2 receive window per stream: the default 64 kB would cap each download
                # at 64 kB per RTT; make it larger than the WAN's bandwidth-delay product.
                tune.h2.initial-window-size 8388608
            defaults
                mode http
                timeout connect {CONNECT_TIMEOUT_S}s
                timeout server {WAN_RESPONSE_TIMEOUT_S}s
                timeout client 600s
                timeout http-keep-alive 60s
            frontend bench
                bind {lab.addr["front"]}:{FRONT_PORTS[kind]} ssl crt {certs}/server-combined.pem
                bind {lab.addr["front"]}:{FRONT_PLAIN_PORTS[kind]}
                default_backend back
            backend back
                http-reuse always
                {server}
            """
        )
    )
    return group.start(
        f"{kind}-{lab.link.label}", lab.argv("front", [tools.base.haproxy, "-db", "-f", str(conf)]), PROXY_CPUS
    )


def site_file(workdir: Path, origins: list[str], priority_rules: bool = False) -> Path:
    """A Site for Causeway's frontend and backend: the origins, and /cN → class N when asked."""
    lines = [
        "apiVersion: causeway.dev/v1alpha1",
        "kind: Site",
        "metadata: { name: bench }",
        "spec:",
        f"  hostnames: [{HOSTNAME}]",
        "  origins:",
        *(f'    - {{ name: origin{i + 1}, url: "http://{o}", maxInFlight: 1000 }}' for i, o in enumerate(origins)),
        f"  limits: {{ connectTimeout: {CONNECT_TIMEOUT_S}s, responseTimeout: {WAN_RESPONSE_TIMEOUT_S}s }}",
    ]
    if priority_rules:
        lines += ["  priority:", "    defaultClass: 2", "    rules:"]
        lines += [f"      - {{ class: {c}, match: {{ pathPrefix: /c{c} }} }}" for c in range(5)]
    path = workdir / ("site-classes.yaml" if priority_rules else "site.yaml")
    path.write_text("\n".join(lines) + "\n")
    return path


def start_causeway_backend(group: ProcessGroup, tools: WanTools, lab: Lab, workdir: Path, site: Path) -> Proc:
    """Causeway backend in the back namespace, TMP on UDP :data:`TMP_PORT`."""
    certs = make_certs(tools, workdir)
    argv = [
        tools.base.causeway, "backend", "--name", "back",
        "--link-listen", f"{lab.addr['back']}:{TMP_PORT}",
        "--admin-listen", f"127.0.0.1:{ADMIN_PORT + 1}",
        "--link-ca", str(certs / "ca.pem"), "--link-cert", str(certs / "backend.pem"),
        "--link-key", str(certs / "backend.key"),
        "--link-expected-rtt", f"{max(lab.link.rtt_ms * 2, 100):.0f}ms",
        str(site),
    ]  # fmt: skip
    return group.start(f"causeway-backend-{lab.link.label}", lab.argv("back", argv), LOAD_CPUS)


def start_causeway_frontend(
    group: ProcessGroup, tools: WanTools, lab: Lab, workdir: Path, site: Path, extra: list[str] | None = None
) -> Proc:
    """Causeway frontend in the front namespace: TLS and plain listeners, one TMP link to the backend."""
    certs = make_certs(tools, workdir)
    argv = [
        tools.base.causeway, "frontend", "--name", "front", "--workers", "1",
        "--listen", f"{lab.addr['front']}:{FRONT_PLAIN_PORTS['causeway']}",
        "--tls-listen", f"{lab.addr['front']}:{FRONT_PORTS['causeway']}",
        "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
        "--admin-listen", f"127.0.0.1:{ADMIN_PORT}",
        "--backend", f"{lab.addr['back']}:{TMP_PORT}",
        "--link-ca", str(certs / "ca.pem"), "--link-cert", str(certs / "frontend.pem"),
        "--link-key", str(certs / "frontend.key"),
        "--link-expected-rtt", f"{max(lab.link.rtt_ms * 2, 100):.0f}ms",
        *(extra or []),
        str(site),
    ]  # fmt: skip
    return group.start(f"causeway-frontend-{lab.link.label}", lab.argv("front", argv), PROXY_CPUS)


def wait_ready(lab: Lab, port: int, procs: list[Proc], tls: bool = True, timeout_s: float = 20.0) -> None:
    """Poll ``https://FRONT:PORT/`` from the client namespace until it answers 200."""
    scheme = "https" if tls else "http"
    url = f"{scheme}://{lab.addr['front']}:{port}/ready"
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        for p in procs:
            p.check_alive()
        res = subprocess.run(
            lab.argv("client", ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-m", "3",
                                "-H", f"Host: {HOSTNAME}", url]),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        last = res.stdout.strip() or res.stderr.strip()
        if last == "200":
            return
        time.sleep(0.2)
    raise HarnessError(
        f"{url} not ready after {timeout_s:.0f} s (last: {last}); logs: " + ", ".join(str(p.log_path) for p in procs)
    )


def wait_url(lab: Lab, ns: str, addr: str, tls: bool, proc: Proc, timeout_s: float = 15.0) -> None:
    """Poll a server inside the lab from namespace ``ns`` until it answers 200."""
    scheme = "https" if tls else "http"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc.check_alive()
        res = subprocess.run(
            lab.argv(ns, ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-m", "3",
                          "-H", f"Host: {HOSTNAME}", f"{scheme}://{addr}/ready"]),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if res.stdout.strip() == "200":
            return
        time.sleep(0.1)
    raise HarnessError(
        f"{scheme}://{addr} not ready in {ns} after {timeout_s:.0f} s; log {proc.log_path}:\n{proc.log_tail()}"
    )


def metrics(lab: Lab, ns: str, port: int) -> str:
    """A Causeway admin /metrics page from inside ``ns``."""
    return lab.run(ns, ["curl", "-s", "-m", "3", f"http://127.0.0.1:{port}/metrics"])


def metric_sum(text: str, family: str, **labels: str) -> float:
    """The sum of a metric family's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(family) or line.startswith("#"):
            continue
        name, _, rest = line.partition("{") if "{" in line.split(" ")[0] else (line.split(" ")[0], "", line)
        if name != family:
            continue
        label_text, _, value = rest.rpartition("} ") if "}" in rest else ("", "", rest.split(" ")[-1])
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value.split()[0])
    return total


# --------------------------------------------------------------------------- handshake counting


def install_counters(lab: Lab, tools: WanTools) -> None:
    """nftables counters in the back namespace for upstream connections from the front namespace."""
    front = lab.addr["front"]
    ruleset = textwrap.dedent(
        f"""\
        table inet bench {{
            counter tcp_new {{ }}
            counter quic_new {{ }}
            counter quic_initial {{ }}
            chain input {{
                type filter hook input priority 0; policy accept;
                ip saddr {front} tcp dport {BACK_TLS_PORT} ct state new counter name "tcp_new"
                ip saddr {front} udp dport {TMP_PORT} ct state new counter name "quic_new"
                ip saddr {front} udp dport {TMP_PORT} @th,64,8 & 0xb0 == 0x80 counter name "quic_initial"
            }}
        }}
        """
    )
    res = subprocess.run(
        lab.argv("back", [tools.nft, "-f", "-"]), input=ruleset, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise HarnessError(f"nft in the back namespace failed: {res.stderr.strip()[:400]}")


def read_counters(lab: Lab, tools: WanTools) -> dict[str, int]:
    """Packets counted so far by :func:`install_counters`' counters."""
    doc = json.loads(lab.run("back", [tools.nft, "-j", "list", "counters", "table", "inet", "bench"]))
    out = {}
    for item in doc.get("nftables", []):
        counter = item.get("counter")
        if counter:
            out[counter["name"]] = int(counter["packets"])
    return out


# --------------------------------------------------------------------------- load


def netclient(
    group: ProcessGroup,
    tools: WanTools,
    lab: Lab,
    workdir: Path,
    name: str,
    mode: str,
    port: int,
    *,
    tls: bool,
    duration_s: float,
    extra: list[str],
    ns: str = "client",
    target_ns: str = "front",
    wait: bool = True,
) -> Proc | dict:
    """Run ``netclient.py MODE`` in the client namespace against ``target_ns``'s ``port``.

    With ``wait`` returns its JSON document; otherwise the running process (read the result
    later with :func:`read_netclient`).
    """
    out = workdir / f"{name}.json"
    argv = [
        tools.python, str(NETCLIENT), mode, "--addr", lab.addr[target_ns], "--port", str(port),
        "--duration", f"{duration_s:g}", "--out", str(out), *(["--tls"] if tls else []), *extra,
    ]  # fmt: skip
    if not wait:
        proc = group.start(name, lab.argv(ns, argv), LOAD_CPUS)
        proc.result_path = out  # type: ignore[attr-defined]
        return proc
    group.run(name, lab.argv(ns, argv), LOAD_CPUS, timeout_s=duration_s * 3 + 60)
    return json.loads(out.read_text())


def read_netclient(group: ProcessGroup, proc: Proc, timeout_s: float) -> dict:
    """Wait for a background :func:`netclient` and return its JSON."""
    try:
        proc.popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        group.stop(proc)
        raise HarnessError(f"{proc.name} did not finish within {timeout_s:.0f} s") from None
    if proc.popen.returncode != 0:
        raise HarnessError(f"{proc.name} failed ({proc.popen.returncode}); log {proc.log_path}:\n{proc.log_tail()}")
    return json.loads(proc.result_path.read_text())  # type: ignore[attr-defined]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p / 100 * len(ordered) // 1))))
    return ordered[rank - 1]


def latency_summary(records: list[dict], timeout_s: float) -> dict:
    """p50/p90/p99/p99.9 over every request (errors and non-2xx count as the timeout)."""
    values = [r["ms"] if 200 <= r.get("status", 0) < 300 else timeout_s * 1e3 for r in records]
    errors = sum(1 for r in records if not 200 <= r.get("status", 0) < 300)
    return {
        "requests": len(records),
        "errors": errors,
        **{f"p{p:g}": round(percentile(values, p), 2) for p in (50, 90, 99, 99.9)},
    }


def _nginx_conf(conf_dir: Path, http_block: str) -> Path:
    """An nginx.conf for one foreground worker whose files all live in ``conf_dir``."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    temp = conf_dir / "tmp"
    temp.mkdir(exist_ok=True)
    conf = conf_dir / "nginx.conf"
    conf.write_text(
        textwrap.dedent(
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
        + textwrap.indent(http_block, "    ")
        + "}\n"
    )
    return conf
