"""safetensors files: the same keys renamed by rewriting only the JSON header."""

import json
import os
import struct

import pytest
from support.cli_run import run
from pth_legacy_keys.cli import main

pytest.importorskip("torch", reason="torch==2.13.0 is needed to make and load real checkpoints")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="the safetensors package makes the files")

from support import rvc_model  # noqa: E402
from support.torch_helpers import assert_bit_equal, torch  # noqa: E402

METADATA = {"format": "pt", "model_name": "voïce", "sr": "40000"}


def header_of(path):
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    return length, data[8:8 + length], data[8 + length:]


@pytest.fixture
def rvc_safetensors(tmp_path):
    """What a model repository ships beside its .pth: the inference weights as safetensors."""
    path = tmp_path / "voice.safetensors"
    weights = rvc_model.rvc_inference_file(rvc_model.build(parametrized=True))["weight"]
    safetensors_torch.save_file(weights, str(path), metadata=METADATA)
    return path


def test_fixed_safetensors_loads_strictly_in_legacy_code_with_identical_output(rvc_safetensors, capsys):
    original = safetensors_torch.load_file(str(rvc_safetensors))
    code, out = run(capsys, "check", rvc_safetensors)
    assert code == 1
    assert f"{rvc_safetensors}: 48 parametrized weight-norm keys in 24 modules" in out

    code, out = run(capsys, "fix", rvc_safetensors)
    assert code == 0
    assert out.splitlines()[0] == f"{rvc_safetensors}: fixed: renamed 48 keys to legacy names"

    fixed = safetensors_torch.load_file(str(rvc_safetensors))
    renamed = rvc_model.legacy_names(original)
    assert sorted(fixed) == sorted(renamed)
    for key, tensor in renamed.items():
        assert_bit_equal(fixed[key], tensor)

    legacy = rvc_model.inference_model(parametrized=False).half()
    result = legacy.load_state_dict(fixed, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    parametrized = rvc_model.inference_model(parametrized=True).half()
    parametrized.load_state_dict(original, strict=True)
    x, speaker = rvc_model.sample_input()
    with torch.no_grad():
        assert_bit_equal(legacy.float()(x, speaker), parametrized.float()(x, speaker))


def test_only_key_strings_change_and_alignment_and_metadata_are_kept(rvc_safetensors):
    length, header, data = header_of(rvc_safetensors)
    assert main(["fix", str(rvc_safetensors)]) == 0
    new_length, new_header, new_data = header_of(rvc_safetensors)

    assert new_data == data  # the tensor bytes, copied as they are
    assert new_length % 8 == 0 and length % 8 == 0
    before, after = json.loads(header), json.loads(new_header)
    assert after["__metadata__"] == METADATA
    assert list(after)[0] == "__metadata__"
    renamed = {rvc_model.legacy_name(k) if k.endswith(("original0", "original1")) else k: v
               for k, v in before.items()}
    assert after == renamed
    assert [k for k in after] == [k for k in renamed]  # the header keeps its order
    # The library reads back the metadata too.
    from safetensors import safe_open

    with safe_open(str(rvc_safetensors), "pt") as f:
        assert f.metadata() == METADATA


def test_fix_and_back_gives_the_library_file_byte_for_byte_and_a_second_fix_writes_nothing(rvc_safetensors):
    original = rvc_safetensors.read_bytes()
    assert main(["fix", str(rvc_safetensors)]) == 0
    stat = os.stat(rvc_safetensors)
    assert main(["fix", str(rvc_safetensors)]) == 0
    assert os.stat(rvc_safetensors).st_mtime_ns == stat.st_mtime_ns
    assert main(["fix", "--to", "parametrized", str(rvc_safetensors)]) == 0
    assert rvc_safetensors.read_bytes() == original


def test_converting_legacy_safetensors_gives_what_the_library_saves_for_the_parametrized_model(tmp_path):
    legacy_path, parametrized_path = tmp_path / "legacy.safetensors", tmp_path / "parametrized.safetensors"
    safetensors_torch.save_file(rvc_model.build(parametrized=False).state_dict(), str(legacy_path))
    safetensors_torch.save_file(rvc_model.build(parametrized=True).state_dict(), str(parametrized_path))
    assert main(["fix", "--to", "parametrized", str(legacy_path)]) == 0
    model = rvc_model.build(parametrized=True)
    result = model.load_state_dict(safetensors_torch.load_file(str(legacy_path)), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    # The library sorts a header's tensors by dtype and name, so the same tensors give the same bytes
    # only if they sort alike; compare what it loads instead.
    expected = safetensors_torch.load_file(str(parametrized_path))
    actual = safetensors_torch.load_file(str(legacy_path))
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert_bit_equal(actual[key], expected[key])


def test_spectral_norm_in_safetensors(tmp_path):
    from support.rvc_model import spectral_discriminator

    path = tmp_path / "D.safetensors"
    parametrized = spectral_discriminator(parametrized=True)
    safetensors_torch.save_file(parametrized.state_dict(), str(path))
    assert main(["fix", str(path)]) == 0
    legacy = spectral_discriminator(parametrized=False)
    result = legacy.load_state_dict(safetensors_torch.load_file(str(path)), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(1, 2, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert_bit_equal(legacy(x), parametrized(x))


def test_an_unpadded_header_keeps_its_length_rule_and_still_loads(tmp_path):
    """Early writers did not pad the header to 8 bytes: we add no padding it never had."""
    path = tmp_path / "old.safetensors"
    tensors = {"a.parametrizations.weight.original0": torch.ones(2, 1), "a.parametrizations.weight.original1":
               torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    header, offset = {}, 0
    for name, tensor in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + 4 * tensor.numel()]}
        offset += 4 * tensor.numel()
    text = json.dumps(header).encode()  # with spaces after separators, as Python writes by default
    text += b" " if len(text) % 8 == 0 else b""
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(t.numpy().tobytes() for t in tensors.values()))

    assert main(["fix", str(path)]) == 0
    length, new_header, _ = header_of(path)
    assert new_header.startswith(b'{"a.weight_g": {"dtype": "F32"')  # the rest of the text untouched
    loaded = safetensors_torch.load_file(str(path))
    assert_bit_equal(loaded["a.weight_v"], tensors["a.parametrizations.weight.original1"])


def test_check_reads_only_the_header(tmp_path, monkeypatch):
    from pth_legacy_keys.byte_source import FileSource

    path = tmp_path / "big.safetensors"
    weights = rvc_model.build(parametrized=True).state_dict()
    weights["emb_big.weight"] = torch.zeros(4_000_000, dtype=torch.half)
    safetensors_torch.save_file(weights, str(path))
    reads = []
    real_read = FileSource.read
    monkeypatch.setattr(FileSource, "read", lambda self, offset, size: reads.append(size) or real_read(self, offset, size))
    assert main(["check", str(path)]) == 1
    length, _, _ = header_of(path)
    assert sum(reads) == 4096 + 8 + length  # the first 4 KiB (torch.load's route), the length, the header
    assert path.stat().st_size > 100 * sum(reads)


def bad_safetensors(header, data=b"", length=None):
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


GOOD_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
BAD_FILES = {
    "not-json": (bad_safetensors(b"{nope}", bytes(8)), "error", "is not valid JSON"),
    "repeated-key": (bad_safetensors(b'{"a":' + json.dumps(GOOD_ENTRY).encode() + b',"a":'
                                     + json.dumps(GOOD_ENTRY).encode() + b"}", bytes(8)),
                     "refused", "names a tensor twice"),
    "repeated-inner-key": (bad_safetensors(b'{"a":{"dtype":"F32","dtype":"F32","shape":[2],'
                                           b'"data_offsets":[0,8]}}', bytes(8)), "refused", "repeats a key"),
    "gap": (bad_safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)),
            "refused", "does not start where"),
    "trailing-bytes": (bad_safetensors({"a": GOOD_ENTRY}, bytes(12)), "refused", "4 bytes follow"),
    "truncated-data": (bad_safetensors({"a": GOOD_ENTRY}, bytes(5)), "error", "truncated"),
    "truncated-header": (bad_safetensors({"a": GOOD_ENTRY}, length=1000), "error", "truncated"),
    "huge-header-length": (bad_safetensors({"a": GOOD_ENTRY}, length=2**63), "refused", "claims"),
    "unknown-dtype": (bad_safetensors({"a": {"dtype": "F128", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
                      "refused", "unknown dtype"),
    # found by fuzz/fuzz_reader.py: a dtype that is not a string crashed the dtype lookup
    "dtype-not-a-string": (bad_safetensors({"a": {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}},
                                           bytes(8)), "refused", "unknown dtype"),
    "huge-shape": (bad_safetensors({"a": {"dtype": "F32", "shape": [10**6] * 200_000, "data_offsets": [0, 8]}},
                                   bytes(8)), "refused", "not what its dtype and shape need"),
    "size-mismatch": (bad_safetensors({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)),
                      "refused", "not what its dtype and shape need"),
    "metadata-not-strings": (bad_safetensors({"__metadata__": {"n": 1}, "a": GOOD_ENTRY}, bytes(8)),
                             "refused", "not a map of strings"),
    "not-utf8": (bad_safetensors(b'{"\xff":1}', b""), "error", "not UTF-8"),
    "text-after-object": (bad_safetensors(b'{"a":' + json.dumps(GOOD_ENTRY).encode() + b"} x", bytes(8)),
                          "error", "text after"),
    "nan": (bad_safetensors(b'{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}}', bytes(8)),
            "error", "not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
@pytest.mark.parametrize("command", ["check", "fix"])
def test_bad_safetensors_is_one_line_exit_2_and_untouched(tmp_path, capsys, name, command):
    content, status, reason = BAD_FILES[name]
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(content)
    code, out = run(capsys, command, "-q", path)
    assert code == 2
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: ")
    assert reason in lines[0] and (status != "refused" or "refused" in lines[0])
    assert path.read_bytes() == content


@pytest.mark.parametrize("name", ["gap", "trailing-bytes", "truncated-data", "unknown-dtype", "size-mismatch"])
def test_the_safetensors_library_refuses_these_too(tmp_path, name):
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(BAD_FILES[name][0])
    with pytest.raises(Exception):
        safetensors_torch.load_file(str(path))


# -- mutated files: whatever we accept, the safetensors library accepts too ---------------

from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from pth_legacy_keys import fix, scan  # noqa: E402
from pth_legacy_keys.status import Status  # noqa: E402
from support.fuzz_settings import FUZZ_SETTINGS, SCALE  # noqa: E402  (PTH_FUZZ_SCALE=N: N times the examples)

SEED_TENSORS = {"a.parametrizations.weight.original0": torch.ones(2, 1, 1),
                "a.parametrizations.weight.original1": torch.arange(6, dtype=torch.float16).reshape(2, 3, 1),
                "a.bias": torch.tensor([-0.0, float("nan")]), "n": torch.tensor([True, False, True])}
SEED = safetensors_torch.save(SEED_TENSORS, metadata={"format": "pt", "note": "é"})


@st.composite
def mutated_safetensors(draw):
    data = bytearray(SEED)
    length = struct.unpack("<Q", data[:8])[0]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "data-flip", "header-byte", "length", "truncate", "append", "digit"]))
        if kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "data-flip" and len(data) > 8 + length:  # tensor bytes: any value is a valid file
            i = draw(st.integers(8 + length, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "header-byte" and len(data) > 8:
            i = draw(st.integers(8, min(len(data), 8 + length) - 1))
            data[i] = ord(draw(st.sampled_from('{}[]":, 0123456789abcFIU_ ')))
        elif kind == "length":
            data[:8] = struct.pack("<Q", draw(st.sampled_from([0, 1, length - 8, length - 1, length + 1,
                                                                length + 8, len(data), 2**40])))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=16))
        elif kind == "digit":  # shapes and offsets are where a header lies about sizes
            digits = [i for i in range(8, min(len(data), 8 + length)) if 48 <= data[i] <= 57]
            if digits:
                data[draw(st.sampled_from(digits))] = 48 + draw(st.integers(0, 9))
    return bytes(data)


@settings(max_examples=300 * SCALE, **{**FUZZ_SETTINGS, "suppress_health_check": [
    *FUZZ_SETTINGS["suppress_health_check"], HealthCheck.function_scoped_fixture]})
@given(mutated_safetensors())
def test_mutated_safetensors_we_accept_the_library_loads_and_fix_is_all_or_nothing(tmp_path, data):
    path = tmp_path / "m.safetensors"
    path.write_bytes(data)
    report = scan(path)
    event(f"scan: {report.status}")
    assert report.status in set(Status) and path.read_bytes() == data
    if report.status in ("ok", "needs-fix", "cannot-convert"):
        original = safetensors_torch.load(data)  # never more lenient than the library
    if report.status in ("ok", "needs-fix"):
        report = fix(path)
        assert report.status in ("ok", "fixed")
        fixed = safetensors_torch.load_file(str(path))
        names = {r.old: r.new for r in report.renames}
        assert sorted(fixed) == sorted(names.get(k, k) for k in original)
        for key, tensor in original.items():
            assert_bit_equal(fixed[names.get(key, key)], tensor)
    else:
        assert fix(path).status == report.status and path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    path.unlink()
