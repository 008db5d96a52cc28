"""Every JSON document the tool writes is strict JSON (RFC 8259): no NaN, Infinity or -Infinity.

A checkpoint's pickle can hold any float in its metadata; `inspect --output json` once wrote
`"sr": Infinity`, which JSON.parse, jq and Go refuse, losing the whole document. A float that is
not finite is now the string JavaScript's String() spells it with, and the encoder runs with
allow_nan=False so nothing else can slip one through. Each document is parsed by Node's JSON.parse
and by Python's json with its NaN/Infinity extension refused.
"""

import io
import json
import math
import os
import shutil
import struct
import subprocess

import pytest
from support.cli_run import run
from pth_legacy_keys.inspection import Inspection, json_value
from pth_legacy_keys.report import _write_document, render_inspections

# support.torch_helpers skips this module without torch; rvc_model (which needs it) is imported where used.
from support.torch_helpers import torch

NAN, INF = float("nan"), float("inf")
NEGATIVE_NAN = struct.unpack(">d", bytes.fromhex("fff8000000000001"))[0]  # sign bit and a payload set
NODE_PARSE = 'process.stdout.write(JSON.stringify(JSON.parse(require("fs").readFileSync(0, "utf8"))))'


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def strictly_parsed(text):
    """`text` parsed by Node's JSON.parse and by Python's json without its NaN/Infinity extension;
    both must accept it and agree. ASCII, as the documents are written (lone surrogates)."""
    assert text.isascii()
    document = json.loads(text, parse_constant=_refuse_constant)
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Node.js (node) is needed to parse the JSON documents as a strict parser does")
        pytest.skip("Node.js (node) is needed to parse the JSON documents as a strict parser does")
    result = subprocess.run([node, "-e", NODE_PARSE], input=text, capture_output=True, text=True,
                            encoding="utf-8", timeout=60, check=False)
    assert result.returncode == 0, f"JSON.parse refused the document:\n{result.stderr}"
    assert json.loads(result.stdout) == document
    return document


def non_finite_rvc_file():
    """An RVC inference model whose metadata holds NaN, Infinity and -Infinity in every place
    `inspect` reports: scalar fields, a sample rate, lists and tuples, and the config list."""
    from support import rvc_model

    checkpoint = rvc_model.rvc_inference_file(rvc_model.build(parametrized=True))
    checkpoint["config"][7] = NAN  # a config list holding NaN: not reported, but read
    checkpoint["config"][16] = INF
    checkpoint["sr"] = INF
    checkpoint["f0"] = NEGATIVE_NAN
    checkpoint["epoch"] = -INF
    checkpoint["step"] = NAN
    checkpoint["speakers_id"] = [1.5, NAN, INF, -INF, None, "x", -0.0]
    checkpoint["dataset_length"] = (INF, 2)
    checkpoint["info"] = "NaN"  # a string: the same in JSON, told apart in text
    return checkpoint


EXPECTED_METADATA = {
    "sr": "Infinity", "f0": "NaN", "epoch": "-Infinity", "step": "NaN",
    "speakers_id": [1.5, "NaN", "Infinity", "-Infinity", None, "x", -0.0],
    "dataset_length": ["Infinity", 2], "info": "NaN",
}


def fields(found):
    """An inspect entry's metadata fields, whichever group (rvc, applio ...) each is under."""
    return {name: value for group in found["metadata"].values() for name, value in group.items()}


@pytest.fixture(params=["zip", "legacy"])
def non_finite_file(request, tmp_path):
    path = tmp_path / "voice.pth"
    torch.save(non_finite_rvc_file(), path, _use_new_zipfile_serialization=request.param == "zip")
    return path


def test_inspect_json_spells_non_finite_metadata_as_strings(non_finite_file, capsys):
    code, out = run(capsys, "inspect", "--output", "json", non_finite_file)
    document = strictly_parsed(out)
    [found] = document["files"]
    assert code == 0 and found["status"] == "needs-fix" and found["kind"] == "RVC inference model"
    metadata = fields(found)
    for name, value in EXPECTED_METADATA.items():
        assert metadata[name] == value, name
    assert math.copysign(1, metadata["speakers_id"][-1]) == -1  # -0.0 is JSON: kept as it is
    assert metadata["version"] == "v2" and metadata["model_name"] == "voice"


