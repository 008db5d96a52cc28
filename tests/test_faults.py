"""Nothing lost: a fix killed at any moment, a full disk, read-only files, links and races.

The SIGKILL test kills a fix of a KILL_MB checkpoint (30 by default, to keep CI quick; set
PTH_LEGACY_KEYS_KILL_MB=500 for the full-size run) at chosen calls, one run per point.
"""

import os
import signal
import subprocess
import sys

import pytest
from support.cli_run import LEGACY, PARAMETRIZED, copy_of, lines_about, run

KILL_MB = int(os.environ.get("PTH_LEGACY_KEYS_KILL_MB", "30"))
posix_only = pytest.mark.skipif(os.name != "posix", reason="signals and rlimits are POSIX")


def cli(*args, **kwargs):
    return [sys.executable, "-m", "pth_legacy_keys", *map(str, args)]


def temporaries(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


def fixed_bytes(source, tmp_path):
    """What a complete fix of `source` gives."""
    reference = copy_of(tmp_path / "reference", source)
    assert subprocess.run(cli("fix", reference), capture_output=True).returncode == 0
    return reference.read_bytes()


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch", reason="torch==2.13.0 makes the large checkpoint")
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.utils.parametrizations.weight_norm(nn.Conv1d(64, 64, 3)) for _ in range(4)])
    state_dict = model.state_dict()
    state_dict["embedding.weight"] = torch.randn(KILL_MB * 2 ** 20 // 4)
    path = tmp_path_factory.mktemp("big") / "voice.pth"
    torch.save(state_dict, path)
    return path


# A fix that kills itself (SIGKILL: no cleanup, no finally) at a chosen call: the first, a middle
# and the last write, the fsync of the new file, just before and just after the swap. Chosen
# points, not random sleeps: every run kills at the same places, on any machine.
KILLER = """
import os, runpy, signal, sys
name, at, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
calls = 0
real = getattr(os, name)
def killing(*args, **kwargs):
    global calls
    calls += 1
    if calls == at and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    if calls == at and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(os, name, killing)
sys.argv = ["pth-legacy-keys", *sys.argv[4:]]
runpy.run_module("pth_legacy_keys", run_name="__main__")
"""
KILL_POINTS = [("writev", 1, "before"), ("write", 1, "before"), ("write", KILL_MB // 2, "after"),
               ("write", KILL_MB - 1, "after"), ("fsync", 1, "before"), ("fsync", 1, "after"),
               ("replace", 1, "before"), ("replace", 1, "after")]  # the copy writes 1 MiB per os.write


@posix_only
@pytest.mark.parametrize("function, at, when", KILL_POINTS)
def test_a_fix_killed_at_any_step_leaves_the_original_or_the_fixed_file(function, at, when, big_checkpoint,
                                                                         tmp_path):
    original = big_checkpoint.read_bytes()
    expected = fixed_bytes(big_checkpoint, tmp_path)
    folder = tmp_path / "victim"
    path = copy_of(folder, big_checkpoint)
    killed = subprocess.run([sys.executable, "-c", KILLER, function, str(at), when, "fix", str(path)],
                            capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # it did reach that call
    now = path.read_bytes()
    assert now == (expected if (function, when) == ("replace", "after") else original)
    # The next run finishes the job and clears what the killed one left behind.
    assert subprocess.run(cli("fix", path), capture_output=True).returncode == 0
    assert path.read_bytes() == expected
    assert temporaries(folder) == []


@posix_only
@pytest.mark.skipif(not hasattr(os, "fork"), reason="a file-size limit for a child needs POSIX's resource module")
def test_file_size_limit_mid_write_leaves_the_original(big_checkpoint, tmp_path):
    import resource  # POSIX only: imported where it exists

    path = copy_of(tmp_path, big_checkpoint)
    before = path.read_bytes()
    limit = len(before) // 2

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(cli("fix", path), capture_output=True, text=True, preexec_fn=limit_file_size)
    assert result.returncode == 2, result.stdout + result.stderr
    assert lines_about(result.stdout, path) == [f"{path}: error: File too large"]
    assert "Traceback" not in result.stdout + result.stderr
    assert path.read_bytes() == before
    assert temporaries(tmp_path) == []


@posix_only
def test_stale_temporary_files_of_dead_fixers_are_removed(tmp_path, capsys):
    path = copy_of(tmp_path, PARAMETRIZED, "voice.pth")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stale = tmp_path / f".voice.pth.pth-legacy-keys-{dead.pid}.abc123.tmp"
        busy = tmp_path / f".voice.pth.pth-legacy-keys-{alive.pid}.def456.tmp"
        unrelated = tmp_path / ".other.pth.pth-legacy-keys-1.x.tmp"
        for leftover in (stale, busy, unrelated):
            leftover.write_bytes(b"half a checkpoint")
        code, _ = run(capsys, "fix", path)
        assert code == 0
        assert not stale.exists()
        assert busy.exists() and unrelated.exists()  # another live fixer's, and another file's
    finally:
        alive.kill()
        alive.wait()


def test_read_only_file_is_not_replaced(tmp_path, capsys):
    path = copy_of(tmp_path, PARAMETRIZED, "voice.pth")
    path.chmod(0o444)
    before = path.read_bytes()
    code, out = run(capsys, "fix", path)
    assert code == 2
    assert lines_about(out, path) == [f"{path}: error: the file is read-only; nothing was changed"]
    assert path.read_bytes() == before and temporaries(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "link"), reason="no hard links here")
def test_hard_linked_checkpoint_is_replaced_and_the_other_name_keeps_the_original(tmp_path, capsys):
    """Documented: fix replaces the file at the path it was given; other hard links are not rewritten."""
    path = copy_of(tmp_path, PARAMETRIZED, "voice.pth")
    other = tmp_path / "voice-link.pth"
    os.link(path, other)
    code, _ = run(capsys, "fix", path)
    assert code == 0
    assert other.read_bytes() == PARAMETRIZED.read_bytes()
    assert os.stat(path).st_nlink == 1 and os.stat(other).st_nlink == 1
    assert run(capsys, "check", path)[0] == 0 and run(capsys, "check", other)[0] == 1


def test_two_fixers_racing_never_tear_the_file(tmp_path):
    expected = fixed_bytes(PARAMETRIZED, tmp_path)
    folder = tmp_path / "race"
    for _ in range(10):
        path = copy_of(folder, PARAMETRIZED, "voice.pth")
        racers = [subprocess.Popen(cli("fix", path), stdout=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(racer.wait(), racer.stdout.read()) for racer in racers]
        for racer in racers:
            racer.stdout.close()
        assert path.read_bytes() == expected
        for code, out in results:
            # The loser either found nothing left to do or saw the file change under it.
            assert code == 0 or "changed while it was being fixed" in out, out
        assert temporaries(folder) == []


def test_legacy_file_is_never_touched_by_a_fix(tmp_path, capsys):
    path = copy_of(tmp_path, LEGACY, "voice.pth")
    before = os.stat(path)
    assert run(capsys, "fix", path)[0] == 0
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
