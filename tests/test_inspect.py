"""`inspect` on real files: every figure it reports is checked against torch, zipfile or pickletools."""

import json
import pickletools
import warnings
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
    assert document["schema_version"] == 2  # inspect's own; check's documents stay at 1
    return code, document["files"]


def verdict(found, about):
    """The entry's verdict about "legacy torch code" or "legacy RVC loaders", or None."""
    [match] = [v for v in found["verdicts"] if v["about"] == about] or [None]
    return match and {"answer": match["answer"], "reasons": match["reasons"]}


TORCH, RVC = "legacy torch code", "legacy RVC loaders"


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
    assert code == 0 and found["status"] == "needs-fix"  # check's word; inspect itself only describes

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
    assert list(found["metadata"]) == ["rvc", "applio"]
    assert found["metadata"]["rvc"] == {name: saved[name] for name in ("version", "sr", "f0", "info")}
    applio = found["metadata"]["applio"]
    assert applio == {name: saved[name] for name in applio}
    assert set(applio) == set(saved) - {"weight", "config", "version", "sr", "f0", "info"}
    assert found["vocoder"] is None
    fix = f"run `pth-legacy-keys fix -- {rvc_file}`"
    assert found["verdicts"] == [
        {"about": TORCH, "answer": "no",
         "reasons": [f"48 parametrized keys, which a strict=False load skips without an error; {fix}"]},
        {"about": RVC, "answer": "no", "reasons": [f"48 parametrized keys; {fix}"]},
    ]


def test_after_fix_inspect_says_it_loads_and_legacy_code_agrees(rvc_file, capsys):
    code, out = run(capsys, "fix", rvc_file)
    assert code == 0
    code, [found] = inspect_json(capsys, rvc_file)
    assert found["status"] == "ok" and found["keys"]["style"] == "legacy"
    assert found["keys"]["families"]["weight-norm"] == {"parametrized": 0, "legacy": 24}
    assert verdict(found, RVC) == {
        "answer": "yes",
        "reasons": ["legacy names in all 24 weight-norm modules", "RVC's HiFi-GAN vocoder (no sign of another)"]}
    assert verdict(found, TORCH) == {"answer": "yes", "reasons": ["legacy names in all 24 weight-norm modules"]}
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
    fix = f"run `pth-legacy-keys fix -- {rvc_file}`"
    assert lines[-3:] == [
        "  status     needs-fix (48 keys to rename to legacy names, as `check` reports it)",
        f"  verdict    loads in legacy torch code: no (48 parametrized keys, which a strict=False load skips "
        f"without an error; {fix})",
        f"  verdict    loads in legacy RVC loaders: no (48 parametrized keys; {fix})"]


@pytest.mark.parametrize("optimizer, name", [(torch.optim.AdamW, "AdamW"), (torch.optim.Adam, "Adam"),
                                             (torch.optim.SGD, "SGD")])
