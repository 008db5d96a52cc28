"""The commands we print for a user to copy: `--` before the file names, and each name quoted so
that the shell gives back exactly that name, whatever a pull request called the file."""

import os
import shlex


def fix_command(to, paths):
    """The command that fixes `paths`: `--` before the names, so that none is read as an option,
    and each name quoted so that the shell gives back exactly that name."""
    direction = "" if to == "legacy" else " --to parametrized"
    return f"pth-legacy-keys fix{direction} --" + "".join(" " + shell_word(path) for path in paths)


def shell_word(name):
    """`name` as one shell word that bash and zsh read back as exactly `name`: shlex.quote's
    single quotes where the name is printable, else ANSI-C quoting ($'...') with each byte that
    is not printable as \\xHH (a newline, an escape code, a byte that is not UTF-8)."""
    if name.isprintable():
        return shlex.quote(name)
    spelled = []
    for char in name:
        if char in "\\'":
            spelled.append("\\" + char)
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
