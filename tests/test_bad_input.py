"""Every kind of bad input: a clear one-line verdict, exit 2 (or 0 when skipped), bytes untouched.

Nothing here imports torch, and no pickle is ever loaded in the test process: the one
`pickle.loads` that proves a payload is live runs in a subprocess.
"""

import io
import json
import os
import random
import struct
import subprocess
import sys
import zipfile

import pytest
from helpers import LEGACY_FORMAT, PARAMETRIZED, copy_of, lines_about, run
from pth_legacy_keys import scan
from support import LFS_POINTER, PROTO2, global_, number, text, write_zip, zip_records

PREFIX = "parametrized/"


# -- helpers ------------------------------------------------------------------------


def assert_rejected(capsys, path, status, reason, *options):
    """`check`, `fix` and `inspect` all exit 2 with one line `PATH: <status>: ...<reason>...`; bytes unchanged."""
    before = path.read_bytes() if path.exists() else None
    for command in ("check", "fix", "inspect"):
        code, out = run(capsys, command, path, *options)
        assert code == 2, out
        [line] = lines_about(out, path)
        assert line.startswith(f"{path}: {status}: "), line
        assert reason in line, line
        if before is None:
            assert not path.exists()
        else:
            assert path.read_bytes() == before

def fixture_records(source=PARAMETRIZED):
    return zip_records(source)


def central_entry(data, name):
    """Offset of `name`'s central-directory header in the zip `data`."""
    encoded = name.encode()
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        (name_len,) = struct.unpack_from("<H", data, at + 28)
        if data[at + 46:at + 46 + name_len] == encoded:
            return at
        at = data.find(b"PK\x01\x02", at + 1)
    raise AssertionError(f"no central-directory entry for {name}")


def patched_central_entry(data, name, field_offset, fmt, change):
    data = bytearray(data)
    at = central_entry(data, name) + field_offset
    (value,) = struct.unpack_from(fmt, data, at)
    struct.pack_into(fmt, data, at, change(value))
    return bytes(data)


# Pickle opcodes (PROTO2, text, number, global_) come from support.pickle_ops.


def call(module, name, *args):
    """GLOBAL module.name, a tuple of string arguments, REDUCE."""
    return global_(module, name) + b"(" + b"".join(text(a) for a in args) + b"tR"


def system_payload(marker):
    return PROTO2 + call("posix", "system", f"touch {marker}") + b"."


def tensor_dict(storage_type=("torch", "FloatStorage"), key="0", numel=3):
    """{'w': a float tensor of 3 elements in storage `key`}, as torch.save pickles it."""
    storage = (b"(" + text("storage") + global_(*storage_type) + text(key) + text("cpu")
               + number(numel) + b"tQ")
    args = (storage + number(0) + number(3) + b"\x85" + number(1) + b"\x85" + b"\x89"
            + global_("collections", "OrderedDict") + b")R")
    return (PROTO2 + b"}" + text("w") + global_("torch._utils", "_rebuild_tensor_v2")
            + b"(" + args + b"tR" + b"s.")


def hand_made_checkpoint(path, pickle_bytes):
    """A zip checkpoint around `pickle_bytes`, with one 12-byte storage record data/0."""
    return write_zip(path, [
        ("archive/data.pkl", pickle_bytes),
        ("archive/byteorder", b"little"),
        ("archive/data/0", bytes(12)),
        ("archive/version", b"3\n"),
    ])


# -- files that cannot be read --------------------------------------------------------


def test_empty_file_is_an_error(tmp_path, capsys):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    assert_rejected(capsys, path, "error", "empty file")


