"""The web page (web/) in a real browser: build it once, serve web/dist on loopback, drive Debian's
Chromium with Playwright for Python, and watch what the page does (its network requests, from the
page and from its Web Worker; its whole-file reads; its WebAssembly heap).

Playwright cannot download its own browsers here, so it launches /usr/bin/chromium
(`apt-get install chromium`; PTH_LEGACY_KEYS_CHROMIUM names another). Under CI=true a missing
browser, Playwright, npm or page fails the test: a skip there would pass without testing anything.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
DIST = WEB / "dist"
AXE = WEB / "node_modules" / "axe-core" / "axe.min.js"

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--no-first-run", "--disable-sync"]
# the CLI's status words, which the page puts in each result's data-status once the file is done
STATUSES = ["ok", "needs-fix", "cannot-convert", "not-checked", "refused", "error", "skipped"]
BIG = 64 * 1024 * 1024  # a read of more than this at once is a read of a whole (big) file


def unavailable(message):
    """Skip, saying how to install what is missing; fail under CI, which installs everything."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed: pip install -e '.[test]' (or pip install playwright)")
    return sync_playwright


def chromium_executable():
    named = os.environ.get("PTH_LEGACY_KEYS_CHROMIUM")
    if named:
        if not os.access(named, os.X_OK):
            unavailable(f"PTH_LEGACY_KEYS_CHROMIUM={named} is not an executable")
        return named
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    unavailable("Chromium is not installed: apt-get install -y chromium (Playwright cannot download its own here)")


def launch(playwright):
    return playwright.chromium.launch(executable_path=chromium_executable(), args=LAUNCH_ARGS)