def test_training_checkpoint(tmp_path, capsys, optimizer, name):
    model = rvc_model.build(parametrized=True)
    opt = optimizer(model.parameters(), lr=1e-4, **({"momentum": 0.9} if name == "SGD" else {}))
    rvc_model.train_steps(model, opt, 1)
    path = save(tmp_path / "G_2333.pth", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                          "learning_rate": 1e-4, "iteration": 2333})
    code, [found] = inspect_json(capsys, path)
    assert found["kind"] == "RVC training checkpoint"
    assert found["metadata"] == {"training": {"iteration": 2333, "learning_rate": 1e-4, "optimizer": name}}
    not_inference = ("a training checkpoint, not an inference model: RVC software loads the small model file "
                     "made from it, with 'weight' and 'config'")
    # A fix is not all it takes for RVC software, so its verdict does not offer one; legacy training code
    # (RVC's own, resuming) only needs the names.
    assert verdict(found, RVC) == {"answer": "no", "reasons": [not_inference, "58 parametrized keys"]}
    assert verdict(found, TORCH)["reasons"][0].endswith(f"; run `pth-legacy-keys fix -- {path}`")
    count, nbytes, _ = torch_facts(path)
    assert (found["tensors"]["count"], found["tensors"]["bytes"]) == (count, nbytes)
    code, out = run(capsys, "inspect", path)
    assert f"  verdict    loads in legacy RVC loaders: no ({not_inference}; 58 parametrized keys)" in out


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
    assert verdict(found, RVC)["answer"] == "no"
    assert verdict(found, RVC)["reasons"][0].startswith(warning)

    code, out = run(capsys, "check", path)
    assert code == 1 and f"{path}: warning: {warning}" in out.splitlines()
    code, out = run(capsys, "fix", path)
    assert code == 0
    assert out.splitlines()[:2] == [f"{path}: fixed: renamed {found['keys']['parametrized_keys']} keys to legacy names",
                                    f"{path}: warning: {warning}"]
    # A fixed file is no more loadable: inspect still says no, for the vocoder alone.
    code, [after] = inspect_json(capsys, path)
    assert after["keys"]["style"] == "legacy"
    assert verdict(after, RVC) == {"answer": "no", "reasons": [warning]}
    assert "pth-legacy-keys fix" not in str(verdict(found, RVC))  # a fix would not help RVC software
    # The names are legacy now: code that builds these modules with the old weight_norm loads them.
    assert verdict(after, TORCH)["answer"] == "yes"
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
    assert found["kind"] == "state dict" and found["status"] == "needs-fix"
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
    assert code == 0 and "info" in found["metadata"]["rvc"] and found["metadata"]["rvc"]["info"] is None
    assert found["vocoder"] is None  # Applio's HiFi-GAN, however it is spelled


# -- files that are not RVC's: a verdict about legacy torch code, check's status words -------------------

NEW_WEIGHT_NORM, OLD_WEIGHT_NORM = torch.nn.utils.parametrizations.weight_norm, torch.nn.utils.weight_norm


class SmallGenerator(torch.nn.Module):
    """A HiFi-GAN-shaped generator (conv_pre, ups, conv_post), its convolutions weight-normed by `norm`."""

    def __init__(self, norm):
        super().__init__()
        nn = torch.nn
        self.conv_pre = norm(nn.Conv1d(4, 8, 7, padding=3))
        self.ups = nn.ModuleList([norm(nn.ConvTranspose1d(8, 4, 4, stride=2, padding=1), dim=1)])
        self.conv_post = norm(nn.Conv1d(4, 1, 7, padding=3))

    def forward(self, x):
        x = torch.nn.functional.leaky_relu(self.conv_pre(x), 0.1)
        return torch.tanh(self.conv_post(torch.nn.functional.leaky_relu(self.ups[0](x), 0.1)))


def small_generator(norm, seed=0):
    torch.manual_seed(seed)
    return SmallGenerator(norm).eval()


