"""`fix --verify`: torch loads the original and the rewrite and every tensor must be bit-equal."""

import sys

import pytest
from support.cli_run import run

pytest.importorskip("torch", reason="torch==2.13.0 is needed to make and load real checkpoints")

from support import rvc_model  # noqa: E402
from pth_legacy_keys import engine, verify, writer  # noqa: E402
from support.torch_helpers import load, records, torch  # noqa: E402


def count_tensors(node):
    if isinstance(node, torch.Tensor):
        return 1
    if isinstance(node, dict):
        return sum(count_tensors(value) for value in node.values())
    if isinstance(node, (list, tuple)):
        return sum(count_tensors(value) for value in node)
    return 0


def test_verify_compares_every_tensor_of_an_rvc_model_and_a_training_checkpoint(rvc_file, tmp_path, capsys):
    training = tmp_path / "G_2333.pth"
    checkpoint, _ = rvc_model.training_checkpoint(rvc_model.build(parametrized=True))
    torch.save(checkpoint, training)
    expected = [count_tensors(load(path)) for path in (rvc_file, training)]

    code, out = run(capsys, "fix", "--verify", rvc_file, training)
    assert code == 0
    assert out.splitlines()[:2] == [
        f"{rvc_file}: fixed: renamed 48 keys to legacy names (verified: {expected[0]} tensors bit-equal)",
        f"{training}: fixed: renamed 58 keys to legacy names (verified: {expected[1]} tensors bit-equal)",
    ]
    legacy = rvc_model.inference_model(parametrized=False)
    assert legacy.load_state_dict(load(rvc_file)["weight"], strict=True).missing_keys == []


def test_verify_is_bitwise_nan_and_negative_zero_included(tmp_path, capsys):
    """torch.equal calls NaN unequal to itself and -0.0 equal to 0.0: a bitwise compare does neither."""
    layer = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(2, 2, 3))
    state = layer.state_dict()
    state["parametrizations.weight.original1"][0, 0, 0] = float("nan")
    state["bias"][0] = -0.0
    state["bf16"] = torch.tensor([float("nan"), -0.0], dtype=torch.bfloat16)
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    code, out = run(capsys, "fix", "--verify", "--output", "json", path)
    assert code == 0
    import json

    assert json.loads(out)["files"][0]["verified_tensors"] == 4


def test_verify_catches_a_copy_fault_the_crc_check_missed_and_keeps_the_original(rvc_file, capsys, monkeypatch):
    """Simulate a corrupted copy that slipped past our own CRC check: torch's comparison must stop it."""
    original = rvc_file.read_bytes()

    corrupted = []
    real_write_all = writer._Output._write_all

    def write_other_bytes_than_were_checked(self, views):
        if not corrupted and views and self._piece is not None and "/data/" in self._piece.what and len(views[0]) >= 2:
            corrupted.append(self._piece)
            views = [memoryview(bytes([views[0][0] ^ 0x01]) + bytes(views[0][1:]))] + views[1:]
        real_write_all(self, views)

    monkeypatch.setattr(writer, "SMALL", 0)  # every write handed over on its own, while its record is open
    monkeypatch.setattr(writer._Output, "_write_all", write_other_bytes_than_were_checked)
    code, out = run(capsys, "fix", "--verify", rvc_file)
    assert code == 2
    [line] = [line for line in out.splitlines() if line.startswith(f"{rvc_file}: ")]
    assert line.startswith(f"{rvc_file}: error: --verify: ") and line.endswith("; nothing was changed")
    assert rvc_file.read_bytes() == original
    assert [p.name for p in rvc_file.parent.iterdir()] == [rvc_file.name]  # no temporary file left


def test_compare_names_the_tensor_that_differs(tmp_path):
    state = rvc_model.build(parametrized=True).state_dict()
    original, changed = tmp_path / "original.pth", tmp_path / "changed.pth"
    torch.save(state, original)
    renamed = rvc_model.legacy_names(state)
    renamed._metadata = state._metadata
    key = "dec.ups.0.weight_v"
    renamed[key] = renamed[key].clone()
    renamed[key].view(-1)[5] = torch.nextafter(renamed[key].view(-1)[5], torch.tensor(1.0))  # one ulp
    torch.save(renamed, changed)
    names = {old: rvc_model.legacy_name(old) for old in rvc_model.parametrized_keys(state)}
    with pytest.raises(engine.CheckpointError, match=f"'{key}': its tensor differs from the original's"):
        verify.compare(str(original), str(changed), "zip", names)
    renamed[key] = rvc_model.legacy_names(state)[key]
    torch.save(renamed, changed)
    assert verify.compare(str(original), str(changed), "zip", names) == len(state)
    del renamed[key]
    torch.save(renamed, changed)
    with pytest.raises(engine.CheckpointError, match="its keys differ from the original's"):
        verify.compare(str(original), str(changed), "zip", names)


def test_verify_safetensors(tmp_path, capsys):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "voice.safetensors"
    weights = rvc_model.build(parametrized=True).state_dict()
    safetensors_torch.save_file(weights, str(path))
    code, out = run(capsys, "fix", "--verify", path)
    assert code == 0
    assert out.splitlines()[0] == f"{path}: fixed: renamed 58 keys to legacy names (verified: {len(weights)} " \
                                  "tensors bit-equal)"


def test_verify_without_torch_says_how_to_get_it_and_changes_nothing(rvc_file, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails, as where it is not installed
    before = rvc_file.read_bytes()
    code = engine_cli_main(["fix", "--verify", str(rvc_file)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("pth-legacy-keys: --verify needs torch")
    assert "pip install torch safetensors --extra-index-url https://download.pytorch.org/whl/cpu" in captured.err
    assert rvc_file.read_bytes() == before
    # The Python API says the same, per file.
    report = engine.fix(rvc_file, verify=True)
    assert report.status == "error" and report.reason.startswith("--verify needs torch")
    assert rvc_file.read_bytes() == before


def engine_cli_main(argv):
    from pth_legacy_keys.cli import main

    return main(argv)


def test_torch_never_loads_a_file_our_walk_refused(tmp_path, capsys, monkeypatch):
    from support.hand_made import hand_made_checkpoint, system_payload

    marker = tmp_path / "MARKER"
    path = hand_made_checkpoint(tmp_path / "evil.pth", system_payload(marker))
    loads = []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(args))
    code, out = run(capsys, "fix", "--verify", path)
    assert code == 2 and f"{path}: refused: " in out
    assert loads == [] and not marker.exists()


def test_only_the_pickle_changes_with_verify_too(rvc_file):
    before = records(rvc_file)
    assert engine.fix(rvc_file, verify=True).status == "fixed"
    changed = [name for (name, a), (_, b) in zip(before, records(rvc_file)) if a != b]
    assert changed == ["voice/data.pkl"]
