"""Where fix and --report may write: never out of the repository through a link the repository holds.

A pull request can add `models/x.pth` as a symbolic link to a checkpoint elsewhere on the
machine (a cache, another checkout), or a linked folder. Reading through it is harmless; writing
through it would change a file that is not the repository's. So a link met *inside* the root
must lead to a place inside the root and outside any `.git` there (git's own objects, an LFS
store). Links outside the root (a home folder that is itself a link, a path the user typed) are
the user's own and are followed.
"""

import functools
import os

from .errors import Refused
from .walk import is_git_folder_name


def writing_root():
    """The top folder of the git work tree we run in (where pre-commit and the Action run), or
    the current folder outside a repository."""
    return _root_of(os.getcwd())


def inside_repository(real_path):
    """Whether `real_path` lies in the repository we run in (writing_root), outside its .git."""
    return _inside_work_tree(real_path, writing_root())


@functools.lru_cache(maxsize=8)
def _root_of(folder):
    import subprocess  # only fix and linked folders need it: keep a check's start-up short

    try:
        found = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, cwd=folder)
    except OSError:
        found = None
    top = os.fsdecode(found.stdout).strip() if found is not None and found.returncode == 0 else ""
    return os.path.realpath(top or folder)


def require_no_link_out(path, root, to):
    """Raise Refused if `path` passes through a link inside `root` (None: writing_root()) that
    leads outside it."""
    escape = link_out_of(path, root)
    if escape:
        from .commands import fix_command  # only here: a refusal is rare, and shlex costs every run

        raise Refused(f"{describe(escape)}; fix writes there only when you name the file itself: "
                      f"{fix_command(to, [os.path.realpath(path)])}")


def describe(escape):
    link, target, root = escape
    return f"the symbolic link {link} leads out of {root}, to {target}"


def link_out_of(path, root=None):
    """(link, its target, the root) for the first link inside `root` on the way to `path` whose
    target is outside `root`, or None. The walk resolves as the kernel does: `..` after a link is
    the parent of the link's target, not of the link. The root (None: writing_root(), a git call)
    is only worked out when the path has a link."""
    current, *parts = _components(path)
    current = os.path.realpath(current)
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        step = os.path.join(current, part)
        if os.path.islink(step):
            root = os.path.realpath(root or writing_root())
            target = os.path.realpath(step)
            if _inside(current, root) and not _inside_work_tree(target, root):
                return step, target, root
            current = target
        else:
            current = step
    return None


def _components(path):
    """The anchor (a root or the current folder) and the names after it, unnormalised."""
    path = os.fspath(path)
    drive, rest = os.path.splitdrive(path)
    if os.path.isabs(path):
        anchor = drive + rest[:1]
        rest = rest[1:]
    else:
        anchor = os.getcwd() if not drive else drive
    separators = os.sep + (os.altsep or "")
    for separator in separators[1:]:
        rest = rest.replace(separator, os.sep)
    return [anchor, *rest.split(os.sep)]


def _inside(path, root):
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _inside_work_tree(path, root):
    """Inside `root`, and not in a `.git` below it (a repository's or a submodule's database),
    however the file system may spell `.git` (walk.is_git_folder_name)."""
    return _inside(path, root) and not any(map(is_git_folder_name, os.path.relpath(path, root).split(os.sep)))
