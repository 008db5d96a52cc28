"""Rewrite strings inside a protocol-2 pickle without disturbing anything else."""

import struct


def replace_strings(data, replacements):
    """Return `data` with each BINUNICODE at a given offset holding a new string.

    `replacements` is an iterable of (Text, new value).  Memo indices do not depend on
    string lengths, and protocol 2 has no frames, so nothing else needs adjusting.
    The new strings stay BINUNICODE: torch's weights-only loader accepts no other.
    """
    out = []
    pos = 0
    for text, new in sorted(replacements, key=lambda pair: pair[0].offset):
        encoded = new.encode("utf-8", "surrogatepass")
        out.append(data[pos:text.offset])
        out.append(b"X" + struct.pack("<I", len(encoded)) + encoded)
        pos = text.offset + 5 + text.nbytes
    out.append(data[pos:])
    return b"".join(out)
