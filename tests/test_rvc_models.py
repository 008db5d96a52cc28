"""The product's promise on real files: an RVC model and a training checkpoint, before and after."""

import os
import zipfile

import pytest

pytest.importorskip("torch", reason="torch==2.13.0 is needed to make and load real checkpoints")

from support import rvc_model  # noqa: E402
from pth_legacy_keys.cli import main
from support.torch_helpers import assert_bit_equal, assert_same_tree, load, load_every_way, records, torch


@pytest.fixture
def training_file(tmp_path):
    path = tmp_path / "G_2333.pth"
    checkpoint, _ = rvc_model.training_checkpoint(rvc_model.build(parametrized=True))
    torch.save(checkpoint, path)
    return path


def test_check_reports_exactly_the_parametrized_keys(rvc_file, capsys):
    weight = load(rvc_file)["weight"]
    expected = rvc_model.parametrized_keys(weight)
    assert len(expected) == 2 * 24  # 2 ups + 2x6 resblock convs + 2x5 flow WN layers

    assert main(["check", "-v", str(rvc_file)]) == 1

    out = capsys.readouterr().out
    reported = [line.split(": ", 1)[1].split(" -> ")[0] for line in out.splitlines() if " -> " in line]
    assert reported == expected
    assert f"{rvc_file}: 48 parametrized weight-norm keys in 24 modules (e.g. {expected[0]})" in out


def test_unfixed_file_silently_loses_weights_in_a_legacy_loader(rvc_file):
    """The failure we exist for: strict=False ignores every parametrized key, with no error."""
    legacy = rvc_model.inference_model(parametrized=False)
    result = legacy.load_state_dict(load(rvc_file)["weight"], strict=False)
    legacy_keys = [k for k in legacy.state_dict() if k.endswith(("_g", "_v"))]
    assert sorted(result.missing_keys) == sorted(legacy_keys)
    assert len(result.unexpected_keys) == len(legacy_keys)


