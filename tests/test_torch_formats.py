"""Every kind of checkpoint torch writes, converted and loaded back by torch."""

import hashlib
import os
import pickle
import shutil
import zipfile
from collections import OrderedDict

import pytest

pytest.importorskip("torch", reason="torch==2.13.0 is needed to make and load real checkpoints")

from support import rvc_model  # noqa: E402
from pth_legacy_keys import fix, scan
from pth_legacy_keys.cli import main
from support.rvc_model import spectral_discriminator  # noqa: E402
from support.torch_helpers import assert_bit_equal, assert_same_tree, load, load_every_way, torch

nn = torch.nn
parametrize = nn.utils.parametrize
new_weight_norm = nn.utils.parametrizations.weight_norm


def roundtrip(path, legacy_state_dict, *, keys_renamed):
    """Fix `path`, compare with the legacy model's state dict, and fix back to the original bytes."""
    original_bytes = path.read_bytes()
    report = fix(path)
    assert report.status == "fixed" and len(report.renames) == keys_renamed
    assert_same_tree(dict(load_every_way(path)), dict(legacy_state_dict))
    assert fix(path, to="parametrized").status == "fixed"
    assert path.read_bytes() == original_bytes


def same_seed_pair(make, **norm_kwargs):
    torch.manual_seed(0)
    parametrized = new_weight_norm(make(), **norm_kwargs)
    torch.manual_seed(0)
    legacy = nn.utils.weight_norm(make(), **norm_kwargs)
    return parametrized, legacy


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_dtypes(tmp_path, dtype):
    parametrized, legacy = same_seed_pair(lambda: nn.Conv1d(3, 5, 3))
    path = tmp_path / "model.pth"
    torch.save({k: v.to(dtype) for k, v in parametrized.state_dict().items()}, path)
    roundtrip(path, {k: v.to(dtype) for k, v in legacy.state_dict().items()}, keys_renamed=2)


def test_weight_norm_over_all_dimensions_has_a_scalar_magnitude(tmp_path):
    parametrized, legacy = same_seed_pair(lambda: nn.Linear(4, 3), dim=None)
    assert parametrized.state_dict()["parametrizations.weight.original0"].shape == ()
    path = tmp_path / "model.pth"
    torch.save(parametrized.state_dict(), path)
    roundtrip(path, legacy.state_dict(), keys_renamed=2)


def test_any_parameter_name_lstm_hidden_weights(tmp_path):
    parametrized, legacy = same_seed_pair(lambda: nn.LSTM(2, 3), name="weight_hh_l0")
    path = tmp_path / "lstm.pth"
    torch.save(parametrized.state_dict(), path)
    roundtrip(path, legacy.state_dict(), keys_renamed=2)
    fix(path)
    assert "weight_hh_l0_g" in load(path)


def test_keep_vars_parameters(tmp_path):
    parametrized, legacy = same_seed_pair(lambda: nn.Conv1d(2, 2, 1))
    path = tmp_path / "model.pth"
    torch.save(parametrized.state_dict(keep_vars=True), path)
    assert fix(path).status == "fixed"
    loaded = torch.load(path, weights_only=True)
    assert isinstance(loaded["weight_g"], nn.Parameter)
    assert_same_tree({k: v.detach() for k, v in loaded.items()}, dict(legacy.state_dict()))


def test_model_and_ema_sharing_key_strings_are_both_renamed(tmp_path):
    state_dict = rvc_model.build(parametrized=True).state_dict()
    ema = OrderedDict((key, tensor.clone() * 0.5) for key, tensor in state_dict.items())
    path = tmp_path / "G_1.pth"
    torch.save({"model": state_dict, "ema": ema}, path)
    with zipfile.ZipFile(path) as archive:
        pickled = archive.read("G_1/data.pkl")
    key = rvc_model.parametrized_keys(state_dict)[0].encode()
    assert pickled.count(key) == 1  # written once, fetched from the memo for the EMA copy

    report = fix(path)
    assert report.status == "fixed"
    assert {r.where for r in report.renames} == {"model", "ema"}
    loaded = load_every_way(path)
    legacy_keys = list(rvc_model.legacy_names(state_dict))
    assert list(loaded["model"]) == legacy_keys and list(loaded["ema"]) == legacy_keys
    assert_bit_equal(loaded["ema"][legacy_keys[-1]], ema[list(ema)[-1]])


def test_legacy_non_zip_format(tmp_path):
    parametrized, legacy = same_seed_pair(lambda: nn.Conv1d(2, 4, 3))
    path = tmp_path / "old.pth"
    torch.save({"model": parametrized.state_dict(), "step": 3}, path, _use_new_zipfile_serialization=False)
    assert scan(path).format == "legacy"
    original_bytes = path.read_bytes()
    assert fix(path).status == "fixed"
    loaded = torch.load(path, weights_only=True)
    assert_same_tree(dict(loaded["model"]), dict(legacy.state_dict()))
    assert loaded["step"] == 3
    assert fix(path, to="parametrized").status == "fixed"
    assert path.read_bytes() == original_bytes


