"""Whatever the tool accepts, torch.load runs nothing hostile from: the verdict follows torch's route.

The property, for every file every generator below makes: if `scan` says ok, needs-fix,
cannot-convert, not-checked or skipped, or `inspect` says ok or "loads in legacy RVC loaders:
yes", or `fix` wrote a new file, then `torch_oracle.torch_route` (torch.load itself, with a
pickle module that records instead of importing) finds no forbidden global, no allowed global
outside its role and no hand-over to torch.jit.load, in the file and in what fix wrote.

One generator per way the same bytes can mean two things (FORMAT.md section 6):
  a  zip end records: appended archives, comments holding a second end record, trailing bytes,
     zip64 locators (miniz reads the LAST end record with 22 bytes after it);
  b  tar: the pre-1.6 format torch tries first, also inside a legacy-format file;
  c  content read as another format: safetensors, path-configuration text, LFS pointers;
  d  the legacy format's five pickles, each replaced;
  e  allowed globals outside their role in a plain checkpoint;
  f  mutations of benign torch.save files;
  g  TorchScript archives;
plus the hostile corpus of support/hostile_corpus.py.  Where a generator knows whether torch must find
its file hostile, that is checked too: a "hostile" file torch reads harmlessly would test
nothing, and a "benign" one the oracle flags would make the oracle useless.  The files each
generator made are counted in the terminal summary.
"""

import io
import json
import os
import pickle
import pickletools
import shutil
import struct
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections import Counter
from functools import cache

import pytest

torch = pytest.importorskip("torch", reason="torch==2.13.0 is needed to make and load real checkpoints")
pytest.importorskip("hypothesis", reason="the property tests need hypothesis")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="the safetensors generator needs safetensors")

from support import rvc_model  # noqa: E402
from support import hostile_corpus  # noqa: E402
from support.cli_run import LEGACY, LEGACY_FORMAT, PARAMETRIZED  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from pth_legacy_keys import fix, scan  # noqa: E402
from pth_legacy_keys.cli import main  # noqa: E402
from pth_legacy_keys.inspection import inspect_file as inspect  # noqa: E402
from support.mutants import mutants  # noqa: E402
from support.tar_bytes import tar_bytes  # noqa: E402
from support.torch_helpers import assert_same_tree  # noqa: E402
from support.torch_oracle import PLAIN_CHECKPOINT_GLOBALS, TorchRoute, allowed_globals, pickle_module_for, torch_route  # noqa: E402

from support import LFS_POINTER, PROTO2, build_zip, global_, number, text, zip_records  # noqa: E402
from support.hand_made import call, hand_made_checkpoint, system_payload  # noqa: E402
from support.zip_bytes import write_zip  # noqa: E402

# What counts as the tool accepting a file: every status but refused and error.
ACCEPTED = frozenset({"ok", "needs-fix", "cannot-convert", "not-checked", "skipped"})
NAMES = ("x.pth", "x.bin", "x.safetensors", "x")
MARKER = "/nonexistent/torch-route-MARKER"  # the hostile payloads' command; never run
HOSTILE_PICKLE = system_payload(MARKER)  # protocol 2: posix.system('touch ...')
HOSTILE_TEXT_PICKLE = f"cposix\nsystem\n(S'touch {MARKER}'\ntR.".encode()  # protocol 0, all ASCII

# PTH_FUZZ_SCALE=N (as for test_fuzz.py) runs N times the examples, randomized: a longer hunt.
SCALE = max(1, int(os.environ.get("PTH_FUZZ_SCALE", "1")))
ROUTE_SETTINGS = {
    "derandomize": SCALE == 1,  # by default the same examples on every run: CI is reproducible
    "database": None,
    "deadline": None,
    "phases": (Phase.explicit, Phase.generate),  # no shrinking: the first hole is reported as found
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                              HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
}

# generator -> Counter(files, hostile, accepted, holes); printed in the terminal summary.
TALLY = {}


# -- the property -------------------------------------------------------------------------


class Verdicts:
    """What the tool said about one file: scan, inspect and fix (run on a copy)."""

    def __init__(self, path, folder):
        self.scan = scan(path)
        self.inspect = inspect(path)
        copy = os.path.join(folder, "fixed", os.path.basename(path))
        os.makedirs(os.path.dirname(copy))
        shutil.copyfile(path, copy)
        self.fix = fix(copy)
        self.written = copy if self.fix.status == "fixed" else None

    @property
    def accepted(self):
        verdict = self.inspect.legacy_rvc
        return (self.scan.status in ACCEPTED or self.inspect.status in ACCEPTED
                or (verdict is not None and verdict["answer"] == "yes") or self.written is not None)

    def describe(self):
        loads = self.inspect.legacy_rvc["answer"] if self.inspect.legacy_rvc else "-"
        return (f"scan {self.scan.status} ({self.scan.reason}), inspect {self.inspect.status} "
                f"(loads in legacy RVC: {loads}), fix {self.fix.status}")


def examine(generator, label, data, tmp_path, name="x.pth", expect=None):
    """Write `data` as `name`; return a message if the tool accepts what torch finds hostile.

    `expect` is "hostile" or "benign" when the generator knows what torch must make of the
    file; a mismatch is a message too (a broken generator or a blind oracle).
    """
    folder = tempfile.mkdtemp(dir=tmp_path)
    try:  # a generator writes a thousand files: each goes as soon as it is judged
        return _examine_in(folder, generator, label, data, name, expect)
    finally:
        shutil.rmtree(folder)


def _examine_in(folder, generator, label, data, name, expect):
    tally = TALLY.setdefault(generator, Counter())
    tally["files"] += 1
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    route = torch_route(path)
    tally["hostile"] += route.hostile
    verdicts = Verdicts(path, folder)
    tally["accepted"] += verdicts.accepted
    where = f"[{generator}] {label} as {name} ({summary(data)})"
    if verdicts.accepted and route.hostile:
        tally["holes"] += 1
        return f"{where}: tool said {verdicts.describe()}, but torch.load {route.describe()}"
    if verdicts.written:
        written = torch_route(verdicts.written)
        if written.hostile:
            tally["holes"] += 1
            return f"{where}: fix wrote a file from which torch.load {written.describe()}"
    if expect == "hostile" and not route.hostile:
        return f"{where}: generator error, torch finds nothing hostile ({route.error!r})"
    if expect == "benign" and route.hostile:
        return f"{where}: oracle error, a benign file reads as hostile: {route.describe()}"
    return None


def assert_route(generator, label, data, tmp_path, name="x.pth", expect=None):
    message = examine(generator, label, data, tmp_path, name, expect)
    assert message is None, message


def assert_no_holes(messages):
    messages = [m for m in messages if m]
    assert not messages, f"{len(messages)} files:\n" + "\n".join(messages[:25])


def summary(data):
    return f"{len(data)} bytes, starts {data[:12]!r}, ends {data[-8:]!r}"


class RouteSummary:
    """A terminal-summary section: how many files each generator made, and what became of them."""

    def pytest_terminal_summary(self, terminalreporter):
        if not TALLY:
            return
        terminalreporter.section("torch route: files per generator")
        for generator in sorted(TALLY):
            t = TALLY[generator]
            terminalreporter.write_line(
                f"{generator:<28} {t['files']:>5} files, {t['hostile']:>5} hostile to torch, "
                f"{t['accepted']:>5} accepted by the tool, {t['holes']:>4} holes")


