"""Every kind of bad input: a clear one-line verdict, exit 2 (or 0 when skipped), bytes untouched.

Nothing here imports torch, and no pickle is ever loaded in the test process: the one
`pickle.loads` that proves a payload is live runs in a subprocess.
"""

import json
import os
import random
import subprocess
import sys

import pytest
from support.cli_run import LEGACY_FORMAT, PARAMETRIZED, copy_of, lines_about, run
from pth_legacy_keys import scan
from support import LFS_POINTER, PROTO2, write_zip
from support.cli_run import assert_rejected
from support.hand_made import call, hand_made_checkpoint, system_payload, tensor_dict
from support.hostile_corpus import BAD_FILES, PAYLOADS, PREFIX, REZIPPED, ZIP_DAMAGE, fixture_records


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
        for verbosity in ([], ["-v"]):  # a file that was not checked says so, and why, by default too
            code, out = run(capsys, command, *verbosity, path)
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


@pytest.mark.parametrize("damage", sorted(ZIP_DAMAGE))
def test_damaged_zip_is_refused(tmp_path, capsys, damage):
    change, reason = ZIP_DAMAGE[damage]
    path = tmp_path / "model.pth"
    path.write_bytes(change(PARAMETRIZED.read_bytes()))
    assert_rejected(capsys, path, "refused", reason)


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


@pytest.mark.parametrize("case", sorted(PAYLOADS))
def test_hostile_pickle_is_rejected_and_never_run(tmp_path, capsys, monkeypatch, case):
    build, status, reason = PAYLOADS[case]
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    path = hand_made_checkpoint(tmp_path / "evil.pth", build(marker))
    assert_rejected(capsys, path, status, reason)
    assert not marker.exists()


# -- one bad file does not stop the others -----------------------------------------------


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
