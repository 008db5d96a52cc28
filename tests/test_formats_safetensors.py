"""The safetensors format unit on its own: keys located by byte, the header renamed and padded as
the library pads it, the tensor bytes copied as they are and compared after the write."""

import json
import os
import struct

import pytest
from helpers import lines_about, run
from pth_legacy_keys import writer
from pth_legacy_keys.byte_source import BytesSource, FileSource
from pth_legacy_keys.checkpoint import SourceRange
from pth_legacy_keys.rename import LEGACY as TO_LEGACY
from pth_legacy_keys.safetensors_format import SAFETENSORS
from pth_legacy_keys.torch_route import read
from support.formats_helpers import materialized, renamed_rewrite


def safetensors_bytes(entries, metadata=None, pad=True, ensure_ascii=False):
    """A safetensors file of F32 tensors {name: shape}, their bytes 0, 1, 2 ... in header order."""
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, shape in entries.items():
        size = 4
        for n in shape:
            size *= n
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=ensure_ascii).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(i % 251 for i in range(offset))


def weight_norm(prefix, out=3, width=4):
    return {f"{prefix}.parametrizations.weight.original0": (out, 1, 1),
            f"{prefix}.parametrizations.weight.original1": (out, width, 1)}


def header_of(data):
    length = struct.unpack_from("<Q", data)[0]
    return length, json.loads(data[8:8 + length])


def test_keys_are_located_by_byte_in_the_key_bytes():
    """A key after non-ASCII text (a metadata value, another key) sits where its bytes are, not
    where its characters are: the pickle's Text offsets are bytes, and so are these."""
    data = safetensors_bytes({"é.bias": (3,), **weight_norm("ü.conv")}, metadata={"author": "Zoë ✓"})
    checkpoint = read(BytesSource(data))
    assert checkpoint.format == "safetensors"
    keys = [key for key, _ in checkpoint.root.items]
    assert [key.value for key in keys] == ["é.bias", "ü.conv.parametrizations.weight.original0",
                                           "ü.conv.parametrizations.weight.original1"]
    for key in keys:
        assert json.loads(checkpoint.key_bytes[key.offset:key.offset + key.nbytes]) == key.value
    assert checkpoint.key_bytes == data[:checkpoint.layout.data_start]


def test_escaped_keys_are_located_too():
    data = safetensors_bytes({"é.bias": (3,), **weight_norm("ü.conv")}, ensure_ascii=True)
    checkpoint = read(BytesSource(data))
    for key, _ in checkpoint.root.items:
        assert json.loads(checkpoint.key_bytes[key.offset:key.offset + key.nbytes]) == key.value


def test_rename_after_non_ascii_text_keeps_every_other_byte():
    data = safetensors_bytes({"é.bias": (3,), **weight_norm("ü.conv")}, metadata={"author": "Zoë ✓"})
    source = BytesSource(data)
    rewrite = renamed_rewrite(read(source), TO_LEGACY)
    new = materialized(rewrite, source)
    length, header = header_of(new)
    assert list(header) == ["__metadata__", "é.bias", "ü.conv.weight_g", "ü.conv.weight_v"]
    assert header["__metadata__"] == {"author": "Zoë ✓"}
    old_length, old_header = header_of(data)
    assert new[8 + length:] == data[8 + old_length:]  # the tensor bytes, as they were
    assert [entry for entry in header.values()] == [entry for entry in old_header.values()]


@pytest.mark.parametrize("stem", ["a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh"])
def test_a_padded_header_is_padded_to_8_bytes_with_spaces(stem):
    """The safetensors library pads its header with spaces to a multiple of 8 (so tensor bytes stay
    8-byte aligned): a renamed header whose text ends anywhere mod 8 is padded the same way."""
    data = safetensors_bytes(weight_norm(stem))
    source = BytesSource(data)
    rewrite = renamed_rewrite(read(source), TO_LEGACY)
    length = struct.unpack_from("<Q", rewrite.key_bytes)[0]
    text = rewrite.key_bytes[8:]
    assert len(text) == length and length % 8 == 0
    assert 0 <= len(text) - len(text.rstrip(b" ")) < 8  # the fewest spaces that do it
    assert text.rstrip(b" ").endswith(b"}")
    new = materialized(rewrite, source)
    assert sorted(header_of(new)[1]) == [f"{stem}.weight_g", f"{stem}.weight_v"]


def test_a_header_that_was_not_padded_stays_unpadded():
    data = safetensors_bytes(weight_norm("abc"), pad=False)
    assert struct.unpack_from("<Q", data)[0] % 8  # the fixture is unpadded
    rewrite = renamed_rewrite(read(BytesSource(data)), TO_LEGACY)
    assert rewrite.key_bytes.endswith(b"}")


def test_the_tensor_bytes_are_one_range_without_a_crc():
    data = safetensors_bytes(weight_norm("conv"))
    checkpoint = read(BytesSource(data))
    rewrite = renamed_rewrite(checkpoint, TO_LEGACY)
    assert rewrite.pieces[0] == rewrite.key_bytes
    assert rewrite.pieces[1:] == (SourceRange(checkpoint.layout.data_start, len(data) - checkpoint.layout.data_start,
                                              None, "the tensor bytes", plural=True),)
    assert SAFETENSORS.kept(checkpoint) == []


def test_describe():
    data = safetensors_bytes(weight_norm("conv"), metadata={"format": "pt"})
    checkpoint = read(BytesSource(data))
    fields, text = SAFETENSORS.describe(checkpoint)
    assert fields == {"format": "safetensors", "bytes": len(data), "header_bytes": checkpoint.layout.data_start,
                      "metadata": {"format": "pt"}}
    assert text == f"safetensors, {checkpoint.layout.data_start}-byte header, 1 metadata field"
    assert checkpoint.pickle is None


def test_a_local_file_reads_as_its_bytes(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(weight_norm("conv")))
    with FileSource(path) as source:
        from_file = read(source)
    from_bytes = read(BytesSource(path.read_bytes()))
    assert (from_file.key_bytes, from_file.layout.data_start) == (from_bytes.key_bytes, from_bytes.layout.data_start)


def test_tensor_bytes_that_were_not_copied_intact_are_never_swapped_in(tmp_path, capsys, monkeypatch):
    """safetensors stores no checksum: the copied tensor bytes are compared with the original's."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(weight_norm("conv")))
    before = path.read_bytes()
    def copy_zeros(self, source, offset, length):
        self.write(bytes(length))  # what a faulty copy (copy_file_range has done it) leaves

    monkeypatch.setattr(writer._Output, "copy_from", copy_zeros)
    code, out = run(capsys, "fix", path)
    assert code == 2
    assert lines_about(out, path) == [f"{path}: error: the tensor bytes were not copied intact; nothing was changed"]
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]
    monkeypatch.undo()
    assert run(capsys, "fix", path)[0] == 0
    assert path.read_bytes()[-60:] == before[-60:]
