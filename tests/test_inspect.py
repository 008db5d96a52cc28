"""`inspect` on real files: every figure it reports is checked against torch, zipfile or pickletools."""

import json
import pickletools
import zipfile

import pytest
from support.cli_run import run

pytest.importorskip("torch", reason="torch==2.13.0 is needed to make and load real checkpoints")

from support import rvc_model  # noqa: E402
from support.torch_helpers import load, torch  # noqa: E402
from support.zip_bytes import write_zip, zip_records  # noqa: E402


def inspect_json(capsys, *paths):
    code, out = run(capsys, "inspect", "--output", "json", *paths)
    document = json.loads(out)
    assert document["command"] == "inspect" and document["exit_code"] == code
    return code, document["files"]


def save(path, obj):
    torch.save(obj, path)
    return path


def torch_facts(path):
    """What torch itself says about a file: tensors, their dtypes, the bytes of their storages."""
    tensors = []

    def collect(node):
        if isinstance(node, torch.Tensor):
            tensors.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                collect(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                collect(value)

    collect(load(path))
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    dtypes = {}
    for t in tensors:
        name = str(t.dtype).removeprefix("torch.")
        dtypes[name] = dtypes.get(name, 0) + 1
    return len(tensors), sum(storages.values()), dtypes


def pickle_facts(path):
    """The protocol and globals of data.pkl, as pickletools (the standard library's disassembler) reads them."""
    with zipfile.ZipFile(path) as archive:
        [name] = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        data = archive.read(name)
    protocol, names = None, []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "PROTO":
            protocol = arg
        elif opcode.name == "GLOBAL":
            dotted = arg.replace(" ", ".")
            if dotted not in names:
                names.append(dotted)
    return protocol, names


def test_inspect_describes_an_rvc_model_as_torch_and_zipfile_see_it(rvc_file, capsys):
    code, [found] = inspect_json(capsys, rvc_file)
    assert code == 0 and found["status"] == "ok"

    with zipfile.ZipFile(rvc_file) as archive:
        records = archive.infolist()
        alignment = int(archive.read("voice/.storage_alignment"))
    assert found["container"] == {"format": "zip", "bytes": rvc_file.stat().st_size, "prefix": "voice/",
                                  "alignment": alignment, "records": len(records), "zip64": False}
    protocol, names = pickle_facts(rvc_file)
    assert found["pickle"] == {"protocol": protocol, "globals": names}

    count, nbytes, dtypes = torch_facts(rvc_file)
    assert found["tensors"] == {"count": count, "bytes": nbytes, "dtypes": dtypes, "devices": {"cpu": count}}

    weight = load(rvc_file)["weight"]
    assert found["keys"]["style"] == "parametrized"
    assert found["keys"]["parametrized_keys"] == len(rvc_model.parametrized_keys(weight)) == 48
    assert found["keys"]["families"] == {"weight-norm": {"parametrized": 24, "legacy": 0},
                                         "spectral-norm": {"parametrized": 0, "legacy": 0}}
    assert found["kind"] == "RVC inference model"
    saved = rvc_model.rvc_inference_file(rvc_model.build(parametrized=True))
    assert found["metadata"] == {name: saved[name] for name in found["metadata"]}
    assert set(found["metadata"]) == set(saved) - {"weight", "config"}
    assert found["vocoder"] is None
    assert found["loads_in_legacy_rvc"] == {"answer": "no",
                                            "reasons": ["48 parametrized keys; run `pth-legacy-keys fix`"]}


def test_after_fix_inspect_says_it_loads_and_legacy_code_agrees(rvc_file, capsys):
    code, out = run(capsys, "fix", rvc_file)
    assert code == 0
    code, [found] = inspect_json(capsys, rvc_file)
    assert found["keys"]["style"] == "legacy"
    assert found["keys"]["families"]["weight-norm"] == {"parametrized": 0, "legacy": 24}
    assert found["loads_in_legacy_rvc"] == {
        "answer": "yes",
        "reasons": ["legacy names in all 24 weight-norm modules, and RVC's HiFi-GAN vocoder (no sign of another)"]}
    legacy = rvc_model.inference_model(parametrized=False)
    result = legacy.load_state_dict(load(rvc_file)["weight"], strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_inspect_text_output(rvc_file, capsys):
    code, out = run(capsys, "inspect", rvc_file)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(rvc_file)
    assert "  keys       parametrized: 24 weight-norm modules (48 parametrized keys)" in lines
    assert "  kind       RVC inference model" in lines
    assert "  rvc        version 'v2', sr '40k', f0 1, info '300epoch'" in lines
    assert any(line.startswith("  applio     model_name 'voice', author 'someone'") for line in lines)
    assert lines[-1] == "  verdict    loads in legacy RVC loaders: no (48 parametrized keys; run `pth-legacy-keys fix`)"


@pytest.mark.parametrize("optimizer, name", [(torch.optim.AdamW, "AdamW"), (torch.optim.Adam, "Adam"),
                                             (torch.optim.SGD, "SGD")])
def test_training_checkpoint(tmp_path, capsys, optimizer, name):
    model = rvc_model.build(parametrized=True)
    opt = optimizer(model.parameters(), lr=1e-4, **({"momentum": 0.9} if name == "SGD" else {}))
    rvc_model.train_steps(model, opt, 1)
    path = save(tmp_path / "G_2333.pth", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                          "learning_rate": 1e-4, "iteration": 2333})
    code, [found] = inspect_json(capsys, path)
    assert found["kind"] == "training checkpoint"
    assert found["metadata"] == {"iteration": 2333, "learning_rate": 1e-4, "optimizer": name}
    assert found["loads_in_legacy_rvc"]["answer"] == "no"
    assert "a training checkpoint, not an inference model" in found["loads_in_legacy_rvc"]["reasons"]
    count, nbytes, _ = torch_facts(path)
    assert (found["tensors"]["count"], found["tensors"]["bytes"]) == (count, nbytes)
    code, out = run(capsys, "inspect", path)
    assert "  verdict    training checkpoint, not an inference model" in out


def applio_file(vocoder=None, extra_modules=()):
    checkpoint = rvc_model.rvc_inference_file(rvc_model.build(parametrized=True))
    if vocoder is None:
        del checkpoint["vocoder"]
    else:
        checkpoint["vocoder"] = vocoder
    for name in extra_modules:
        layer = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(2, 2, 3))
        for key, value in layer.state_dict().items():
            checkpoint["weight"][f"{name}.{key}"] = value.half()
    return checkpoint


