#!/usr/bin/env python3
"""Writes the committed seed inputs under fuzz/seeds/TARGET/: a few real inputs per target.

* frame_decode: TMP frames as the link sends them (selector byte, then the payload; selector 2
  takes a stream of length-prefixed frames), encoded in the link crate's wire format.
* site_classify: the repo's examples/site.yaml and a Site with every kind of rule, each
  followed by real request heads (NUL-separated).
* cache_control: Cache-Control values origins and browsers send, with Date, Expires, Age,
  Last-Modified, Pragma and Range lines.
* dns_query: queries captured from `dig` against a UDP socket on 127.0.0.1 (dig must be
  installed: Debian's bind9-dnsutils).

Run from anywhere: ``python3 fuzz/make_seeds.py``. Existing seed files are overwritten.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
SEEDS = FUZZ / "seeds"


def write(target: str, name: str, data: bytes) -> None:
    """One seed file."""
    directory = SEEDS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)


# --- frame_decode -----------------------------------------------------------------------------


def short(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def long(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def headers(fields: list[tuple[bytes, bytes]]) -> bytes:
    return struct.pack(">H", len(fields)) + b"".join(short(n) + short(v) for n, v in fields)


def http_head(cls: int, rtype: int, zstd: bool, method: bytes, target: bytes, fields) -> bytes:
    """A ChannelHead payload for an HTTP channel (wire version 1, kind 1)."""
    return bytes([1, 1, cls, rtype, 1 if zstd else 0]) + short(method) + long(target) + headers(fields)


def tcp_head(cls: int, site: bytes, port: int) -> bytes:
    """A ChannelHead payload for a TCP channel (kind 2)."""
    return bytes([1, 2, cls, 0, 0]) + short(site) + struct.pack(">H", port)


def response_head(status: int, zstd: bool, fields) -> bytes:
    return struct.pack(">H", status) + bytes([1 if zstd else 0]) + headers(fields)


def framed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def frames() -> None:
    get = http_head(
        2,
        1,
        True,
        b"GET",
        b"/catalogue/shoes?page=2",
        [(b"host", b"shop.example.com"), (b"accept-encoding", b"gzip, zstd"), (b"cookie", b"cart=42")],
    )
    post = http_head(0, 1, False, b"POST", b"/checkout", [(b"host", b"shop.example.com"), (b"content-length", b"17")])
    options = http_head(4, 0, False, b"OPTIONS", b"*", [])
    tcp = tcp_head(3, b"default/shop", 1883)
    ok = response_head(200, True, [(b"content-type", b"text/html"), (b"cache-control", b"max-age=60")])
    missing = response_head(404, False, [(b"content-length", b"0")])
    write("frame_decode", "channel-get", b"\x00" + get)
    write("frame_decode", "channel-post", b"\x00" + post)
    write("frame_decode", "channel-options", b"\x00" + options)
    write("frame_decode", "channel-tcp", b"\x00" + tcp)
    write("frame_decode", "response-200", b"\x01" + ok)
    write("frame_decode", "response-404", b"\x01" + missing)
    write("frame_decode", "stream", b"\x02" + framed(get) + framed(ok) + framed(b'{"ping":1}') + framed(tcp))


# --- site_classify ----------------------------------------------------------------------------

RULES_SITE = b"""apiVersion: causeway.dev/v1alpha1
kind: Site
metadata: { name: shop }
spec:
  hostnames: [shop.example.com]
  origins: [{ name: a, url: "http://127.0.0.1:1" }]
  priority:
    defaultClass: 3
    rules:
      - class: 0
        match: { pathPrefix: /checkout, methods: [POST] }
      - class: 1
        match: { cookies: [{ name: cart, regex: "^[0-9]+$" }] }
      - class: 4
        match: { headers: [{ name: x-bulk }] }
  requestTypes:
    defaultType: dynamic
    costs: { static: 1, dynamic: 2, db: 4, media: 8 }
    rules:
      - type: static
        match: { extensions: [css, js, png] }
      - type: media
        match: { pathRegex: "^/video/" }
      - type: db
        match: { headers: [{ name: x-query, value: "yes" }] }