def test_storage_alignment_4096(tmp_path):
    parametrized, legacy = same_seed_pair(lambda: nn.Conv1d(2, 4, 3))
    path = tmp_path / "aligned.pth"
    config = torch.utils.serialization.config.save
    config.storage_alignment = 4096
    try:
        torch.save(parametrized.state_dict(), path)
    finally:
        config.storage_alignment = 64
    with zipfile.ZipFile(path) as archive:
        assert archive.read("aligned/.storage_alignment") == b"4096"
    roundtrip(path, legacy.state_dict(), keys_renamed=2)


def test_non_ascii_file_name_keeps_the_archive_prefix(tmp_path):
    parametrized, legacy = same_seed_pair(lambda: nn.Conv1d(2, 4, 3))
    path = tmp_path / "голос.pth"
    torch.save(parametrized.state_dict(), path)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist()[0] == "archive/data.pkl"
    renamed = tmp_path / "voice.pth"
    os.rename(path, renamed)  # the prefix no longer matches the name: it must be kept as is
    roundtrip(renamed, legacy.state_dict(), keys_renamed=2)


def test_tensors_of_every_rebuild_kind_pass_untouched(tmp_path):
    """fp8 and uint16 use _rebuild_tensor_v3 and UntypedStorage; views share a storage."""
    parametrized, _ = same_seed_pair(lambda: nn.Conv1d(2, 4, 3))
    base = torch.arange(12.0)
    extra = {
        "f8": torch.ones(3, dtype=torch.float8_e4m3fn),
        "u16": torch.tensor([1, 2, 3], dtype=torch.int32).to(torch.uint16),
        "flag": torch.tensor([True, False]), "i8": torch.tensor([-3], dtype=torch.int8),
        "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3), "view_a": base[2:5], "view_b": base[::3],
    }
    checkpoint = {"model": parametrized.state_dict(), "extra": extra, "big": 2 ** 80, "raw": b"\x00\xff",
                  "name": "model.parametrizations.weight.original0"}
    path = tmp_path / "misc.pth"
    torch.save(checkpoint, path)
    assert fix(path).status == "fixed"
    loaded = load_every_way(path)
    assert_same_tree(loaded["extra"], extra)
    assert loaded["big"] == 2 ** 80 and loaded["raw"] == b"\x00\xff"
    assert loaded["name"] == "model.parametrizations.weight.original0"  # a value, never renamed


def test_stacked_parametrization_is_refused(tmp_path, capsys):
    class Scale(nn.Module):
        def forward(self, weight):
            return weight * 2

    model = new_weight_norm(nn.Conv1d(2, 4, 3))
    parametrize.register_parametrization(model, "weight", Scale())
    path = tmp_path / "stacked.pth"
    torch.save(model.state_dict(), path)
    before = path.read_bytes()
    assert main(["fix", str(path)]) == 1
    assert "cannot convert weight: a second parametrization is stacked" in capsys.readouterr().out
    assert path.read_bytes() == before


def test_custom_two_tensor_parametrization_is_refused(tmp_path, capsys):
    class LowRank(nn.Module):
        def forward(self, a, b):
            return a @ b

        def right_inverse(self, weight):
            return weight[:, :1].clone(), weight[:1, :].clone()

    model = nn.Linear(3, 3)
    parametrize.register_parametrization(model, "weight", LowRank())
    path = tmp_path / "custom.pth"
    torch.save(model.state_dict(), path)
    before = path.read_bytes()
    assert main(["check", str(path)]) == 1
    assert main(["fix", str(path)]) == 1
    out = capsys.readouterr().out
    assert "cannot convert weight: original0 of shape (3, 1) is not a weight-norm magnitude" in out
    assert path.read_bytes() == before


def test_legacy_spectral_norm_is_never_turned_into_weight_norm(tmp_path, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.utils.spectral_norm(nn.Conv1d(2, 2, 1)), nn.utils.weight_norm(nn.Conv1d(2, 2, 1)))
    state_dict = model.state_dict()
    state_dict["0.weight_g"] = torch.ones(2, 1, 1)  # now 0.weight_g / 0.weight_v look like weight norm
    path = tmp_path / "D_1.pth"
    torch.save(state_dict, path)
    before = path.read_bytes()
    assert main(["fix", "--to", "parametrized", str(path)]) == 1
    assert "0.weight_orig is present: 0.weight_v belongs to a legacy spectral norm" in capsys.readouterr().out
    assert path.read_bytes() == before


