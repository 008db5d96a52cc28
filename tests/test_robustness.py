"""Odd and oversized files: each is one clean line naming it, and the files after it are still examined.

Alignments no zip extra field can pad, exceptions from malformed numbers, lone surrogates in
safetensors keys, one long key fetched from the pickle memo tens of thousands of times, a key
that made a backtracking regex quadratic, FIFOs, devices and sockets named like checkpoints,
and a fix that handed another user's file to whoever ran it.
"""

import json
import io
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support.cli_run import PARAMETRIZED, copy_of, lines_about, run
from pth_legacy_keys import engine, inspection
from support import text, write_zip, zip_records
from support.hand_made import get, hand_made_checkpoint, put, state_dict_of, tensor

try:
    import resource
except ImportError:  # Windows
    resource = None

NOBODY = 65534  # the unprivileged uid and gid of `nobody` / `nogroup`
GOOD_LINES = {  # how each command shows the untouched good file beside a bad one
    "check": "good.pth: 4 parametrized weight-norm keys in 2 modules",
    "fix": "good.pth: fixed: renamed 4 keys to legacy names",
    "inspect": "good.pth",
}


# -- helpers ------------------------------------------------------------------------


def good_file(folder):
    return copy_of(folder, PARAMETRIZED, "good.pth")


def assert_good_file_examined(command, out, good):
    expected = str(good.parent / GOOD_LINES[command])
    assert any(line == expected or line.startswith(expected + " ") for line in out.splitlines()), out


def only_line(out, path, *statuses):
    """The one line about `path`, which must have one of `statuses`."""
    [line] = lines_about(out, path)
    assert line.startswith(tuple(f"{path}: {status}: " for status in statuses)), line
    return line


def rezipped(path, replaced, source=PARAMETRIZED):
    """`source`'s records written again by zipfile (no alignment padding), some with new contents."""
    return write_zip(path, [(name, replaced.get(name.split("/", 1)[1], data)) for name, data in zip_records(source)])