def receiver(model):
    """`model` with every parameter moved off what it was made with: a load that skips a weight
    leaves it visibly wrong, whatever seed made the file."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(-0.5).add_(0.25)
    return model


def loaded_as_legacy_code_loads(path, legacy_model, x):
    """What legacy code gets: its model (old weight_norm / spectral_norm) loaded with strict=False."""
    model = receiver(legacy_model)
    result = model.load_state_dict(load(path), strict=False)
    with torch.no_grad():
        return model(x), result


def generator_input():
    return torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(3))


def torch_verdict_only(found):
    """The entry's one verdict, about legacy torch code: a file that is not RVC's gets no RVC verdict."""
    assert [v["about"] for v in found["verdicts"]] == [TORCH]
    return verdict(found, TORCH)


def test_a_plain_state_dict_with_parametrized_weight_norm(tmp_path, capsys):
    original, x = small_generator(NEW_WEIGHT_NORM), generator_input()
    path = save(tmp_path / "generator.pth", original.state_dict())
    code, [found] = inspect_json(capsys, path)
    assert (code, found["status"], found["kind"], found["metadata"]) == (0, "needs-fix", "state dict", {})
    assert torch_verdict_only(found) == {
        "answer": "no",
        "reasons": [f"6 parametrized keys, which a strict=False load skips without an error; "
                    f"run `pth-legacy-keys fix -- {path}`"]}
    # The verdict is what happens: legacy code gets the biases, but not one weight, and no error.
    out, result = loaded_as_legacy_code_loads(path, small_generator(OLD_WEIGHT_NORM), x)
    assert len(result.missing_keys) == 6 and all(k.endswith(("weight_g", "weight_v")) for k in result.missing_keys)
    assert not torch.allclose(out, original(x))
    # check gives the file the same word, and fails on it; inspect only describes (exit 0).
    code, out_json = run(capsys, "check", "--output", "json", path)
    assert code == 1 and json.loads(out_json)["files"][0]["status"] == "needs-fix"

    # The command the verdict names is all it takes.
    assert run(capsys, "fix", path)[0] == 0
    code, [after] = inspect_json(capsys, path)
    assert (code, after["status"]) == (0, "ok")
    assert torch_verdict_only(after) == {"answer": "yes", "reasons": ["legacy names in all 3 weight-norm modules"]}
    out, result = loaded_as_legacy_code_loads(path, small_generator(OLD_WEIGHT_NORM), x)
    assert result.missing_keys == [] and result.unexpected_keys == []
    torch.testing.assert_close(out, original(x))


def test_a_state_dict_made_with_the_legacy_weight_norm_loads_in_legacy_code(tmp_path, capsys):
    original, x = small_generator(OLD_WEIGHT_NORM), generator_input()
    path = save(tmp_path / "generator.pth", original.state_dict())
    code, [found] = inspect_json(capsys, path)
    assert (code, found["status"], found["keys"]["style"]) == (0, "ok", "legacy")
    assert torch_verdict_only(found) == {"answer": "yes", "reasons": ["legacy names in all 3 weight-norm modules"]}
    out, result = loaded_as_legacy_code_loads(path, small_generator(OLD_WEIGHT_NORM), x)
    assert result.missing_keys == [] and result.unexpected_keys == []
    torch.testing.assert_close(out, original(x))
    code, out_text = run(capsys, "inspect", path)
    assert out_text.splitlines()[-2:] == [
        "  status     ok (nothing to rename, as `check` reports it)",
        "  verdict    loads in legacy torch code: yes (legacy names in all 3 weight-norm modules)"]


def test_a_spectral_norm_model_before_and_after_fix(tmp_path, capsys):
    """Two spectral-normed convolutions beside a weight-normed one, as in RVC's discriminators."""
    original, x = rvc_model.spectral_discriminator(parametrized=True), torch.randn(1, 2, 16)
    path = save(tmp_path / "D.pth", original.state_dict())
    code, [found] = inspect_json(capsys, path)
    assert (code, found["status"]) == (0, "needs-fix")
    assert found["keys"]["families"] == {"weight-norm": {"parametrized": 1, "legacy": 0},
                                         "spectral-norm": {"parametrized": 2, "legacy": 0}}
    assert torch_verdict_only(found)["answer"] == "no"
    assert torch_verdict_only(found)["reasons"][0].startswith("8 parametrized keys, which a strict=False load skips")
    out, result = loaded_as_legacy_code_loads(path, rvc_model.spectral_discriminator(parametrized=False), x)
    assert result.missing_keys and not torch.allclose(out, original(x))

    assert run(capsys, "fix", path)[0] == 0
    code, [after] = inspect_json(capsys, path)
    assert after["status"] == "ok"
    assert torch_verdict_only(after) == {"answer": "yes",
                                         "reasons": ["legacy names in all 1 weight-norm and 2 spectral-norm modules"]}
    out, result = loaded_as_legacy_code_loads(path, rvc_model.spectral_discriminator(parametrized=False), x)
    assert result.missing_keys == [] and result.unexpected_keys == []
    torch.testing.assert_close(out, original(x))


def test_a_file_without_normed_modules_loads_whatever_its_names(tmp_path, capsys):
    path = save(tmp_path / "linear.pth", torch.nn.Linear(3, 2).state_dict())
    code, [found] = inspect_json(capsys, path)
    assert (code, found["status"], found["keys"]["style"]) == (0, "ok", "none")
    assert torch_verdict_only(found) == {
        "answer": "yes", "reasons": ["no weight-norm or spectral-norm modules, so nothing in it depends on these names"]}


