"""browser.py, the web page's API (web/ runs it in Pyodide), tested without a browser: its plan,
assembled as the page assembles it, is exactly the file `pth-legacy-keys fix` writes."""

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from support.cli_run import DATA, PARAMETRIZED
from support.hand_made import hand_made_checkpoint, system_payload

from pth_legacy_keys import browser

DIRECTIONS = ("legacy", "parametrized")


def assemble(plan, original):
    """The file the page's `new Blob(parts)` makes: new bytes, and slices of the original."""
    data = Path(original).read_bytes()
    return b"".join(piece["bytes"] if "bytes" in piece else data[piece["offset"]:piece["offset"] + piece["length"]]
                    for piece in plan)


def cli(folder, *argv):
    """`python -m pth_legacy_keys ARGV` in `folder`: (exit code, stdout)."""
    done = subprocess.run([sys.executable, "-m", "pth_legacy_keys", *argv], cwd=folder, capture_output=True,
                          text=True, timeout=300)
    assert "Traceback" not in done.stdout + done.stderr
    return done.returncode, done.stdout


def cli_fix(folder, name, to):
    """The bytes `fix --to TO` writes for `name` (on a copy), and its line for the file."""
    copy = Path(folder) / "cli" / name
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(Path(folder) / name, copy)
    _, out = cli(copy.parent, "fix", "--to", to, name)
    return copy.read_bytes(), out.splitlines()[0]


def safetensors_files(folder):
    """A parametrized and a legacy weight-norm model, saved by safetensors.torch.save_file, and the
    legacy one by torch.save in the pre-1.6 format."""
    torch = pytest.importorskip("torch")
    save_file = pytest.importorskip("safetensors.torch").save_file
    from torch import nn

    torch.manual_seed(0)
    parametrized = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Conv1d(2, 3, 3)))
    legacy = nn.Sequential(nn.utils.weight_norm(nn.Conv1d(2, 3, 3)))
    for name, model in (("parametrized.safetensors", parametrized), ("legacy.safetensors", legacy)):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(folder) / name))
    torch.save(legacy.state_dict(), Path(folder) / "legacy_pre16.pth", _use_new_zipfile_serialization=False)
    return ["parametrized.safetensors", "legacy.safetensors", "legacy_pre16.pth"]


@pytest.fixture
def files(tmp_path):
    """The committed zip and pre-1.6 fixtures, two safetensors files and a legacy pre-1.6 file, in
    tmp_path, by name."""
    names = ["parametrized.bin", "legacy.bin", "parametrized_legacy_format.bin"]
    for name in names:
        shutil.copyfile(DATA / name, tmp_path / name)
    return names + safetensors_files(tmp_path)


@pytest.mark.parametrize("to", DIRECTIONS)
def test_the_plan_is_exactly_the_file_fix_writes(tmp_path, files, to, monkeypatch):
    monkeypatch.chdir(tmp_path)
    planned = 0
    for name in files:
        checked = browser.check(name, to)
        _, check_out = cli(tmp_path, "check", "-v", "--to", to, name)
        assert check_out.splitlines()[0] == checked["line"], name
        before = (tmp_path / name).read_bytes()
        plan = browser.fix_plan(name, to)
        assert (tmp_path / name).read_bytes() == before
        if checked["status"] == "ok":
            assert plan is None, name
            continue
        assert checked["status"] == "needs-fix", checked
        assert isinstance(plan, list), plan
        written, line = cli_fix(tmp_path, name, to)
        assert assemble(plan, tmp_path / name) == written, name
        report, _ = browser.plan_fix(name, to)
        assert report.line() == line  # "NAME: fixed: renamed N keys to TO names"
        planned += 1
    assert planned == 3  # zip, pre-1.6 and safetensors, each way