"""

REQUESTS = [
    b"GET /catalogue/shoes.png HTTP/1.1\r\nHost: shop.example.com\r\nAccept: image/*\r\n\r\n",
    b"POST /checkout HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 2\r\nCookie: cart=42; lang=en\r\n\r\n",
    b"GET /video/intro.mp4 HTTP/1.1\r\nHost: shop.example.com\r\nRange: bytes=0-1023\r\n\r\n",
    b"GET /search?q=x HTTP/1.1\r\nHost: shop.example.com\r\nX-Query: yes\r\nX-Bulk: 1\r\n\r\n",
    b"DELETE /cart/1 HTTP/1.0\r\nCookie: cart=abc\r\n\r\n",
]


def sites() -> None:
    example = (REPO / "examples" / "site.yaml").read_bytes()
    requests = b"\x00".join(REQUESTS)
    write("site_classify", "example-site", example + b"\x00" + requests)
    write("site_classify", "rules-site", RULES_SITE + b"\x00" + requests)
    write("site_classify", "two-sites", example + b"---\n" + RULES_SITE.replace(b"name: shop", b"name: shop2"))
    # Frontend manifests go through the same document reader.
    write("site_classify", "example-frontend", (REPO / "examples" / "frontend.yaml").read_bytes())


# --- cache_control ----------------------------------------------------------------------------


def cache_control() -> None:
    seeds = {
        "static-asset": b"cache-control: public, max-age=31536000, immutable\n"
        b"date: Mon, 01 Jan 2024 00:00:00 GMT\nlast-modified: Sun, 01 Oct 2023 10:00:00 GMT\n",
        "shared": b"Cache-Control: max-age=60, s-maxage=300, stale-while-revalidate=30, stale-if-error=86400\n"
        b"Age: 12\nDate: Mon, 01 Jan 2024 00:00:00 GMT\n\ncache-control: max-stale=10, min-fresh=5\n",
        "private-fields": b'cache-control: private="set-cookie, authorization", no-cache="x-debug"\n'
        b"expires: Mon, 01 Jan 2024 01:00:00 GMT\ndate: Mon, 01 Jan 2024 00:00:00 GMT\n",
        "no-store": b"Cache-Control: no-store, no-cache, must-revalidate, proxy-revalidate\nPragma: no-cache\n"
        b"Expires: 0\n\nPragma: no-cache\n",
        "browser-reload": b"cache-control: max-age=600\n\ncache-control: max-age=0\nrange: bytes=0-499\n",
        "quoted": b'max-age="30", s-maxage=abc, Stale-While-Revalidate=99999999999999\n'
        b"age: 4294967296\n\nmax-stale\nonly-if-cached\nrange: bytes=-500\n",
        "legacy": b"Expires: Thu, 01 Dec 1994 16:00:00 GMT\nLast-Modified: Tue, 15 Nov 1994 12:45:26 GMT\n"
        b"Date: Tue, 15 Nov 1994 08:12:31 GMT\n\nrange: bytes=9500-\n",
    }
    for name, data in seeds.items():
        write("cache_control", name, data)


# --- dns_query --------------------------------------------------------------------------------


def capture(args: list[str]) -> bytes:
    """The first query `dig ARGS` sends to a socket on 127.0.0.1 (which never answers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        dig = threading.Thread(
            target=subprocess.run,
            args=(["dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+time=1", *args],),
            kwargs={"capture_output": True, "check": False},
        )
        dig.start()
        packet, _ = sock.recvfrom(65535)
        dig.join()
        return packet


def dns() -> None:
    queries = {
        "a": ["shop.example.com", "A"],
        "aaaa-no-edns": ["shop.example.com", "AAAA", "+noedns"],
        "a-ecs-v4": ["shop.example.com", "A", "+subnet=10.2.3.0/24"],
        "aaaa-ecs-v6": ["x.shop.example.com", "AAAA", "+subnet=2001:db8:1::/48"],
        "soa": ["example.com", "SOA", "+norecurse"],
        "ns": ["example.com", "NS"],
        "glue": ["ns1.example.com", "A"],
        "empty-non-terminal": ["deep.example.com", "A"],
        "nxdomain": ["nope.example.com", "TXT"],
        "refused": ["outside.example.org", "A"],
        "any-bufsize": ["shop.example.com", "ANY", "+bufsize=4096", "+notcp"],
        "edns1": ["shop.example.com", "A", "+edns=1"],
        "notify-opcode": ["shop.example.com", "A", "+opcode=notify"],
    }
    for name, args in queries.items():
        write("dns_query", name, capture(args))


if __name__ == "__main__":
    frames()
    sites()
    cache_control()
    dns()
    for target in sorted(p.name for p in SEEDS.iterdir()):
        print(target, len(list((SEEDS / target).iterdir())), "seeds")