def test_a_module_that_cannot_be_converted(tmp_path, capsys):
    """A second parametrization stacked on a weight norm: legacy code cannot load it, and no rename helps."""
    class Scale(torch.nn.Module):
        def forward(self, weight):
            return weight * 2

    model = NEW_WEIGHT_NORM(torch.nn.Conv1d(2, 4, 3))
    torch.nn.utils.parametrize.register_parametrization(model, "weight", Scale())
    path = save(tmp_path / "stacked.pth", model.state_dict())
    code, [found] = inspect_json(capsys, path)
    assert (code, found["status"]) == (0, "cannot-convert")  # check's word, and check's exit code 1 below
    reasons = torch_verdict_only(found)["reasons"]
    assert torch_verdict_only(found)["answer"] == "no" and "pth-legacy-keys fix" not in str(reasons)
    assert reasons[-1].startswith("1 module cannot be converted, e.g. weight: a second parametrization is stacked")
    code, out = run(capsys, "check", "--output", "json", path)
    assert code == 1 and json.loads(out)["files"][0]["status"] == "cannot-convert"
    code, out = run(capsys, "inspect", path)
    assert "  status     cannot-convert (1 module cannot be converted, as `check` reports it)" in out.splitlines()


# -- whose metadata: PyTorch Lightning, coqui-tts, HiFi-GAN, Applio ----------------------------------------


def lightning_checkpoint(model, optimizer, version=True):
    """A checkpoint as Lightning's _CheckpointConnector.dump_checkpoint builds it (no Lightning needed):
    the LightningModule's state dict (its submodule `generator`), loops, callbacks, optimizer states."""
    checkpoint = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.5.1",
        "state_dict": {f"generator.{k}": v for k, v in model.state_dict().items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_loop.state_dict": {"_batches_that_stepped": 120},
                               "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min'}": {"best_model_path": "",
                                                                           "best_model_score": None}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"learning_rate": 1e-4},
    }
    if not version:
        del checkpoint["pytorch-lightning_version"]
    return checkpoint


@pytest.mark.parametrize("version", [True, False], ids=["lightning", "lightning-shaped"])
def test_a_lightning_checkpoint_has_lightning_metadata_and_no_applio_group(tmp_path, capsys, version):
    model = small_generator(NEW_WEIGHT_NORM)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(generator_input()).square().mean().backward()
    optimizer.step()
    path = save(tmp_path / "epoch=3-step=120.ckpt", lightning_checkpoint(model, optimizer, version))
    code, [found] = inspect_json(capsys, path)
    assert (code, found["kind"], found["status"]) == (0, "Lightning checkpoint", "needs-fix")
    expected = {"pytorch-lightning_version": "2.5.1", "epoch": 3, "global_step": 120, "optimizer": "Adam"}
    if not version:
        del expected["pytorch-lightning_version"]
    assert found["metadata"] == {"lightning": expected}
    assert torch_verdict_only(found)["answer"] == "no" and found["vocoder"] is None
    code, out = run(capsys, "inspect", path)
    assert "  lightning  " + ", ".join(f"{k} {v!r}" if isinstance(v, str) else f"{k} {v}"
                                       for k, v in expected.items()) in out.splitlines()
    assert "applio" not in out and "RVC" not in out


