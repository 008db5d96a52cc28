"""Which files to examine: the paths given, folders walked, or the current git repository."""

import os
import re

from .byte_source import is_url
from .patterns import expand, is_pattern
from .symlinks import inside_repository
from .walk import entries

# DOTALL: a name with a newline in it is still a checkpoint name, and must not slip through.
CHECKPOINT_NAME = re.compile(r"(?is).*\.(pth|pt|ckpt|safetensors)")


class DiscoveryError(Exception):
    """The files to examine could not be worked out (a bad git revision, an unreadable list)."""


def collect(paths, changed_since=None, literal=False):
    """Expand `paths` into the files to examine, in a stable order.

    An explicit file is examined whatever its name; a folder is walked for checkpoint
    names; a path with a glob character is a pattern (patterns.py: `**` crosses folders,
    hidden names match, links are not entered), for shells and workflow inputs that do not
    expand it, even if a file has that very name (a pull request could add one to hide the
    others); with `literal` (a hook: git named the files) every path is a file's name. No paths
    means the tracked checkpoints of the current git repository and its checked-out
    submodules, or the current folder walked when it is not in one. With `changed_since`,
    only the files changed between that revision and HEAD remain. A path or pattern that
    names nothing stays, to be reported missing: a typo must fail, not pass.
    """
    if not paths:
        tracked = _git_tracked_checkpoints()
        files = tracked if tracked is not None else _walk(".")
    else:
        files = []
        for path in paths:
            if "\0" in path or is_url(path):
                files.append(path)  # a URL is one file (its ? is no glob); a NUL: no file has that name
            elif is_pattern(path) and not literal:
                files.extend(expand(path, _walk, inside_repository) or [path])
            elif os.path.isdir(path) and not literal:
                files.extend(_walk(path))
            else:
                files.append(path)
    if changed_since is not None:
        changed = _git_changed_files(changed_since)
        files = [path for path in files if not os.path.lexists(path) or _is_changed(os.path.relpath(path), changed)
                 or (os.path.islink(path) and _is_changed(os.path.relpath(os.path.realpath(path)), changed))]
    return list(dict.fromkeys(files))


def read_path_list(source):
    """Paths from a file (or standard input for "-"), one per line; blank lines are ignored.

    Lines are bytes decoded as the file system decodes names (os.fsdecode), so a name that is not
    UTF-8 is still the name of its file, and a line no file can have is still one line of its own.
    """
    import sys

    try:
        if source == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as f:
                data = f.read()
    except OSError as exc:
        raise DiscoveryError(f"cannot read the path list {source}: {exc.strerror or exc}") from None
    lines = (line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n"))
    return [os.fsdecode(line) for line in lines if line.strip()]


def _git(*args):
    import subprocess  # only git discovery needs it: keep start-up short for hooks

    return subprocess.run(["git", *args], capture_output=True)


def _git_tracked_checkpoints():
    try:
        # A checked-out submodule's checkpoints ship with the repository too.
        listing = _git("ls-files", "-z", "--cached", "--recurse-submodules", "--", ".")
    except OSError:
        return None
    if listing.returncode != 0:
        if _git("rev-parse", "--is-inside-work-tree").returncode == 0:
            # In a repository, a listing that fails (a broken .gitmodules) must not become a walk
            # that sees other files than git would.
            raise DiscoveryError(f"cannot list the repository's files: {_first_line(listing.stderr)}")
        return None
    names = _nul_separated(listing.stdout)
    # A tracked file deleted from the work tree has nothing to examine until it is committed.
    return [name for name in names if CHECKPOINT_NAME.fullmatch(name) and os.path.lexists(name)]


def _git_changed_files(revision):
    """Paths (relative to here) added or changed between `revision` and HEAD, as `git diff A...B` shows."""
    commit = _git_commit(revision)
    try:
        # The verified commit id, never the user's text, reaches the diff: it cannot be an option.
        # --ignore-submodules=none: a pull request's .gitmodules can say `ignore = all` to hide
        # that it moved a submodule to other checkpoints.
        diff = _git("diff", "--name-only", "-z", "--no-renames", "--diff-filter=d", "--relative",
                    "--ignore-submodules=none", f"{commit}...HEAD", "--")
    except OSError as exc:
        raise DiscoveryError(f"cannot run git to list the files changed since {revision}: {exc}") from None
    if diff.returncode != 0:
        raise DiscoveryError(f"cannot list the files changed since {revision}: {_first_line(diff.stderr)}")
    return {os.path.normpath(name) for name in _nul_separated(diff.stdout)}


def _is_changed(path, changed):
    """Whether `path` changed: it is in `changed`, or lies in a submodule whose commit changed
    (git diff names a submodule, not the files in it)."""
    while path and path not in changed:
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return bool(path)


def _git_commit(revision):
    """The commit id `revision` names. `--end-of-options` keeps a revision like `--output=x` a
    revision; the commit is asked of the id, not of the text, where a `^{commit}` suffix would
    become part of a `:/message` search."""
    return _rev_parse(f"{_rev_parse(revision, revision)}^{{commit}}", revision)


def _rev_parse(text, revision):
    try:
        parsed = _git("rev-parse", "--verify", "--quiet", "--end-of-options", text)
    except OSError as exc:
        raise DiscoveryError(f"cannot run git to list the files changed since {revision}: {exc}") from None
    if parsed.returncode != 0:
        raise DiscoveryError(f"cannot list the files changed since {revision}: "
                             f"{revision!r} does not name a commit here")
    return os.fsdecode(parsed.stdout).strip()


def _first_line(stderr):
    lines = os.fsdecode(stderr).strip().splitlines()
    return lines[0] if lines else "git failed"


def _nul_separated(output):
    """The paths in git's -z output."""
    return [os.fsdecode(name) for name in output.split(b"\0") if name]


def _walk(folder):
    """The checkpoint names in `folder` and below, and the links there to folders outside the
    repository (walk.py), which the caller reports instead of passing them by."""
    found = []
    for root, listed in entries(folder, inside_repository):
        found.extend(os.path.join(root, name) for name, kind in listed
                     if kind == "linked-out" or (kind == "file" and CHECKPOINT_NAME.fullmatch(name)))
    if folder == ".":
        found = [os.path.relpath(path) for path in found]
    return found
