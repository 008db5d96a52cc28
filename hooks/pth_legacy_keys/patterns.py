"""Globs, expanded the way a repository's files must be: whatever a pull request adds.

Python's glob skips hidden names (a pull request's `models/.x.pth` would pass unseen) and
follows every linked folder (two links to `.` make `**` endless). Here each name is matched with
Python's own fnmatch (`*`, `?`, `[...]`, hidden names included) and `**` stands for any number
of whole names, over walk.py's walk: linked folders inside the repository are entered once, and a
link to a folder outside it, where the pattern could match below, is returned as a path of its
own, to be reported rather than silently passed.
"""

import os
import re
from fnmatch import fnmatch

from .walk import entries

GLOB_CHARACTERS = frozenset("*?[")


def is_pattern(path):
    return bool(GLOB_CHARACTERS & set(path))


def expand(pattern, walk_folder, inside):
    """The paths `pattern` matches, sorted: each matching file (a link to a file included), for
    each matching folder `walk_folder(folder)`'s files, and each link to a folder outside the
    repository (`inside(real path)` is false) at or above a place the pattern could match."""
    base, parts = _split_base(pattern)
    if not parts or not os.path.isdir(base or "."):
        return []
    depth = None if "**" in parts else len(parts)
    found, walked = [], {os.path.realpath(base or ".")}
    for folder, listed in entries(base or ".", inside, depth):
        for name, kind in listed:
            path = os.path.join(folder, name)
            if not base:
                path = os.path.normpath(path)  # "models/x.pth", as the user's relative pattern, not "./models/x.pth"
            names = os.path.relpath(path, base or ".").split(os.sep)
            states = _states(parts, names)
            if kind == "linked-out":
                if states:  # the pattern could match here or below
                    found.append(path)
            elif len(parts) in states:
                if kind == "file":
                    found.append(path)
                elif os.path.realpath(path) not in walked:  # a link back to a folder already walked
                    walked.add(os.path.realpath(path))
                    found.extend(walk_folder(path))
    return sorted(dict.fromkeys(found))


def _states(parts, names):
    """The positions in `parts` that matching `names` can reach (len(parts): the whole pattern
    matched); empty when nothing below `names` can match either."""
    states = _through_double_stars(parts, {0})
    for name in names:
        moved = set()
        for at in states:
            if at < len(parts) and parts[at] == "**":
                moved.add(at)  # `**` takes this name too
            elif at < len(parts) and _name_matches(name, parts[at]):
                moved.add(at + 1)
        states = _through_double_stars(parts, moved)
        if not states:
            break
    return states


def _through_double_stars(parts, states):
    """`states`, and the positions after each `**` they stand at (a `**` may take no name)."""
    result, pending = set(states), list(states)
    while pending:
        at = pending.pop()
        if at < len(parts) and parts[at] == "**" and at + 1 not in result:
            result.add(at + 1)
            pending.append(at + 1)
    return result


def _name_matches(name, part):
    try:
        return fnmatch(name, part)
    except re.error:  # `[z-a]` on Python 3.9: a pattern that is not one matches nothing
        return False


def _split_base(pattern):
    """(the folder before the first name with a glob character, the names from it on)."""
    parts = re.split(r"[\\/]" if os.altsep else "/", pattern)
    for index, part in enumerate(parts):
        if is_pattern(part):
            base = "/".join(parts[:index])
            if pattern.startswith(("/", os.sep)) and not base:
                base = os.sep
            return base, [part for part in parts[index:] if part]
    return pattern, []
