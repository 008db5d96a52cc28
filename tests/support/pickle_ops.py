"""Pickle opcodes, spelled out so each hand-made payload says exactly what it holds."""

import struct

PROTO2 = b"\x80\x02"


def text(value):
    """BINUNICODE: a string as Python's pickle writes it (a lone surrogate too: 'surrogatepass')."""
    encoded = value.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def number(value):
    """BININT1, BININT2 or BININT: a non-negative small int, or any 32-bit one."""
    if 0 <= value < 0x100:
        return b"K" + bytes([value])
    if 0 <= value < 0x10000:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


def global_(module, name):
    """GLOBAL: `module.name`."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def assert_keyed_by_pickles_opcodes(module, more_than):
    """`module._HANDLERS` (more than `more_than` entries) spells each opcode as a byte (importing
    pickle would cost every check ~1 ms) with a comment naming pickle's constant: hold the two
    to each other."""
    import pickle

    entries = dispatch_table(module)
    assert len(entries) == len(module._HANDLERS) > more_than
    for opcode, name in entries:
        assert opcode == getattr(pickle, name), name


def dispatch_table(module):
    """[(opcode byte, the name of pickle's constant its comment gives)] for each entry of
    `module._HANDLERS`, read from the source."""
    import ast
    import inspect
    import re

    source = inspect.getsource(module)
    start = source.index("_HANDLERS = {")
    table = source[start:source.index("\n}", start)]
    entries = re.findall(r"^\s+(b'[^']+'): \S.*#\s*([A-Z0-9_]+)\b.*$", table, re.MULTILINE)
    return [(ast.literal_eval(literal), name) for literal, name in entries]
