"""`fix` loses nothing: it writes beside the file, verifies, swaps atomically, or leaves it alone."""

import errno
import os

import pytest
from support.cli_run import LEGACY, LEGACY_FORMAT, PARAMETRIZED, copy_of, lines_about, run
from pth_legacy_keys import torch_pickle, writer
from pth_legacy_keys.pre16_format import PRE16
from pth_legacy_keys.zip_format import ZIP
from pth_legacy_keys.cli import main
from support.copy_faults import patch_copy

not_as_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                                 reason="root writes anywhere")


def snapshot(path):
    info = os.stat(path)
    return path.read_bytes(), info.st_ino, info.st_mtime_ns


def assert_fix_fails_cleanly(capsys, path, reason, statuses=("error",)):
    """fix exits 2 with one line naming the file; the file and its folder are as they were."""
    before, folder_before = snapshot(path), sorted(os.listdir(path.parent))
    code, out = run(capsys, "fix", path)
    assert code == 2, out
    [line] = lines_about(out, path)
    assert any(line.startswith(f"{path}: {status}: ") for status in statuses), line
    assert reason in line, line
    assert snapshot(path) == before
    assert sorted(os.listdir(path.parent)) == folder_before  # no .tmp left behind
    return line


def test_fix_keeps_the_mode_and_leaves_no_temporary_file(tmp_path, capsys):
    path = copy_of(tmp_path)
    path.chmod(0o640)
    code, out = run(capsys, "fix", path)
    assert code == 0
    assert lines_about(out, path) == [f"{path}: fixed: renamed 4 keys to legacy names"]
    assert path.stat().st_mode & 0o7777 == 0o640
    assert os.listdir(tmp_path) == [path.name]
    assert path.read_bytes() != PARAMETRIZED.read_bytes()


def test_file_with_nothing_to_change_is_not_written(tmp_path, capsys):
    path = copy_of(tmp_path, LEGACY)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # an mtime a rewrite could not keep by accident
    before = snapshot(path)
    code, out = run(capsys, "fix", "-v", path)
    assert code == 0
    assert lines_about(out, path) == [f"{path}: ok (legacy names)"]
    assert snapshot(path) == before


def test_second_fix_changes_nothing(tmp_path, capsys):
    path = copy_of(tmp_path)
    assert run(capsys, "fix", path)[0] == 0
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = snapshot(path)
    code, out = run(capsys, "fix", "-v", path)
    assert code == 0
    assert lines_about(out, path) == [f"{path}: ok (legacy names)"]
    assert snapshot(path) == before


@pytest.mark.parametrize("source", [PARAMETRIZED, LEGACY_FORMAT], ids=["zip", "legacy-format"])
def test_fixing_there_and_back_gives_the_original_bytes(tmp_path, capsys, source):
    path = copy_of(tmp_path, source)
    assert run(capsys, "fix", path)[0] == 0
    assert path.read_bytes() != source.read_bytes()
    assert run(capsys, "check", path)[0] == 0
    code, out = run(capsys, "fix", "--to", "parametrized", path)
    assert code == 0
    assert lines_about(out, path) == [f"{path}: fixed: renamed 4 keys to parametrized names"]
    assert path.read_bytes() == source.read_bytes()


# -- failures at each step leave the original alone -------------------------------------


