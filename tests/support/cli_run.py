"""What the CLI tests share: the committed torch-made fixtures and a way to run the CLI."""

import shutil
from pathlib import Path

from pth_legacy_keys.cli import main

DATA = Path(__file__).parents[1] / "data"
PARAMETRIZED = DATA / "parametrized.bin"  # zip format, prefix "parametrized/", 4 parametrized keys
LEGACY = DATA / "legacy.bin"  # the same model saved with legacy weight_norm
LEGACY_FORMAT = DATA / "parametrized_legacy_format.bin"  # PARAMETRIZED in the pre-1.6 non-zip format


def run(capsys, *argv):
    """Run the CLI; return (exit code, stdout), insisting nothing leaked a traceback."""
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out


def lines_about(out, path):
    return [line for line in out.splitlines() if line.startswith(f"{path}: ")]


def copy_of(folder, source=PARAMETRIZED, name=None):
    target = Path(folder) / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def assert_rejected(capsys, path, status, reason, *options):
    """`check`, `fix` and `inspect` all exit 2 with one line `PATH: <status>: ...<reason>...`; bytes unchanged."""
    before = path.read_bytes() if path.exists() else None
    for command in ("check", "fix", "inspect"):
        code, out = run(capsys, command, path, *options)
        assert code == 2, out
        [line] = lines_about(out, path)
        assert line.startswith(f"{path}: {status}: "), line
        assert reason in line, line
        if before is None:
            assert not path.exists()
        else:
            assert path.read_bytes() == before