def test_inspect_text_still_shows_the_floats(non_finite_file, capsys):
    code, out = run(capsys, "inspect", non_finite_file)
    assert code == 0
    assert "  rvc        version 'v2', sr inf, f0 nan, info 'NaN'" in out.splitlines()
    assert "epoch -inf, step nan" in out and "speakers_id [1.5, nan, inf, -inf, None, 'x', -0.0]" in out


def test_a_training_checkpoint_with_a_nan_learning_rate(tmp_path, capsys):
    from support import rvc_model

    checkpoint, _ = rvc_model.training_checkpoint(rvc_model.build(parametrized=True))
    checkpoint.update(learning_rate=NAN, iteration=-INF)
    path = tmp_path / "G_1.pth"
    torch.save(checkpoint, path)
    code, out = run(capsys, "inspect", "--output", "json", path)
    [found] = strictly_parsed(out)["files"]
    assert code == 0 and found["kind"] == "RVC training checkpoint"
    assert found["metadata"] == {"training": {"iteration": "-Infinity", "learning_rate": "NaN", "optimizer": "AdamW"}}


def test_check_fix_and_report_documents_are_strict_json(non_finite_file, tmp_path, capsys):
    report = tmp_path / "report.json"
    code, out = run(capsys, "check", "--output", "json", non_finite_file)
    assert code == 1 and strictly_parsed(out)["files"][0]["status"] == "needs-fix"
    code, out = run(capsys, "check", "--report", report, non_finite_file)
    assert code == 1 and strictly_parsed(report.read_text(encoding="utf-8"))["files"][0]["status"] == "needs-fix"
    code, out = run(capsys, "fix", "--output", "json", "--report", report, non_finite_file)
    assert code == 0 and strictly_parsed(out) == strictly_parsed(report.read_text(encoding="utf-8"))
    assert strictly_parsed(out)["files"][0]["status"] == "fixed"
    # The fixed file keeps its floats, and inspect still spells them as strings.
    code, out = run(capsys, "inspect", "--output", "json", non_finite_file)
    [found] = strictly_parsed(out)["files"]
    assert found["keys"]["style"] == "legacy"
    assert {name: fields(found)[name] for name in EXPECTED_METADATA} == EXPECTED_METADATA


@pytest.mark.parametrize("value", [NAN, INF, -INF, NEGATIVE_NAN, [1.0, NAN], {"a": (INF,)}],
                         ids=["nan", "inf", "-inf", "negative-nan", "in-a-list", "in-a-dict"])
def test_the_encoder_refuses_a_non_finite_float(value):
    """A float that is not finite reaching the encoder is a bug: it raises, never writes NaN."""
    with pytest.raises(ValueError, match="not JSON compliant"):
        _write_document(io.StringIO(), "0", files=[{"metadata": {"sr": value}}])


def test_json_value_follows_lists_tuples_and_dicts():
    value = {"a": [NAN, (INF, -INF, NEGATIVE_NAN)], "b": {"c": -INF}, "d": 1.0, "e": 2, "f": True,
             "g": None, "h": "Infinity"}
    assert json_value(value) == {"a": ["NaN", ["Infinity", "-Infinity", "NaN"]], "b": {"c": "-Infinity"},
                                 "d": 1.0, "e": 2, "f": True, "g": None, "h": "Infinity"}
    assert json_value(1e308) == 1e308 and json_value(-0.0) == 0.0 and type(json_value(True)) is bool


def test_an_inspection_with_non_finite_metadata_renders_as_strict_json():
    inspection = Inspection("x.pth")
    inspection.metadata = {"sr": INF, "speakers_id": [NAN, -INF], "learning_rate": 1e-4}
    document = strictly_parsed(render_inspections([inspection], "0"))
    assert document["files"][0]["metadata"] == {"sr": "Infinity", "speakers_id": ["NaN", "-Infinity"],
                                                "learning_rate": 1e-4}