def cli(*args, timeout=120, **options):
    """The CLI in a child process; `timeout` only guards against a hang, it measures nothing."""
    return subprocess.run([sys.executable, "-m", "pth_legacy_keys", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, **options)


# -- 1. alignments, and malformed numbers anywhere ------------------------------------------


@pytest.mark.parametrize("command", ["fix", "inspect"])
def test_alignment_of_thousands_of_digits_is_one_line(tmp_path, capsys, command):
    bad = rezipped(tmp_path / "digits.pth", {".storage_alignment": b"9" * 5000})
    good = good_file(tmp_path)
    before = bad.read_bytes()
    code, out = run(capsys, command, bad, good)
    assert code == 2
    only_line(out, bad, "refused", "error")
    assert bad.read_bytes() == before
    assert_good_file_examined(command, out, good)


def test_alignment_whose_padding_no_zip_extra_field_holds_is_refused_by_fix(tmp_path, capsys):
    """torch's writer pads inside the local header's 16-bit extra field; 1 MiB of padding does not fit."""
    bad = rezipped(tmp_path / "huge.pth", {".storage_alignment": b"1048576"})
    good = good_file(tmp_path)
    before = bad.read_bytes()
    code, out = run(capsys, "fix", bad, good)
    assert code == 2
    line = only_line(out, bad, "refused")
    assert "alignment" in line and "1048576" in line, line
    assert bad.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["good.pth", "huge.pth"]  # no temporary left behind
    assert_good_file_examined("fix", out, good)


def torch_save_aligned(path, alignment):
    torch = pytest.importorskip("torch", reason="torch==2.13.0 is needed to make real checkpoints")
    from torch.utils.serialization import config

    state = {"0.parametrizations.weight.original0": torch.ones(3, 1),
             "0.parametrizations.weight.original1": torch.arange(12.0).reshape(3, 4),
             "1.bias": torch.arange(1000.0)}
    saved = config.save.storage_alignment
    config.save.storage_alignment = alignment
    try:
        torch.save(state, path)
    finally:
        config.save.storage_alignment = saved
    return torch


def test_torch_file_saved_with_1_mib_alignment_is_refused_as_torch_cannot_load_it(tmp_path, capsys):
    """torch's writer truncates padding past 64 KiB to 16 bits: its own reader then reads 'Z's.
    Should a torch release load such files, this test fails and fix should learn to write them."""
    bad = tmp_path / "mib.pth"
    torch = torch_save_aligned(bad, 1 << 20)
    with pytest.raises(RuntimeError):
        torch.load(bad, weights_only=True)
    good = good_file(tmp_path)
    before = bad.read_bytes()
    for command in ("check", "fix", "inspect"):
        code, out = run(capsys, command, bad, good)
        assert code == 2
        only_line(out, bad, "refused", "error")
        assert bad.read_bytes() == before
        assert_good_file_examined(command, out, good)
        good.write_bytes(PARAMETRIZED.read_bytes())


def test_torch_file_saved_with_64_kib_alignment_round_trips_byte_for_byte(tmp_path, capsys):
    path = tmp_path / "wide.pth"
    torch = torch_save_aligned(path, 1 << 16)
    original = path.read_bytes()
    assert run(capsys, "fix", path)[0] == 0
    for mmap in (False, True):
        loaded = torch.load(path, weights_only=True, mmap=mmap)
        assert torch.equal(loaded["0.weight_v"], torch.arange(12.0).reshape(3, 4))
        assert torch.equal(loaded["1.bias"], torch.arange(1000.0))
    assert run(capsys, "fix", "--to", "parametrized", path)[0] == 0
    assert path.read_bytes() == original


@pytest.mark.parametrize("error", [ValueError("invalid literal"), struct.error("unpack requires 4 bytes"),
                                   OverflowError("int too large")],
                         ids=["ValueError", "struct.error", "OverflowError"])
@pytest.mark.parametrize("command", ["check", "fix", "inspect"])
def test_a_malformed_number_anywhere_is_that_files_error(tmp_path, capsys, monkeypatch, command, error):
    """Whatever code a hostile number reaches, its ValueError, struct.error or OverflowError is one line."""
    bad = copy_of(tmp_path, PARAMETRIZED, "bad.pth")
    good = good_file(tmp_path)

    def read(outcome, path, **options):
        if Path(path).name == "bad.pth":
            raise error
        return read_file(outcome, path, **options)

    read_file = engine.read_file
    monkeypatch.setattr(engine, "read_file", read)
    monkeypatch.setattr(inspection, "read_file", read)
    code, out = run(capsys, command, bad, good)
    assert code == 2
    line = only_line(out, bad, "error")
    assert str(error) in line
    assert_good_file_examined(command, out, good)


# -- 2. lone surrogates ----------------------------------------------------------------------


def safetensors_file(path, header_text, data_bytes):
    encoded = header_text.encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(data_bytes))
    return path


WEIGHT_NORM_ENTRIES = ('"x{0}.parametrizations.weight.original0": {{"dtype": "F32", "shape": [3, 1], '
                       '"data_offsets": [0, 12]}}, "x{0}.parametrizations.weight.original1": '
                       '{{"dtype": "F32", "shape": [3, 4], "data_offsets": [12, 60]}}')


@pytest.mark.parametrize("header", [
    "{" + WEIGHT_NORM_ENTRIES.format(r"\ud800") + "}",
    "{" + WEIGHT_NORM_ENTRIES.format(r"\udc00") + "}",
    '{"__metadata__": {"note": "\\ud800"}, ' + WEIGHT_NORM_ENTRIES.format("") + "}",
], ids=["high-surrogate-key", "low-surrogate-key", "surrogate-in-metadata"])
@pytest.mark.parametrize("command", ["check", "fix", "inspect"])
def test_safetensors_header_with_a_lone_surrogate_is_refused(tmp_path, capsys, command, header):
    """The safetensors library refuses such a header ('lone leading surrogate'): we do not touch it."""
    bad = safetensors_file(tmp_path / "lone.safetensors", header, 60)
    good = good_file(tmp_path)
    before = bad.read_bytes()
    code, out = run(capsys, command, bad, good)
    assert code == 2
    line = only_line(out, bad, "refused")
    assert "surrogate" in line, line
    assert bad.read_bytes() == before
    assert_good_file_examined(command, out, good)


