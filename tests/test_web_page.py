"""The static web page (web/, built into web/dist with Pyodide from npm) in a real Chromium: it gives
each file the CLI's status, its download is byte for byte the CLI's fix, it makes no request while
it works on files, it fixes a 600 MB checkpoint in a small WebAssembly heap without reading the
file whole, and axe finds nothing serious on it.

The page's hooks: the file input #files; each file's result element [data-file=NAME]
[data-status=STATUS] (the CLI's status words); a needs-fix file's download link [data-download];
body[data-ready="true"] once Pyodide and the package are loaded; the worker keeps `self.pyodide`.

Needs Chromium (apt-get install -y chromium), Playwright for Python (in the test extras) and npm
(`cd web && npm ci`); under CI=true a missing one fails. PTH_LEGACY_KEYS_SCREENSHOT=1 also writes
docs/web-page.png, the README's picture of the page.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys

import pytest
from support import browser
from support.hand_made import hand_made_checkpoint, system_payload
from support.lfs import LFS_POINTER
from support.static_server import StaticServer

torch = pytest.importorskip("torch", reason="torch==2.13.0 is needed to make real checkpoints")

MiB = 1024 * 1024
SCREENSHOT = browser.ROOT / "docs" / "web-page.png"


@pytest.fixture(scope="session")
def chromium():
    sync_playwright = browser.sync_playwright()
    browser.chromium_executable()
    with sync_playwright() as playwright:
        launched = browser.launch(playwright)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def web_server(chromium, tmp_path_factory):
    # shared by the pytest-xdist workers of one run, so that one of them builds the page
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    with StaticServer(browser.build_page(shared)) as server:
        yield server


@pytest.fixture
def web_page(chromium, web_server):
    page = browser.Page(chromium, web_server.origin)
    yield page
    page.close()


# --- what the CLI says and writes, for comparison -----------------------------------------------

def cli(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "pth_legacy_keys", *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True)


def cli_fixed(path, folder):
    """The CLI's fix of a copy of `path` (same name, in `folder`)."""
    folder.mkdir()
    copy = folder / path.name
    shutil.copyfile(path, copy)
    result = cli("fix", copy.name, cwd=folder)
    assert result.returncode == 0 and "fixed" in result.stdout, result.stdout + result.stderr
    return copy


