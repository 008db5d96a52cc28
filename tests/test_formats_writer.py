"""Pieces into a local file (writer.py): the bytes written for every copied range checked as they
are written, memory bounded, the new file fsynced before it replaces the original and the folder
after; byte sources."""

import errno
import os
import stat
import time

import pytest
from support.cli_run import LEGACY_FORMAT, PARAMETRIZED, copy_of, lines_about, run
from pth_legacy_keys import writer
from pth_legacy_keys.byte_source import BytesSource, FileSource, file_identity
from pth_legacy_keys.checkpoint import SourceRange
from pth_legacy_keys.errors import CheckpointError
from pth_legacy_keys.torch_route import read_checkpoint


def fixed_bytes(tmp_path, capsys, source=PARAMETRIZED, name="reference.pth"):
    path = copy_of(tmp_path / "reference", source, name)
    assert run(capsys, "fix", path)[0] == 0
    return path.read_bytes()


# -- fsync --------------------------------------------------------------------------------------


def test_the_new_file_is_fsynced_before_it_replaces_the_original_and_the_folder_after(tmp_path, capsys, monkeypatch):
    path = copy_of(tmp_path)
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        status = os.fstat(fd)
        events.append(("fsync", status.st_ino, stat.S_ISDIR(status.st_mode)))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", os.stat(source).st_ino, False))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    assert run(capsys, "fix", path)[0] == 0
    new_file = path.stat().st_ino
    swapped = events.index(("replace", new_file, False))
    assert ("fsync", new_file, False) in events[:swapped]  # its bytes are on disk before its name is
    assert ("fsync", tmp_path.stat().st_ino, True) in events[swapped:]  # and the new name after


def test_a_failing_fsync_leaves_the_original(tmp_path, capsys, monkeypatch):
    path = copy_of(tmp_path)
    before = path.read_bytes()
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, out = run(capsys, "fix", path)
    assert code == 2
    assert lines_about(out, path) == [f"{path}: error: Input/output error"]
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


# -- the check of every copied byte, as it is written -------------------------------------------


def test_every_copied_byte_is_checked(tmp_path, capsys, monkeypatch):
    checked = {}
    real_check = writer._Checks._check

    def check(self, piece, done, view, crc):
        checked.setdefault(piece, []).append((done, None if view is None else len(view)))
        return real_check(self, piece, done, view, crc)

    monkeypatch.setattr(writer._Checks, "_check", check)
    monkeypatch.setattr(writer, "COPY_CHUNK", 40)  # several chunks per record ...
    monkeypatch.setattr(writer, "SMALL", 0)  # ... however small
    path = copy_of(tmp_path)
    checkpoint = read_checkpoint(path, for_rewrite=True)
    assert run(capsys, "fix", path)[0] == 0
    copied = [r for r in checkpoint.layout.records if r.size and r.name != checkpoint.layout.pickle_record.name]
    assert sorted((p.offset, p.length) for p in checked) == sorted((r.data_offset, r.size) for r in copied)
    for piece, steps in checked.items():
        chunks = [(done, min(40, piece.length - done)) for done in range(0, piece.length, 40)]
        assert steps == chunks + [(piece.length, None)]  # every byte, in order, then the end of the range


@pytest.mark.parametrize("small", [0, 50, 1 << 30], ids=["nothing-gathered", "some-gathered", "all-gathered"])
@pytest.mark.parametrize("source", [PARAMETRIZED, LEGACY_FORMAT], ids=["zip", "legacy-format"])
def test_small_odd_chunks_write_the_same_file(tmp_path, capsys, monkeypatch, source, small):
    expected = fixed_bytes(tmp_path, capsys, source)
    monkeypatch.setattr(writer, "COPY_CHUNK", 7)
    monkeypatch.setattr(writer, "BUFFERS", 1)
    monkeypatch.setattr(writer, "SMALL", small)
    monkeypatch.setattr(writer, "GATHERED", 3)
    path = copy_of(tmp_path, source)
    assert run(capsys, "fix", path)[0] == 0
    assert path.read_bytes() == expected


def test_without_preadv_or_fadvise_the_same_file_is_written(tmp_path, capsys, monkeypatch):
    expected = fixed_bytes(tmp_path, capsys)
    monkeypatch.delattr(writer.os, "preadv", raising=False)
    monkeypatch.delattr(writer.os, "posix_fadvise", raising=False)
    path = copy_of(tmp_path)
    assert run(capsys, "fix", path)[0] == 0
    assert path.read_bytes() == expected