def test_safetensors_key_with_a_surrogate_pair_is_renamed(tmp_path, capsys):
    """An escaped pair is one character (U+1F600) to JSON and to the library: nothing lone about it."""
    header_text = "{" + WEIGHT_NORM_ENTRIES.format(r"\ud83d\ude00") + "}"
    path = safetensors_file(tmp_path / "pair.safetensors", header_text, 60)
    code, out = run(capsys, "fix", path)
    assert code == 0
    assert lines_about(out, path) == [f"{path}: fixed: renamed 2 keys to legacy names"]
    data = path.read_bytes()
    header = json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])
    assert sorted(header) == ["x\U0001F600.weight_g", "x\U0001F600.weight_v"]


@pytest.mark.parametrize("command", ["check", "fix", "inspect"])
def test_pickle_key_with_a_lone_surrogate_is_renamed_as_python_pickles_it(tmp_path, capsys, command):
    """Python's pickle carries lone surrogates (surrogatepass), so torch.load reads them back."""
    path = state_dict_of(tmp_path / "lone.pth", ["x\ud800.parametrizations.weight.original0",
                                                 "x\ud800.parametrizations.weight.original1"])
    for output in ("text", "json"):
        code, out = run(capsys, command, "--output", output, path)
        assert code == {"check": 1, "fix": 0, "inspect": 0}[command]
        if output == "json":
            json.loads(out)
    if command == "fix":
        code, out = run(capsys, "check", "-v", "--to", "parametrized", path)
        assert code == 1
        assert lines_about(out, path)[0].startswith(f"{path}: 2 legacy weight-norm keys in 1 module "
                                                    "(e.g. x\\ud800.weight_g)")
        torch = pytest.importorskip("torch", reason="torch==2.13.0 is needed to load the result")
        assert sorted(torch.load(path, weights_only=True)) == ["x\ud800.weight_g", "x\ud800.weight_v"]


# -- 3. one long key fetched from the memo many times ------------------------------------------


LONG = "m" * 100_000  # a 100 KB module prefix
PICKLE_BUDGET = 1_000_000


def memo_heavy_pickle(keys_per_dict):
    """A list of state dicts filling about 1 MB, each {key: tensor} for `keys_per_dict` 100 KB keys
    that are written once and then fetched from the memo by every dict."""
    keys = [f"{LONG}.parametrizations.weight.original{i}" for i in range(keys_per_dict)]
    first = b"}(" + b"".join(text(key) + put(1 + i) + (tensor() + put(0) if i == 0 else get(0))
                             for i, key in enumerate(keys)) + b"ua"
    again = b"}(" + b"".join(get(1 + i) + get(0) for i in range(keys_per_dict)) + b"ua"
    count = (PICKLE_BUDGET - len(first)) // len(again)
    return b"\x80\x02]" + first + again * count + b"."


def param_names_pickle():
    """A state dict with two 100 KB keys, and an optimizer whose param_names lists one of them 180,000 times."""
    keys = [f"{LONG}.parametrizations.weight.original{i}" for i in range(2)]
    model = b"}(" + text(keys[0]) + put(1) + tensor() + put(0) + text(keys[1]) + put(2) + get(0) + b"u"
    names = b"]" + (b"(" + b"j\x01\x00\x00\x00" * 10_000 + b"e") * 18  # LONG_BINGET 1
    optimizer = b"}(" + text("param_groups") + b"]}" + text("param_names") + names + b"sau"
    return b"\x80\x02}(" + text("model") + model + text("optimizer") + optimizer + b"u."


