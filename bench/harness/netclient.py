"""A small asyncio HTTP/1.1 load client for the WAN scenarios, run inside a namespace.

Run as a script (``ip netns exec NS python netclient.py MODE ...``): it imports nothing
from the harness, prints one JSON document on stdout and exits. Modes:

* ``sessions`` — short-lived clients at a fixed rate of new connections (open loop). Each
  session opens a fresh TCP connection (TLS with ``--tls``), sends 1 or 2 GETs in turn
  (``--requests 1,2`` alternates), then closes. A first request's latency runs from the
  session's **scheduled** start to the last byte of its answer, so it includes the TCP and
  TLS handshakes and any lag of the client itself; a second request's runs from its send.
* ``rate`` — ``--connections`` keep-alive connections opened beforehand, and GETs at a fixed
  total rate, each given to a free connection (a new one is opened when none is free).
  Latency runs from the scheduled start.
* ``download`` — ``--connections`` concurrent GETs of a large body; bytes received are
  counted per 100 ms bucket, per connection, for ``--duration`` seconds, then the
  connections are dropped.

A request that fails or exceeds ``--timeout`` is recorded as an error with the timeout as
its latency. Every request carries ``Host: --host``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time

BUCKET_S = 0.1


class HttpError(Exception):
    """A malformed or failed answer."""


async def read_response(reader: asyncio.StreamReader, on_bytes=None) -> tuple[int, int]:
    """Read one HTTP/1.1 response; return (status, body bytes). ``on_bytes(n)`` sees body progress."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    total = 0

    def seen(n: int) -> None:
        nonlocal total
        total += n
        if on_bytes:
            on_bytes(n)

    if status in (204, 304) or 100 <= status < 200:
        return status, 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # trailer end (no trailers expected)
                break
            left = size
            while left:
                chunk = await reader.read(min(left, 65536))
                if not chunk:
                    raise HttpError("connection closed inside a chunk")
                left -= len(chunk)
                seen(len(chunk))
            await reader.readexactly(2)
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left:
            chunk = await reader.read(min(left, 65536))
            if not chunk:
                raise HttpError("connection closed inside the body")
            left -= len(chunk)
            seen(len(chunk))
    else:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            seen(len(chunk))
    return status, total


def request_bytes(path: str, host: str) -> bytes:
    """A GET with keep-alive."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: causeway-bench\r\n\r\n".encode()


def tls_context() -> ssl.SSLContext:
    """TLS without certificate checks (self-signed benchmark certificates), no session reuse."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def open_conn(args, ctx):
    """A fresh connection (TLS when ``ctx``)."""
    return await asyncio.open_connection(
        args.addr, args.port, ssl=ctx, server_hostname=args.host if ctx else None, limit=1 << 20
    )


async def sessions(args) -> dict:
    """Short-lived clients at a fixed rate (see the module docstring)."""
    ctx = tls_context() if args.tls else None
    counts = [int(x) for x in args.requests.split(",")]
    records: list[dict] = []
    tasks = []
    start = time.monotonic() + 0.05
    total = int(args.rate * args.duration)

    async def one(i: int, scheduled: float) -> None:
        n = counts[i % len(counts)]
        writer = None
        try:
            async with asyncio.timeout(args.timeout * n):
                reader, writer = await open_conn(args, ctx)
                t0 = scheduled
                for k in range(n):
                    if k:
                        t0 = time.monotonic()
                    writer.write(request_bytes(args.path, args.host))
                    status, _ = await read_response(reader)
                    records.append(
                        {
                            "t": round(scheduled - start, 4),
                            "k": k,
                            "ms": (time.monotonic() - t0) * 1e3,
                            "status": status,
                        }
                    )
        except Exception as err:  # noqa: BLE001 — every failure is one error record
            records.append(
                {
                    "t": round(scheduled - start, 4),
                    "k": -1,
                    "ms": args.timeout * 1e3,
                    "status": 0,
                    "error": type(err).__name__,
                }
            )
        finally:
            if writer is not None:
                writer.close()

    for i in range(total):
        scheduled = start + i / args.rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return {"mode": "sessions", "sessions": total, "records": records}


async def rate(args) -> dict:
    """Fixed-rate GETs over a pool of keep-alive connections."""
    ctx = tls_context() if args.tls else None
    idle: list = []
    for _ in range(args.connections):
        idle.append(await open_conn(args, ctx))
    records: list[dict] = []
    start = time.monotonic() + 0.05
    total = int(args.rate * args.duration)

    async def one(scheduled: float) -> None:
        conn = idle.pop() if idle else None
        try:
            async with asyncio.timeout(args.timeout):
                if conn is None:
                    conn = await open_conn(args, ctx)
                reader, writer = conn
                writer.write(request_bytes(args.path, args.host))
                status, _ = await read_response(reader)
            records.append(
                {"t": round(scheduled - start, 4), "ms": (time.monotonic() - scheduled) * 1e3, "status": status}
            )
            idle.append(conn)
        except Exception as err:  # noqa: BLE001
            records.append(
                {"t": round(scheduled - start, 4), "ms": args.timeout * 1e3, "status": 0, "error": type(err).__name__}
            )
            if conn is not None:
                conn[1].close()

    tasks = []
    for i in range(total):
        scheduled = start + i / args.rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    return {"mode": "rate", "records": records}


async def download(args) -> dict:
    """Concurrent large downloads, bytes counted per bucket."""
    ctx = tls_context() if args.tls else None
    buckets = int(args.duration / BUCKET_S) + 1
    paths = args.path.split(",")
    per_conn = [[0] * buckets for _ in range(args.connections)]
    done_at: list[float | None] = [None] * args.connections
    start = time.monotonic()

    async def one(i: int) -> None:
        path = paths[i % len(paths)]
        reader, writer = await open_conn(args, ctx)

        def seen(n: int) -> None:
            b = int((time.monotonic() - start) / BUCKET_S)
            if b < buckets:
                per_conn[i][b] += n

        try:
            writer.write(request_bytes(path, args.host))
            await read_response(reader, seen)
            done_at[i] = time.monotonic() - start
        finally:
            writer.close()

    tasks = [asyncio.create_task(one(i)) for i in range(args.connections)]
    _, pending = await asyncio.wait(tasks, timeout=args.duration)
    for t in pending:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    errors = [type(t.exception()).__name__ for t in tasks if not t.cancelled() and t.exception()]
    return {
        "mode": "download",
        "bucket_s": BUCKET_S,
        "paths": [paths[i % len(paths)] for i in range(args.connections)],
        "bytes": per_conn,
        "done_at_s": done_at,
        "errors": errors,
    }


def main() -> None:
    """Parse arguments, run one mode, print its JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["sessions", "rate", "download"])
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="bench.local")
    p.add_argument("--path", default="/")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--requests", default="1,2")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    fn = {"sessions": sessions, "rate": rate, "download": download}[args.mode]
    result = asyncio.run(fn(args))
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(f"netclient: {args.mode} done", file=sys.stderr)


if __name__ == "__main__":
    main()
