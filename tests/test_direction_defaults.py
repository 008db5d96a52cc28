"""What each direction converts by default. coqui-tts and speechbrain build new-style weight norm
beside old-style spectral norm, and save exactly that: a working file of theirs. Towards
parametrized names only weight norm is converted unless asked, since nothing reads legacy
spectral-norm names into a parametrized module; towards legacy names both are."""

import pytest
from support.torch_helpers import load, torch  # skips this module without torch
from pth_legacy_keys import fix, scan
from pth_legacy_keys.cli import main

nn = torch.nn


def discriminator(weight_norm, spectral_norm):
    """A HiFi-GAN-style discriminator block: spectral-normed convolutions beside weight-normed ones."""
    torch.manual_seed(0)
    return nn.Sequential(spectral_norm(nn.Conv1d(1, 4, 5, padding=2)), weight_norm(nn.Conv1d(4, 4, 3, padding=1)),
                         spectral_norm(nn.Conv1d(4, 1, 3, padding=1))).eval()


def coqui_style():
    """New weight norm, old spectral norm: as coqui-tts and speechbrain build their models."""
    return discriminator(nn.utils.parametrizations.weight_norm, nn.utils.spectral_norm)


def all_legacy():
    return discriminator(nn.utils.weight_norm, nn.utils.spectral_norm)


def outputs(model):
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.randn(2, 1, 32))


def test_a_coqui_style_file_passes_a_check_for_parametrized_names_and_fix_leaves_it(tmp_path, capsys):
    path = tmp_path / "discriminator.pth"
    torch.save(coqui_style().state_dict(), path)
    before = path.read_bytes()
    assert main(["check", "--to", "parametrized", str(path)]) == 0
    assert main(["fix", "--to", "parametrized", str(path)]) == 0
    assert path.read_bytes() == before
    assert scan(path, to="parametrized").status == "ok"
    # Its own library loads it, as it always did.
    library = coqui_style()
    assert library.load_state_dict(load(path), strict=True).missing_keys == []


def test_both_families_towards_parametrized_must_be_asked_for_and_break_the_librarys_load(tmp_path, capsys):
    """The trap the default avoids: converted, spectral norm no longer loads into the library that
    made the file (its strict load fails; a strict=False load would silently drop the weights)."""
    path = tmp_path / "discriminator.pth"
    torch.save(coqui_style().state_dict(), path)
    capsys.readouterr()
    assert main(["check", "--to", "parametrized", "--only", "weight-norm,spectral-norm", str(path)]) == 1
    out = capsys.readouterr().out
    assert "6 legacy spectral-norm keys in 2 modules (e.g. 0.weight_orig)" in out, out
    assert main(["fix", "--to", "parametrized", "--only", "spectral-norm,weight-norm", str(path)]) == 0
    with pytest.raises(RuntimeError, match="Missing key"):
        coqui_style().load_state_dict(load(path), strict=True)
    parametrized = discriminator(nn.utils.parametrizations.weight_norm, nn.utils.parametrizations.spectral_norm)
    assert parametrized.load_state_dict(load(path), strict=True).missing_keys == []


def test_an_all_legacy_file_towards_parametrized_gets_new_weight_norm_and_keeps_old_spectral_norm(tmp_path):
    path = tmp_path / "old.pth"
    old = all_legacy()
    torch.save(old.state_dict(), path)
    report = fix(path, to="parametrized")
    assert (report.status, report.families) == ("fixed", {"weight-norm": 1})
    coqui = coqui_style()
    result = coqui.load_state_dict(load(path), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(outputs(coqui), outputs(old))


def test_towards_legacy_both_families_are_converted_by_default(tmp_path):
    path = tmp_path / "discriminator.pth"
    coqui = coqui_style()
    parametrized_spectral = discriminator(nn.utils.parametrizations.weight_norm,
                                          nn.utils.parametrizations.spectral_norm)
    torch.save(parametrized_spectral.state_dict(), path)
    report = fix(path)
    assert (report.status, report.families) == ("fixed", {"weight-norm": 1, "spectral-norm": 2})
    legacy = all_legacy()
    result = legacy.load_state_dict(load(path), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(outputs(legacy), outputs(parametrized_spectral))
    assert coqui is not None


@pytest.mark.parametrize("only, expected", [("weight-norm", 1), ("spectral-norm", 2)])
def test_only_limits_the_legacy_direction_too(tmp_path, only, expected):
    path = tmp_path / "discriminator.pth"
    torch.save(discriminator(nn.utils.parametrizations.weight_norm,
                             nn.utils.parametrizations.spectral_norm).state_dict(), path)
    assert main(["fix", "--only", only, str(path)]) == 0
    assert fix(path, families=(only,)).status == "ok"
    assert scan(path).status == "needs-fix"  # the other family is still parametrized
    assert sum(scan(path, families=(only,)).families.values()) == 0
    assert sum(fix(path).families.values()) == 3 - expected