def deep_long_path_pickle():
    """State dicts 90 levels down, each level keyed by the 100 KB string: their path is 9 MB long."""
    key = text(LONG) + put(1)
    nested = b"}" + key
    nested += (b"}" + get(1)) * 89
    body = memo_heavy_pickle(2)[2:-1]
    return b"\x80\x02" + nested + body + b"s" * 90 + b"."


MEMO_CASES = {
    "renamed-keys": (lambda: memo_heavy_pickle(2), [("check", 1), ("fix", 0), ("inspect", 0),
                                                     ("check --output json", 1)]),
    "cannot-convert": (lambda: memo_heavy_pickle(1), [("check", 1), ("inspect --output json", 0)]),
    "param-names": (param_names_pickle, [("check --output json", 1), ("fix", 0)]),
    "deep-long-path": (deep_long_path_pickle, [("check --output json", 1), ("check -v", 1)]),
}
MEMORY_BOUND_MIB = 200


MEASURE = """
import resource, subprocess, sys
limit, output = int(sys.argv[1]), sys.argv[2]
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
with open(output, "wb") as out:
    code = subprocess.call([sys.executable, "-m", "pth_legacy_keys", *sys.argv[3:]], stdout=out,
                           stderr=subprocess.STDOUT)
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def run_measured(args, stdout_path, limit=2 << 30):
    """Run the CLI held to `limit` bytes of address space; return its exit code and peak resident
    memory in MiB.  It is started by a small Python of its own: a child forked from pytest itself
    would count pytest's pages (torch and all) as its own until it execs."""
    measured = subprocess.run([sys.executable, "-c", MEASURE, str(limit), str(stdout_path), *args],
                              capture_output=True, text=True, check=True)
    code, peak_kib = map(int, measured.stdout.split())
    return code, peak_kib / 1024


@pytest.mark.skipif(resource is None, reason="needs POSIX resource limits")
@pytest.mark.parametrize("case", MEMO_CASES)
def test_long_key_fetched_from_the_memo_many_times_costs_bounded_memory(tmp_path, case):
    make, runs = MEMO_CASES[case]
    pickle_bytes = make()
    assert 900_000 < len(pickle_bytes) < 1_300_000
    for command, expected_code in runs:
        path = hand_made_checkpoint(tmp_path / f"{case}.pth", pickle_bytes)
        stdout_path = tmp_path / "out.txt"
        code, peak_mib = run_measured([*command.split(), str(path)], stdout_path)
        out = stdout_path.read_text(encoding="utf-8", errors="replace")
        assert "Traceback" not in out
        assert code == expected_code, (command, out[-2000:])
        if "json" in command:
            [entry] = json.loads(out)["files"]
            assert entry["status"] in ("ok", "needs-fix", "cannot-convert")
        elif command == "inspect":
            assert out.splitlines()[0] == str(path)
        else:
            assert lines_about(out, path), out[-2000:]
        assert peak_mib < MEMORY_BOUND_MIB, f"{command}: peak RSS {peak_mib:.0f} MiB"
        # Every rename is listed, each long name shortened: output grows with the renames, not their length.
        assert len(out) < 200 * len(pickle_bytes), f"{command}: {len(out)} bytes of output"
        stdout_path.unlink()  # up to 80 MB of listed renames


# -- 4. keys that made the key regex quadratic -----------------------------------------------


@pytest.mark.parametrize("key", ["parametrizations." * 65_000 + "\n",
                                 "a." * 550_000 + "\n_g",
                                 "parametrizations.w." * 58_000 + "original"],
                         ids=["parametrizations-segments", "dotted-legacy", "parametrizations-pairs"])
def test_a_megabyte_key_is_read_in_linear_time(tmp_path, key):
    """These took minutes with a backtracking regex (quadratic in the key); now a fraction of a second.
    The timeout only guards against a hang."""
    path = state_dict_of(tmp_path / "long.pth", [key])
    for args in (["check", "-v"], ["check", "-v", "--to", "parametrized"], ["inspect"]):
        result = cli(*args, path, timeout=120)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode in (0, 1), result.stdout[-2000:]