@pytest.mark.parametrize("vocoder, modules, name, evidence", [
    ("RefineGAN", (), "RefineGAN", "its vocoder field says 'RefineGAN'"),
    ("MRF HiFi-GAN", (), "MRF HiFi-GAN", "its vocoder field says 'MRF HiFi-GAN'"),
    (None, ("dec.mrfs.0.layers.0.convs1",), "MRF HiFi-GAN", "it has dec.mrfs.* modules"),
    (None, ("dec.upsample_conv_blocks.0.input_conv",), "RefineGAN", "it has dec.upsample_conv_blocks.* modules"),
])
def test_a_vocoder_legacy_rvc_cannot_run_is_named_by_inspect_check_and_fix(
        tmp_path, capsys, vocoder, modules, name, evidence):
    path = save(tmp_path / "applio.pth", applio_file(vocoder, modules))
    warning = f"vocoder {name} ({evidence}): legacy RVC software cannot load it whatever its key names"

    code, [found] = inspect_json(capsys, path)
    assert found["vocoder"] == {"name": name, "evidence": evidence, "legacy_rvc": False}
    assert found["loads_in_legacy_rvc"]["answer"] == "no"
    assert found["loads_in_legacy_rvc"]["reasons"][0].startswith(warning)

    code, out = run(capsys, "check", path)
    assert code == 1 and f"{path}: warning: {warning}" in out.splitlines()
    code, out = run(capsys, "fix", path)
    assert code == 0
    assert out.splitlines()[:2] == [f"{path}: fixed: renamed {found['keys']['parametrized_keys']} keys to legacy names",
                                    f"{path}: warning: {warning}"]
    # A fixed file is no more loadable: inspect still says no, for the vocoder alone.
    code, [after] = inspect_json(capsys, path)
    assert after["keys"]["style"] == "legacy"
    assert after["loads_in_legacy_rvc"] == {"answer": "no",
                                            "reasons": [warning]}
    assert "run `pth-legacy-keys fix`" not in str(found["loads_in_legacy_rvc"])  # a fix would not help
    # Quiet check of the fixed file still warns, and the JSON carries the warning.
    code, out = run(capsys, "check", "-q", path)
    assert code == 0 and out.splitlines() == [f"{path}: ok (legacy names)", f"{path}: warning: {warning}"]
    code, out = run(capsys, "check", "--output", "json", path)
    assert json.loads(out)["files"][0]["warnings"] == [warning]


def test_the_hifi_gan_vocoder_field_is_no_warning(rvc_file, capsys):
    code, out = run(capsys, "check", "-v", rvc_file)
    assert "warning" not in out


