"""Which files to examine: the paths given, folders walked, or the current git repository."""

import os
import re
from collections import namedtuple

from .byte_source import is_url
from .patterns import expand, is_pattern
from .report import counted, printable
from .symlinks import inside_repository
from .walk import entries, in_git_work_tree, tool_folder

# DOTALL: a name with a newline in it is still a checkpoint name, and must not slip through.
CHECKPOINT_NAME = re.compile(r"(?is).*\.(pth|pt|ckpt|safetensors)")
CHECKPOINT_NAMES = "*.pth, *.pt, *.ckpt, *.safetensors"
# git pathspecs for the untracked checkpoints a bare check leaves out (git filters, not us).
UNTRACKED_PATHSPECS = [f":(glob,icase)**/*.{ext}" for ext in ("pth", "pt", "ckpt", "safetensors")]

class Selection(namedtuple("Selection", "files untracked left_out unchecked_submodules", defaults=(0, (), 0))):
    """What to examine, and what the user should hear about what was not: `untracked`, how many
    checkpoints a bare check in git left out because git does not track them; `left_out`, the
    (folder, reason) pairs a walk passed by (a virtual environment, a cache); and
    `unchecked_submodules`, how many submodules a bare check could not look into."""

    __slots__ = ()

    def notes(self):
        """What a bare check left out, and how to include it: a line each."""
        lines = []
        if self.untracked:
            them = "them" if self.untracked != 1 else "it"
            lines.append(f"left out {counted(self.untracked, 'checkpoint')} that git does not track "
                         f"(git ls-files --others lists {them}): name {them} to check {them}, or git add {them}")
        if self.unchecked_submodules:
            lines.append(f"left out {counted(self.unchecked_submodules, 'submodule')} that {'is' if self.unchecked_submodules == 1 else 'are'} not "
                         "checked out: git submodule update --init --recursive checks them out")
        return lines


class DiscoveryError(Exception):
    """The files to examine could not be worked out (a bad git revision, an unreadable list, a
    folder or pattern that matched no checkpoint)."""


def collect(paths, changed_since=None, literal=False):
    """Expand `paths` into a Selection of the files to examine, in a stable order.

    An explicit file is examined whatever its name; a folder is walked for checkpoint
    names (a folder named like a checkpoint is walked only when written with a trailing
    separator, `models.pth/`: without one it is taken for the file it looks like, and fails);
    a path with a glob character is a pattern (patterns.py: `**` crosses folders,
    hidden names match, links are not entered), for shells and workflow inputs that do not
    expand it, even if a file has that very name (a pull request could add one to hide the
    others); with `literal` (a hook: git named the files) every path is a file's name. No paths
    means the tracked checkpoints of the current git repository and its checked-out
    submodules, or the current folder walked when it is not in one. With `changed_since`,
    only the files changed between that revision and HEAD remain. A path that names nothing
    stays, to be reported missing, and a folder or pattern that matches no checkpoint raises
    DiscoveryError: a typo must fail, not pass.
    """
    left_out, untracked, unchecked = [], 0, 0

    def walk(folder):
        return _walk(folder, left_out)

    if not paths:
        tracked = _git_tracked_checkpoints()
        files = tracked if tracked is not None else walk(".")
        untracked = _git_untracked_checkpoints() if tracked is not None else 0
        unchecked = _git_unchecked_submodules() if tracked is not None else 0
    else:
        files, unmatched, passed_by = [], [], []
        for path in paths:
            if not path:
                raise DiscoveryError("an empty PATH names no file (a variable left unset?)")
            left_before = len(left_out)
            if "\0" in path or is_url(path):
                found = [path]  # a URL is one file (its ? is no glob); a NUL: no file has that name
            elif is_pattern(path) and not literal:
                # Always a pattern, even where a file has that very name: the same PATH must not
                # name that file until a pull request adds a decoy the pattern matches.
                found = expand(path, walk, inside_repository)
            elif os.path.isdir(path) and not literal and _walks(path):
                found = walk(path)
            else:
                found = [path]
            files.extend(found)
            if not found:
                unmatched.append(path)
                passed_by += left_out[left_before:]
        if unmatched:
            raise DiscoveryError(f"{', '.join(map(printable, unmatched))}: matched no checkpoint "
                                 f"(a folder is walked for {CHECKPOINT_NAMES}, any case)" + _passed_by(passed_by))
    if changed_since is not None:
        changed = _git_changed_files(changed_since)
        files = [path for path in files if not os.path.lexists(path) or _is_changed(os.path.relpath(path), changed)
                 or (os.path.islink(path) and _is_changed(os.path.relpath(os.path.realpath(path)), changed))]
    return Selection(list(dict.fromkeys(files)), untracked, left_out, unchecked)


