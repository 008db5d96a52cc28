"""Time the web page (web/, this package in Pyodide) in Chromium beside the CLI, on the same file.

Run with the project's test environment (torch makes the model, Playwright drives Debian's
Chromium, `cd web && npm ci` has installed Pyodide):

    python bench/web_bench.py [--rounds 3] [--workdir DIR] [--no-build]

It builds web/dist (python web/build.py), serves it on loopback (tests/support/static_server.py)
and makes once, cached in --workdir, bench/bench.py's ~55 MB RVC v2 40k inference model
(parametrized weight norm, 208 keys to rename). Each round opens a fresh page and times:

  load    opening the page until it is ready: Pyodide, the standard library and the package
          loaded (body[data-ready="true"])
  check   choosing the file until its result shows (the page plans the fix in the same step);
          CLI: `python -m pth_legacy_keys check FILE`, a whole process
  fix     choosing the file until the fixed file is downloaded (check + the download click, which
          writes a Blob of new bytes and slices of the original); CLI: `python -m pth_legacy_keys
          fix FILE` on a fresh copy (the copy is not timed), a whole process

and prints the medians. The download is checked against the CLI's output (sha256).
"""

import argparse
import hashlib
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import browser  # noqa: E402  (tests/support: the page's harness)
from support.static_server import StaticServer  # noqa: E402


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def model(workdir):
    path = workdir / "voice.pth"
    if not path.exists():
        spec = importlib.util.spec_from_file_location("bench", ROOT / "bench" / "bench.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        bench.generate_checkpoint("small", str(path))
    return path


def cli_seconds(*argv, cwd):
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pth_legacy_keys", *map(str, argv)], cwd=cwd,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 1):
        sys.exit(f"pth-legacy-keys {' '.join(map(str, argv))} failed:\n{result.stdout}{result.stderr}")
    return seconds


def browser_round(chromium, origin, path):
    start = time.perf_counter()
    page = browser.Page(chromium, origin)
    try:
        load = time.perf_counter() - start
        start = time.perf_counter()
        page.upload(path)
        status = page.result(path.name).get_attribute("data-status")
        check = time.perf_counter() - start
        if status != "needs-fix":
            sys.exit(f"the page says {path.name} is {status!r}, not needs-fix")
        download = page.download(path.name)
        fix = time.perf_counter() - start
        digest = sha256(download.path())
        try:
            heap = page.wasm_heap_bytes()
        except AssertionError:
            heap = None
        return load, check, fix, digest, heap
    finally:
        page.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pth-legacy-keys-web-bench")
    parser.add_argument("--no-build", action="store_true", help="serve web/dist as it is")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    if not args.no_build:
        subprocess.run([sys.executable, str(browser.WEB / "build.py")], check=True, cwd=ROOT)
    path = model(args.workdir)

    cli_check, cli_fix, expected = [], [], None
    for _ in range(args.rounds):
        cli_check.append(cli_seconds("check", path.name, cwd=args.workdir))
        copy_dir = args.workdir / "cli"
        shutil.rmtree(copy_dir, ignore_errors=True)
        copy_dir.mkdir()
        shutil.copyfile(path, copy_dir / path.name)
        cli_fix.append(cli_seconds("fix", path.name, cwd=copy_dir))
        expected = sha256(copy_dir / path.name)

    from playwright.sync_api import sync_playwright

    rounds = []
    with StaticServer(browser.DIST) as server, sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        version = chromium.version
        try:
            for _ in range(args.rounds):
                rounds.append(browser_round(chromium, server.origin, path))
        finally:
            chromium.close()
    if any(digest != expected for *_, digest, _ in rounds):
        sys.exit("the page's download differs from the CLI's fix")

    load, check, fix = (statistics.median(r[i] for r in rounds) for i in range(3))
    heaps = [r[4] for r in rounds if r[4] is not None]
    size = path.stat().st_size / 1e6
    print(f"{path.name}: {size:.1f} MB, medians of {args.rounds} rounds (Chromium {version})")
    print(f"{'step':<34}{'browser':>10}{'CLI':>10}{'ratio':>8}")
    print(f"{'load (Pyodide + package)':<34}{load:>9.2f}s{'-':>10}{'':>8}")
    for name, ours, theirs in (("check (choose -> result)", check, statistics.median(cli_check)),
                               ("fix (choose -> downloaded)", fix, statistics.median(cli_fix))):
        print(f"{name + f' {size:.0f} MB':<34}{ours:>9.2f}s{theirs:>9.2f}s{ours / theirs:>7.1f}x")
    if heaps:
        print(f"WebAssembly heap after the fix: {max(heaps) / 2**20:.0f} MiB")
    print("download identical to the CLI's fix: yes")


if __name__ == "__main__":
    main()
