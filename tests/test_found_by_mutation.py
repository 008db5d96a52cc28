"""Bugs mutation testing found (each test fails on the code before its fix), with the real
libraries as oracles where they are installed."""

import io
import json
import os
import struct

import pytest
from support.cli_run import LEGACY_FORMAT
from pth_legacy_keys import scan, writer
from pth_legacy_keys.byte_source import BytesSource
from pth_legacy_keys.torch_route import read


def test_a_zero_dimension_after_a_huge_one_is_an_empty_tensor(tmp_path):
    """[1000000000, 0] has no elements: the safetensors library loads it, and so must we."""
    header = json.dumps({"a": {"dtype": "F32", "shape": [1000000000, 0], "data_offsets": [0, 0]}}).encode()
    header += b" " * (-len(header) % 8)
    data = struct.pack("<Q", len(header)) + header
    checkpoint = read(BytesSource(data))
    assert checkpoint.format == "safetensors"
    path = tmp_path / "empty.safetensors"
    path.write_bytes(data)
    assert scan(path).status == "ok"
    safetensors = pytest.importorskip("safetensors.numpy", reason="safetensors comes with the test extra")
    assert safetensors.load_file(str(path))["a"].shape == (1000000000, 0)


@pytest.mark.parametrize("keep", range(16, 21))  # the magic pickle is 15 bytes, the version's 6
def test_a_pre16_file_cut_inside_its_format_version_is_truncated(tmp_path, keep):
    """The magic number's pickle whole, the format version's cut: the file is truncated (torch
    stops at the end of the file), not of another version."""
    path = tmp_path / "cut.pth"
    path.write_bytes(LEGACY_FORMAT.read_bytes()[:keep])
    report = scan(path)
    assert (report.status, report.reason) == ("error", "truncated: the file ends inside its pickles")
    torch = pytest.importorskip("torch", reason="torch==2.13.0 is the oracle")
    with pytest.raises((EOFError, IndexError, struct.error)):  # whatever torch meets first, it fails
        torch.load(io.BytesIO(path.read_bytes()), weights_only=True)


def test_a_new_files_temporary_name_taken_is_never_opened_but_another_tried(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    taken = tmp_path / f".report.json.{os.getpid()}.{'00' * 4}.tmp"
    taken.write_text("someone else's")
    draws = iter([b"\0" * 4, b"\1" * 4])
    monkeypatch.setattr(writer.os, "urandom", lambda n: next(draws))
    writer.write_new_file(str(target), lambda f: f.write("{}"))
    assert target.read_text() == "{}" and taken.read_text() == "someone else's"