@pytest.fixture(autouse=True, scope="module")
def route_summary(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("torch-route-summary"):
        manager.register(RouteSummary(), "torch-route-summary")


# -- benign checkpoints, made by torch ------------------------------------------------------


@cache
def torch_saved(kind, zip_format=True):
    """torch.save output (to a file object: archive prefix 'archive/') for a few kinds of content."""
    if kind == "tiny-parametrized":
        content = {k: v for k, v in torch.load(PARAMETRIZED, weights_only=True).items()}
    elif kind == "tiny-legacy":
        content = torch.load(LEGACY, weights_only=True)
    elif kind == "rvc-legacy":  # inspect says it loads in legacy RVC loaders
        content = rvc_model.rvc_inference_file(rvc_model.build(parametrized=False))
    elif kind == "rvc-parametrized":
        content = rvc_model.rvc_inference_file(rvc_model.build(parametrized=True))
    else:
        raise ValueError(kind)
    buffer = io.BytesIO()
    torch.save(content, buffer, _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


BASE_KINDS = ("tiny-parametrized", "tiny-legacy", "rvc-legacy", "rvc-parametrized")


def zip_base(kind):
    if kind.startswith("fixture-"):  # the committed torch.save files (archive prefix = file name)
        return {"fixture-parametrized": PARAMETRIZED, "fixture-legacy": LEGACY}[kind].read_bytes()
    return torch_saved(kind)


def legacy_base(kind):
    if kind == "fixture-legacy-format":
        return LEGACY_FORMAT.read_bytes()
    return torch_saved(kind, zip_format=False)


ZIP_BASES = ("fixture-parametrized", "fixture-legacy") + BASE_KINDS
LEGACY_BASES = ("fixture-legacy-format",) + BASE_KINDS


def test_benign_bases_are_accepted_and_harmless(tmp_path):
    """The control: every base the generators start from is accepted, and torch runs nothing from it."""
    messages = []
    for kind in ZIP_BASES:
        messages.append(examine("bases", kind, zip_base(kind), tmp_path, expect="benign"))
        assert scan(write(tmp_path, zip_base(kind))).status in ("ok", "needs-fix"), kind
    for kind in LEGACY_BASES:
        messages.append(examine("bases", f"{kind} legacy format", legacy_base(kind), tmp_path, expect="benign"))
        assert scan(write(tmp_path, legacy_base(kind))).status in ("ok", "needs-fix"), kind
    assert inspect(write(tmp_path, zip_base("rvc-legacy"))).legacy_rvc["answer"] == "yes"
    assert_no_holes(messages)


# What site-packages path-configuration files hold (setuptools, virtualenv, pip's editable
# installs, easy_install, namespace packages): each must be skipped, and torch must run nothing.
SITE_PACKAGES_PTH = {
    "distutils-precedence.pth": "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, "
                                "'local') == 'local'; enabled and __import__('_distutils_hack').add_shim(); \n",
    "_virtualenv.pth": "import _virtualenv\n",
    "__editable__.foo-1.0.pth": "import __editable___foo_1_0_finder; __editable___foo_1_0_finder.install()\n",
    "__editable__.bar-2.0.pth": "/home/user/src/bar\n",
    "easy-install.pth": "./foo-1.0-py3.11.egg\n./bar-2.0-py3.11.egg\n",
    "zope.interface-nspkg.pth": "import sys, types, os;has_mfs = sys.version_info > (3, 5);"
                                "p = os.path.join(sys._getframe(1).f_locals['sitedir'], *('zope',))\n",
    "comment-first.pth": "# added by a tool\ncustom/lib\nsrc\n",
}


@pytest.mark.parametrize("name", sorted(SITE_PACKAGES_PTH))
def test_site_packages_path_configuration_files_are_skipped_and_harmless(tmp_path, name):
    data = SITE_PACKAGES_PTH[name].encode()
    assert scan(write(tmp_path, data, name)).status == "skipped"
    assert_no_holes([examine("site-packages-pth", name, data, tmp_path, name=name, expect="benign")])


def write(tmp_path, data, name="x.pth"):
    path = os.path.join(tempfile.mkdtemp(dir=tmp_path), name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# -- the oracle sees what it must -----------------------------------------------------------


def test_oracle_allows_what_a_plain_checkpoint_uses():
    allowed = allowed_globals()
    for dotted, value in PLAIN_CHECKPOINT_GLOBALS.items():
        assert allowed[dotted] is value, dotted
    for name in ("HalfStorage", "FloatStorage", "BFloat16Storage", "LongStorage"):
        assert f"torch.{name}" in allowed
    for dtype in ("float16", "float32", "bfloat16", "uint16", "float8_e4m3fn"):
        assert f"torch.{dtype}" in allowed


# These payloads would `touch` a marker in tmp_path (test_bad_input.py proves such a payload
# live in a subprocess); the oracle must record them and the marker must never appear.


def test_oracle_records_a_hostile_legacy_format_file(tmp_path):
    data = legacy_base("tiny-parametrized")
    magic_end = pickle_spans(data)[0][1]
    route = torch_route(write(tmp_path, system_payload(tmp_path / "MARKER") + data[magic_end:]))
    assert route.forbidden == [("posix", "system")] and not route.jit_load, route
    assert not (tmp_path / "MARKER").exists()


def test_oracle_records_a_hostile_data_pkl_in_a_torch_saved_zip(tmp_path):
    data = replace_data_pkl(zip_base("tiny-parametrized"), system_payload(tmp_path / "MARKER"))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None  # the CRC was rewritten: a valid zip, not a damaged one
    route = torch_route(write(tmp_path, data))
    assert route.forbidden == [("posix", "system")], route
    assert not (tmp_path / "MARKER").exists()


def test_oracle_records_a_hostile_tar_format_file(tmp_path):
    data = tar_bytes(torch_tar_members(system_payload(tmp_path / "MARKER")))
    assert tarfile.open(fileobj=io.BytesIO(data), mode="r:").getnames() == ["storages", "tensors", "pickle"]
    route = torch_route(write(tmp_path, data))
    assert route.forbidden == [("posix", "system")], route
    assert not (tmp_path / "MARKER").exists()


def test_oracle_records_a_torchscript_archive(tmp_path):
    route = torch_route(write(tmp_path, torchscript_archive()))
    assert route.jit_load and not route.forbidden, route


def test_oracle_caps_what_cpython_allocates_for_a_memo_index(tmp_path):
    """Found by atheris: LONG_BINPUT with the index b"0\\nS'" makes _pickle.c fill a memo of
    1.3 billion entries (10 GB); the oracle's cap turns that into a MemoryError."""
    data = b"I1\n0(dr0\nS'key'\np0\nL5L\nsS'x'\n__metadata__g0\ns."
    route = torch_route(write(tmp_path, data))
    assert not route.hostile and isinstance(route.error, MemoryError), route
    assert scan(write(tmp_path, data)).status == "skipped"


NUMBER_LINES = [b"1", b"01", b"00", b"-7", b"+1", b" 1", b"1 ", b"0x1f", b"017", b"08", b"1_000", b"", b"\0",
                b"1\0x", b"\0abc", b"x", b"1.5", b"1e3", b".5", b"inf", b"-nan", b"1.5\0z", b" 1.5", b"1_0.5",
                b"12L", b"L", b"1L\0", b"\t2", b"0b1", b"1e", b"9" * 30, b"9" * 30 + b"\0"]


@pytest.mark.parametrize("opcode", [b"I", b"L", b"F", b"p", b"g"])
def test_oracle_reads_text_numbers_as_cpython_does(opcode):
    """The oracle's unpickler is pickle.py's, taught _pickle.c's reading of text numbers (a C
    string ends at its NUL): the same value, or an error, on every line."""
    oracle = pickle_module_for(TorchRoute())
    for line in NUMBER_LINES:
        data = (b"N" if opcode in b"pg" else b"") + opcode + line + b"\n" + (b"g0\n" if opcode == b"p" else b"") + b"."
        if opcode == b"g":
            data = b"Np0\n0" + data[1:]
        outcomes = []
        for load in (pickle.loads, oracle.loads):
            try:
                value = load(data, encoding="utf-8")
                outcomes.append((type(value), value if value == value else "nan"))
            except Exception:
                outcomes.append("error")
        assert outcomes[0] == outcomes[1], (data, outcomes)


def test_oracle_lets_build_on_plain_data_fail_as_pickle_does(tmp_path):
    """Found by the atheris harness: BUILD on an int runs nothing (pickle raises), so it is not a
    misuse; the file is protocol-0 text that pickle stops reading at INST without a MARK."""
    for data in (b"I1\n()))" + b"M" * 36 + b")btio)).", b"}]bb"):  # the second: BUILD on a plain dict
        route = torch_route(write(tmp_path, data))
        assert not route.hostile and route.error is not None, route
        assert scan(write(tmp_path, data)).status in ("skipped", "error")


@pytest.mark.parametrize("kind", BASE_KINDS)
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy-format"])
def test_oracle_records_nothing_for_real_torch_save_files_and_loads_them_whole(tmp_path, kind, zip_format):
    path = write(tmp_path, torch_saved(kind, zip_format))
    route = torch_route(path)
    assert not route.hostile and route.error is None, route
    # The oracle's load went as far as torch's own: the same tree, bit-equal tensors.
    assert_same_tree(route.result, torch.load(path, weights_only=True))


def test_oracle_records_nothing_for_a_tensor_state_dict_with_every_rebuild(tmp_path):
    """Parameters (keep_vars), fp8 and uint16 (_rebuild_tensor_v3), views, shared storages, a dtype."""
    parameters = torch.nn.Linear(2, 2).state_dict(keep_vars=True)
    base = torch.arange(6.0)
    content = {**parameters, "view": base[2:4], "base": base, "dtype": torch.float16}
    new_dtypes = {"fp8": torch.zeros(3, dtype=torch.float8_e4m3fn), "u16": torch.zeros(2, dtype=torch.uint16)}
    # torch cannot load the new dtypes from its own legacy format (UntypedStorage has no dtype).
    for zip_format, saved in ((True, {**content, **new_dtypes}), (False, content)):
        path = write(tmp_path, save_to_bytes(saved, zip_format))
        route = torch_route(path)
        assert not route.hostile and route.error is None, route


def save_to_bytes(content, zip_format=True):
    buffer = io.BytesIO()
    torch.save(content, buffer, _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


# -- zip surgery ------------------------------------------------------------------------------


def central_entries(data):
    """[(name, raw central-directory entry)] of a zip whose end record is its last 22 bytes."""
    end = len(data) - 22
    assert data[end:end + 4] == b"PK\x05\x06"
    count, size, offset = struct.unpack_from("<HII", data, end + 10)
    entries, at = [], offset
    for _ in range(count):
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, at + 28)
        length = 46 + name_len + extra_len + comment_len
        entries.append((data[at + 46:at + 46 + name_len].decode(), data[at:at + length]))
        at += length
    return entries, offset


def local_record(name, payload):
    """A stored record as zip writers make it: local header (no descriptor), name, bytes."""
    encoded = name.encode()
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0x0800, 0, 0, 0, zlib.crc32(payload),
                       len(payload), len(payload), len(encoded), 0) + encoded + payload


def pointing_at(entry, header_offset, payload=None):
    """A central-directory entry moved to `header_offset`, and with `payload`'s CRC and size."""
    entry = bytearray(entry)
    if payload is not None:
        struct.pack_into("<III", entry, 16, zlib.crc32(payload), len(payload), len(payload))
    struct.pack_into("<I", entry, 42, header_offset)
    return bytes(entry)


def end_records(count, cd_size, cd_offset, zip64=True, comment_length=0, zip64_cd_offset=None):
    """Zip64 end record and locator (placed right after the directory) and the end record."""
    z64_at = cd_offset + cd_size
    out = b""
    if zip64:
        z64_offset = cd_offset if zip64_cd_offset is None else zip64_cd_offset
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, cd_size, z64_offset)
        out += struct.pack("<IIQI", 0x07064B50, 0, z64_at, 1)
    return out + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, cd_size, cd_offset, comment_length)