def test_failing_replace_leaves_the_original(tmp_path, capsys, monkeypatch):
    def refuse_replace(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(writer.os, "replace", refuse_replace)
    assert_fix_fails_cleanly(capsys, copy_of(tmp_path), "Invalid cross-device link")


def test_failing_verification_leaves_the_original(tmp_path, capsys, monkeypatch):
    real_replace_strings = torch_pickle.replace_strings

    def keep_old_names(data, replacements):
        # A pickle with the wrong strings: every key keeps its parametrized name.
        return real_replace_strings(data, [(text, text.value) for text, _ in replacements])

    monkeypatch.setattr(torch_pickle, "replace_strings", keep_old_names)
    assert_fix_fails_cleanly(capsys, copy_of(tmp_path), "did not read back as intended")


def write_then_corrupt(unit):
    real_write = unit.write

    def write(checkpoint, key_bytes):
        rewrite = real_write(checkpoint, key_bytes)
        # one stray byte after the end record, or after the storages
        return rewrite._replace(pieces=rewrite.pieces + (b"\0",))
    return write


@pytest.mark.parametrize("source", [PARAMETRIZED, LEGACY_FORMAT], ids=["zip", "legacy-format"])
def test_corrupt_output_is_never_swapped_in(tmp_path, capsys, monkeypatch, source):
    monkeypatch.setattr(ZIP, "write", write_then_corrupt(ZIP))
    monkeypatch.setattr(PRE16, "write", write_then_corrupt(PRE16))
    assert_fix_fails_cleanly(capsys, copy_of(tmp_path, source), "", statuses=("error", "refused"))


@pytest.mark.parametrize("source", [PARAMETRIZED, LEGACY_FORMAT], ids=["zip", "legacy-format"])
def test_corrupt_output_is_reported_as_a_failed_rewrite(tmp_path, capsys, monkeypatch, source):
    # The user's file is fine: the message must not describe the bad temporary copy as if it were theirs.
    monkeypatch.setattr(ZIP, "write", write_then_corrupt(ZIP))
    monkeypatch.setattr(PRE16, "write", write_then_corrupt(PRE16))
    path = copy_of(tmp_path, source)
    line = assert_fix_fails_cleanly(capsys, path, "", statuses=("error", "refused"))
    assert line.startswith(f"{path}: error: the rewritten file did not read back")
    assert line.endswith("; nothing was changed")


def test_copied_record_with_wrong_bytes_fails_verification(tmp_path, capsys, monkeypatch):
    # A copy that silently writes zeros (as copy_file_range has done on some kernels and
    # filesystems) keeps every size and the old CRC: only the bytes themselves tell.
    def zero_the_largest_tensor(copy, output, source, offset, length):
        if length == 96:  # parametrized/data/5
            output.write(bytes(length))
        else:
            copy(output, source, offset, length)

    patch_copy(monkeypatch, zero_the_largest_tensor)
    assert_fix_fails_cleanly(capsys, copy_of(tmp_path), "", statuses=("error", "refused"))


@pytest.mark.parametrize("source", [PARAMETRIZED, LEGACY_FORMAT], ids=["zip", "legacy-format"])
def test_write_failing_halfway_leaves_the_original(tmp_path, capsys, monkeypatch, source):
    def copy_some_then_fail(self, source, offset, length):
        self.write(os.pread(source.fileno(), max(1, length // 2), offset))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer._Output, "copy_from", copy_some_then_fail)
    assert_fix_fails_cleanly(capsys, copy_of(tmp_path, source), "No space left on device")


def test_interrupted_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def interrupt(self, source, offset, length):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer._Output, "copy_from", interrupt)
    path = copy_of(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        main(["fix", str(path)])
    assert path.read_bytes() == PARAMETRIZED.read_bytes()
    assert os.listdir(tmp_path) == [path.name]


def test_file_changed_during_fix_is_not_overwritten(tmp_path, capsys, monkeypatch):
    path = copy_of(tmp_path)
    def copy_while_someone_appends(copy, output, source, offset, length):
        with open(path, "ab") as other_writer:
            other_writer.write(b"!")
        copy(output, source, offset, length)

    patch_copy(monkeypatch, copy_while_someone_appends)
    code, out = run(capsys, "fix", path)
    assert code == 2
    assert lines_about(out, path) == [
        f"{path}: error: the file changed while it was being fixed; nothing was changed"]
    assert path.read_bytes().startswith(PARAMETRIZED.read_bytes())  # the other writer's bytes are kept
    assert os.listdir(tmp_path) == [path.name]


# -- where the file lives -------------------------------------------------------------------


def test_fix_through_a_symlink_rewrites_the_target_and_keeps_the_link(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    target = copy_of(models)
    link = tmp_path / "link.pth"
    link.symlink_to(target)
    code, out = run(capsys, "fix", link)
    assert code == 0
    assert lines_about(out, link) == [f"{link}: fixed: renamed 4 keys to legacy names"]
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert run(capsys, "check", target)[0] == 0
    assert sorted(os.listdir(models)) == [target.name]
    assert sorted(os.listdir(tmp_path)) == ["link.pth", "models"]


@not_as_root
def test_fix_in_a_read_only_folder_fails_and_changes_nothing(tmp_path, capsys):
    folder = tmp_path / "readonly"
    folder.mkdir()
    path = copy_of(folder)
    folder.chmod(0o555)
    try:
        before = snapshot(path)
        code, out = run(capsys, "fix", path)
        assert code == 2
        assert lines_about(out, path) == [f"{path}: error: permission denied"]
        assert snapshot(path) == before
        assert os.listdir(folder) == [path.name]
    finally:
        folder.chmod(0o755)