def inspected(path):
    """What `inspect` prints about `path`."""
    result = cli("inspect", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def verdicts(inspect_output):
    """inspect's verdicts, without the reasons that follow each: [('legacy torch code', 'no'), ...]."""
    found = re.findall(r"^\s*verdict\s+loads in (.+?): (yes|no)\b", inspect_output, re.MULTILINE)
    assert found, inspect_output
    return found


def shows_verdict(text, about, answer):
    """`text` (what the page shows) says 'loads in ABOUT: ANSWER', whatever its layout."""
    text = " ".join(text.split())
    return re.search(rf"loads in {re.escape(about)}\W+{answer}\b", text, re.IGNORECASE) is not None


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


# --- checkpoints ------------------------------------------------------------------------------

def rvc(path, parametrized=True):
    from support import rvc_model

    torch.save(rvc_model.rvc_inference_file(rvc_model.build(parametrized=parametrized)), path)
    return path


def parametrized_safetensors(path):
    from safetensors.torch import save_file
    from support import rvc_model

    save_file({key: value.contiguous() for key, value in rvc_model.build(parametrized=True).state_dict().items()},
              path)
    return path


def big_checkpoint(path, size=600_000_000):
    """A torch.save'd state dict of a few parametrized weight-norm layers and `size` bytes of
    float32 zeros in one plain tensor."""
    from torch import nn

    norm = nn.utils.parametrizations.weight_norm
    model = nn.Sequential(norm(nn.Linear(64, 64)), norm(nn.Conv1d(64, 64, 3)), norm(nn.Linear(64, 32)))
    state = dict(model.state_dict())
    state["embedding.weight"] = torch.zeros(size // 4, dtype=torch.float32)
    torch.save(state, path)
    return path


# --- the tests --------------------------------------------------------------------------------

def test_a_parametrized_rvc_model_needs_fix_and_its_download_is_the_clis_fix(web_page, tmp_path):
    model = rvc(tmp_path / "voice.pth")
    original = model.read_bytes()
    web_page.upload(model)

    result = web_page.result("voice.pth")
    assert result.get_attribute("data-status") == "needs-fix"
    text = result.inner_text()  # what is visible
    inspect_output = inspected(model)
    for about, answer in verdicts(inspect_output):  # legacy torch code: no; legacy RVC loaders: no
        assert answer == "no"
        assert shows_verdict(text, about, answer), (about, answer, text)
    # and, folded away, inspect's own lines
    assert result.locator("pre").text_content().strip() == inspect_output.strip()

    download = web_page.download("voice.pth")
    assert download.suggested_filename.endswith(".pth"), download.suggested_filename
    fixed = open(download.path(), "rb").read()
    assert fixed != original
    assert fixed == cli_fixed(model, tmp_path / "cli").read_bytes()
    assert model.read_bytes() == original  # the page cannot write the user's file, and did not


@pytest.mark.parametrize("kind, status, shown", [
    ("legacy", "ok", ""),
    ("hostile", "refused", "posix.system"),
    ("lfs-pointer", "not-checked", "Git LFS pointer"),
])
def test_each_file_gets_the_clis_status(web_page, tmp_path, kind, status, shown):
    path = tmp_path / "model.pth"
    if kind == "legacy":
        rvc(path, parametrized=False)
    elif kind == "hostile":
        hand_made_checkpoint(path, system_payload(tmp_path / "marker"))
    else:
        path.write_text(LFS_POINTER)
    cli_status = cli("check", path.name, cwd=tmp_path).stdout
    assert f"1 {status}" in cli_status, cli_status  # what the page must agree with

    web_page.upload(path)
    result = web_page.result("model.pth")
    assert result.get_attribute("data-status") == status, result.inner_text()
    assert shown in result.inner_text()
    assert web_page.page.locator("[data-download]").count() == 0  # nothing to download but a fix


def test_a_parametrized_safetensors_file_is_fixed_as_the_cli_fixes_it(web_page, tmp_path):
    model = parametrized_safetensors(tmp_path / "model.safetensors")
    web_page.upload(model)
    assert web_page.result("model.safetensors").get_attribute("data-status") == "needs-fix"

    download = web_page.download("model.safetensors")
    assert download.suggested_filename.endswith(".safetensors"), download.suggested_filename
    fixed = open(download.path(), "rb").read()
    assert fixed != model.read_bytes()
    assert fixed == cli_fixed(model, tmp_path / "cli").read_bytes()


def test_the_page_loads_only_from_its_own_server_and_then_makes_no_request(web_page, web_server, tmp_path):
    recorder = web_page.recorder
    assert recorder.routed, "the recorder saw not even the page load"
    foreign = [url for url in recorder.routed + recorder.seen if not url.startswith(web_server.origin + "/")]
    assert not foreign, f"the page loads from elsewhere than its own server: {foreign}"
    assert web_page.page.workers, "Pyodide does not run in a Web Worker"

    recorder.mark()
    served = len(web_server.requests())
    web_page.upload(rvc(tmp_path / "voice.pth"), rvc(tmp_path / "old.pth", parametrized=False),
                    parametrized_safetensors(tmp_path / "model.safetensors"))
    assert web_page.result("voice.pth").get_attribute("data-status") == "needs-fix"
    assert web_page.result("old.pth").get_attribute("data-status") == "ok"
    assert web_page.result("model.safetensors").get_attribute("data-status") == "needs-fix"
    web_page.download("voice.pth")
    web_page.download("model.safetensors")
    web_page.page.wait_for_timeout(500)  # a request sent as the work ends would still be seen

    assert recorder.since_mark() == ([], []), "the page made requests while it examined and fixed files"
    assert web_server.requests()[served:] == []


def test_the_request_recorder_sees_the_page_and_its_worker(web_page, web_server):
    """The canary of the test above: a request from the page, or from Pyodide's worker (which
    context.route must also see, in Chromium), in the same recorded window, is seen both ways."""
    recorder = web_page.recorder
    recorder.mark()
    web_page.page.evaluate("fetch('/index.html?from=page').then((r) => r.text())")
    [worker] = web_page.page.workers[:1]
    worker.evaluate("fetch('/index.html?from=worker').then((r) => r.text())")
    routed, seen = recorder.since_mark()
    for origin in ("page", "worker"):
        url = web_server.url(f"/index.html?from={origin}")
        assert url in routed, (url, routed)
        assert url in seen, (url, seen)
    assert ("GET", "/index.html?from=worker") in web_server.requests()


def test_a_600_mb_checkpoint_is_fixed_in_a_small_heap_without_reading_it_whole(web_page, tmp_path):
    model = big_checkpoint(tmp_path / "big.pth")
    try:
        assert model.stat().st_size > 600_000_000
        web_page.reset_reads()
        web_page.upload(model)
        assert web_page.result("big.pth", timeout=300_000).get_attribute("data-status") == "needs-fix"
        download = web_page.download("big.pth", timeout=600_000)
        got = sha256(download.path())
        download.delete()
        fixed = cli_fixed(model, tmp_path / "cli")
        assert got == sha256(fixed)
        fixed.unlink()

        reads = web_page.reads()
        assert any(spy and spy["reads"] for spy in reads.values()), (
            f"the spies saw no read of the file at all, so they prove nothing: {reads}")
        assert all(spy is not None for spy in reads.values()), f"a spy is missing: {reads}"
        whole = {scope: spy["big"] for scope, spy in reads.items() if spy and spy["big"]}
        assert not whole, f"reads of more than 64 MiB at once: {whole}"
        heap = web_page.wasm_heap_bytes()
        assert heap < 256 * MiB, f"Pyodide's WebAssembly heap grew to {heap / MiB:.0f} MiB"
    finally:
        for leftover in tmp_path.rglob("*.pth"):
            leftover.unlink()


def test_the_read_spies_see_a_whole_file_read_in_the_page_and_in_the_worker(web_page):
    """The canary of the test above: a read of 65 MiB at once is seen, wherever it is made."""
    web_page.reset_reads()
    big = "new Blob([new Uint8Array(65 * 1024 * 1024)])"
    web_page.page.evaluate(f"{big}.arrayBuffer().then((b) => b.byteLength)")
    [worker] = web_page.page.workers[:1]
    worker.evaluate(f"new FileReaderSync().readAsArrayBuffer({big}).byteLength")
    worker.evaluate(f"new Response({big}).arrayBuffer().then((b) => b.byteLength)")
    seen = {scope: [read["api"] for read in spy["big"]] for scope, spy in web_page.reads().items()}
    assert seen["page"] == ["Blob.arrayBuffer"], seen
    assert seen[f"worker {worker.url}"] == ["FileReaderSync.readAsArrayBuffer", "Response.arrayBuffer"], seen


def test_axe_finds_nothing_serious_once_results_are_shown(chromium, web_server, tmp_path):
    # the page's Content-Security-Policy refuses the inline <script> add_script_tag makes of axe
    web_page = browser.Page(chromium, web_server.origin, bypass_csp=True)
    try:
        check_accessibility(web_page, tmp_path)
    finally:
        web_page.close()


def check_accessibility(web_page, tmp_path):
    web_page.upload(rvc(tmp_path / "voice.pth"), rvc(tmp_path / "old.pth", parametrized=False))
    web_page.result("voice.pth")
    web_page.result("old.pth")
    if not browser.AXE.is_file():
        browser.unavailable(f"{browser.AXE} is missing: cd web && npm ci")
    web_page.page.add_script_tag(path=str(browser.AXE))
    violations = web_page.page.evaluate("axe.run().then((results) => results.violations)")
    serious = [(v["id"], v["impact"], v["help"], [node["target"] for node in v["nodes"]])
               for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, serious

    picture = web_page.page.screenshot(full_page=True)
    assert picture.startswith(b"\x89PNG\r\n\x1a\n") and len(picture) > 10_000
    if os.environ.get("PTH_LEGACY_KEYS_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(picture)


def test_a_5_kb_chain_of_tuples_is_refused_and_the_page_still_works_after_it(web_page, tmp_path):
    """TUPLE1 50,000 times: refused as too deep, as by the CLI. Freeing such a chain level by level
    overflowed the browser's stack and killed Python in the worker for the rest of the session
    (pickle_walk.RELEASE_BY_HAND lets go of it by hand there)."""
    from support import write_zip
    from support.pickle_ops import PROTO2

    chain = write_zip(tmp_path / "chain.pth", [("archive/data.pkl", PROTO2 + b"K\x01" + b"\x85" * 50_000 + b"."),
                                                ("archive/byteorder", b"little"), ("archive/version", b"3\n")])
    good = rvc(tmp_path / "voice.pth")
    web_page.upload(chain, good)
    refused = web_page.result("chain.pth")
    assert refused.get_attribute("data-status") == "refused", refused.inner_text()
    assert "deeper than 100 levels" in refused.inner_text()
    assert web_page.result("voice.pth").get_attribute("data-status") == "needs-fix"