def test_key_with_a_newline_in_its_prefix_is_still_a_parametrized_key(tmp_path, capsys):
    """A key is a key: a newline in a module name must not hide its parametrization from the rules."""
    path = state_dict_of(tmp_path / "newline.pth", ["a\nb.parametrizations.weight.original0",
                                                    "a\nb.parametrizations.weight.original1"])
    code, out = run(capsys, "fix", "-v", path)
    assert code == 0
    assert "    <top>: a\\nb.parametrizations.weight.original0 -> a\\nb.weight_g" in out.splitlines()


# -- 5. FIFOs, devices and sockets named like checkpoints --------------------------------------


posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and device files are POSIX")


@posix_only
@pytest.mark.parametrize("command", ["check", "fix", "inspect"])
def test_fifo_named_like_a_checkpoint_is_never_opened(tmp_path, command):
    """Opening a FIFO blocks until a writer comes: the walk hung. The timeout only guards a hang."""
    fifo = tmp_path / "pipe.pth"
    os.mkfifo(fifo)
    good = good_file(tmp_path)
    for paths in ([tmp_path], [fifo, good]):  # walked, and named explicitly
        result = cli(command, *paths, timeout=60)
        assert result.returncode == 2, result.stdout
        assert only_line(result.stdout, fifo, "error") == f"{fifo}: error: not a regular file (a FIFO)"
        assert_good_file_examined(command, result.stdout, good)
        good.write_bytes(PARAMETRIZED.read_bytes())
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@posix_only
@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
@pytest.mark.parametrize("command", ["check", "fix", "inspect"])
def test_device_named_explicitly_is_not_read(tmp_path, capsys, command):
    good = good_file(tmp_path)
    code, out = run(capsys, command, "/dev/zero", good)
    assert code == 2
    assert only_line(out, "/dev/zero", "error") == "/dev/zero: error: not a regular file (a character device)"
    assert_good_file_examined(command, out, good)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
@pytest.mark.parametrize("command", ["check", "fix", "inspect"])
def test_socket_named_like_a_checkpoint_is_not_opened(tmp_path, capsys, command):
    sock_path = tmp_path / "s.pth"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock_path))
        good = good_file(tmp_path)
        for paths in ([tmp_path], [sock_path, good]):
            code, out = run(capsys, command, *paths)
            assert code == 2
            assert only_line(out, sock_path, "error") == f"{sock_path}: error: not a regular file (a socket)"
            assert_good_file_examined(command, out, good)
            good.write_bytes(PARAMETRIZED.read_bytes())


# -- 6. ownership ----------------------------------------------------------------------------


is_root = getattr(os, "geteuid", lambda: -1)() == 0


@pytest.mark.skipif(not is_root, reason="only root can give a file to another user")
@pytest.mark.parametrize("mode", [0o640, 0o2664], ids=oct)
def test_fix_as_root_keeps_another_users_owner_group_and_mode(tmp_path, capsys, mode):
    path = copy_of(tmp_path)
    os.chown(path, NOBODY, NOBODY)
    path.chmod(mode)
    code, out = run(capsys, "fix", path)
    assert code == 0
    assert lines_about(out, path) == [f"{path}: fixed: renamed 4 keys to legacy names"]
    status = path.stat()
    assert (status.st_uid, status.st_gid, stat.S_IMODE(status.st_mode)) == (NOBODY, NOBODY, mode)
    assert os.listdir(tmp_path) == [path.name]


def become_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@pytest.fixture
def nobodys_folder():
    """A folder `nobody` owns, outside pytest's root-only temporary tree; skipped if we cannot switch."""
    if not is_root:
        reason = "switching to the unprivileged user nobody (uid 65534) needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="pth-legacy-keys-nobody-"))
    os.chown(folder, NOBODY, NOBODY)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def python_for_nobody():
    """An interpreter `nobody` may run, with this checkout's package on its path: ours may live
    in root's home, which nobody can enter; the package is pure Python, any 3.9+ runs it."""
    import pth_legacy_keys

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(pth_legacy_keys.__file__)))
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3", shutil.which("python3")]):
        try:
            if python and subprocess.run([python, "-c", "import pth_legacy_keys"], preexec_fn=become_nobody,
                                         cwd="/", env={"PYTHONPATH": package_parent},
                                         capture_output=True).returncode == 0:
                return python, package_parent
        except OSError:
            continue  # it cannot even be started as nobody
    pytest.skip("no Python interpreter that the unprivileged user nobody may run")