def test_fixed_rvc_model_loads_strictly_in_legacy_code_with_identical_output(rvc_file, capsys):
    original = load(rvc_file)

    assert main(["fix", str(rvc_file)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{rvc_file}: fixed: renamed 48 keys to legacy names"

    fixed = load_every_way(rvc_file)
    legacy = rvc_model.inference_model(parametrized=False)
    result = legacy.load_state_dict(fixed["weight"], strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []

    renamed = rvc_model.legacy_names(original["weight"])
    assert list(fixed["weight"]) == list(renamed)
    for key, tensor in renamed.items():
        assert_bit_equal(fixed["weight"][key], tensor)
    for key in original:
        if key != "weight":
            assert fixed[key] == original[key]

    parametrized = rvc_model.inference_model(parametrized=True)
    parametrized.load_state_dict(original["weight"], strict=True)
    x, speaker = rvc_model.sample_input()
    with torch.no_grad():
        expected, actual = parametrized(x, speaker), legacy(x, speaker)
    assert_bit_equal(actual, expected)


def test_fixed_training_checkpoint_resumes_identically(training_file):
    original = load(training_file)
    assert main(["fix", str(training_file)]) == 0
    fixed = load_every_way(training_file)

    legacy = rvc_model.build(parametrized=False)
    result = legacy.load_state_dict(fixed["model"], strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert fixed["iteration"] == 1 and fixed["learning_rate"] == 1e-4
    names = [name for name, _ in legacy.named_parameters()]
    assert fixed["optimizer"]["param_groups"][0]["param_names"] == names

    legacy_optimizer = torch.optim.AdamW(list(legacy.named_parameters()), lr=1e-4)
    legacy_optimizer.load_state_dict(fixed["optimizer"])
    parametrized = rvc_model.build(parametrized=True)
    parametrized.load_state_dict(original["model"], strict=True)
    parametrized_optimizer = torch.optim.AdamW(list(parametrized.named_parameters()), lr=1e-4)
    parametrized_optimizer.load_state_dict(original["optimizer"])

    rvc_model.train_steps(legacy, legacy_optimizer, 1, seed=3)
    rvc_model.train_steps(parametrized, parametrized_optimizer, 1, seed=3)
    after = rvc_model.legacy_names(parametrized.state_dict())
    for key, tensor in legacy.state_dict().items():
        assert_bit_equal(tensor, after[key])


def test_only_the_pickle_record_changes(rvc_file, tmp_path):
    before = records(rvc_file)
    assert main(["fix", str(rvc_file)]) == 0
    after = records(rvc_file)
    assert [name for name, _ in after] == [name for name, _ in before]
    changed = [name for (name, a), (_, b) in zip(before, after) if a != b]
    assert changed == ["voice/data.pkl"]


def test_fix_then_fix_back_gives_the_torch_save_file_byte_for_byte(rvc_file, training_file):
    for path in (rvc_file, training_file):
        original = path.read_bytes()
        assert main(["fix", str(path)]) == 0
        assert path.read_bytes() != original
        assert main(["fix", "--to", "parametrized", str(path)]) == 0
        assert path.read_bytes() == original


def test_converting_a_legacy_save_gives_what_torch_saves_for_the_parametrized_model(tmp_path):
    """Going the other way: a legacy state dict renamed equals the parametrized one's tensors."""
    legacy_path = tmp_path / "legacy.pth"
    torch.save(rvc_model.build(parametrized=False).state_dict(), legacy_path)
    assert main(["check", "--to", "parametrized", str(legacy_path)]) == 1
    assert main(["fix", "--to", "parametrized", str(legacy_path)]) == 0
    model = rvc_model.build(parametrized=True)
    result = model.load_state_dict(load_every_way(legacy_path), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert_same_tree(dict(load(legacy_path)), dict(rvc_model.build(parametrized=True).state_dict()))


def test_second_fix_writes_nothing(rvc_file):
    assert main(["fix", str(rvc_file)]) == 0
    stat_before, bytes_before = os.stat(rvc_file), rvc_file.read_bytes()
    assert main(["fix", str(rvc_file)]) == 0
    stat_after = os.stat(rvc_file)
    assert (stat_after.st_mtime_ns, stat_after.st_ino) == (stat_before.st_mtime_ns, stat_before.st_ino)
    assert rvc_file.read_bytes() == bytes_before


def test_same_input_same_output(tmp_path, rvc_file):
    copy = tmp_path / "copy" / "voice.pth"
    copy.parent.mkdir()
    copy.write_bytes(rvc_file.read_bytes())
    assert main(["fix", str(rvc_file), str(copy)]) == 0
    assert copy.read_bytes() == rvc_file.read_bytes()


def test_check_does_not_read_tensor_data(tmp_path, monkeypatch):
    """A check opens the zip directory and the pickle: reads stay small whatever the tensors weigh."""
    from pth_legacy_keys.byte_source import FileSource

    checkpoint = rvc_model.rvc_inference_file(rvc_model.build(parametrized=True))
    checkpoint["weight"]["emb_big.weight"] = torch.zeros(4_000_000, dtype=torch.half)
    rvc_file = tmp_path / "voice.pth"
    torch.save(checkpoint, rvc_file)

    reads = []
    real_read = FileSource.read

    def counting_read(self, offset, size):
        reads.append(size)
        return real_read(self, offset, size)

    monkeypatch.setattr(FileSource, "read", counting_read)
    with zipfile.ZipFile(rvc_file) as archive:
        pickle_size = archive.getinfo("voice/data.pkl").file_size
        tensor_bytes = sum(i.file_size for i in archive.infolist() if "/data/" in i.filename)
    assert main(["check", str(rvc_file)]) == 1
    # the first 4 KiB (torch.load's route), end records, the pickle's local header, and the last record's
    # header and descriptor (checked so that nothing hides between the records and the central directory)
    tail_and_headers = 4096 + 22 + 0xFFFF + 20 + 56 + 30 + len("voice/data.pkl") + 30 + 64 + 2 * 24
    assert sum(reads) <= pickle_size + tail_and_headers
    assert tensor_bytes > 50 * (pickle_size + tail_and_headers)