def test_check_says_what_check_and_inspect_say(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(DATA / "parametrized.bin", tmp_path / "x.pth")
    checked = browser.check("x.pth")
    assert checked["status"] == "needs-fix"
    assert checked["line"].startswith("x.pth: 4 parametrized weight-norm keys in 2 modules")
    _, inspected = cli(tmp_path, "inspect", "x.pth")
    assert checked["inspect_lines"] == inspected.splitlines()
    _, document = cli(tmp_path, "inspect", "--output", "json", "x.pth")
    assert checked["inspect"] == json.loads(document)["files"][0]
    assert json.loads(json.dumps(checked)) == checked  # plain values only
    assert type(checked["status"]) is str and type(checked["inspect"]["status"]) is str


def test_a_legacy_file_has_no_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(DATA / "legacy.bin", tmp_path / "legacy.pth")
    assert browser.check("legacy.pth")["status"] == "ok"
    assert browser.fix_plan("legacy.pth") is None


def test_a_hostile_file_is_refused_without_a_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    hand_made_checkpoint(tmp_path / "evil.pth", system_payload(marker))
    checked = browser.check("evil.pth")
    assert checked["status"] == "refused"
    assert checked["inspect"]["status"] == "refused"
    refused = browser.fix_plan("evil.pth")
    assert refused["status"] == "refused" and refused["line"].startswith("evil.pth: refused: ")
    assert not marker.exists()


def test_a_tampered_tensor_record_fails_the_crc_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "x.pth"
    shutil.copyfile(DATA / "parametrized.bin", path)
    with zipfile.ZipFile(path) as archive:
        record = next(info for info in archive.infolist() if "/data/" in info.filename)
    data = bytearray(path.read_bytes())
    at = record.header_offset
    name_length = int.from_bytes(data[at + 26:at + 28], "little")
    extra_length = int.from_bytes(data[at + 28:at + 30], "little")
    data[at + 30 + name_length + extra_length] ^= 0xFF  # the record's first byte
    path.write_bytes(bytes(data))
    assert browser.check("x.pth")["status"] == "needs-fix"  # a check reads no tensor bytes
    refused = browser.fix_plan("x.pth")
    assert refused["status"] == "refused"
    assert refused["reason"] == f"record '{record.filename}' does not match its CRC"
    _, line = cli_fix(tmp_path, "x.pth", "legacy")
    assert refused["line"] == line  # the CLI refuses it in the same words


def test_pieces_source_reads_across_pieces(tmp_path):
    from pth_legacy_keys.byte_source import BytesSource
    from pth_legacy_keys.checkpoint import SourceRange

    original = BytesSource(bytes(range(100)))
    pieces = [b"ab", SourceRange(10, 5, None, "x"), b"", SourceRange(0, 0, None, "y"), b"cd",
              SourceRange(90, 10, None, "z")]
    source = browser.PiecesSource(pieces, original)
    whole = b"ab" + bytes(range(10, 15)) + b"cd" + bytes(range(90, 100))
    assert source.size == len(whole)
    for offset in range(len(whole) + 1):
        for n in range(len(whole) - offset + 1):
            assert source.read(offset, n) == whole[offset:offset + n]
    with pytest.raises(browser.CheckpointError):
        source.read(len(whole) - 1, 2)


def test_planning_a_large_file_holds_only_its_pickle(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from torch import nn

    monkeypatch.chdir(tmp_path)
    with torch.no_grad():
        model = nn.utils.parametrizations.weight_norm(nn.Linear(7168, 7168))
        for tensor in model.state_dict().values():
            tensor.zero_()
        torch.save(model.state_dict(), tmp_path / "big.pth")
    del model
    size = os.path.getsize(tmp_path / "big.pth")
    assert size > 200_000_000
    tracemalloc.start()
    try:
        plan = browser.fix_plan("big.pth")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(plan, list)
    assert sum(piece.get("length", 0) for piece in plan) > 200_000_000
    assert sum(len(piece.get("bytes", b"")) for piece in plan) < 1_000_000
    assert peak < 8 << 20, peak  # a few 1 MiB chunks, not the file's 200 MB


def test_the_api_starts_no_thread_and_no_writer():
    code = ("import sys, pth_legacy_keys.browser; "
            "print('threading' in sys.modules, 'pth_legacy_keys.writer' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(browser.__file__).parents[1])})
    assert done.stdout.split() == ["False", "False"], done.stdout + done.stderr


def test_a_file_named_like_a_url_is_read_where_it_is_never_fetched(tmp_path, monkeypatch):
    """A page mounts a dropped file under its own name; one named `http:` must not send the API
    down the HTTP path (the page promises to send nothing)."""
    from pth_legacy_keys import http_source

    folder = tmp_path / "http:" / "127.0.0.1:9"
    folder.mkdir(parents=True)
    shutil.copyfile(PARAMETRIZED, folder / "x.pth")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(http_source, "HttpSource", None)  # any attempt to fetch fails loudly
    result = browser.check("http://127.0.0.1:9/x.pth")
    assert result["status"] == "needs-fix", result
    report, pieces = browser.plan_fix("http://127.0.0.1:9/x.pth")
    assert str(report.status) == "fixed" and pieces