def hostile_parts(benign, payload, at):
    """A data.pkl record holding `payload`, for offset `at`, and a central directory listing
    benign's other records and that one."""
    entries, _ = central_entries(benign)
    pickle_name = next(name for name, _ in entries if name.endswith("/data.pkl"))
    record = local_record(pickle_name, payload)
    directory = b"".join(pointing_at(entry, at, payload) if name == pickle_name else entry
                         for name, entry in entries)
    return record, directory, len(entries)


def hostile_directory(benign, payload, at, zip64=True, comment_length=0):
    """What to place at offset `at` after `benign`'s bytes: the hostile record and directory, then
    end records; miniz, reading the last end record, loads `payload` and benign's tensors."""
    record, directory, count = hostile_parts(benign, payload, at)
    cd_offset = at + len(record)
    return record + directory + end_records(count, len(directory), cd_offset, zip64, comment_length)


def relocated(archive, delta):
    """A zip moved `delta` bytes later in a file: every offset it records shifted."""
    entries, cd_offset = central_entries(archive)
    directory = b"".join(pointing_at(entry, struct.unpack_from("<I", entry, 42)[0] + delta)
                         for _, entry in entries)
    zip64 = archive.find(b"PK\x06\x06", cd_offset) >= 0
    return (archive[:cd_offset] + directory
            + end_records(len(entries), len(directory), cd_offset + delta, zip64))


def replace_data_pkl(archive, payload):
    """`archive` with its data.pkl record's bytes replaced, CRC and sizes rewritten, layout kept."""
    return rezip([(name, payload if name.endswith("/data.pkl") else data) for name, data in zip_records(archive)])


def rezip(records):
    """A stored zip written by zipfile, with fixed dates: the same bytes on every run."""
    return build_zip(records, date_time=(1980, 1, 1, 0, 0, 0))


def with_end_comment(data, comment, declared=None):
    """`data` with `comment` after its end record, the end record declaring `declared` bytes."""
    data = bytearray(data + comment)
    declared = min(len(comment), 0xFFFF) if declared is None else declared
    struct.pack_into("<H", data, len(data) - len(comment) - 2, declared)
    return bytes(data)


# Each layout: (benign torch.save zip, hostile pickle, knobs) -> the bytes; and whether torch,
# reading the last end record with 22 bytes after it, must find the hostile pickle.
def appended_directory(benign, payload, k):
    tail = hostile_directory(benign, payload, len(benign), k.zip64, k.comment)
    return benign + tail + k.junk


def appended_archive(benign, payload, k):
    hostile = replace_data_pkl(benign, payload)
    return benign + relocated(hostile, len(benign)) + k.junk


def comment_holds_second_end(benign, payload, k):
    """The benign end record's comment is a whole second archive end: torch ignores the length."""
    tail = hostile_directory(benign, payload, len(benign), k.zip64, k.comment) + k.junk
    return with_end_comment(benign, tail, None if k.declare_exactly else k.declared)


def comment_without_second_end(benign, payload, k):
    """A comment holding only a decoy data.pkl record: torch still reads the benign archive."""
    return with_end_comment(benign, local_record("archive/data.pkl", payload) + k.junk.replace(b"PK", b"pk"))


def trailing_bytes(benign, payload, k):
    """Bytes after the end record, no end record among them: torch still reads the benign archive."""
    return benign + (k.junk + payload).replace(b"PK", b"pk")


def hostile_archive_first(benign, payload, k):
    """A whole hostile archive, then the benign records without any end record of their own."""
    hostile = replace_data_pkl(benign, payload)
    _, cd_offset = central_entries(benign)
    return hostile + relocated(benign, len(hostile))[:cd_offset] + k.junk


def zip64_redirect(benign, payload, k):
    """The end record points at the benign directory, the zip64 end record at a hostile one."""
    entries, cd_offset = central_entries(benign)
    record, hostile_cd, count = hostile_parts(benign, payload, cd_offset)
    benign_cd = b"".join(entry for _, entry in entries)
    hostile_cd_offset = cd_offset + len(record)
    benign_cd_offset = hostile_cd_offset + len(hostile_cd)
    return (benign[:cd_offset] + record + hostile_cd + benign_cd
            + end_records(count, len(benign_cd), benign_cd_offset, zip64=True, zip64_cd_offset=hostile_cd_offset)
            + k.junk)


