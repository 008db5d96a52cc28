"""The safetensors format unit on its own: keys located by byte, the header renamed and padded as
the library pads it, the tensor bytes copied as they are and compared after the write."""

import json
import os
import struct

import pytest
from support.cli_run import lines_about, run
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


# -- the header, validated as the safetensors library validates it (exact outcomes) ------------

from pth_legacy_keys.errors import CheckpointError, FixAbandoned, Refused  # noqa: E402
from pth_legacy_keys.safetensors_format import read_header, tree  # noqa: E402


def raw_file(header, data_size=0, length=None):
    """A safetensors file whose header is exactly `header` (text or bytes, no padding added)."""
    if isinstance(header, str):
        header = header.encode("utf-8")
    return struct.pack("<Q", len(header) if length is None else length) + header + bytes(data_size)


def entry(dtype="F32", shape=(1,), offsets=(0, 4)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def header_text(entries):
    return json.dumps(entries, separators=(",", ":"))


VALID = {
    "empty-object": ("{}", 0),
    "empty-object-padded": ("{}      ", 0),
    "zero-element-tensor": (header_text({"a": entry(shape=(0,), offsets=(0, 0))}), 0),
    "zero-dimension-past-the-product-limit": (header_text({"a": entry(shape=(64, 0), offsets=(0, 0)),
                                                           "b": entry(dtype="U8", shape=(8,), offsets=(0, 8))}), 8),
    "bytes-in-later-dimensions": (header_text({"a": entry(dtype="U8", shape=(4, 2), offsets=(0, 8))}), 8),
    "4-bit": (header_text({"a": entry(dtype="F4", shape=(2, 3), offsets=(0, 3))}), 3),
    "6-bit": (header_text({"a": entry(dtype="F6_E2M3", shape=(4,), offsets=(0, 3))}), 3),
    "out-of-order-but-tiled": (header_text({"b": entry(offsets=(4, 8)), "a": entry(offsets=(0, 4))}), 8),
}


@pytest.mark.parametrize("text, data_size", VALID.values(), ids=VALID.keys())
def test_a_header_the_library_loads_is_read(text, data_size):
    data = raw_file(text, data_size)
    key_bytes, header = read_header(BytesSource(data))
    assert key_bytes == data[:8 + len(text)]
    assert header.data_start == 8 + len(text)
    assert header.metadata is None
    assert [key.value for key, _, _, _ in header.tensors] == list(json.loads(text))


BIG = "X" * 30
REFUSED = {  # header text, data bytes, the exception, its exact message
    "repeated-tensor": ('{"a":' + json.dumps(entry()) + ',"a":' + json.dumps(entry()) + "}", 4, Refused,
                        "the safetensors header names a tensor twice"),
    "repeated-field": ('{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4, Refused,
                       "the safetensors header repeats a key inside an entry"),
    "metadata-not-a-map": (header_text({"__metadata__": ["x"]}), 0, Refused,
                           "the safetensors __metadata__ is not a map of strings"),
    "metadata-value-not-a-string": (header_text({"__metadata__": {"n": 1}}), 0, Refused,
                                    "the safetensors __metadata__ is not a map of strings"),
    "entry-not-an-object": (header_text({"a": 1}), 0, Refused,
                            "the safetensors entry 'a' is not a tensor description"),
    "entry-with-an-extra-field": (header_text({"a": {**entry(), "x": 1}}), 4, Refused,
                                  "the safetensors entry 'a' is not a tensor description"),
    "entry-missing-a-field": (header_text({"a": {"dtype": "F32", "shape": [1]}}), 4, Refused,
                              "the safetensors entry 'a' is not a tensor description"),
    "unknown-dtype": (header_text({"a": entry(dtype="F33")}), 4, Refused,
                      "the safetensors entry 'a' has an unknown dtype 'F33'"),
    "long-unknown-dtype": (header_text({"a": entry(dtype=BIG)}), 4, Refused,
                           f"the safetensors entry 'a' has an unknown dtype {BIG[:20]!r}"),
    "dtype-not-a-string": (header_text({"a": entry(dtype=[])}), 4, Refused,
                           "the safetensors entry 'a' has an unknown dtype '[]'"),
    "lowercase-dtype": (header_text({"a": entry(dtype="f32")}), 4, Refused,
                        "the safetensors entry 'a' has an unknown dtype 'f32'"),
    "shape-not-a-list": ('{"a":{"dtype":"F32","shape":1,"data_offsets":[0,4]}}', 4, Refused,
                         "the safetensors entry 'a' has a malformed shape or data_offsets"),
    "negative-dimension": (header_text({"a": entry(shape=(-1,))}), 4, Refused,
                           "the safetensors entry 'a' has a malformed shape or data_offsets"),
    "float-dimension": ('{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', 4, Refused,
                        "the safetensors entry 'a' has a malformed shape or data_offsets"),
    "boolean-dimension": ('{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}', 4, Refused,
                          "the safetensors entry 'a' has a malformed shape or data_offsets"),
    "offsets-not-a-list": ('{"a":{"dtype":"F32","shape":[1],"data_offsets":4}}', 4, Refused,
                           "the safetensors entry 'a' has a malformed shape or data_offsets"),
    "three-offsets": (header_text({"a": entry(offsets=(0, 4, 4))}), 4, Refused,
                      "the safetensors entry 'a' has a malformed shape or data_offsets"),
    "negative-offset": (header_text({"a": entry(offsets=(-4, 0))}), 4, Refused,
                        "the safetensors entry 'a' has a malformed shape or data_offsets"),
    "float-offset": ('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}}', 4, Refused,
                     "the safetensors entry 'a' has a malformed shape or data_offsets"),
    "backwards-offsets": (header_text({"a": entry(shape=(0,), offsets=(4, 0))}), 4, Refused,
                          "the safetensors entry 'a' has a malformed shape or data_offsets"),
    "wrong-size": (header_text({"a": entry(shape=(1,), offsets=(4, 12))}), 12, Refused,
                   "the safetensors tensor 'a' has 8 bytes, not what its dtype and shape need"),
    "wrong-size-in-bits": (header_text({"a": entry(dtype="F4", shape=(3,), offsets=(0, 1))}), 1, Refused,
                           "the safetensors tensor 'a' has 1 bytes, not what its dtype and shape need"),
    "product-past-the-data": (header_text({"a": entry(shape=(10 ** 6, 10 ** 6), offsets=(0, 4))}), 4, Refused,
                              "the safetensors tensor 'a' has 4 bytes, not what its dtype and shape need"),
    "gap": (header_text({"a": entry(offsets=(0, 4)), "b": entry(offsets=(8, 12))}), 12, Refused,
            "the safetensors tensor 'b' does not start where the one before it ends"),
    "overlap": (header_text({"a": entry(shape=(2,), offsets=(0, 8)), "b": entry(offsets=(4, 8))}), 8, Refused,
                "the safetensors tensor 'b' does not start where the one before it ends"),
    "first-not-at-zero": (header_text({"a": entry(offsets=(4, 8))}), 8, Refused,
                          "the safetensors tensor 'a' does not start where the one before it ends"),
    "bytes-after-the-last-tensor": (header_text({"a": entry()}), 7, Refused,
                                    "3 bytes follow the last safetensors tensor"),
    "tensor-data-cut-short": (header_text({"a": entry(shape=(2,), offsets=(0, 8))}), 5, CheckpointError,
                              "truncated: the file ends inside its tensor data"),
    "not-utf-8": (b'{"\xff":1}', 0, CheckpointError, "the safetensors header is not UTF-8"),
    "not-an-object": ("[]", 0, CheckpointError, "the safetensors header is not a JSON object"),
    "text-after-the-object": ("{} x", 0, CheckpointError, "the safetensors header has text after its JSON object"),
    "second-object": ("{}{}", 0, CheckpointError, "the safetensors header has text after its JSON object"),
    "bad-json-value": ('{"a": nul}', 0, CheckpointError, "the safetensors header is not valid JSON (at character 4)"),
    "nan": ('{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,4]}}', 4, CheckpointError,
            "the safetensors header is not valid JSON (at character 4)"),
    "key-not-a-string": ("{ 1:2}", 0, CheckpointError, "the safetensors header is not valid JSON (at character 2)"),
    "no-colon": ('{"a" 1}', 0, CheckpointError, "the safetensors header is not valid JSON (at character 5)"),
    "control-character-in-a-key": ('{"a\tb":1}', 0, CheckpointError,
                                   "the safetensors header is not valid JSON (at character 1)"),
    "no-comma": ('{"a":{} "b":{}}', 0, CheckpointError, "the safetensors header is not valid JSON (at character 8)"),
    "lone-surrogate-key": ('{"\\ud800":' + json.dumps(entry()) + "}", 4, Refused,
                           "the safetensors header spells a lone surrogate (\\ud800), which the safetensors "
                           "library refuses to read"),
    "lone-surrogate-metadata": ('{"__metadata__":{"k":"\\udc00"}}', 0, Refused,
                                "the safetensors header spells a lone surrogate (\\udc00), which the safetensors "
                                "library refuses to read"),
}


@pytest.mark.parametrize("text, data_size, error, message", REFUSED.values(), ids=REFUSED.keys())
def test_a_header_the_library_refuses_is_refused_with_its_reason(text, data_size, error, message):
    with pytest.raises(CheckpointError) as caught:
        read_header(BytesSource(raw_file(text, data_size)))
    assert type(caught.value) is error
    assert str(caught.value) == message


@pytest.mark.parametrize("length, size, error, message", [
    (100_000_001, 100, Refused,
     "the safetensors header claims 100000001 bytes, more than the 100000000 the safetensors library reads"),
    (100_000_000, 100, CheckpointError, "truncated: the file ends inside its safetensors header"),
    (3, 2, CheckpointError, "truncated: the file ends inside its safetensors header"),
], ids=["past-the-library-limit", "at-the-limit-but-truncated", "one-byte-short"])
def test_a_header_length_out_of_bounds(length, size, error, message):
    data = struct.pack("<Q", length) + b"{}  "[:size]
    with pytest.raises(CheckpointError) as caught:
        read_header(BytesSource(data))
    assert (type(caught.value), str(caught.value)) == (error, message)


def test_a_header_that_ends_the_file_exactly_is_read():
    key_bytes, header = read_header(BytesSource(raw_file("{}")))
    assert (key_bytes, header.tensors, header.data_start) == (raw_file("{}"), (), 10)


def test_metadata_is_a_map_of_strings():
    text = header_text({"__metadata__": {"format": "pt", "é": "ü"}, "a": entry()})
    _, header = read_header(BytesSource(raw_file(text, 4)))
    assert header.metadata == {"format": "pt", "é": "ü"}
    assert [key.value for key, _, _, _ in header.tensors] == ["a"]


def test_the_tree_holds_each_tensor_as_its_storage():
    text = header_text({"b": entry(dtype="BF16", shape=(2, 3), offsets=(8, 20)),
                        "a": entry(dtype="I64", shape=(1,), offsets=(0, 8))})
    _, header = read_header(BytesSource(raw_file(text, 20)))
    items = tree(header).items
    assert [key.value for key, _ in items] == ["b", "a"]
    found = [(t.shape, t.dtype, t.storage.key, t.storage.element_size, t.storage.numel, t.storage.dtype,
              t.storage.location) for _, t in items]
    assert found == [((2, 3), "bfloat16", "b", 1, 12, "bfloat16", None), ((1,), "int64", "a", 1, 8, "int64", None)]


def test_a_renamed_key_is_written_as_utf_8_not_escaped():
    data = safetensors_bytes(weight_norm("ü.conv"))
    rewrite = renamed_rewrite(read(BytesSource(data)), TO_LEGACY)
    assert '"ü.conv.weight_g"'.encode() in rewrite.key_bytes
    assert b"\\u" not in rewrite.key_bytes


@pytest.mark.parametrize("metadata, described", [(None, "no metadata"), ({"a": "1", "b": "2"}, "2 metadata fields")])
def test_describe_counts_the_metadata(metadata, described):
    data = safetensors_bytes(weight_norm("conv"), metadata=metadata)
    checkpoint = read(BytesSource(data))
    fields, text = SAFETENSORS.describe(checkpoint)
    assert fields["metadata"] == metadata
    assert text == f"safetensors, {checkpoint.layout.data_start}-byte header, {described}"


def test_verify_without_the_safetensors_package_says_what_to_install(monkeypatch):
    import sys

    from pth_legacy_keys.verify import INSTALL_HINT

    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(FixAbandoned) as caught:
        SAFETENSORS.load_with_torch("model.safetensors")
    assert str(caught.value) == f"--verify needs the safetensors package for this file ({INSTALL_HINT})"


def test_nine_bytes_of_length_and_brace_are_read_as_a_cut_safetensors_header():
    assert SAFETENSORS.detect(struct.pack("<Q", 2) + b"{")
    assert not SAFETENSORS.detect(struct.pack("<Q", 2))
    with pytest.raises(CheckpointError) as caught:
        read(BytesSource(struct.pack("<Q", 2) + b"{"))
    assert str(caught.value) == "truncated: the file ends inside its safetensors header"