def test_committed_fixtures_are_real_torch_output():
    """The torch-free tests start from tests/data; prove those files are what make_fixtures says."""
    here = os.path.join(os.path.dirname(__file__), "data")
    import sys

    sys.path.insert(0, here)
    try:
        import make_fixtures
    finally:
        sys.path.remove(here)
    parametrized = make_fixtures.tiny_model(parametrized=True).state_dict()
    legacy = make_fixtures.tiny_model(parametrized=False).state_dict()
    assert_same_tree(dict(load(os.path.join(here, "parametrized.bin"))), dict(parametrized))
    assert_same_tree(dict(load(os.path.join(here, "legacy.bin"))), dict(legacy))
    assert_same_tree(dict(load(os.path.join(here, "parametrized_legacy_format.bin"))), dict(parametrized))


def test_never_unpickles(tmp_path, monkeypatch):
    """check and fix succeed with pickle's loaders sabotaged: nothing of ours calls them."""
    path = tmp_path / "voice.pth"
    torch.save(rvc_model.rvc_inference_file(rvc_model.build(parametrized=True)), path)

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling is forbidden")

    for name in ("load", "loads", "Unpickler", "_Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert main(["check", str(path)]) == 1
    assert main(["fix", str(path)]) == 0


@pytest.mark.slow
def test_file_over_4_gib_uses_zip64(tmp_path):
    if shutil.disk_usage(tmp_path).free < 10 * 2 ** 30:
        pytest.skip("needs 10 GiB free for a 4 GiB checkpoint and its rewrite")
    parametrized, legacy = same_seed_pair(lambda: nn.Conv1d(2, 4, 3))
    big = torch.zeros(2 ** 30 + 16)  # 4 GiB + 64 bytes: a record needing zip64 sizes
    path = tmp_path / "big.pth"
    state_dict = OrderedDict(list(parametrized.state_dict().items()))
    state_dict["big"] = big
    state_dict["after"] = torch.ones(5)  # a record whose header offset needs zip64
    torch.save(state_dict, path)
    assert os.path.getsize(path) > 2 ** 32
    original_digest = sha256_of(path)
    assert fix(path).status == "fixed"
    loaded = load(path, mmap=True)
    assert_same_tree({k: v for k, v in loaded.items() if k not in ("big",)},
                     {**{k: v for k, v in legacy.state_dict().items()}, "after": torch.ones(5)})
    assert loaded["big"].shape == big.shape and not loaded["big"].any()
    assert fix(path, to="parametrized").status == "fixed"
    assert sha256_of(path) == original_digest
    path.unlink()  # 4 GiB: not left among pytest's kept temporary folders


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def test_real_torchscript_archive_is_refused_as_code_carrying(tmp_path, capsys):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(new_weight_norm(nn.Conv1d(2, 2, 1)).eval()), path)
    before = path.read_bytes()
    for command in ("check", "fix", "inspect"):
        assert main([command, str(path)]) == 2
        out = capsys.readouterr().out
        assert f"{path}: refused: a code-carrying archive (TorchScript): torch.load would run its code" in out
    assert path.read_bytes() == before


def test_spectral_norm_converts_to_legacy_names_and_back(tmp_path, capsys):
    parametrized = spectral_discriminator(parametrized=True)
    path = tmp_path / "D_2333.pth"
    torch.save(parametrized.state_dict(), path)
    original_bytes = path.read_bytes()
    assert main(["check", str(path)]) == 1
    assert "8 parametrized weight-norm and spectral-norm keys in 3 modules" in capsys.readouterr().out

    assert fix(path).status == "fixed"
    legacy = spectral_discriminator(parametrized=False)
    result = legacy.load_state_dict(load_every_way(path), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert list(load(path)) == list(legacy.state_dict())
    x = torch.randn(1, 2, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_bit_equal(legacy(x), parametrized(x))

    report = fix(path, to="parametrized", families=("weight-norm", "spectral-norm"))  # asked for: see test_direction_defaults
    assert report.status == "fixed" and report.families == {"weight-norm": 1, "spectral-norm": 2}
    assert path.read_bytes() == original_bytes


def test_a_legacy_spectral_norm_model_converts_to_parametrized(tmp_path):
    legacy = spectral_discriminator(parametrized=False)
    path = tmp_path / "D_1.pth"
    torch.save(legacy.state_dict(), path)
    assert fix(path, to="parametrized", families=("weight-norm", "spectral-norm")).status == "fixed"
    parametrized = spectral_discriminator(parametrized=True)
    result = parametrized.load_state_dict(load(path), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(1, 2, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_bit_equal(parametrized(x), legacy(x))


def test_only_weight_norm_leaves_spectral_norm_alone(tmp_path, capsys):
    path = tmp_path / "D_1.pth"
    torch.save(spectral_discriminator(parametrized=True).state_dict(), path)
    assert main(["fix", "--only", "weight-norm", str(path)]) == 0
    assert "fixed: renamed 2 keys to legacy names" in capsys.readouterr().out
    keys = list(load(path))
    assert "2.weight_g" in keys and "0.parametrizations.weight.original" in keys
    assert main(["check", "--only", "weight-norm", str(path)]) == 0
    assert main(["check", str(path)]) == 1