def zip64_locator_elsewhere(benign, payload, k):
    """The zip64 end record sits before the hostile record and directory, not right after them;
    the locator points at it, the end record (32-bit fields) at the benign directory."""
    entries, cd_offset = central_entries(benign)
    z64_at = len(benign)
    record, directory, count = hostile_parts(benign, payload, z64_at + 56)
    hostile_cd_offset = z64_at + 56 + len(record)
    z64 = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, len(directory), hostile_cd_offset)
    locator = struct.pack("<IIQI", 0x07064B50, 0, z64_at, 1)
    benign_cd = b"".join(entry for _, entry in entries)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(benign_cd), cd_offset, 0)
    return benign + z64 + record + directory + locator + end + k.junk


ZIP_LAYOUTS = {
    "appended-directory": (appended_directory, "hostile"),
    "appended-archive": (appended_archive, "hostile"),
    "comment-holds-second-end": (comment_holds_second_end, "hostile"),
    "comment-without-second-end": (comment_without_second_end, "benign"),
    "trailing-bytes": (trailing_bytes, "benign"),
    "hostile-archive-first": (hostile_archive_first, "hostile"),
    "zip64-redirect": (zip64_redirect, "hostile"),
    "zip64-locator-elsewhere": (zip64_locator_elsewhere, "hostile"),
}


class Knobs:
    def __init__(self, zip64=True, comment=0, junk=b"", declare_exactly=True, declared=0):
        self.zip64 = zip64
        self.comment = comment  # what a hostile end record declares as its comment length
        self.junk = junk  # bytes after the last end record
        self.declare_exactly = declare_exactly  # the benign end record's comment length is right
        self.declared = declared  # ... or this


def expected_for(layout, knobs, junk_has_end=False):
    """torch finds the hostile pickle unless miniz cannot see the hostile end record."""
    expect = ZIP_LAYOUTS[layout][1]
    if expect == "hostile" and (len(knobs.junk) > 0xFFFF or junk_has_end):
        return None  # beyond miniz's 64 KiB search window, or a later end record: undecided
    return expect


def test_zip_end_record_tricks_every_layout(tmp_path):
    messages = []
    for layout, (build, expect) in ZIP_LAYOUTS.items():
        for base in ("fixture-parametrized", "rvc-legacy", "rvc-parametrized"):
            for knobs in (Knobs(), Knobs(zip64=False), Knobs(junk=bytes(30)), Knobs(comment=7, junk=b"z" * 5)):
                data = build(zip_base(base), HOSTILE_PICKLE, knobs)
                messages.append(examine("a-zip-end-records", f"{layout} on {base}", data, tmp_path,
                                        expect=expected_for(layout, knobs)))
    assert_no_holes(messages)


@settings(max_examples=1000 * SCALE, **ROUTE_SETTINGS)
@given(layout=st.sampled_from(sorted(ZIP_LAYOUTS)), base=st.sampled_from(ZIP_BASES), zip64=st.booleans(),
       comment=st.sampled_from([0, 1, 7, 22, 0xFFFF]), declare_exactly=st.booleans(),
       declared=st.integers(0, 0xFFFF), name=st.sampled_from(NAMES),
       junk=st.one_of(st.binary(max_size=40), st.sampled_from([bytes(21), bytes(22), b"PK\x05\x06" + bytes(17),
                                                               bytes(0x10000)])))
def test_zip_end_record_tricks(tmp_path, layout, base, zip64, comment, declare_exactly, declared, name, junk):
    knobs = Knobs(zip64, comment, junk, declare_exactly, declared)
    data = ZIP_LAYOUTS[layout][0](zip_base(base), HOSTILE_PICKLE, knobs)
    assert_route("a-zip-end-records", f"{layout} on {base}, zip64={zip64}, comment={comment}, "
                  f"junk={len(junk)}", data, tmp_path, name,
                  expect=expected_for(layout, knobs, b"PK\x05\x06" in junk))


# -- tar ----------------------------------------------------------------------------------------


def torch_tar_members(storages=HOSTILE_PICKLE, before=(), after=()):
    """The pre-1.6 tar checkpoint's members; torch unpickles `storages` first."""
    return list(before) + [("storages", storages), ("tensors", b""), ("pickle", b"")] + list(after)


TAR_FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


def v7_header(name, size, typeflag=b"0"):
    """A 512-byte v7 tar header (no 'ustar' magic), checksum filled in."""
    header = bytearray(512)
    header[0:len(name)] = name
    for at, value in ((100, "0000644"), (108, "0000000"), (116, "0000000"), (124, f"{size:011o}"),
                      (136, "00000000000")):
        header[at:at + len(value)] = value.encode()
    header[156:157] = typeflag
    return stamp_tar_checksum(header)


def stamp_tar_checksum(block, at=0):
    """Write the checksum of the 512-byte header at `at` of `block` (the field counts as spaces)."""
    header = bytearray(block[at:at + 512])
    header[148:156] = b" " * 8
    block[at + 148:at + 156] = f"{sum(header):06o}\0 ".encode()
    return block


def inner_tar(members, end_blocks):
    """v7 tar members as ASCII-only bytes: headers, data padded to 512, optional end blocks."""
    out = bytearray()
    for name, payload in members:
        out += v7_header(name.encode(), len(payload)) + payload + bytes(-len(payload) % 512)
    return bytes(out + (bytes(1024) if end_blocks else b""))


def pickle_spans(data, count=5):
    """[(start, end)] of the first `count` pickles in `data`, found by parsing, never loading."""
    spans, stream = [], io.BytesIO(data)
    for _ in range(count):
        start = stream.tell()
        for opcode, _arg, _pos in pickletools.genops(stream):
            pass
        spans.append((start, stream.tell()))
    return spans


def legacy_tar_polyglot(base, carrier, first_type, end_blocks, members_tar_format):
    """A legacy-format file (it starts with \\x80\\x02\\x8a\\x0a and every pickle and storage is
    where the tool looks) that tarfile also opens: the 512-byte header at 0 has its numeric
    fields and checksum inside a string of the sys_info pickle, and the members torch extracts
    (storages = a protocol-0 hostile pickle) sit in that string too."""
    spans = pickle_spans(base)
    sys_info_start, sys_info_end = spans[2]
    sys_info = base[sys_info_start:sys_info_end]
    assert sys_info.startswith(b"\x80\x02}q\x00(") and sys_info.endswith(b"u.")
    members = inner_tar(torch_tar_members(HOSTILE_TEXT_PICKLE), end_blocks)
    if members_tar_format != "v7":
        members = tar_bytes(torch_tar_members(HOSTILE_TEXT_PICKLE), TAR_FORMATS[members_tar_format], end_blocks)
    if carrier == "sys-info-extra-key":
        before, after = sys_info[:6] + text("tar"), sys_info[6:]
    elif carrier == "sys-info-is-a-string":
        before, after = PROTO2, b"."
    elif carrier == "protocol-pickle-with-pop":  # the version pickle pushes a string, pops it
        sys_info_start, sys_info_end = spans[1]
        before, after = PROTO2, b"0" + base[sys_info_start + 2:sys_info_end]
    else:
        raise ValueError(carrier)
    content_start = sys_info_start + len(before) + 5  # BINUNICODE's opcode and length
    assert content_start < 100, "the header's numeric fields must fall in the string"
    header0 = bytearray(512 - content_start)  # the rest of the first tar header, then the members
    fields = {100: "0000755", 108: "0000000", 116: "0000000", 124: "00000000000", 136: "00000000000"}
    for at, value in fields.items():
        header0[at - content_start:at - content_start + len(value)] = value.encode()
    header0[156 - content_start:157 - content_start] = first_type
    content = bytearray(header0) + members
    data = bytearray(base[:sys_info_start] + before + b"X" + struct.pack("<I", len(content)) + content
                     + after + base[sys_info_end:])
    stamp_tar_checksum(data)
    return bytes(data)


def test_tar_generator_every_kind(tmp_path):
    messages = []
    for label, data in tar_variants():
        for name in NAMES:
            messages.append(examine("b-tar", label, data, tmp_path, name, expect=tar_expectation(label)))
    assert_no_holes(messages)


def tar_expectation(label):
    return "benign" if label.startswith("zero-block") else "hostile"