@pytest.mark.parametrize("keep", [10, PARAMETRIZED.stat().st_size // 2, PARAMETRIZED.stat().st_size - 1],
                         ids=["10-bytes", "half", "all-but-one-byte"])
def test_truncated_zip_is_an_error(tmp_path, capsys, keep):
    path = tmp_path / "cut.pth"
    path.write_bytes(PARAMETRIZED.read_bytes()[:keep])
    assert_rejected(capsys, path, "error", "truncated")


@pytest.mark.parametrize("keep", [LEGACY_FORMAT.stat().st_size // 2, LEGACY_FORMAT.stat().st_size - 1],
                         ids=["half", "all-but-one-byte"])
def test_truncated_legacy_format_is_an_error(tmp_path, capsys, keep):
    path = tmp_path / "cut.pth"
    path.write_bytes(LEGACY_FORMAT.read_bytes()[:keep])
    assert_rejected(capsys, path, "error", "truncated")


def test_random_bytes_are_not_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "noise.pth"
    path.write_bytes(random.Random(0).randbytes(4096))
    assert_rejected(capsys, path, "error", "not a PyTorch checkpoint")


def test_missing_path_is_an_error(tmp_path, capsys):
    assert_rejected(capsys, tmp_path / "missing.pth", "error", "no such file")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_is_an_error(tmp_path, capsys):
    path = copy_of(tmp_path)
    before = path.read_bytes()
    path.chmod(0)
    try:
        for command in ("check", "fix"):
            code, out = run(capsys, command, path)
            assert code == 2
            assert lines_about(out, path) == [f"{path}: error: permission denied"]
    finally:
        path.chmod(0o644)
    assert path.read_bytes() == before


def test_folder_named_like_a_checkpoint_is_walked(tmp_path, capsys):
    folder = tmp_path / "models.pth"
    folder.mkdir()
    inner = copy_of(folder, name="model.pth")
    code, out = run(capsys, "check", f"{folder}{os.sep}")
    assert code == 1
    [line] = [line for line in out.splitlines() if line.startswith(str(folder))]
    assert line.startswith(f"{folder}{os.sep}model.pth: 4 parametrized weight-norm keys")
    assert inner.read_bytes() == PARAMETRIZED.read_bytes()
    # The Python API takes one file: a folder there is an error, not a walk.
    report = scan(folder)
    assert (report.status, report.reason) == ("error", "is a folder, not a file")


# -- known non-checkpoints ------------------------------------------------------------


def test_lfs_pointer_is_not_checked(tmp_path, capsys):
    path = tmp_path / "model.pth"
    path.write_text(LFS_POINTER)
    assert_rejected(capsys, path, "not checked", "Git LFS pointer; fetch the real file (git lfs pull)")


def test_lfs_pointer_is_a_warning_when_told_to_skip(tmp_path, capsys):
    path = tmp_path / "model.pth"
    path.write_text(LFS_POINTER)
    for command in ("check", "fix"):
        code, out = run(capsys, command, "--lfs-pointers", "skip", path)
        assert code == 0
        assert lines_about(out, path) == [
            f"{path}: warning: not checked: Git LFS pointer; fetch the real file (git lfs pull)"]
    assert path.read_text() == LFS_POINTER


def test_path_configuration_file_is_skipped(tmp_path, capsys):
    path = tmp_path / "easy-install.pth"
    path.write_text("./foo-1.0-py3.egg\n# a comment\nimport sys; sys.__plen = len(sys.path)\n")
    before = path.read_bytes()
    for command in ("check", "fix"):
        code, out = run(capsys, command, path)
        assert code == 0
        assert lines_about(out, path) == []  # quiet unless asked
        code, out = run(capsys, command, "-v", path)
        assert code == 0
        [line] = lines_about(out, path)
        assert line.startswith(f"{path}: skipped: a Python path-configuration file")
    assert path.read_bytes() == before


def test_torchscript_archive_is_refused_as_code_carrying(tmp_path, capsys):
    # torch.load hands it to torch.jit.load, which runs its code without any pickle allowlist.
    data_pkl = dict(fixture_records())[PREFIX + "data.pkl"]
    path = write_zip(tmp_path / "scripted.pth", [
        ("archive/data.pkl", data_pkl),
        ("archive/constants.pkl", PROTO2 + b")."),
        ("archive/code/__torch__.py", b"class Model(Module):\n  pass\n"),
        ("archive/version", b"3\n"),
    ])
    assert_rejected(capsys, path, "refused", "a code-carrying archive (TorchScript)")


def test_zip_without_data_pkl_is_not_a_checkpoint(tmp_path, capsys):
    path = write_zip(tmp_path / "docs.pth", [("a/readme.txt", b"hello\n")])
    assert_rejected(capsys, path, "error", "not a PyTorch checkpoint")


# -- zip-level refusals of a real torch.save file --------------------------------------


def flip_key_byte(data):
    at = data.index(b"parametrizations.weight.original0")
    return data[:at] + b"P" + data[at + 1:]


def header_offset(data, name):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.getinfo(name).header_offset


def overlapping_records(data):
    """data/1's directory entry points into data/0's local header: two records share bytes."""
    inside_data_0 = header_offset(data, PREFIX + "data/0") + 40
    return patched_central_entry(data, PREFIX + "data/1", 42, "<I", lambda _: inside_data_0)


def swapped_records(data):
    """data/0 and data/1 trade places in the directory only: it no longer matches the file's order."""
    first, second = header_offset(data, PREFIX + "data/0"), header_offset(data, PREFIX + "data/1")
    data = patched_central_entry(data, PREFIX + "data/0", 42, "<I", lambda _: second)
    return patched_central_entry(data, PREFIX + "data/1", 42, "<I", lambda _: first)


def renamed_local_header(data):
    """The pickle's local header names another record than the central directory does."""
    at = 30 + len(PREFIX)
    assert data[at:at + 8] == b"data.pkl"
    return data[:at] + b"D" + data[at + 1:]


def second_central_directory(data):
    """A decoy central directory before the real one: the end records point past it."""
    end = data.rindex(b"PK\x05\x06")
    (cd_size, cd_offset) = struct.unpack_from("<II", data, end + 12)
    zip64_end = data.rindex(b"PK\x06\x06")
    cd_offset = struct.unpack_from("<Q", data, zip64_end + 48)[0]
    directory = data[cd_offset:zip64_end]
    shifted = bytearray(data[:cd_offset] + directory + data[cd_offset:])
    moved = len(directory)
    zip64_end += moved
    struct.pack_into("<Q", shifted, zip64_end + 48, cd_offset + moved)  # the real directory, moved
    locator = bytes(shifted).rindex(b"PK\x06\x07")
    struct.pack_into("<Q", shifted, locator + 8, zip64_end)
    end = bytes(shifted).rindex(b"PK\x05\x06")
    struct.pack_into("<I", shifted, end + 16, cd_offset + moved)
    return bytes(shifted)


ZIP_DAMAGE = {
    "overlapping-records": (overlapping_records, "overlaps what follows it"),
    "records-out-of-directory-order": (swapped_records, "not in the order of its central directory"),
    "local-header-name-differs": (renamed_local_header, "local header of 'parametrized/data.pkl' disagrees"),
    "bad-crc-in-central-directory": (
        lambda data: patched_central_entry(data, PREFIX + "data.pkl", 16, "<I", lambda crc: crc ^ 1),
        "CRC does not match"),
    "pickle-byte-changed": (flip_key_byte, "CRC does not match"),
    "encryption-flag": (
        lambda data: patched_central_entry(data, PREFIX + "data.pkl", 8, "<H", lambda flags: flags | 1),
        "flag bits 0x0001"),
    "pickle-glued-in-front": (lambda data: b"\x80\x02K\x01." + data, "bare pickle"),
    "patched-data-flag": (
        lambda data: patched_central_entry(data, PREFIX + "data.pkl", 8, "<H", lambda flags: flags | 0x20),
        "flag bits 0x0020"),
    "strong-encryption-flag": (
        lambda data: patched_central_entry(data, PREFIX + "data.pkl", 8, "<H", lambda flags: flags | 0x40),
        "flag bits 0x0040"),
    "second-central-directory": (second_central_directory, "unexplained bytes follow record"),
}


@pytest.mark.parametrize("damage", sorted(ZIP_DAMAGE))
def test_damaged_zip_is_refused(tmp_path, capsys, damage):
    change, reason = ZIP_DAMAGE[damage]
    path = tmp_path / "model.pth"
    path.write_bytes(change(PARAMETRIZED.read_bytes()))
    assert_rejected(capsys, path, "refused", reason)


def with_record(name, data, after=PREFIX + "data/5"):
    def change(records):
        at = [n for n, _ in records].index(after) + 1
        return records[:at] + [(name, data)] + records[at:]
    return change


REZIPPED = {
    "compressed": (lambda records: records, zipfile.ZIP_DEFLATED, "is compressed"),
    "duplicate-name": (with_record(PREFIX + "data/0", bytes(12)), zipfile.ZIP_STORED,
                       f"two records named '{PREFIX}data/0'"),
    "outside-prefix": (with_record("other/x", b"x"), zipfile.ZIP_STORED, "outside the archive prefix"),
    "no-version": (lambda records: [r for r in records if r[0] != PREFIX + "version"], zipfile.ZIP_STORED,
                   "no version record"),
    "junk-after-stop": (
        lambda records: [(n, d + b"junk" if n == PREFIX + "data.pkl" else d) for n, d in records],
        zipfile.ZIP_STORED, "4 bytes follow the pickle's STOP"),
    "second-pickle-after-stop": (
        lambda records: [(n, d + system_payload("/nonexistent/MARKER") if n == PREFIX + "data.pkl" else d)
                         for n, d in records],
        zipfile.ZIP_STORED, "bytes follow the pickle's STOP"),
    "extra-pickle-record": (with_record(PREFIX + "extra.pkl", system_payload("/nonexistent/MARKER")),
                            zipfile.ZIP_STORED, f"unexpected record '{PREFIX}extra.pkl'"),
}


@pytest.mark.parametrize("case", sorted(REZIPPED))
def test_rezipped_archive_is_refused(tmp_path, capsys, case):
    change, compression, reason = REZIPPED[case]
    path = write_zip(tmp_path / "model.pth", change(fixture_records()), compression)
    assert_rejected(capsys, path, "refused", reason)


def test_plain_rezip_with_same_names_and_order_is_accepted(tmp_path, capsys):
    path = write_zip(tmp_path / "model.pth", fixture_records())
    code, out = run(capsys, "check", path)
    assert code == 1
    assert lines_about(out, path) == [
        f"{path}: 4 parametrized weight-norm keys in 2 modules (e.g. 0.parametrizations.weight.original0)"]
    code, out = run(capsys, "fix", path)
    assert code == 0
    assert lines_about(out, path) == [f"{path}: fixed: renamed 4 keys to legacy names"]
    code, out = run(capsys, "check", path)
    assert code == 0
    records = dict(fixture_records(path))
    assert b"0.weight_g" in records[PREFIX + "data.pkl"]
    assert records[PREFIX + "data/5"] == dict(fixture_records())[PREFIX + "data/5"]


# -- pickle-level refusals ---------------------------------------------------------------


def test_hand_made_checkpoint_with_a_plain_tensor_is_accepted(tmp_path, capsys):
    # The control for the payloads below: the container itself is not what gets refused.
    path = hand_made_checkpoint(tmp_path / "plain.pth", tensor_dict())
    code, out = run(capsys, "check", "-v", path)
    assert code == 0
    assert lines_about(out, path) == [f"{path}: ok (legacy names)"]


def test_system_payload_is_live(tmp_path):
    marker = tmp_path / "MARKER"
    archive = hand_made_checkpoint(tmp_path / "evil.pth", system_payload(marker))
    (tmp_path / "payload.pkl").write_bytes(dict(fixture_records(archive))["archive/data.pkl"])
    subprocess.run([sys.executable, "-c", "import pickle; pickle.loads(open('payload.pkl', 'rb').read())"],
                   cwd=tmp_path, check=True, timeout=60)
    assert marker.exists()


def frame(body):
    return b"\x95" + struct.pack("<Q", len(body)) + body


def stack_global_system(marker):
    return (b"\x8c\x05posix\x94\x8c\x06system\x94\x93\x94"
            + b"\x8c" + bytes([len(f"touch {marker}")]) + f"touch {marker}".encode() + b"\x94\x85\x94R\x94.")


PAYLOADS = {
    "posix-system": (system_payload, "refused", "'posix.system'"),
    "os-system": (lambda m: PROTO2 + call("os", "system", f"touch {m}") + b".", "refused", "'os.system'"),
    "builtins-eval": (lambda m: PROTO2 + call("builtins", "eval", f"__import__('os').system('touch {m}')")
                      + b".", "refused", "'builtins.eval'"),
    "builtins-exec": (lambda m: PROTO2 + call("builtins", "exec", f"import os; os.system('touch {m}')")
                      + b".", "refused", "'builtins.exec'"),
    "builtin-getattr": (lambda m: PROTO2 + global_("__builtin__", "getattr") + b"(" + global_("posix", "system")
                        + text("__call__") + b"tR(" + text(f"touch {m}") + b"tR.", "refused",
                        "'__builtin__.getattr'"),
    "operator-getitem": (lambda m: PROTO2 + call("_operator", "getitem", "a", "b") + b".", "refused",
                         "'_operator.getitem'"),
    "commands-getoutput": (lambda m: PROTO2 + call("commands", "getoutput", f"touch {m}") + b".", "refused",
                           "'commands.getoutput'"),
    "allowed-name-with-suffix": (
        lambda m: PROTO2 + global_("torch._utils", "_rebuild_tensor_v2.__globals__") + b".", "refused",
        "'torch._utils._rebuild_tensor_v2.__globals__'"),
    "inst": (lambda m: PROTO2 + b"(" + text(f"touch {m}") + b"iposix\nsystem\n.", "refused", "opcode INST"),
    "obj": (lambda m: PROTO2 + b"(" + global_("collections", "OrderedDict") + b"o.", "refused", "opcode OBJ"),
    "ext1": (lambda m: PROTO2 + b"\x82\x01" + b"(" + text(f"touch {m}") + b"tR.", "refused", "opcode EXT1"),
    "stack-global-in-protocol-2": (
        lambda m: PROTO2 + text("posix") + text("system") + b"\x93(" + text(f"touch {m}") + b"tR.",
        "refused", "opcode STACK_GLOBAL"),
    "protocol-4": (lambda m: b"\x80\x04" + frame(stack_global_system(m)), "refused", "protocol 4"),
    "protocol-5": (lambda m: b"\x80\x05" + frame(stack_global_system(m)), "refused", "protocol 5"),
    "build-sets-object-state": (
        lambda m: PROTO2 + global_("collections", "OrderedDict") + b")R}" + text("__setstate__")
        + text("x") + b"sb.", "refused", "BUILD"),
    "storage-type-posix-system": (lambda m: tensor_dict(storage_type=("posix", "system")), "refused",
                                  "'posix.system'"),
    "storage-type-not-a-storage": (lambda m: tensor_dict(storage_type=("collections", "OrderedDict")),
                                   "refused", "storage type"),
    "storage-key-path": (lambda m: tensor_dict(key="../../etc/passwd"), "refused",
                         "storage key that is not a number"),
    "storage-larger-than-record": (lambda m: tensor_dict(numel=1000), "refused",
                                   "claims more bytes than its record holds"),
    "100k-nested-lists": (lambda m: PROTO2 + b"]" * 100_000 + b"a" * 99_999 + b".", "refused", "deeper than"),
    "million-marks": (lambda m: PROTO2 + b"(" * 1_000_000, "refused", "MARKs"),
    "huge-string-length": (lambda m: PROTO2 + b"X\xff\xff\xff\xff" + b"touch.", "error", "truncated"),
    "truncated-after-reduce": (lambda m: PROTO2 + global_("collections", "OrderedDict") + b")R", "error",
                               "truncated"),
    "system-truncated-after-reduce": (lambda m: system_payload(m)[:-1], "refused", "'posix.system'"),
    "builtins-getattr-import": (
        lambda m: PROTO2 + global_("builtins", "getattr") + b"(" + call("builtins", "__import__", "os")
        + text("system") + b"tR(" + text(f"touch {m}") + b"tR.", "refused", "'builtins.getattr'"),
    "stack-global-from-memo": (
        lambda m: PROTO2 + text("posix") + b"q\x00" + text("system") + b"q\x01"
        + b"h\x00h\x01\x93(" + text(f"touch {m}") + b"tR.", "refused", "opcode STACK_GLOBAL"),
    "stack-global-through-memo-hops": (
        lambda m: PROTO2 + text("posix") + b"q\x00h\x00q\x01h\x01q\x02" + text("system") + b"q\x03"
        + b"h\x02h\x03\x93(" + text(f"touch {m}") + b"tR.", "refused", "opcode STACK_GLOBAL"),
    "stack-global-after-decoys": (
        lambda m: PROTO2 + text("torch._utils") + text("_rebuild_tensor_v2") + b"00" + text("posix")
        + text("system") + b"\x93(" + text(f"touch {m}") + b"tR.", "refused", "opcode POP"),
    "bare-global-with-import-side-effects": (lambda m: PROTO2 + global_("this", "s") + b".", "refused",
                                             "'this.s'"),
    "text-persistent-id": (lambda m: PROTO2 + b"P" + f"touch {m}".encode() + b"\n.", "refused",
                           "opcode PERSID"),
    "long4-length-2-to-the-32": (lambda m: PROTO2 + b"\x8b\xff\xff\xff\xff" + b".", "refused",
                                 "integer of 4,294,967,295 bytes"),
    "binunicode8-length-2-to-the-62": (
        lambda m: PROTO2 + b"\x8d" + (2 ** 62).to_bytes(8, "little") + b"x.", "refused", "opcode BINUNICODE8"),
    "numpy-scalar-with-a-hint": (
        lambda m: PROTO2 + call("numpy.core.multiarray", "scalar") + b".", "refused",
        "'numpy.core.multiarray.scalar', which a plain checkpoint never does (save plain numbers instead"),
    "reduce-reaching-below-a-mark": (
        lambda m: PROTO2 + global_("collections", "OrderedDict") + b"()R" + b".", "error",
        "takes more items from its stack than it put there"),
    "stack-of-100001-items": (lambda m: PROTO2 + b"K\x01" * 100_001 + b".", "refused", "stack grows beyond"),
    "datetime-with-a-hint": (
        lambda m: PROTO2 + call("datetime", "datetime") + b".", "refused", "(save dates as strings instead"),
}


@pytest.mark.parametrize("case", sorted(PAYLOADS))
def test_hostile_pickle_is_rejected_and_never_run(tmp_path, capsys, monkeypatch, case):
    build, status, reason = PAYLOADS[case]
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    path = hand_made_checkpoint(tmp_path / "evil.pth", build(marker))
    assert_rejected(capsys, path, status, reason)
    assert not marker.exists()


# -- one bad file does not stop the others -----------------------------------------------


def empty_file(folder):
    path = folder / "empty.pth"
    path.write_bytes(b"")
    return path


BAD_FILES = {
    "missing": lambda folder: folder / "missing.pth",
    "empty": empty_file,
    "payload": lambda folder: hand_made_checkpoint(folder / "evil.pth", system_payload(folder / "MARKER")),
    "duplicate-name": lambda folder: write_zip(folder / "dup.pth",
                                               with_record(PREFIX + "data/0", bytes(12))(fixture_records())),
}


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_good_file_is_still_fixed_beside_a_bad_one(tmp_path, capsys, bad):
    bad_path = BAD_FILES[bad](tmp_path)
    bad_before = bad_path.read_bytes() if bad_path.exists() else None
    good = copy_of(tmp_path, name="good.pth")

    code, out = run(capsys, "check", bad_path, good)
    assert code == 2
    assert len(lines_about(out, bad_path)) == 1
    assert lines_about(out, good) == [
        f"{good}: 4 parametrized weight-norm keys in 2 modules (e.g. 0.parametrizations.weight.original0)"]

    code, out = run(capsys, "fix", bad_path, good)
    assert code == 2
    assert len(lines_about(out, bad_path)) == 1
    assert lines_about(out, good) == [f"{good}: fixed: renamed 4 keys to legacy names"]
    assert run(capsys, "check", good)[0] == 0
    assert (bad_path.read_bytes() if bad_path.exists() else None) == bad_before
    assert not (tmp_path / "MARKER").exists()


def test_json_output_names_each_bad_file_status(tmp_path, capsys):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    pointer = tmp_path / "pointer.pth"
    pointer.write_text(LFS_POINTER)
    site = tmp_path / "easy-install.pth"
    site.write_text("./foo-1.0-py3.egg\n")
    evil = hand_made_checkpoint(tmp_path / "evil.pth", system_payload(tmp_path / "MARKER"))
    good = copy_of(tmp_path, name="good.pth")

    code, out = run(capsys, "check", "--output", "json", empty, pointer, site, evil, good)
    document = json.loads(out)
    assert code == document["exit_code"] == 2
    files = {entry["path"]: entry for entry in document["files"]}
    assert {path: files[str(path)]["status"] for path in (empty, pointer, site, evil, good)} == {
        empty: "error", pointer: "not-checked", site: "skipped", evil: "refused", good: "needs-fix"}
    assert files[str(empty)]["reason"] == "empty file"
    assert "'posix.system'" in files[str(evil)]["reason"]
    assert files[str(good)]["reason"] is None


def test_legacy_format_with_bytes_after_its_storages_is_refused(tmp_path, capsys):
    path = tmp_path / "model.pth"
    path.write_bytes(LEGACY_FORMAT.read_bytes() + b"junk")
    assert_rejected(capsys, path, "refused", "4 bytes follow the last storage")


@pytest.mark.parametrize("name", ["model.pth", "model.bin", "model.weights", "model"])
@pytest.mark.parametrize("glued", [True, False], ids=["pickle-glued-to-a-zip", "raw-pickle"])
def test_pickles_that_are_not_checkpoints_are_refused_whatever_the_name(tmp_path, capsys, name, glued):
    marker = tmp_path / "MARKER"
    payload = system_payload(marker)
    path = tmp_path / name
    path.write_bytes(payload + (PARAMETRIZED.read_bytes() if glued else b""))
    assert_rejected(capsys, path, "refused", "bare pickle, not a torch.save checkpoint")
    assert not marker.exists()


@pytest.mark.parametrize("first", ["real", "decoy"])
def test_two_pickle_records_are_refused_in_either_order(tmp_path, capsys, first):
    records = fixture_records()
    decoy = (PREFIX + "data.pkl", system_payload(tmp_path / "MARKER"))
    at = [n for n, _ in records].index(PREFIX + "data.pkl")
    records.insert(at if first == "decoy" else at + 1, decoy)
    path = write_zip(tmp_path / "model.pth", records)
    assert_rejected(capsys, path, "refused", f"two records named '{PREFIX}data.pkl'")
    assert not (tmp_path / "MARKER").exists()


def test_terminal_escape_codes_from_the_file_are_spelled_out(tmp_path, capsys):
    path = hand_made_checkpoint(tmp_path / "evil.pth", PROTO2 + call("os\x1b[31m", "x\x1b]0;owned\x07") + b".")
    for command in ("check", "fix"):
        code, out = run(capsys, command, path)
        assert code == 2
        assert "\x1b" not in out and "\x07" not in out
        assert "os\\x1b[31m" in out
