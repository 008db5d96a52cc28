"""Which files to examine: the paths given, folders walked, or the current git repository."""

import os
import re

CHECKPOINT_NAME = re.compile(r"(?i).*\.(pth|pt|ckpt)")
SKIPPED_FOLDERS = frozenset((".git", ".hg", ".svn"))


def collect(paths):
    """Expand `paths` into the files to examine, in a stable order.

    An explicit file is examined whatever its name; a folder is walked for checkpoint
    names; no paths means the tracked checkpoints of the current git repository, or
    the current folder walked when it is not in one.
    """
    if not paths:
        tracked = _git_tracked_checkpoints()
        return tracked if tracked is not None else _walk(".")
    files = []
    for path in paths:
        if os.path.isdir(path):
            files.extend(_walk(path))
        else:
            files.append(path)
    return list(dict.fromkeys(files))


def _git_tracked_checkpoints():
    import subprocess  # only discovery without paths needs it: keep start-up short for hooks

    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--", "."],
            capture_output=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    names = [os.fsdecode(name) for name in listing.split(b"\0") if name]
    # A tracked file deleted from the work tree has nothing to examine until it is committed.
    return [name for name in names if CHECKPOINT_NAME.fullmatch(name) and os.path.lexists(name)]


def _walk(folder):
    found = []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(f for f in folders if f not in SKIPPED_FOLDERS)
        found.extend(os.path.join(root, name) for name in sorted(names) if CHECKPOINT_NAME.fullmatch(name))
    if folder == ".":
        found = [os.path.relpath(path) for path in found]
    return found