def tar_variants():
    for tar_format in TAR_FORMATS:
        for end_blocks in (True, False):
            yield (f"tar {tar_format} end_blocks={end_blocks}",
                   tar_bytes(torch_tar_members(), TAR_FORMATS[tar_format], end_blocks))
        yield (f"tar {tar_format}, a decoy member first",
               tar_bytes(torch_tar_members(before=[("model.pth", zip_base("rvc-legacy"))]), TAR_FORMATS[tar_format]))
    for base in LEGACY_BASES:
        for carrier in ("sys-info-extra-key", "sys-info-is-a-string", "protocol-pickle-with-pop"):
            for first_type in (b"0", b"5", b"\0"):
                yield (f"legacy-format tar polyglot on {base}, carrier {carrier}, first member type {first_type!r}",
                       legacy_tar_polyglot(legacy_base(base), carrier, first_type, True, "v7"))
    # A 512-byte zero block opens as an empty tar: torch then fails to find 'storages' and never
    # reaches the bytes after it.  Controls: torch must find nothing hostile here.
    for label, rest in (("hostile pickle", HOSTILE_PICKLE), ("legacy format", legacy_base("rvc-legacy")),
                        ("tar", tar_bytes(torch_tar_members()))):
        yield f"zero-block then {label}", bytes(512) + rest


@settings(max_examples=300 * SCALE, **ROUTE_SETTINGS)
@given(base=st.sampled_from(LEGACY_BASES),
       carrier=st.sampled_from(["sys-info-extra-key", "sys-info-is-a-string", "protocol-pickle-with-pop"]),
       first_type=st.sampled_from([b"0", b"5", b"\0", b"1", b"7"]), end_blocks=st.booleans(),
       members_format=st.sampled_from(["v7", "ustar", "gnu", "pax"]), name=st.sampled_from(NAMES))
def test_legacy_format_tar_polyglots(tmp_path, base, carrier, first_type, end_blocks, members_format, name):
    data = legacy_tar_polyglot(legacy_base(base), carrier, first_type, end_blocks, members_format)
    assert data.startswith(b"\x80\x02\x8a\x0a")
    assert_route("b-tar", f"legacy-format tar polyglot on {base}, carrier {carrier}, first type {first_type!r}, "
                 f"members {members_format}", data, tmp_path, name,
                 expect="hostile" if first_type in (b"0", b"5", b"\0") else None)


# -- content read as another format ---------------------------------------------------------------

# Length bytes for a pickle opcode that takes a 1-byte count and swallows that many bytes:
# SHORT_BINSTRING, SHORT_BINBYTES, SHORT_BINUNICODE, LONG1.
SWALLOWING_OPCODES = (0x55, 0x43, 0x8C, 0x8A)
# SHORT_BINSTRING lengths that are also JSON string characters (printable, not '"' or '\').
JUMPS = [n for n in range(32, 127) if n not in (34, 92)]


def jump_chain(distance, step):
    """SHORT_BINSTRING opcodes ('U', a length byte, that many bytes) that move the pickle exactly
    `distance` bytes on, all printable ASCII so that they sit in a JSON string.  The last jump's
    payload is left out: it swallows whatever follows (the string's end, the JSON's end)."""
    out = bytearray()
    while True:
        if distance - 2 in JUMPS:
            return bytes(out + b"U" + bytes([distance - 2]))
        for length in [step] + JUMPS[::-1]:
            rest = distance - 2 - length
            if rest - 2 in JUMPS or rest >= 2 * (2 + JUMPS[0]):  # one more jump, or two or more
                break
        else:
            raise AssertionError(f"no jump chain covers {distance} bytes")
        out += b"U" + bytes([length]) + b"." * length  # '.' is STOP, but it is swallowed
        distance = rest


def safetensors_pickle_polyglot(tensors, swallow_opcode, slack, step, filler="a", tail=HOSTILE_TEXT_PICKLE):
    """A valid safetensors file that pickle, reading from byte 0, takes as: an opcode that swallows
    a count of bytes (its header length is that opcode and count), landing `slack` bytes into a
    __metadata__ string; SHORT_BINSTRING jumps from there to the end of the header; then a
    hostile protocol-0 pickle (or `tail`) that is a uint8 tensor's bytes.  None if no count can do it."""
    valid = safetensors_torch.save(tensors)  # the library's own layout, re-laid out below
    (length,) = struct.unpack_from("<Q", valid)
    header = json.loads(valid[8:8 + length])
    entries = {"hostile": {"dtype": "U8", "shape": [len(tail)], "data_offsets": [0, len(tail)]}}
    data = bytearray(tail)
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        entries[name] = dict(entry, data_offsets=[len(data), len(data) + end - begin])
        data += valid[8 + length + begin:8 + length + end]
    prefix = json.dumps(entries, separators=(",", ":"))[:-1] + ',"__metadata__":{"k":"'
    count = 8 + len(prefix) - 2 + slack  # the least that lands in the string, plus the slack
    if count > 255:
        return None
    header_length = swallow_opcode | count << 8  # the 8 length bytes: opcode, count, then zeros
    resume = 2 + count  # where pickle resumes, after the swallowed bytes
    string_start = 8 + len(prefix)
    chain = jump_chain(8 + header_length - resume, step)  # to the first byte after the header
    json_text = (prefix + filler * (resume - string_start) + chain.decode() + '"}}').encode()
    assert len(json_text) <= header_length
    json_text += b" " * (header_length - len(json_text))
    polyglot = struct.pack("<Q", header_length) + json_text + bytes(data)
    loaded = safetensors_torch.load(polyglot)  # still a valid safetensors file, same tensors
    assert set(loaded) == set(tensors) | {"hostile"}
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)
    return polyglot


def path_configuration_pickle(preamble, module, name, argument, trailer, newline="\n"):
    """Text that site.py would read as a path-configuration file, and pickle as protocol 0."""
    lines = list(preamble) + [f"c{module}", name, f"(S'{argument}'", "tR."] + list(trailer)
    return newline.join(lines).encode() + newline.encode()


# Lines that are both path-configuration entries and whole protocol-0 opcodes (each ends at its
# newline: INT, FLOAT, LONG, STRING, UNICODE, PUT, GET); what they push stays under the call.
PREAMBLE_GROUPS = [("I1",), ("F0.5",), ("L42",), ("S'./foo-1.0-py3.egg'",), ("Vsite-packages/foo-1.0.egg", "p0"),
                   ("Vlib/python3.11/site-packages", "p1", "g1")]
TRAILER_LINES = ["./foo-1.0-py3.egg", "/usr/lib/python3/dist-packages", "# a comment",
                 "import sys; sys.__plen = len(sys.path)", "../shared/lib"]
HOSTILE_GLOBALS = [("os", "system"), ("posix", "system"), ("subprocess", "getoutput"), ("builtins", "exec"),
                   ("__builtin__", "eval"), ("importlib", "import_module")]
LFS_TEXT = LFS_POINTER


def lfs_looking_tar(first_name, first_type):
    """A tar whose first header's name field is an LFS pointer's text: the file starts like a
    pointer, and torch opens it as a pre-1.6 checkpoint and unpickles its 'storages' member."""
    header = v7_header(first_name.encode()[:100], 0, first_type)
    return bytes(header) + inner_tar(torch_tar_members(HOSTILE_TEXT_PICKLE), end_blocks=True)


def other_format_variants():
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2, dtype=torch.int64)}
    for opcode in SWALLOWING_OPCODES:
        yield (f"safetensors polyglot, opcode 0x{opcode:02x}", safetensors_pickle_polyglot(tensors, opcode, 0, 100),
               "hostile")
    for module, name in HOSTILE_GLOBALS:
        yield (f"path configuration pickle {module}.{name}",
               path_configuration_pickle(["Vsite-packages/foo"], module, name, f"touch {MARKER}", TRAILER_LINES),
               "hostile")
    for first_type in (b"0", b"5"):
        yield (f"LFS-looking tar, first type {first_type!r}", lfs_looking_tar(LFS_TEXT[:99], first_type), "hostile")
    yield "LFS pointer then a pickle", LFS_TEXT.encode() + HOSTILE_PICKLE, "benign"
    yield "LFS pointer head then a pickle", LFS_TEXT[:45].encode() + HOSTILE_PICKLE, "benign"


