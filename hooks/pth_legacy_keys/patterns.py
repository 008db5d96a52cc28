"""Globs, expanded the way a repository's files must be: whatever a pull request adds.

Python's glob skips hidden names (a pull request's `models/.x.pth` would pass unseen) and
follows linked folders (two links to `.` make `**` endless). Here `*`, `?`, `[...]` and `**`
match every name, hidden or not, and only real folders are entered, as git lists a repository:
a link is one entry, whatever it points to.
"""

import os
import re

GLOB_CHARACTERS = frozenset("*?[")
NEVER_ENTERED = frozenset((".git",))  # a repository's own database, never its files


def is_pattern(path):
    return bool(GLOB_CHARACTERS & set(path))


def expand(pattern, walk_folder):
    """The paths `pattern` matches, sorted: each matching file (a link to a file included), and
    for each matching real folder, `walk_folder(folder)`'s files; a link to a folder is neither."""
    base, rest = _split_base(pattern)
    if not rest or not os.path.isdir(base or "."):
        return []
    matches = _regex(rest).fullmatch
    depth = None if "**" in rest else len(rest)
    found = []
    for folder, names in _entries(base or ".", depth):
        for name in names:
            path = os.path.join(folder, name)
            if not base:
                path = os.path.normpath(path)  # "models/x.pth", as the user's relative pattern, not "./models/x.pth"
            relative = os.path.relpath(path, base or ".").replace(os.sep, "/")
            if not matches(relative):
                continue
            if not os.path.isdir(path):
                found.append(path)  # a file, or a link to one
            elif not os.path.islink(path):
                found.extend(walk_folder(path))
    return sorted(dict.fromkeys(found))


def _split_base(pattern):
    """(the folder before the first component with a glob character, the components from it)."""
    parts = re.split(r"[\\/]" if os.altsep else "/", pattern)
    for index, part in enumerate(parts):
        if is_pattern(part):
            base = "/".join(parts[:index])
            if pattern.startswith(("/", os.sep)) and not base:
                base = os.sep
            return base, [part for part in parts[index:] if part]
    return pattern, []


def _entries(top, depth):
    """(folder, names of its entries) for `top` and the real folders below it, at most `depth`
    levels down (None: all), never into a link or a repository's .git."""
    for folder, folders, files in os.walk(top):
        level = 0 if folder == top else os.path.relpath(folder, top).count(os.sep) + 1
        yield folder, sorted(folders + files)
        linked = {name for name in folders if os.path.islink(os.path.join(folder, name))}
        too_deep = depth is not None and level + 1 >= depth
        folders[:] = [] if too_deep else sorted(set(folders) - linked - NEVER_ENTERED)


def _regex(components):
    """A regex over "/"-separated relative paths: `**` is any number of whole components."""
    pieces = []
    for index, component in enumerate(components):
        last = index == len(components) - 1
        if component == "**":
            pieces.append(".*" if last else "(?:[^/]*/)*")
        else:
            pieces.append(_component(component) + ("" if last else "/"))
    flags = re.DOTALL | (re.IGNORECASE if os.path.normcase("A") == "a" else 0)
    return re.compile("".join(pieces), flags)


def _component(text):
    """One name's pattern: `*` and `?` within the name, `[...]` a class, the rest literal."""
    out, index = [], 0
    while index < len(text):
        char = text[index]
        index += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = text.find("]", index + 1 if text[index:index + 1] in ("!", "]") else index)
            if end < 0:
                out.append(re.escape(char))
                continue
            members = text[index:end]
            index = end + 1
            negated = members.startswith("!")
            members = members[1:] if negated else members
            body = "".join("\\" + c if c in "\\^[" else c for c in members)
            out.append(f"[{'^/' if negated else ''}{body}]")
        else:
            out.append(re.escape(char))
    return "".join(out)
