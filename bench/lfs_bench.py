"""What `--lfs-pointers remote` costs against fetching every LFS object, as `lfs: true` does.

Run with the project's test environment (torch makes the models; the LFS servers come from
tests/support/lfs_server.py: giftless with moto's S3 storage on loopback):

    python bench/lfs_bench.py [--models 20] [--changed 3] [--pointers 100] [--rate-mbit 100] [--latency-ms 20]

It pushes `--models` 55 MB RVC v2 models (parametrized weight norm, each with its own bytes) to
a real LFS server, then a pull request that changes `--changed` of them, and compares, through a
throttling HTTP proxy of its own (`--rate-mbit` shared by all connections, `--latency-ms` added
before each request is forwarded, as one round trip):

  remote     pth-legacy-keys check --changed-since origin/main --lfs-pointers remote, on a clone
             made without LFS content (GIT_LFS_SKIP_SMUDGE=1, as actions/checkout without lfs)
  lfs: true  every object of the commit downloaded whole, as `git lfs pull` does: one batch
             request for all, then each object's href (urllib through the same proxy: git-lfs,
             a Go program, never uses a proxy for a loopback address)

and then `--pointers` small distinct objects checked in one call (one batch request, reads in
threads). Time is wall clock of whole processes; bytes and requests are the proxy's counts, and
the batch calls and ranged GETs the LFS servers' own logs. Goal: remote takes at least 50x less
time and 1000x fewer bytes.
"""

import argparse
import http.client
import json
import os
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from support.lfs_server import LfsServers  # noqa: E402  (the tests' real LFS server)

NO_SMUDGE = {"GIT_LFS_SKIP_SMUDGE": "1", "GIT_TERMINAL_PROMPT": "0"}


class ThrottlingProxy:
    """A forward HTTP proxy: `rate` bytes a second for all answers together, `latency` seconds
    before each request goes on; counts requests and the bytes it relayed."""

    def __init__(self, rate, latency):
        self.rate, self.latency = rate, latency
        self.requests = self.bytes = 0
        self._lock = threading.Lock()
        self._next_free = time.monotonic()  # when the shared link may send again
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):  # noqa: N802
                proxy._forward(self)

            do_POST = do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self):
        self.requests = self.bytes = 0

    def _send_slowly(self, out, data):
        with self._lock:
            start = max(self._next_free, time.monotonic())
            self._next_free = start + len(data) / self.rate
            wait = self._next_free - time.monotonic()
            self.bytes += len(data)
        if wait > 0:
            time.sleep(wait)
        out.write(data)

    def _forward(self, handler):
        with self._lock:
            self.requests += 1
        time.sleep(self.latency)
        target = urllib.parse.urlsplit(handler.path)
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        connection.request(handler.command, target.path + (f"?{target.query}" if target.query else ""),
                           body=body or None, headers=headers)
        answer = connection.getresponse()
        handler.send_response(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in ("connection", "transfer-encoding"):
                handler.send_header(name, value)
        handler.send_header("Connection", "close")
        handler.end_headers()
        while True:
            chunk = answer.read(64 << 10)
            if not chunk:
                break
            self._send_slowly(handler.wfile, chunk)
        connection.close()


def git(*args, cwd, env=None):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}).stdout


def make_models(count):
    """`count` 55 MB RVC v2 models with parametrized weight norm (Applio's keys), made by torch.save,
    each with its own bytes (one weight differs)."""
    import io

    import bench
    import torch

    models = []
    for i in range(count):
        weights = {key: torch.zeros(shape, dtype=torch.float16) for key, shape in bench.rvc_v2_40k_shapes()}
        next(iter(weights.values())).view(-1)[0] = i
        buffer = io.BytesIO()
        torch.save({"weight": weights, "config": bench.RVC_V2_40K_CONFIG, "info": "200epoch", "sr": "40k",
                    "f0": 1, "version": "v2"}, buffer)
        models.append(buffer.getvalue())
    return models


def tiny_checkpoints(count):
    """`count` small torch.save checkpoints, each its own object."""
    import io

    import torch

    made = []
    for i in range(count):
        buffer = io.BytesIO()
        torch.save({"w": torch.tensor([float(i)])}, buffer)
        made.append(buffer.getvalue())
    return made