def frame_cut_by_an_argument(length, opcode, pickle=HOSTILE_TEXT_PICKLE):
    """A FRAME of `length` bytes whose last opcode's argument runs past its end. _pickle.c reads
    such a frame from a file with read() and refills from after it, dropping the frame's unread
    bytes: in order the pickle stops, as torch.load reads it a GLOBAL follows (our red team)."""
    cut, after = opcode + b"\x05ab", b"abcyz"  # a 1-byte count, then 2 of its 5 bytes in the frame
    content = b"B" + struct.pack("<I", length - 5 - len(cut)) + bytes(length - 5 - len(cut)) + cut
    return b"\x95" + struct.pack("<Q", len(content)) + content + after + pickle


def test_frames_cut_by_an_argument(tmp_path):
    """At byte 0, and as the tensor bytes a safetensors polyglot's jumps land in (which the tool
    called ok until FRAME made the byte-0 pickle undecided)."""
    messages = []
    for length in (9_000, 140_000):
        for opcode in (b"U", b"\x8c"):  # SHORT_BINSTRING, SHORT_BINUNICODE (bytes read in order)
            data = frame_cut_by_an_argument(length, opcode)
            messages.append(examine("c-other-format", f"FRAME of {length} cut by {opcode!r}", data, tmp_path,
                                    expect="hostile"))
            polyglot = safetensors_pickle_polyglot({}, SWALLOWING_OPCODES[0], 0, 100, tail=data)
            messages.append(examine("c-other-format", f"safetensors, then a FRAME of {length} cut by {opcode!r}",
                                    polyglot, tmp_path, expect="hostile"))
    assert_no_holes(messages)


def test_content_read_as_another_format_every_kind(tmp_path):
    messages = []
    for label, data, expect in other_format_variants():
        for name in NAMES:
            messages.append(examine("c-other-format", label, data, tmp_path, name, expect))
    assert_no_holes(messages)


@settings(max_examples=200 * SCALE, **ROUTE_SETTINGS)
@given(opcode=st.sampled_from(SWALLOWING_OPCODES), slack=st.integers(0, 120), step=st.sampled_from(JUMPS),
       filler=st.sampled_from(["a", " ", "/", "q"]), name=st.sampled_from(NAMES),
       shapes=st.lists(st.integers(1, 5), min_size=0, max_size=2))
def test_safetensors_pickle_polyglots(tmp_path, opcode, slack, step, filler, name, shapes):
    tensors = {f"t{i}": torch.full((n,), float(i)) for i, n in enumerate(shapes)}
    data = safetensors_pickle_polyglot(tensors, opcode, slack, step, filler)
    if data is None:
        return
    assert_route("c-other-format", f"safetensors polyglot, opcode 0x{opcode:02x}, slack {slack}, step {step}",
                 data, tmp_path, name, expect="hostile")


def library_safetensors_with_length(tensors, length):
    """safetensors.torch.save of `tensors` plus a uint8 tensor of "\n" and a hostile pickle, its
    metadata padded so that the header is `length` bytes; None when the library's own padding to
    8 bytes cannot land there."""
    tensors = dict(tensors, zz=torch.frombuffer(bytearray(b"\n" + HOSTILE_TEXT_PICKLE), dtype=torch.uint8))
    unpadded = struct.unpack_from("<Q", safetensors_torch.save(tensors, metadata={"note": ""}))[0]
    for pad in range(max(0, length - unpadded - 16), max(0, length - unpadded + 16)):
        data = safetensors_torch.save(tensors, metadata={"note": "a" * pad})
        if struct.unpack_from("<Q", data)[0] == length:
            return data
    return None


@settings(max_examples=40 * SCALE, **ROUTE_SETTINGS)
@given(opener=st.sampled_from([b"(I", b"(L", b"(F", b"0I", b"(\x88"]), name=st.sampled_from(NAMES),
       shapes=st.lists(st.integers(1, 4), min_size=0, max_size=2))
def test_library_safetensors_whose_length_is_a_text_number(tmp_path, opener, name, shapes):
    """Found by the red team: the 8 length bytes of a file the safetensors library wrote read as
    MARK and a text INT that _pickle.c ends at the first NUL, so the line runs on to a newline in
    the tensor bytes, and what follows it is a pickle torch.load runs."""
    length = int.from_bytes(opener, "little")
    tensors = {f"t{i}": torch.full((n,), float(i)) for i, n in enumerate(shapes)}
    data = library_safetensors_with_length(tensors, length)
    if data is None:
        return
    assert_route("c-other-format", f"library safetensors, length bytes {opener!r}", data, tmp_path, name)


@settings(max_examples=300 * SCALE, **ROUTE_SETTINGS)
@given(preamble=st.lists(st.sampled_from(PREAMBLE_GROUPS), max_size=3), hostile=st.sampled_from(HOSTILE_GLOBALS),
       trailer=st.lists(st.sampled_from(TRAILER_LINES), max_size=4), newline=st.sampled_from(["\n", "\r\n"]),
       name=st.sampled_from(NAMES))
def test_path_configuration_pickles(tmp_path, preamble, hostile, trailer, newline, name):
    if newline == "\r\n":  # a STRING's quotes and a C float must end their line: '\r' would follow
        preamble = [group for group in preamble if not group[0].startswith(("S", "F"))]
    preamble = [line for group in preamble for line in group]
    data = path_configuration_pickle(preamble, *hostile, f"touch {MARKER}", trailer, newline)
    assert_route("c-other-format", f"path configuration pickle {hostile}, preamble {preamble}, {newline!r}",
                 data, tmp_path, name, expect="hostile")


@settings(max_examples=100 * SCALE, **ROUTE_SETTINGS)
@given(extra=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
       first_type=st.sampled_from([b"0", b"5", b"\0"]), name=st.sampled_from(NAMES))
def test_lfs_looking_tars(tmp_path, extra, first_type, name):
    data = lfs_looking_tar(LFS_TEXT[:55] + extra, first_type)
    assert data.startswith(b"version https://git-lfs.github.com/spec/")
    assert_route("c-other-format", f"LFS-looking tar, name +{extra!r}, type {first_type!r}", data, tmp_path, name,
                 expect="hostile")


# -- the legacy format's pickles, replaced -------------------------------------------------------

# sys_info values that torch never writes but ignores: controls, torch runs nothing from them.
ODD_SYS_INFO = {
    "big-endian": PROTO2 + b"}(" + text("protocol_version") + number(1001) + text("little_endian") + b"\x89"
                  + text("type_sizes") + b"}(" + text("short") + number(2) + text("int") + number(4)
                  + text("long") + number(4) + b"uu.",
    "empty": PROTO2 + b"}.",
    "an-int": PROTO2 + number(7) + b".",
    "a-string": PROTO2 + text("sys_info") + b".",
}


def replaced_pickle(original, index, kind):
    """The legacy format's pickle number `index` with a hostile twist of `kind`."""
    body = original[2:]  # after PROTO 2
    if kind == "forbidden-call-popped":  # the call runs, its result is popped, the value is unchanged
        return PROTO2 + call("posix", "system", f"touch {MARKER}") + b"0" + body
    if kind == "bare-global-popped":
        return PROTO2 + global_("collections", "OrderedDict") + b"0" + body
    if kind in ("forbidden-item", "bare-global-item", "hooks-parameter-item"):
        value = {"forbidden-item": call("posix", "system", f"touch {MARKER}"),
                 "bare-global-item": global_("collections", "OrderedDict"),
                 "hooks-parameter-item": global_("torch._utils", "_rebuild_parameter") + b"("
                 + global_("torch", "Tensor") + b")R\x89" + MISUSE_HOOKS + b"tR"}[kind]
        found = first_container_mark(original)
        if found is None:
            return None
        mark, container = found
        item = (text("zz") + value) if container == "EMPTY_DICT" else value
        return original[:mark + 1] + item + original[mark + 1:]
    raise ValueError(kind)