def test_a_bad_byte_in_a_later_chunk_of_a_record_is_found(tmp_path, capsys, monkeypatch):
    """The CRC runs across chunks: a fault in the middle of a long record is caught at its end."""
    path = copy_of(tmp_path)
    record = next(r for r in read_checkpoint(path, for_rewrite=True).layout.records if r.size == 96)
    monkeypatch.setattr(writer, "COPY_CHUNK", 16)
    monkeypatch.setattr(writer, "SMALL", 0)
    real_write = writer._Output.write

    def fault_in_the_third_chunk(self, data):
        if self._piece is not None and self._piece.offset == record.data_offset and self._done == 32:
            data = b"\xff" + bytes(data)[1:]
        real_write(self, data)

    monkeypatch.setattr(writer._Output, "write", fault_in_the_third_chunk)
    before = path.read_bytes()
    code, out = run(capsys, "fix", path)
    assert code == 2
    assert lines_about(out, path) == [f"{path}: error: record '{record.name}' was not copied intact; nothing was changed"]
    assert path.read_bytes() == before


@pytest.mark.parametrize("change", [-1, 1], ids=["short", "long"])
def test_a_copy_of_the_wrong_length_is_not_swapped_in(tmp_path, capsys, monkeypatch, change):
    def copy_wrong_length(self, source, offset, length):
        data = source.read(offset, length)
        self.write(data[:-1] if change < 0 else data + b"!")

    monkeypatch.setattr(writer._Output, "copy_from", copy_wrong_length)
    path = copy_of(tmp_path)
    before = path.read_bytes()
    code, out = run(capsys, "fix", path)
    assert code == 2
    [line] = lines_about(out, path)
    assert line.startswith(f"{path}: error: record '") and line.endswith(" was not copied intact; nothing was changed")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


def many_small_records(path):
    torch = pytest.importorskip("torch", reason="torch==2.13.0 makes the checkpoint")
    state = {}
    for i in range(100):
        state[f"m{i}.parametrizations.weight.original0"] = torch.ones(2, 1)
        state[f"m{i}.parametrizations.weight.original1"] = torch.ones(2, 3)
    torch.save(state, path)
    return path


@pytest.mark.parametrize("small", [0, 32], ids=["chunks", "gathered"])
def test_memory_stays_bounded_while_the_checks_lag(tmp_path, capsys, monkeypatch, small):
    """The copy waits for the checks: BUFFERS chunk buffers, and a bounded backlog of small writes."""
    path = many_small_records(tmp_path / "many.pth")
    for name, value in (("COPY_CHUNK", 16), ("SMALL", small), ("GATHERED", 4), ("BACKLOG", 64)):
        monkeypatch.setattr(writer, name, value)
    buffers, backlog = set(), []
    real_check = writer._Checks._check

    def slow_check(self, piece, done, view, crc):
        time.sleep(0.0002)
        backlog.append(self._added - self._checked)
        if view is not None and isinstance(view.obj, bytearray):
            buffers.add(id(view.obj))
        return real_check(self, piece, done, view, crc)

    monkeypatch.setattr(writer._Checks, "_check", slow_check)
    assert run(capsys, "fix", path)[0] == 0
    assert 0 < len(buffers) <= writer.BUFFERS if not small else not buffers
    assert max(backlog) <= 64 + 4 * small + writer.BUFFERS * 16


# -- byte sources -------------------------------------------------------------------------------


def test_a_file_source_reads_exactly_and_knows_its_identity(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    with FileSource(path) as source:
        assert source.size == 10
        assert source.read(3, 4) == b"3456"
        assert source.read(10, 0) == b""
        with pytest.raises(CheckpointError, match="truncated"):
            source.read(8, 4)
        assert source.identity() == file_identity(os.stat(path))
    with pytest.raises(ValueError):
        source.read(0, 1)  # closed


def test_a_bytes_source_reads_exactly():
    source = BytesSource(b"0123456789")
    assert source.size == 10 and source.read(3, 4) == b"3456"
    with pytest.raises(CheckpointError, match="truncated"):
        source.read(8, 4)
    assert BytesSource(b"ab").identity() == BytesSource(b"ab").identity() != BytesSource(b"ac").identity()


def test_a_rewrite_knows_its_size():
    from pth_legacy_keys.checkpoint import Rewrite

    assert Rewrite((b"abc", SourceRange(0, 10, None, "x"), b"d"), b"abc").size == 14