def build_page(shared_dir):
    """Build web/dist once per test run: the first pytest-xdist worker to get here builds it
    (`npm ci` in web/ if web/node_modules is missing, then `python web/build.py`); the others wait
    for it and get its outcome. Returns web/dist."""
    import fcntl

    if not (WEB / "build.py").is_file():
        unavailable(f"the web page is not there: {WEB / 'build.py'} is missing")
    shared_dir = Path(shared_dir)
    outcome = shared_dir / "web-page.built"
    with open(shared_dir / "web-page.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not outcome.exists():
            outcome.write_text(_build())
    message = outcome.read_text()
    if message == "npm":
        unavailable("npm is not installed: apt-get install -y npm (or Node.js 20+), then `cd web && npm ci`")
    if message:
        pytest.fail(message, pytrace=False)
    if not (DIST / "index.html").is_file():
        pytest.fail(f"python web/build.py succeeded but wrote no {DIST / 'index.html'}", pytrace=False)
    return DIST


def _build():
    """'' if the page was built, 'npm' if npm is missing, or why the build failed."""
    if not (WEB / "node_modules").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            return "npm"
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB, capture_output=True, text=True)
        if result.returncode:
            return f"`npm ci` in web/ failed ({result.returncode}):\n{result.stdout}{result.stderr}"
    result = subprocess.run([sys.executable, str(WEB / "build.py")], cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        return f"`python web/build.py` failed ({result.returncode}):\n{result.stdout}{result.stderr}"
    return ""


# Counts every read a page can make of a Blob/File's bytes in one piece, in the global scope it runs in
# (the page's window, or its worker: workers have their own Blob, FileReaderSync...). `reads` counts
# all of them, so a test can tell "no whole-file read" from "the spy saw nothing at all".
SPY = r"""
(() => {
  if (self.__pthReads) return;
  const BIG = %d;
  const spy = self.__pthReads = {reads: 0, bytes: 0, largest: 0, big: []};
  const note = (api, size) => {
    spy.reads += 1;
    spy.bytes += size;
    spy.largest = Math.max(spy.largest, size);
    if (size > BIG) spy.big.push({api, size});
  };
  const wrap = (owner, proto, name, sizeOf) => {
    if (!proto || !Object.prototype.hasOwnProperty.call(proto, name) || typeof proto[name] !== "function") return;
    const original = proto[name];
    proto[name] = function (...args) {
      note(`${owner}.${name}`, sizeOf(this, args));
      return original.apply(this, args);
    };
  };
  const blobSize = (blob) => blob.size;
  const argumentSize = (reader, args) => (args[0] && typeof args[0].size === "number" ? args[0].size : 0);
  for (const [owner, proto] of [["Blob", self.Blob && Blob.prototype], ["File", self.File && File.prototype]]) {
    for (const name of ["arrayBuffer", "bytes", "text"]) wrap(owner, proto, name, blobSize);
  }
  for (const [owner, proto] of [["FileReaderSync", self.FileReaderSync && FileReaderSync.prototype],
                                ["FileReader", self.FileReader && FileReader.prototype]]) {
    for (const name of ["readAsArrayBuffer", "readAsBinaryString", "readAsDataURL", "readAsText"]) {
      wrap(owner, proto, name, argumentSize);
    }
  }
  // new Response(file).arrayBuffer(): the size is known only from the answer
  if (self.Response) {
    for (const name of ["arrayBuffer", "bytes", "text"]) {
      const original = Response.prototype[name];
      if (typeof original !== "function") continue;
      Response.prototype[name] = function (...args) {
        return original.apply(this, args).then((value) => {
          note(`Response.${name}`, value.byteLength ?? value.length ?? 0);
          return value;
        });
      };
    }
  }
})();
""" % BIG

HEAP = """() => {
  const p = self.pyodide;
  return p && p._module && p._module.HEAPU8 ? p._module.HEAPU8.buffer.byteLength : null;
}"""


def css_string(text):
    """`text` inside a double-quoted CSS string."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


class Recorder:
    """Every request of a browser context, from its pages and their workers, seen two ways: by
    context.route (which in Chromium also routes dedicated workers' requests) and by
    context.on("request"). `mark()` starts a window; `since_mark()` is what came after it."""

    def __init__(self, context):
        self.routed = []
        self.seen = []
        self._routed_mark = self._seen_mark = 0
        context.route("**/*", self._route)
        context.on("request", lambda request: self.seen.append(request.url))

    def _route(self, route, request):
        self.routed.append(request.url)
        route.continue_()

    def mark(self):
        self._routed_mark, self._seen_mark = len(self.routed), len(self.seen)

    def since_mark(self):
        """(urls routed, urls seen) since mark(), without blob: and data: URLs (not the network)."""
        def network(urls):
            return [url for url in urls if not url.startswith(("blob:", "data:"))]
        return network(self.routed[self._routed_mark:]), network(self.seen[self._seen_mark:])


class Page:
    """One fresh browser context and page on the served page, Pyodide loaded (ready)."""

    def __init__(self, browser, origin, viewport=None, bypass_csp=False):
        # bypass_csp: for add_script_tag (axe), which the page's Content-Security-Policy refuses
        self.context = browser.new_context(accept_downloads=True, bypass_csp=bypass_csp,
                                           viewport=viewport or {"width": 1000, "height": 800})
        self.recorder = Recorder(self.context)
        self.context.add_init_script(SPY)
        self.errors = []
        self.workers = []
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(
            f"console error: {message.text}"))
        self.page.on("worker", self._worker)
        self.origin = origin
        self.page.goto(origin + "/")
        self.wait_ready()

    def _worker(self, worker):
        self.workers.append(worker)
        try:
            worker.evaluate(SPY)  # context.add_init_script does not reach workers
        except Exception as error:  # the worker may be gone already
            self.errors.append(f"could not spy on worker {worker.url}: {error}")

    def wait_ready(self, timeout=90_000):
        """The page says it is ready (Pyodide and the package loaded): body[data-ready="true"]
        ("failed" if Python could not start). Selectors only: the page's Content-Security-Policy
        refuses the eval() that wait_for_function(<expression>) uses."""
        try:
            self.page.locator("body[data-ready]").wait_for(state="attached", timeout=timeout)
        except Exception as error:
            raise AssertionError(f"the page never set body[data-ready]: {error}\n" + "\n".join(self.errors))
        ready = self.page.get_attribute("body", "data-ready")
        assert ready == "true", f"body[data-ready={ready}]: {self.page.inner_text('#progress')}\n" + "\n".join(
            self.errors)
        assert self.page.is_enabled("#files"), "the page is ready but #files is disabled"

    def upload(self, *paths):
        self.page.set_input_files("#files", [str(path) for path in paths])

    def result(self, name, timeout=120_000):
        """The result element of file `name` once it has its final data-status."""
        element = f'[data-file="{css_string(name)}"]'
        done = ", ".join(f'{element}[data-status="{status}"]' for status in STATUSES)
        self.page.locator(done).first.wait_for(state="attached", timeout=timeout)
        return self.page.locator(element)

    def download(self, name, timeout=300_000):
        """Click file `name`'s download link; return the Playwright Download once it finished."""
        element = f'[data-file="{css_string(name)}"]'
        link = self.page.locator(f"{element} [data-download], {element}[data-download]").first
        with self.page.expect_download(timeout=timeout) as info:
            link.click()
        download = info.value
        failure = download.failure()
        assert failure is None, f"the download of {name} failed: {failure}"
        return download

    def reset_reads(self):
        """Forget what the spies saw so far (loading Pyodide reads its own files)."""
        reset = "self.__pthReads && Object.assign(self.__pthReads, {reads: 0, bytes: 0, largest: 0, big: []})"
        self.page.evaluate(reset)
        for worker in self.page.workers:
            worker.evaluate(reset)

    def reads(self):
        """What the spies saw, per global scope: {"page": {...}, "worker <url>": {...}}."""
        seen = {"page": self.page.evaluate("self.__pthReads || null")}
        for worker in self.page.workers:
            seen[f"worker {worker.url}"] = worker.evaluate("self.__pthReads || null")
        return seen

    def wasm_heap_bytes(self):
        """Pyodide's WebAssembly heap (it only grows, so this is its peak): read from the worker's
        global `pyodide`, or from body[data-wasm-heap-bytes] if the page posts it there."""
        for worker in self.page.workers:
            size = worker.evaluate(HEAP)
            if size is not None:
                return size
        posted = self.page.evaluate("document.body.dataset.wasmHeapBytes || null")
        if posted is not None:
            return int(posted)
        raise AssertionError("the page exposes no WebAssembly heap size: its worker must keep `self.pyodide = "
                             "pyodide` (or the page must set body[data-wasm-heap-bytes])")

    def close(self):
        self.context.close()