def first_container_mark(pickle_bytes):
    """(offset, opcode name) of the MARK opening the top container's items: a dict or list made
    by EMPTY_DICT / EMPTY_LIST, optionally memoized, then MARK; None for any other shape."""
    ops = [(opcode.name, pos) for opcode, _, pos in pickletools.genops(io.BytesIO(pickle_bytes))]
    names = [name for name, _ in ops]
    if len(ops) < 4 or names[1] not in ("EMPTY_DICT", "EMPTY_LIST"):
        return None
    at = 3 if names[2] in ("BINPUT", "LONG_BINPUT") else 2
    return (ops[at][1], names[1]) if names[at] == "MARK" else None


# kind -> what torch makes of it: an allowed global imported and popped does nothing.
LEGACY_KINDS = {"forbidden-call-popped": "hostile", "bare-global-popped": "benign", "forbidden-item": "hostile",
                "bare-global-item": "hostile", "hooks-parameter-item": "hostile"}


def replaced_legacy_file(base, index, kind):
    spans = pickle_spans(base)
    start, end = spans[index]
    replacement = replaced_pickle(base[start:end], index, kind)
    if replacement is None:
        return None
    return base[:start] + replacement + base[end:]


def test_legacy_format_pickles_replaced_every_kind(tmp_path):
    messages = []
    for base_kind in LEGACY_BASES:
        base = legacy_base(base_kind)
        for index, pickle_name in enumerate(("magic", "version", "sys_info", "main", "storage keys")):
            for kind in LEGACY_KINDS:
                data = replaced_legacy_file(base, index, kind)
                if data is not None:
                    messages.append(examine("d-legacy-pickles", f"{pickle_name} pickle {kind} on {base_kind}",
                                            data, tmp_path, expect=LEGACY_KINDS[kind]))
        start, end = pickle_spans(base)[2]
        for label, sys_info in ODD_SYS_INFO.items():
            messages.append(examine("d-legacy-pickles", f"sys_info {label} on {base_kind}",
                                    base[:start] + sys_info + base[end:], tmp_path, expect="benign"))
    assert_no_holes(messages)


@settings(max_examples=500 * SCALE, **ROUTE_SETTINGS)
@given(base=st.sampled_from(LEGACY_BASES), index=st.integers(0, 4), kind=st.sampled_from(sorted(LEGACY_KINDS)),
       odd_sys_info=st.sampled_from([None] + sorted(ODD_SYS_INFO)), name=st.sampled_from(NAMES))
def test_legacy_format_pickles_replaced(tmp_path, base, index, kind, odd_sys_info, name):
    data = legacy_base(base)
    if odd_sys_info and index != 2:
        start, end = pickle_spans(data)[2]
        data = data[:start] + ODD_SYS_INFO[odd_sys_info] + data[end:]
    data = replaced_legacy_file(data, index, kind)
    if data is None:
        return
    assert_route("d-legacy-pickles", f"pickle {index} {kind} on {base}, sys_info {odd_sys_info}", data,
                 tmp_path, name, expect=LEGACY_KINDS[kind])


# -- allowed globals outside their role ------------------------------------------------------------

ZIP_PID = (b"(" + text("storage") + global_("torch", "FloatStorage") + text("0") + text("cpu") + number(3) + b"tQ")
LEGACY_PID = (b"(" + text("storage") + global_("torch", "FloatStorage") + text("0") + text("cpu") + number(3)
              + b"Nt" + b"Q")
UNTYPED_ZIP_PID = (b"(" + text("storage") + global_("torch.storage", "UntypedStorage") + text("0") + text("cpu")
                   + number(12) + b"tQ")
EMPTY_ORDERED_DICT = global_("collections", "OrderedDict") + b")R"
MISUSE_HOOKS = EMPTY_ORDERED_DICT + b"(" + number(0) + global_("collections", "OrderedDict") + b"u"
ATTRIBUTES = b"}(" + text("note") + number(1) + b"u"  # tensor.note = 1: what torch.save writes for it


def state(key, value):
    return b"}" + text(key) + value + b"s"


def tensor_args(pid, hooks=EMPTY_ORDERED_DICT, extra=b""):
    """_rebuild_tensor_v2's arguments for a 3-element float tensor in storage '0' (no closing 't')."""
    return b"(" + pid + number(0) + number(3) + b"\x85" + number(1) + b"\x85" + b"\x89" + hooks + extra


def tensor(pid, hooks=EMPTY_ORDERED_DICT, extra=b""):
    return global_("torch._utils", "_rebuild_tensor_v2") + tensor_args(pid, hooks, extra) + b"tR"


def parameter(pid, hooks=EMPTY_ORDERED_DICT, state=None):
    if state is None:
        return global_("torch._utils", "_rebuild_parameter") + b"(" + tensor(pid) + b"\x89" + hooks + b"tR"
    return (global_("torch._utils", "_rebuild_parameter_with_state") + b"(" + tensor(pid) + b"\x89" + hooks
            + state + b"tR")


def from_type(pid, new_type=("torch", "Tensor"), state=ATTRIBUTES):
    return (global_("torch._tensor", "_rebuild_from_type_v2") + b"(" + global_("torch._utils", "_rebuild_tensor_v2")
            + global_(*new_type) + tensor_args(pid) + b"t" + state + b"tR")


def tensor_v3(pid, metadata):
    return (global_("torch._utils", "_rebuild_tensor_v3") + b"(" + pid + number(0) + number(3) + b"\x85"
            + number(1) + b"\x85" + b"\x89" + EMPTY_ORDERED_DICT + global_("torch", "float32") + metadata + b"tR")


# misuse -> (value builder taking the persistent id, whether torch.save ever writes it)
MISUSES = {
    "bare-rebuild-function": (lambda pid: global_("torch._utils", "_rebuild_tensor_v2"), "hostile"),
    "bare-ordered-dict-class": (lambda pid: global_("collections", "OrderedDict"), "hostile"),
    "bare-tensor-class": (lambda pid: global_("torch", "Tensor"), "hostile"),
    "bare-parameter-class": (lambda pid: global_("torch.nn.parameter", "Parameter"), "hostile"),
    "bare-codecs-encode": (lambda pid: global_("_codecs", "encode"), "hostile"),
    "bare-storage-type": (lambda pid: global_("torch", "FloatStorage"), "hostile"),
    "bare-untyped-storage-class": (lambda pid: global_("torch.storage", "UntypedStorage"), "hostile"),
    "bare-global-in-a-list": (lambda pid: b"]" + global_("torch._utils", "_rebuild_parameter") + b"a", "hostile"),
    "parameter-hooks": (lambda pid: parameter(pid, hooks=MISUSE_HOOKS), "hostile"),
    "parameter-with-state-hooks": (lambda pid: parameter(pid, hooks=MISUSE_HOOKS, state=b"}"), "hostile"),
    "parameter-state-sets-hooks": (lambda pid: parameter(pid, state=state("_backward_hooks", MISUSE_HOOKS)),
                                   "hostile"),
    "parameter-state-sets-requires-grad": (lambda pid: parameter(pid, state=state("requires_grad", b"\x88")),
                                           "hostile"),
    "from-type-state-sets-hooks": (lambda pid: from_type(pid, state=state("_backward_hooks", MISUSE_HOOKS)),
                                   "hostile"),
    "from-type-state-sets-dunder": (lambda pid: from_type(pid, state=state("__class__", global_("torch", "Tensor"))),
                                    "hostile"),
    "from-type-state-replaces-data": (lambda pid: from_type(pid, state=state("data", tensor(pid))), "hostile"),
    "from-type-state-shadows-a-method": (lambda pid: from_type(pid, state=state("size", number(1))), "hostile"),
    "from-type-state-holds-a-global": (lambda pid: from_type(pid, state=state("note", EMPTY_ORDERED_DICT[:-2])),
                                       "hostile"),
    "from-type-state-in-slots": (lambda pid: from_type(pid, state=b"}" + state("_backward_hooks", MISUSE_HOOKS)
                                                       + b"\x86"), "hostile"),
    "from-type-other-type": (lambda pid: from_type(pid, ("collections", "OrderedDict"), b"}"), "hostile"),
    "tensor-hooks": (lambda pid: tensor(pid, hooks=MISUSE_HOOKS), "hostile"),
    "tensor-metadata": (lambda pid: tensor(pid, extra=state("conj", number(1))), "hostile"),
    "tensor-v3-metadata": (lambda pid: tensor_v3(UNTYPED_ZIP_PID, state("neg", text("yes"))), "hostile"),
    "build-on-a-tensor": (lambda pid: tensor(pid) + b"(" + tensor(pid) + number(1) + b"\x89" + EMPTY_ORDERED_DICT
                          + b"tb", "hostile"),
    "build-on-a-class": (lambda pid: global_("torch", "Tensor") + b"N}" + text("__eq__") + number(1) + b"s\x86b",
                         "hostile"),
    # Controls: what torch.save itself writes.
    "plain-tensor": (lambda pid: tensor(pid), "benign"),
    "parameter": (lambda pid: parameter(pid), "benign"),
    "parameter-with-empty-state": (lambda pid: parameter(pid, state=b"}"), "benign"),
    "from-type-empty-state": (lambda pid: from_type(pid, state=b"}"), "benign"),
    "parameter-with-attributes": (lambda pid: parameter(pid, state=ATTRIBUTES), "benign"),
    "from-type-with-attributes": (lambda pid: from_type(pid), "benign"),
    "from-type-parameter-with-attributes": (lambda pid: from_type(pid, ("torch.nn.parameter", "Parameter")),
                                            "benign"),
    "tensor-metadata-conj-flag": (lambda pid: tensor(pid, extra=state("conj", b"\x88")), "benign"),
    "dtype-value": (lambda pid: global_("torch", "float16"), "benign"),
}