def test_mixed_key_styles_and_spectral_norm(tmp_path, capsys):
    from support.rvc_model import spectral_discriminator

    state = spectral_discriminator(parametrized=True).state_dict()
    state.update({f"legacy.{k}": v for k, v in spectral_discriminator(parametrized=False).state_dict().items()})
    path = save(tmp_path / "D.pth", state)
    code, [found] = inspect_json(capsys, path)
    assert found["keys"]["style"] == "mixed"
    assert found["keys"]["families"] == {"weight-norm": {"parametrized": 1, "legacy": 1},
                                         "spectral-norm": {"parametrized": 2, "legacy": 2}}
    assert found["kind"] == "state dict"
    code, out = run(capsys, "inspect", path)
    assert ("  keys       mixed: 1 parametrized weight-norm module, 1 legacy weight-norm module, "
            "2 parametrized spectral-norm modules, 2 legacy spectral-norm modules (8 parametrized keys)") in out


def test_devices_are_those_the_storages_were_saved_from(tmp_path, capsys):
    """A file saved on a GPU names cuda:0 in each storage reference: rewrite 'cpu' to that."""
    path = save(tmp_path / "gpu.pth", {"a": torch.ones(2), "b": torch.zeros(3, dtype=torch.bfloat16)})
    records = zip_records(path)
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    assert records[0][0].endswith("data.pkl") and records[0][1].count(cpu) == 1  # memoized after its first use
    records[0] = (records[0][0], records[0][1].replace(cpu, cuda))
    write_zip(path, records)
    code, [found] = inspect_json(capsys, path)
    assert found["tensors"]["devices"] == {"cuda:0": 2}
    assert found["tensors"]["dtypes"] == {"float32": 1, "bfloat16": 1}
    code, out = run(capsys, "inspect", path)
    assert "2, 14 bytes: bfloat16 x1, float32 x1; saved from cuda:0" in out


def test_views_share_one_storage(tmp_path, capsys):
    base = torch.arange(100, dtype=torch.float32)
    path = save(tmp_path / "views.pth", {"a": base, "b": base[10:20], "c": base.view(10, 10)})
    code, [found] = inspect_json(capsys, path)
    assert found["tensors"]["count"] == 3 and found["tensors"]["bytes"] == 400 == torch_facts(path)[1]


def test_safetensors_and_legacy_format(tmp_path, capsys):
    from support.cli_run import LEGACY_FORMAT

    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "voice.safetensors"
    weights = rvc_model.rvc_inference_file(rvc_model.build(parametrized=True))["weight"]
    safetensors_torch.save_file(weights, str(path), metadata={"format": "pt"})
    code, [found, legacy] = inspect_json(capsys, path, LEGACY_FORMAT)
    data = path.read_bytes()
    assert found["container"] == {"format": "safetensors", "bytes": len(data),
                                  "header_bytes": 8 + int.from_bytes(data[:8], "little"),
                                  "metadata": {"format": "pt"}}
    assert found["pickle"] is None
    assert found["tensors"] == {"count": len(weights), "bytes": sum(t.nbytes for t in weights.values()),
                                "dtypes": {"float16": len(weights)}, "devices": {}}
    assert found["keys"]["parametrized_keys"] == 48
    assert legacy["container"] == {"format": "legacy", "bytes": LEGACY_FORMAT.stat().st_size}
    assert legacy["keys"]["parametrized_keys"] == 4
    assert legacy["pickle"]["protocol"] == 2


def test_inspect_of_files_it_cannot_read(tmp_path, capsys):
    config = tmp_path / "easy-install.pth"
    config.write_text("./some.egg\n")
    missing = tmp_path / "missing.pth"
    code, out = run(capsys, "inspect", config, missing)
    assert code == 2
    assert out.splitlines() == [f"{config}: skipped: a Python path-configuration file (site-packages .pth), "
                                "not a checkpoint", "", f"{missing}: error: no such file"]


def test_a_list_nested_in_itself_through_the_memo_is_not_followed(tmp_path, capsys):
    """`info` as 64 references to one list of 64 references to one list ...: 64**6 paths, 7 lists."""
    nested = ["x"]
    for _ in range(6):
        nested = [nested] * 64
    path = save(tmp_path / "nested.pth", {"weight": {"a": torch.ones(1)}, "config": [1], "info": nested,
                                          "vocoder": "hifigan"})
    code, [found] = inspect_json(capsys, path)
    assert code == 0 and "info" in found["metadata"] and found["metadata"]["info"] is None
    assert found["vocoder"] is None  # Applio's HiFi-GAN, however it is spelled