def full_fetch(batch_url, objects, proxy_url):
    """What `git lfs pull` transfers: one batch request for every object, then each one whole."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy_url}))
    body = json.dumps({"operation": "download", "transfers": ["basic"],
                       "objects": [{"oid": oid, "size": size} for oid, size in objects]}).encode()
    request = urllib.request.Request(batch_url, data=body, method="POST", headers={
        "Accept": "application/vnd.git-lfs+json", "Content-Type": "application/vnd.git-lfs+json"})
    with opener.open(request, timeout=600) as answer:
        found = json.loads(answer.read())["objects"]
    total = 0
    for entry in found:
        download = entry["actions"]["download"]
        with opener.open(urllib.request.Request(download["href"], headers=download.get("header", {})),
                         timeout=600) as answer:
            while chunk := answer.read(1 << 20):
                total += len(chunk)
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--changed", type=int, default=3)
    parser.add_argument("--pointers", type=int, default=100)
    parser.add_argument("--rate-mbit", type=float, default=100)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pth-legacy-keys-lfs-bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "pth_legacy_keys"]
    servers = LfsServers()
    proxy = ThrottlingProxy(args.rate_mbit * 1e6 / 8, args.latency_ms / 1000)
    try:
        server = servers.server("anonymous")
        work = Path(tempfile.mkdtemp(dir=args.workdir))
        models = make_models(args.models + args.changed)
        files = {f"models/m{i:02}.pth": models[i] for i in range(args.models)}
        print(f"pushing {len(files)} models of {len(models[0]) / 1e6:.1f} MB to {server.endpoint} ...", flush=True)
        repository = server.make_lfs_repository(work / "repo", files)
        git("checkout", "-q", "-b", "pr", cwd=repository.path)
        for i in range(args.changed):
            (repository.path / f"models/m{i:02}.pth").write_bytes(models[args.models + i])
        git("commit", "-q", "-am", "pull request", cwd=repository.path)
        git("push", "-q", "origin", "pr", cwd=repository.path)
        clone = work / "clone"
        git("clone", "-q", "-b", "main", str(repository.remote), str(clone), cwd=work, env=NO_SMUDGE)
        git("config", "lfs.url", repository.lfs_url, cwd=clone)
        git("checkout", "-q", "--detach", "origin/pr", cwd=clone, env=NO_SMUDGE)
        env = {**os.environ, "http_proxy": proxy.url, "HTTP_PROXY": proxy.url, "no_proxy": "", "NO_PROXY": ""}

        server.reset_counts()
        proxy.reset()
        start = time.perf_counter()
        done = subprocess.run(cli + ["check", "--changed-since", "origin/main", "--lfs-pointers", "remote"],
                              cwd=clone, capture_output=True, text=True, env=env)
        ours = time.perf_counter() - start
        ours_bytes, ours_requests, counts = proxy.bytes, proxy.requests, server.counts()
        print(done.stdout.strip().splitlines()[-1], f"(exit {done.returncode})")

        objects = [(o.oid, o.size) for o in repository.objects.values()]
        proxy.reset()
        start = time.perf_counter()
        fetched = full_fetch(repository.lfs_url + "/objects/batch", objects, proxy.url)
        theirs = time.perf_counter() - start
        theirs_bytes, theirs_requests = proxy.bytes, proxy.requests
        assert fetched == sum(size for _, size in objects)

        print(f"\n[{args.models} LFS models of 55 MB, {args.changed} changed; proxy {args.rate_mbit:g} Mbit/s, "
              f"{args.latency_ms:g} ms a request]")
        print(f"  remote (changed only)  {ours:8.2f} s  {ours_bytes:>13,} bytes  {ours_requests:4} requests "
              f"(server logs: {counts.batch} batch, {counts.ranged_gets} ranged GETs, {sum(counts.ranged_bytes):,} bytes)")
        print(f"  lfs: true (all)        {theirs:8.2f} s  {theirs_bytes:>13,} bytes  {theirs_requests:4} requests")
        print(f"  ratio                  {theirs / ours:8.1f}x time, {theirs_bytes / max(ours_bytes, 1):,.0f}x bytes "
              "(goal: >= 50x, >= 1000x)")

        small = tiny_checkpoints(args.pointers)
        many = server.make_lfs_repository(work / "many", {f"p{i:03}.pth": data for i, data in enumerate(small)})
        clone = work / "many-clone"
        git("clone", "-q", "-b", "main", str(many.remote), str(clone), cwd=work, env=NO_SMUDGE)
        git("config", "lfs.url", many.lfs_url, cwd=clone)
        server.reset_counts()
        proxy.reset()
        start = time.perf_counter()
        done = subprocess.run(cli + ["check", "--lfs-pointers", "remote", "."], cwd=clone, capture_output=True,
                              text=True, env=env)
        wall = time.perf_counter() - start
        counts = server.counts()
        print(f"\n[{args.pointers} pointers in one call]")
        print(f"  {wall:.2f} s wall, {counts.batch} batch request(s), {counts.storage_gets} GETs; "
              f"{args.pointers} GETs one after another would wait {args.pointers * args.latency_ms / 1000:.1f} s "
              "for the latency alone")
        print(" ", done.stdout.strip().splitlines()[-1])
    finally:
        proxy.server.shutdown()
        servers.close()


if __name__ == "__main__":
    main()