@pytest.mark.parametrize("misuse", [name for name, (_, expect) in MISUSES.items() if expect == "hostile"])
def test_oracle_records_an_allowed_global_outside_its_role(tmp_path, misuse):
    route = torch_route(write(tmp_path, misuse_file(misuse, "zip")))
    assert route.misused and not route.forbidden, route


def top_dict(value, nest=0):
    """{'w': value} (nested `nest` times under 'weight'), as a whole protocol-2 pickle."""
    inner = b"}" + text("w") + value + b"s"
    for _ in range(nest):
        inner = b"}" + text("weight") + inner + b"s" + text("config") + b"]" + number(1) + b"a" + b"s"
    return PROTO2 + inner + b"."


def misuse_file(misuse, container, nest=0):
    if container == "zip":
        value = MISUSES[misuse][0](ZIP_PID)
        return hand_made_zip(top_dict(value, nest))
    value = MISUSES[misuse][0](LEGACY_PID)
    if misuse == "tensor-v3-metadata":
        return None  # an untyped storage's legacy persistent id is another test's business
    return hand_made_legacy(top_dict(value, nest))


def hand_made_zip(pickle_bytes):
    """A zip checkpoint around `pickle_bytes` with one 12-byte storage record (zipfile-written)."""
    return rezip([("archive/data.pkl", pickle_bytes), ("archive/byteorder", b"little"),
                  ("archive/data/0", bytes(12)), ("archive/version", b"3\n")])


def hand_made_legacy(main_pickle):
    """A legacy-format file around `main_pickle`, with torch's magic, version and sys_info pickles
    and one 12-byte storage '0'."""
    base = legacy_base("tiny-legacy")
    spans = pickle_spans(base)
    head = base[:spans[2][1]]
    keys = PROTO2 + b"]" + text("0") + b"a."
    return head + main_pickle + keys + struct.pack("<q", 3) + bytes(12)


def test_allowed_globals_outside_their_role_every_kind(tmp_path):
    messages = []
    for misuse, (_, expect) in MISUSES.items():
        for container in ("zip", "legacy"):
            for nest in (0, 1):
                data = misuse_file(misuse, container, nest)
                if data is not None:
                    messages.append(examine("e-allowed-out-of-role", f"{misuse} in {container}, nest {nest}",
                                            data, tmp_path, expect=expect))
    assert_no_holes(messages)


@settings(max_examples=400 * SCALE, **ROUTE_SETTINGS)
@given(misuse=st.sampled_from(sorted(MISUSES)), container=st.sampled_from(["zip", "legacy"]),
       nest=st.integers(0, 2), name=st.sampled_from(NAMES))
def test_allowed_globals_outside_their_role(tmp_path, misuse, container, nest, name):
    data = misuse_file(misuse, container, nest)
    if data is None:
        return
    assert_route("e-allowed-out-of-role", f"{misuse} in {container}, nest {nest}", data, tmp_path, name,
                 expect=MISUSES[misuse][1])


# -- mutations of benign torch.save files -----------------------------------------------------------


@settings(max_examples=2500 * SCALE, **ROUTE_SETTINGS)
@given(mutants())
def test_mutated_torch_save_files(tmp_path, mutant):
    seed_name, data = mutant
    assert_route("f-mutations", f"mutant of {seed_name}", data, tmp_path)


# -- TorchScript --------------------------------------------------------------------------------------


@cache
def torchscript_archive():
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buffer)
    return buffer.getvalue()


def zip_records_of(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def torchscript_variants():
    records = zip_records_of(torchscript_archive())
    yield "torch.jit.save archive", torchscript_archive()
    yield "rezipped TorchScript archive", rezip(records)
    yield "TorchScript without code/ records", rezip([(n, d) for n, d in records if "/code/" not in n])
    yield "TorchScript without constants.pkl (data.pkl imports __torch__)", rezip(
        [(n, d) for n, d in records if not n.endswith("/constants.pkl")])
    state_dict = zip_records_of(zip_base("rvc-legacy"))
    yield "torch.save state dict plus constants.pkl", rezip(state_dict + [("archive/constants.pkl", PROTO2 + b").")])


def test_torchscript_archives(tmp_path):
    messages = []
    for label, data in torchscript_variants():
        for name in NAMES:
            messages.append(examine("g-torchscript", label, data, tmp_path, name, expect="hostile"))
    assert_no_holes(messages)


def test_torchscript_archive_is_refused_not_skipped(tmp_path, capsys):
    path = write(tmp_path, torchscript_archive(), "scripted.pth")
    before = open(path, "rb").read()
    report = scan(path)
    assert report.status == "refused", report
    assert fix(path).status == "refused"
    assert inspect(path).exit_code == 2
    for command in ("check", "fix", "inspect"):
        assert main([command, path]) == 2, command
    capsys.readouterr()
    assert open(path, "rb").read() == before


# -- support/hostile_corpus.py ----------------------------------------------------------


def bad_input_corpus(tmp_path):
    """(label, bytes) for every file of the hostile corpus (support/hostile_corpus.py), made by its builders."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for case, (build, _status, _reason) in hostile_corpus.PAYLOADS.items():
        yield f"PAYLOADS {case}", hand_made_checkpoint(folder / "p.pth", build(MARKER)).read_bytes()
    for case, (change, _reason) in hostile_corpus.ZIP_DAMAGE.items():
        yield f"ZIP_DAMAGE {case}", change(PARAMETRIZED.read_bytes())
    for case, (change, compression, _reason) in hostile_corpus.REZIPPED.items():
        yield (f"REZIPPED {case}",
               write_zip(folder / "r.pth", change(hostile_corpus.fixture_records()), compression).read_bytes())
    for case, build in hostile_corpus.BAD_FILES.items():
        path = build(folder)
        if os.path.exists(path):
            yield f"BAD_FILES {case}", open(path, "rb").read()
    yield "glued pickle", HOSTILE_PICKLE + PARAMETRIZED.read_bytes()
    yield "LFS pointer", LFS_POINTER.encode()
    yield "path configuration", b"./foo-1.0-py3.egg\n# a comment\nimport sys; sys.__plen = len(sys.path)\n"


def test_bad_input_corpus(tmp_path):
    messages = [examine("bad-input-corpus", label, data, tmp_path) for label, data in bad_input_corpus(tmp_path)]
    assert_no_holes(messages)