def test_a_coqui_tts_checkpoint_has_a_training_group(tmp_path, capsys):
    """coqui-ai Trainer's save_model (trainer/io.py): config, model, optimizer, scaler, step, epoch, date."""
    model = small_generator(OLD_WEIGHT_NORM)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    path = save(tmp_path / "checkpoint_5000.pth", {
        "config": {"model": "hifigan", "audio": {"sample_rate": 22050}}, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scaler": None, "step": 5000, "epoch": 12, "date": "May 01, 2025"})
    code, [found] = inspect_json(capsys, path)
    assert (found["kind"], found["status"]) == ("training checkpoint", "ok")
    assert found["metadata"] == {"training": {"epoch": 12, "step": 5000, "optimizer": "AdamW"}}
    assert torch_verdict_only(found)["answer"] == "yes"
    code, out = run(capsys, "inspect", path)
    assert "  training   epoch 12, step 5000, optimizer 'AdamW'" in out.splitlines() and "applio" not in out


def test_a_hifi_gan_generator_file(tmp_path, capsys):
    """HiFi-GAN's and BigVGAN's g_* files: {"generator": state dict}, made with the legacy weight_norm."""
    path = save(tmp_path / "g_02500000", {"generator": small_generator(OLD_WEIGHT_NORM).state_dict()})
    code, [found] = inspect_json(capsys, path)
    assert (found["kind"], found["status"], found["metadata"]) == ("dict of state dicts", "ok", {})
    assert torch_verdict_only(found) == {"answer": "yes", "reasons": ["legacy names in all 3 weight-norm modules"]}


def test_applio_metadata_alone_makes_a_file_rvc_s(tmp_path, capsys):
    """Applio's own fields (model_name with vocoder, embedder_model or model_hash) name the file Applio's,
    even without `weight` and `config`: its epoch is Applio's, and RVC's verdict says what is missing."""
    path = save(tmp_path / "voice.pth", {"model_name": "voice", "embedder_model": "contentvec", "epoch": 20,
                                         "state": small_generator(OLD_WEIGHT_NORM).state_dict()})
    code, [found] = inspect_json(capsys, path)
    assert found["metadata"] == {"applio": {"model_name": "voice", "epoch": 20, "embedder_model": "contentvec"}}
    assert verdict(found, TORCH)["answer"] == "yes"
    assert verdict(found, RVC) == {"answer": "no", "reasons": [
        "not an RVC inference model: it has no 'weight' state dict beside a 'config' list"]}


# -- code-carrying archives: refused alike -------------------------------------------------------------------


def torch_package_archive(path):
    """An archive as descript-audio-codec saves its models: torch.package, its own Python source inside."""
    model = torch.nn.Sequential(OLD_WEIGHT_NORM(torch.nn.Conv1d(2, 2, 3)))  # torch's classes only: extern
    with warnings.catch_warnings(), torch.package.PackageExporter(path) as exporter:
        warnings.simplefilter("ignore", UserWarning)  # torch.package still uses TypedStorage
        exporter.extern("torch.**")
        exporter.save_source_string("voice_codec", "ANSWER = 42\n")
        exporter.save_pickle("model", "model.pkl", model)
    return path


def torchscript_archive(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        torch.jit.save(torch.jit.script(torch.nn.Conv1d(2, 2, 1)), path)
    return path


def test_torch_package_and_torchscript_archives_are_refused_alike(tmp_path, capsys):
    package = torch_package_archive(tmp_path / "dac.pth")
    scripted = torchscript_archive(tmp_path / "scripted.pt")
    # What the refusals say of them is so: loading the package runs its code; torch.load cannot read it.
    assert torch.package.PackageImporter(package).import_module("voice_codec").ANSWER == 42
    with pytest.raises(RuntimeError, match="data.pkl"):
        torch.load(package, weights_only=False)
    tail = ("and pth-legacy-keys does not vouch for code-carrying archives; exclude the ones you trust from "
            "this check (leave them out of the paths, or match them in the hook's `exclude`)")
    for path, kind, runs in ((package, "torch.package", "torch.package's importer would run its code"),
                             (scripted, "TorchScript", "torch.load would run its code")):
        before = path.read_bytes()
        reason = f"a code-carrying archive ({kind}): {runs}, {tail}"
        for command in ("check", "fix", "inspect"):
            code, out = run(capsys, command, path)
            assert code == 2 and out.splitlines()[0].startswith(f"{path}: refused: {reason}"), (command, out)
        code, [found] = inspect_json(capsys, path)
        assert (code, found["status"], found["reason"], found["verdicts"]) == (2, "refused", reason, [])
        code, out = run(capsys, "check", "--output", "json", path)
        [entry] = json.loads(out)["files"]
        assert (code, entry["status"], entry["reason"]) == (2, "refused", reason)
        assert path.read_bytes() == before


def test_every_inspect_entry_has_the_same_shape(rvc_file, tmp_path, capsys):
    missing = tmp_path / "missing.pth"
    code, [rvc, gone] = inspect_json(capsys, rvc_file, missing)
    assert code == 2
    assert list(rvc) == list(gone) == ["path", "status", "reason", "container", "pickle", "tensors", "keys",
                                       "kind", "metadata", "vocoder", "verdicts", "remote"]
    assert (gone["status"], gone["reason"], gone["verdicts"], gone["metadata"]) == ("error", "no such file", [], {})
    for entry in rvc["verdicts"]:
        assert list(entry) == ["about", "answer", "reasons"] and entry["answer"] in ("yes", "no")
        assert entry["reasons"] and all(isinstance(reason, str) for reason in entry["reasons"])