def cli_as_nobody(*args):
    python, package_parent = python_for_nobody()
    return subprocess.run([python, "-m", "pth_legacy_keys", *map(str, args)], capture_output=True, text=True,
                          timeout=120, preexec_fn=become_nobody, cwd="/", env={"PYTHONPATH": package_parent})


def test_unprivileged_fix_of_its_own_file_keeps_owner_group_and_mode(nobodys_folder):
    path = copy_of(nobodys_folder, PARAMETRIZED, "mine.pth")
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0o604)
    result = cli_as_nobody("fix", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines_about(result.stdout, path) == [f"{path}: fixed: renamed 4 keys to legacy names"]
    status = path.stat()
    assert (status.st_uid, status.st_gid, stat.S_IMODE(status.st_mode)) == (NOBODY, NOBODY, 0o604)


def test_unprivileged_fix_of_a_file_it_may_write_but_not_own_changes_nothing(nobodys_folder):
    """Replacing the file would make it nobody's: the owner would lose it. It stays as it was."""
    path = copy_of(nobodys_folder, PARAMETRIZED, "roots.pth")
    path.chmod(0o666)
    before = path.read_bytes(), path.stat()
    good = copy_of(nobodys_folder, PARAMETRIZED, "good.pth")
    os.chown(good, NOBODY, NOBODY)
    result = cli_as_nobody("fix", path, good)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    line = only_line(result.stdout, path, "error")
    assert "owner" in line and "nothing was changed" in line, line
    after = path.read_bytes(), path.stat()
    assert after[0] == before[0] and (after[1].st_uid, after[1].st_ino) == (0, before[1].st_ino)
    assert_good_file_examined("fix", result.stdout, good)
    assert sorted(os.listdir(nobodys_folder)) == ["good.pth", "roots.pth"]


def test_the_package_uses_no_undefined_name():
    """A name used but never imported fails only when its line runs (a NameError in fix, after
    other files were rewritten): pyflakes finds it without running anything."""
    pyflakes_api = pytest.importorskip("pyflakes.api", reason="pyflakes comes with the test extra")
    from pyflakes.reporter import Reporter

    package = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hooks", "pth_legacy_keys")
    out, err = io.StringIO(), io.StringIO()
    pyflakes_api.checkRecursive([package], Reporter(out, err))
    undefined = [line for line in out.getvalue().splitlines() if "undefined name" in line]
    assert undefined == [] and err.getvalue() == ""


def test_fix_refuses_a_tensor_record_that_does_not_match_its_crc(tmp_path, capsys):
    """check reads only the pickle, so it says needs-fix; fix copies the tensors and finds them bad.
    (That line once raised NameError after other files had been rewritten.)"""
    import zipfile

    path = copy_of(tmp_path, PARAMETRIZED, "crc.pth")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        record = next(info for info in archive.infolist() if "/data/" in info.filename)
    name_and_extra = data[record.header_offset + 26:record.header_offset + 30]
    start = record.header_offset + 30 + int.from_bytes(name_and_extra[:2], "little") + \
        int.from_bytes(name_and_extra[2:], "little")
    data[start] ^= 0xFF
    path.write_bytes(bytes(data))
    good = copy_of(tmp_path, PARAMETRIZED, "good.pth")
    code, out = run(capsys, "fix", path, good)
    assert code == 2
    assert f"{path}: refused: record '" in out and "does not match its CRC" in out
    assert f"{good}: fixed" in out
    assert path.read_bytes() == bytes(data)
