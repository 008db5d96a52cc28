"""The example pair in examples/, which the README's first command finds: torch.save output of real
layers, the parametrized one fixed by the tool into what legacy model code loads."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

from support.cli_run import run
from support.torch_helpers import load, torch  # skips this module without torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def make_examples():
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_examples_are_what_the_script_makes(tmp_path, monkeypatch):
    module = make_examples()
    monkeypatch.setattr(module, "HERE", str(tmp_path))
    module.main()
    for name in ("parametrized.pth", "legacy.pth"):
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), name


def test_the_first_command_finds_the_parametrized_example(tmp_path, capsys, monkeypatch):
    """`pth-legacy-keys check` in a clone: the tracked examples, one of them to fix (exit 1)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "init", "-q", str(clone)], check=True)
    shutil.copytree(EXAMPLES, clone / "examples")
    subprocess.run(["git", "add", "examples"], cwd=clone, check=True)
    monkeypatch.chdir(clone)
    code, out = run(capsys, "check")
    assert code == 1
    assert out.splitlines() == [
        "examples/parametrized.pth: 10 parametrized weight-norm keys in 5 modules "
        "(e.g. conv_pre.parametrizations.weight.original0)",
        "checked 2 files: 1 ok, 1 needs-fix",
        "to fix them: pth-legacy-keys fix -- examples/parametrized.pth",
    ]


def test_the_fixed_example_is_the_legacy_one_to_legacy_model_code(tmp_path, capsys):
    module = make_examples()
    path = tmp_path / "voice.pth"
    shutil.copyfile(EXAMPLES / "parametrized.pth", path)
    assert run(capsys, "fix", path)[0] == 0
    fixed, legacy = load(path), load(EXAMPLES / "legacy.pth")
    assert list(fixed) == list(legacy)
    for key in legacy:
        assert torch.equal(fixed[key], legacy[key]), key
    old_code = module.generator(parametrized=False)  # torch.nn.utils.weight_norm, as legacy loaders build it
    assert old_code.load_state_dict(fixed, strict=True).missing_keys == []
    new = module.generator(parametrized=True)
    torch.manual_seed(1)
    audio = torch.randn(1, 8, 16)
    with torch.no_grad():
        assert torch.equal(old_code(audio), new(audio))
    assert sys.modules.get("make_examples") is None  # loaded from its path, not left importable