def _passed_by(left_out):
    """What the error adds when the walk left folders out: the user may have meant one of them."""
    if not left_out:
        return ""
    folder, reason = left_out[0]
    more = f" and {len(left_out) - 1} more" if len(left_out) > 1 else ""
    return f"; left out {printable(folder)} ({reason}){more}: name a folder to check it"


def _walks(path):
    """Whether the folder `path` is to be walked: not when its name is a checkpoint's, unless a
    trailing separator says it is a folder."""
    return path.endswith(("/", os.sep)) or not CHECKPOINT_NAME.fullmatch(os.path.basename(path))


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


def _git_untracked_checkpoints():
    """How many checkpoints git neither tracks nor ignores here: a bare check leaves them out."""
    try:
        listing = _git("ls-files", "-z", "--others", "--exclude-standard", "--", *UNTRACKED_PATHSPECS)
    except OSError:
        return 0
    return len(_nul_separated(listing.stdout)) if listing.returncode == 0 else 0


def _git_unchecked_submodules():
    """How many of the repository's submodules here are not checked out (a clone without
    --recurse-submodules): git lists no files for them, so a bare check cannot see into them."""
    try:
        listing = _git("ls-files", "-z", "--stage", "--", ".")
    except OSError:
        return 0
    if listing.returncode != 0:
        return 0
    gitlinks = [entry.split("\t", 1)[1] for entry in _nul_separated(listing.stdout) if entry.startswith("160000 ")]
    return sum(not os.path.lexists(os.path.join(path, ".git")) for path in gitlinks)


def _git_tracks_files_in(folder):
    try:
        listing = _git("-C", folder, "ls-files", "-z", "--cached", "--", ".")
    except OSError:
        return True  # cannot tell: walk it
    return listing.returncode != 0 or bool(listing.stdout)


def _git_changed_files(revision):
    """Paths (relative to here) added or changed between `revision` and HEAD, as `git diff A...B` shows."""
    commit = commit_of(revision)
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


def commit_of(revision):
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


def _walk(folder, left_out):
    """The checkpoint names in `folder` and below, and the links there to folders outside the
    repository (walk.py), which the caller reports instead of passing them by. The folders of
    other tools (walk.TOOL_FOLDERS, virtual environments) are passed by and noted in `left_out` as
    (folder, reason), in a git work tree only when git tracks nothing in them: a pull request
    could otherwise hide a checkpoint in a folder named `venv`."""
    in_git = in_git_work_tree(folder)

    def leave_out(path, name):
        reason = tool_folder(path, name)
        if reason and not (in_git and _git_tracks_files_in(path)):
            left_out.append((os.path.relpath(path) if folder == "." else path, reason))
            return True
        return False

    found = []
    for root, listed in entries(folder, inside_repository, leave_out=leave_out):
        found.extend(os.path.join(root, name) for name, kind in listed
                     if kind == "linked-out" or (kind == "file" and CHECKPOINT_NAME.fullmatch(name)))
    if folder == ".":
        found = [os.path.relpath(path) for path in found]
    return found
