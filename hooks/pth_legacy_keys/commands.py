"""The commands we print for a user to copy: `--` before the file names, and each name quoted so
that the shell gives back exactly that name, whatever a pull request called the file."""

import os
import shlex

from .byte_source import is_url
from .patterns import GLOB_CHARACTERS
from .rename import DEFAULT_FAMILIES, LEGACY

FIX_HOOK = "fix-pth-legacy-keys"
FIX_A_URL = "download the file and run pth-legacy-keys fix on the copy"  # fix writes only local files
# A hint names at most this many files; beyond, it repeats the selection that found them.
HINT_NAMES = 20


def fix_command(to, files, families=None, lfs_pointers="error", selection=None):
    """The command that fixes `files` and nothing else: `--` before the names, so that none is
    read as an option, each name made literal (the CLI takes `[`, `*` and `?` for a pattern) and
    quoted so that the shell gives back exactly that name. `families` (when not the direction's
    default) and `lfs_pointers` (remote) are passed on. With `selection`, (options, paths) as the
    user gave them, those choose the files instead, as they did for the check."""
    options = fix_options(to, families, lfs_pointers)
    if selection is not None:
        chosen, paths = selection
        options = [*chosen, *options]
    else:
        paths = [literal_path(name) for name in files]
    words = ["pth-legacy-keys", "fix", *map(shell_word, options)]
    return " ".join(words + (["--", *map(shell_word, paths)] if paths or selection is None else []))


def fix_options(to, families=None, lfs_pointers="error"):
    """The options that make a fix convert what a check with these settings asked for."""
    options = [] if to == LEGACY else ["--to", to]
    if families and tuple(families) != DEFAULT_FAMILIES[to]:
        options += ["--only", ",".join(families)]
    if lfs_pointers == "remote":  # a pointer's object is what needs the fix
        options += ["--lfs-pointers", "remote"]
    return options


def literal_path(name):
    """`name` as a PATH the CLI reads as that very file: each `[`, `*` and `?` in a class of its own
    (`[[]`, `[*]`, `[?]`), so that the pattern matches that name and no other."""
    if is_url(name) or not GLOB_CHARACTERS & set(name):
        return name
    return "".join(f"[{char}]" if char in GLOB_CHARACTERS else char for char in name)


def fix_hint(to_fix, to, families, lfs_pointers, hook, selection):
    """The lines that end a failing check: the command that fixes `to_fix`. `selection` is
    (options, paths) as the user gave them, repeated when there are too many files to name (None:
    it cannot be, so every file is named). A hook's user has no pth-legacy-keys on PATH: the hint
    names the fix hook, and how to get the command. A URL cannot be fixed where it is."""
    urls = [path for path in to_fix if is_url(path)]
    to_fix = [path for path in to_fix if not is_url(path)]
    lines = []
    if to_fix:
        many = len(to_fix) > HINT_NAMES
        if hook:
            # Every name, however many: pre-commit named them to us, and --all-files (or a bare fix)
            # would rewrite files this check never saw. `./` keeps a name like `-cevil/x.pth` from
            # being pre-commit's own option (-c: a configuration the pull request brings).
            files = " ".join(shell_word(f"./{path}" if path.startswith("-") else path) for path in to_fix)
            lines += [f"to fix them: pre-commit run --hook-stage manual {FIX_HOOK} --files {files}",
                      f"  (or: pip install pth-legacy-keys && {fix_command(to, to_fix, families, lfs_pointers)})"]
        elif many and selection is not None:
            lines.append(f"to fix them: {fix_command(to, [], families, lfs_pointers, selection)}")
        else:
            lines.append(f"to fix them: {fix_command(to, to_fix, families, lfs_pointers)}")
    if urls:
        lines.append(f"to fix {'a URL' if len(urls) == 1 else 'URLs'}: {FIX_A_URL}")
    return lines


def shell_word(name):
    """`name` as one shell word that bash and zsh read back as exactly `name`: shlex.quote's
    single quotes where the name is printable, else ANSI-C quoting ($'...') with each byte that
    is not printable as \\xHH (a newline, an escape code, a byte that is not UTF-8). A name with
    `##[` in it (GitHub's runner reads that anywhere in a log line as a command) gets ANSI-C
    quoting too, with its `[` as \\x5b: the line is no command, and the shell still reads the name."""
    if name.isprintable() and "##[" not in name:
        quoted = shlex.quote(name)
        # zsh expands a word that starts with `=` to a command's path: shlex leaves it bare
        return f"'{name}'" if quoted == name and name.startswith("=") else quoted
    spelled = []
    for char in name:
        if char in "\\'":
            spelled.append("\\" + char)
        elif char == "[":
            spelled.append("\\x5b")
        elif char.isprintable():
            spelled.append(char)
        else:
            spelled.extend(f"\\x{byte:02x}" for byte in name_bytes(char))
    return "$'" + "".join(spelled) + "'"


def name_bytes(char):
    """The bytes `char` stands for in a file's name (os.fsencode: a lone surrogate from os.fsdecode
    is the byte it could not decode)."""
    try:
        return os.fsencode(char)
    except UnicodeEncodeError:  # a surrogate no file system decoding made: its UTF-8-like spelling
        return char.encode("utf-8", "surrogatepass")
