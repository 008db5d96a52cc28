"""Which files to examine: the paths given, folders walked, or the current git repository."""

import os
import re

# DOTALL: a name with a newline in it is still a checkpoint name, and must not slip through.
CHECKPOINT_NAME = re.compile(r"(?is).*\.(pth|pt|ckpt|safetensors)")
SKIPPED_FOLDERS = frozenset((".git", ".hg", ".svn"))
GLOB_CHARACTERS = frozenset("*?[")


class DiscoveryError(Exception):
    """The files to examine could not be worked out (a bad git revision, an unreadable list)."""


def collect(paths, changed_since=None):
    """Expand `paths` into the files to examine, in a stable order.

    An explicit file is examined whatever its name; a folder is walked for checkpoint
    names; a glob that names no existing file is expanded (`**` crosses folders), for
    shells and workflow inputs that do not; no paths means the tracked checkpoints of
    the current git repository, or the current folder walked when it is not in one.
    With `changed_since`, only the files changed between that revision and HEAD remain.
    """
    if not paths:
        tracked = _git_tracked_checkpoints()
        files = tracked if tracked is not None else _walk(".")
    else:
        files = []
        for path in paths:
            if GLOB_CHARACTERS & set(path) and not os.path.lexists(path):
                import glob

                for match in sorted(glob.glob(path, recursive=True)):
                    files.extend(_walk(match) if os.path.isdir(match) else [match])
            elif os.path.isdir(path):
                files.extend(_walk(path))
            else:
                files.append(path)
    if changed_since is not None:
        changed = _git_changed_files(changed_since)
        files = [path for path in files if os.path.relpath(path) in changed]
    return list(dict.fromkeys(files))


def read_path_list(source):
    """Paths from a file (or standard input for "-"), one per line; blank lines are ignored."""
    import sys

    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DiscoveryError(f"cannot read the path list {source}: {exc}") from None
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _git(*args):
    import subprocess  # only git discovery needs it: keep start-up short for hooks

    return subprocess.run(["git", *args], capture_output=True)


def _git_tracked_checkpoints():
    try:
        listing = _git("ls-files", "-z", "--cached", "--", ".")
    except OSError:
        return None
    if listing.returncode != 0:
        return None
    names = _nul_separated(listing.stdout)
    # A tracked file deleted from the work tree has nothing to examine until it is committed.
    return [name for name in names if CHECKPOINT_NAME.fullmatch(name) and os.path.lexists(name)]


def _git_changed_files(revision):
    """Paths (relative to here) added or changed between `revision` and HEAD, as `git diff A...B` shows."""
    try:
        diff = _git("diff", "--name-only", "-z", "--no-renames", "--diff-filter=d", "--relative",
                    f"{revision}...HEAD", "--")
    except OSError as exc:
        raise DiscoveryError(f"cannot run git to list the files changed since {revision}: {exc}") from None
    if diff.returncode != 0:
        message = os.fsdecode(diff.stderr).strip().splitlines()
        raise DiscoveryError(f"cannot list the files changed since {revision}: "
                             f"{message[0] if message else 'git diff failed'}")
    return {os.path.normpath(name) for name in _nul_separated(diff.stdout)}


def _nul_separated(output):
    """The paths in git's -z output."""
    return [os.fsdecode(name) for name in output.split(b"\0") if name]


def _walk(folder):
    found = []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(f for f in folders if f not in SKIPPED_FOLDERS)
        found.extend(os.path.join(root, name) for name in sorted(names) if CHECKPOINT_NAME.fullmatch(name))
    if folder == ".":
        found = [os.path.relpath(path) for path in found]
    return found
