"""Folders, walked the way a repository must be: whatever a pull request puts in them.

Loaders read through a linked folder, so a walk enters one when it leads to a folder inside the
repository (each real folder once: two links to `.` must not make the walk endless) and lists a
link that leads out as an entry of its own, to be reported rather than silently passed. The walk
is iterative: a pull request can nest a thousand folders, deeper than Python's recursion limit
(os.walk recursed until Python 3.12). A repository's `.git` is never entered, whatever its case.
"""

import os
import unicodedata

# Code points HFS+ ignores in names, and Windows' trailing dots and spaces: git's own list for
# recognising `.git` (CVE-2014-9390); `.GIT` and `.g\u200cit` are `.git` on macOS.
IGNORED_IN_NAMES = dict.fromkeys(map(ord, "\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                          "\u206a\u206b\u206c\u206d\u206e\u206f\ufeff"))


def is_git_folder_name(name):
    """Whether a file system may take `name` for a repository's `.git`."""
    name = unicodedata.normalize("NFC", name.translate(IGNORED_IN_NAMES)).rstrip(". ").casefold()
    return name in (".git", "git~1")


# Folders that hold other tools' state, not a project's files: a walk outside git leaves them out,
# as ruff and black do (in a repository, git decides: a pull request could hide a checkpoint in a
# folder named `venv`). A virtual environment is also known by its pyvenv.cfg or conda-meta.
TOOL_FOLDERS = {
    **dict.fromkeys((".hg", ".svn", ".bzr", "_darcs", ".jj", "CVS"), "a version-control folder"),
    **dict.fromkeys((".venv", "venv", "site-packages", "__pypackages__"), "a virtual environment"),
    **dict.fromkeys(("__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox", ".eggs",
                     ".ipynb_checkpoints"), "a cache"),
    "node_modules": "npm's packages",
}


def tool_folder(path, name):
    """Why a walk outside git leaves the folder `path` (named `name`) out, or None."""
    reason = TOOL_FOLDERS.get(name)
    if reason is None and (os.path.isfile(os.path.join(path, "pyvenv.cfg"))
                           or os.path.isdir(os.path.join(path, "conda-meta"))):
        reason = "a virtual environment"
    return reason


def in_git_work_tree(folder):
    """Whether `folder` lies in a git work tree: it or a folder above it holds a `.git`."""
    here = os.path.realpath(folder)
    while True:
        if os.path.lexists(os.path.join(here, ".git")):
            return True
        parent = os.path.dirname(here)
        if parent == here:
            return False
        here = parent


def entries(top, inside, depth=None, leave_out=None):
    """Yield (folder, [(name, kind)]) for `top` and the folders below it, in sorted order, `depth`
    levels down at most (None: all). `kind` is "folder" (entered, or a link to a folder that leads
    out of the repository: then "linked-out"), "left-out" (a folder `leave_out(path, name)` gave a
    reason for), or "file" (anything else, links to files included).
    `inside(real_path)` says whether a real path lies in the repository."""
    top_real = os.path.realpath(top)
    entered = {top_real}
    stack = [(top, top_real, 0)]
    while stack:
        folder, folder_real, level = stack.pop()
        listed, below = [], []
        for name in sorted(_names(folder)):
            path = os.path.join(folder, name)
            if not os.path.isdir(path):
                listed.append((name, "file"))
                continue
            if is_git_folder_name(name):
                continue
            if leave_out is not None and leave_out(path, name):
                listed.append((name, "left-out"))
                continue
            linked = os.path.islink(path)
            # Resolving every folder would cost its depth each time: only links need it.
            real = os.path.realpath(path) if linked else os.path.join(folder_real, name)
            if linked and not inside(real):
                listed.append((name, "linked-out"))
                continue
            listed.append((name, "folder"))
            if real not in entered and (depth is None or level + 1 < depth):
                entered.add(real)
                below.append((path, real, level + 1))
        yield folder, listed
        stack.extend(reversed(below))


def _names(folder):
    try:
        return os.listdir(folder)
    except OSError:
        return []  # unreadable or gone: as os.walk, nothing in it to list
