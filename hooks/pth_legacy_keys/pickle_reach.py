"""How far CPython's unpickler gets with a file's first bytes, without running anything.

torch.load unpickles any file that is neither a zip nor a tar from byte 0 (the legacy
format's magic number comes first).  A safetensors file, a path-configuration text or a
file that starts like a Git LFS pointer is therefore also a pickle to torch, and we may
only call it harmless if that pickle stops before it resolves a global.

`reach` follows the opcodes the way `_pickle.c` (what `pickle.load` is) does, tracking
only what decides whether it goes on: the stack depth, the MARKs, the memo and the type
of each value.  It says "stops" only where CPython stops whatever the values are (an
unknown opcode, too few items, no MARK, a missing memo entry, a call, data ending);
wherever the outcome depends on more than that, it assumes the unpickler goes on.  So it
may call a harmless file dangerous, never the reverse.
"""

import re

from .pickle_walk import MAX_PICKLE_BYTES

# Opcodes that make the unpickler resolve a global (find_class): GLOBAL, INST,
# STACK_GLOBAL and the copyreg extension codes.
GLOBAL_OPCODES = {0x63: "GLOBAL", 0x69: "INST", 0x93: "STACK_GLOBAL", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4"}
HIGHEST_PROTOCOL = 5
MAX_OPCODES = 100_000  # the legacy magic number takes 3; text stops within a few lines
# What strtol/PyLong_FromString/PyOS_string_to_double could possibly accept on a line.  They
# read it as a C string: it ends at its first NUL, and strtol takes an empty one for 0.
NUMBER_LINE = re.compile(rb"[0-9A-Za-z_+\-. \t\r\x0b\x0c]*")

STOPS, IMPORTS, COMPLETES, UNKNOWN = "stops", "imports", "completes", "unknown"

# Value types, as far as they decide anything: only text can name a global.
TEXT, OTHER = "text", "other"

_FIXED_ARGUMENT = {  # opcode: (argument bytes, the type it pushes)
    0x4A: (4, OTHER), 0x4B: (1, OTHER), 0x4D: (2, OTHER), 0x47: (8, OTHER),  # BININT*, BINFLOAT
}
_PUSH = {  # opcodes without an argument that push one value
    0x4E: OTHER, 0x88: OTHER, 0x89: OTHER, 0x7D: OTHER, 0x5D: OTHER, 0x29: OTHER, 0x8F: OTHER,
}
# Counted payloads: opcode -> (length bytes, signed length, the type pushed)
_COUNTED = {
    0x58: (4, False, TEXT), 0x8C: (1, False, TEXT), 0x8D: (8, False, TEXT),  # BINUNICODE*
    0x54: (4, True, TEXT), 0x55: (1, False, TEXT),  # BINSTRING, SHORT_BINSTRING (decoded as utf-8)
    0x42: (4, False, OTHER), 0x43: (1, False, OTHER), 0x8E: (8, False, OTHER),  # BINBYTES*
    0x96: (8, False, OTHER),  # BYTEARRAY8
    0x8A: (1, False, OTHER), 0x8B: (4, True, OTHER),  # LONG1, LONG4
}


class Outcome:
    """Where the unpickler ends: it `stops` with an error, `imports` a global (`name`),
    `completes` (reaches STOP with a value), or we cannot tell (`unknown`)."""

    __slots__ = ("kind", "detail")

    def __init__(self, kind, detail=None):
        self.kind = kind
        self.detail = detail


class _Source:
    """The file's bytes, read in growing windows and only as far as they are needed."""

    def __init__(self, read, size, head):
        self.read = read  # read(offset, length) -> bytes
        self.size = size
        self.data = head

    def ensure(self, end):
        """True when bytes up to `end` are in `data`; False past the file's end."""
        if end <= len(self.data):
            return True
        if end > self.size:
            return False
        if end > MAX_PICKLE_BYTES:
            raise _Undecided(f"it would read more than {MAX_PICKLE_BYTES >> 20} MiB")
        want = min(self.size, MAX_PICKLE_BYTES, max(end, 2 * len(self.data), 64 * 1024))
        self.data += self.read(len(self.data), want - len(self.data))
        return True

    def line(self, pos):
        """The line from `pos` with its newline, and its end; None when the file ends first
        (_pickle.c's readline then fails)."""
        while True:
            at = self.data.find(b"\n", pos)
            if at >= 0:
                return self.data[pos:at + 1], at + 1
            if len(self.data) >= self.size:
                return None, None
            self.ensure(len(self.data) + 1)


class _Stop(Exception):
    pass


class _Undecided(Exception):
    pass


def reach(read, size, head=b""):
    """Follow the pickle at byte 0 of a `size`-byte file whose first bytes are `head`;
    `read(offset, n)` gives the rest as far as it is needed."""
    source = _Source(read, size, head)
    try:
        return _follow(source)
    except _Stop as stop:
        return Outcome(STOPS, str(stop))
    except _Undecided as why:
        return Outcome(UNKNOWN, str(why))


def _follow(source):
    stack = []
    marks = []
    memo = {}
    pos = 0

    def fence():
        return marks[-1] if marks else 0

    def need(count):  # items above the last MARK
        if len(stack) - fence() < count:
            raise _Stop("stack underflow")

    def pop_mark():
        if not marks:
            raise _Stop("no MARK")
        at = marks.pop()
        del stack[at:]

    def argument(start, length):
        if not source.ensure(start + length):
            raise _Stop("data ends inside an argument")
        return source.data[start:start + length]

    def text_line(start, minimum=2):
        line, end = source.line(start)
        if line is None or len(line) < minimum:
            raise _Stop("bad line")
        return line[:-1], end

    for _ in range(MAX_OPCODES):
        op = argument(pos, 1)[0]
        pos += 1
        if op in GLOBAL_OPCODES:
            name = GLOBAL_OPCODES[op]
            if op == 0x63:  # GLOBAL: two lines, each at least one character and UTF-8
                module, pos = text_line(pos)
                qualname, pos = text_line(pos)
                try:
                    name = f"{module.decode('utf-8')}.{qualname.decode('utf-8')}"
                except UnicodeDecodeError:
                    raise _Stop("a GLOBAL name that is not UTF-8") from None
            elif op == 0x69:  # INST: _pickle.c looks for its MARK before reading the name
                if not marks:
                    raise _Stop("no MARK")
            elif op == 0x93:
                need(2)
                if stack[-1] is not TEXT or stack[-2] is not TEXT:
                    raise _Stop("STACK_GLOBAL without two strings")
            return Outcome(IMPORTS, name)
        if op in _PUSH:
            stack.append(_PUSH[op])
        elif op in _FIXED_ARGUMENT:
            length, kind = _FIXED_ARGUMENT[op]
            argument(pos, length)
            pos += length
            stack.append(kind)
        elif op in _COUNTED:
            width, signed, kind = _COUNTED[op]
            count = int.from_bytes(argument(pos, width), "little", signed=signed)
            if count < 0:
                raise _Stop("negative length")
            pos += width
            if pos + count > source.size:
                raise _Stop("data ends inside a value")
            pos += count  # its bytes are never needed: a bad encoding would only stop it sooner
            stack.append(kind)
        elif op == 0x28:  # MARK
            marks.append(len(stack))
        elif op == 0x2E:  # STOP
            need(1)
            return Outcome(COMPLETES)
        elif op == 0x80:  # PROTO
            if argument(pos, 1)[0] > HIGHEST_PROTOCOL:
                raise _Stop("unsupported protocol")
            pos += 1
        elif op == 0x95:  # FRAME: its bytes must exist, or it stops
            length = int.from_bytes(argument(pos, 8), "little")
            pos += 8
            if pos + length > source.size:
                raise _Stop("data ends inside a frame")
            # Reading from a file, _pickle.c buffers exactly the frame and, when an argument runs
            # past its end, refills from after the frame: the frame's unread bytes are dropped,
            # so the opcodes it then reads are not the bytes in order (found by our red team).
            raise _Undecided("it has a FRAME, which _pickle.c reads from a file differently than in order")
        elif op in (0x71, 0x72, 0x94):  # BINPUT, LONG_BINPUT, MEMOIZE
            width = {0x71: 1, 0x72: 4, 0x94: 0}[op]
            index = int.from_bytes(argument(pos, width), "little") if width else len(memo)
            pos += width
            need(1)
            memo[index] = stack[-1]
        elif op in (0x68, 0x6A):  # BINGET, LONG_BINGET
            width = 1 if op == 0x68 else 4
            index = int.from_bytes(argument(pos, width), "little")
            pos += width
            if index not in memo:
                raise _Stop("memo entry missing")
            stack.append(memo[index])
        elif op == 0x70:  # PUT: the line is read before the stack is checked
            line, pos = text_line(pos)
            need(1)
            memo[_decimal(_c_string(line))] = stack[-1]
        elif op == 0x67:  # GET
            line, pos = text_line(pos)
            index = _decimal(_c_string(line))
            if index not in memo:
                raise _Stop("memo entry missing")
            stack.append(memo[index])
        elif op in (0x49, 0x4C, 0x46):  # INT, LONG, FLOAT
            line, pos = text_line(pos)
            if not NUMBER_LINE.fullmatch(_c_string(line)):
                raise _Stop("not a number")
            stack.append(OTHER)
        elif op == 0x53:  # STRING: must be quoted
            line, pos = text_line(pos)
            stripped = line.rstrip(b" \t\r")
            if not any(len(s) >= 2 and s[:1] == s[-1:] and s[:1] in (b"'", b'"') for s in (line, stripped)):
                raise _Stop("STRING not quoted")
            stack.append(TEXT)
        elif op == 0x56:  # UNICODE
            _, pos = text_line(pos, minimum=1)
            stack.append(TEXT)
        elif op in (0x50, 0x51, 0x52, 0x97):
            # PERSID, BINPERSID: pickle.load has no persistent_load; REDUCE: nothing on the
            # stack can be called before a global is resolved; NEXT_BUFFER: no buffers given.
            raise _Stop("cannot go on")
        elif op == 0x30:  # POP: a MARK on top is popped instead
            if marks and marks[-1] == len(stack):
                marks.pop()
            else:
                need(1)
                stack.pop()
        elif op == 0x31:  # POP_MARK
            pop_mark()
        elif op == 0x32:  # DUP
            need(1)
            stack.append(stack[-1])
        elif op in (0x85, 0x86, 0x87):  # TUPLE1-3
            count = op - 0x84
            need(count)
            del stack[len(stack) - count:]
            stack.append(OTHER)
        elif op in (0x74, 0x6C, 0x64, 0x91):  # TUPLE, LIST, DICT, FROZENSET
            pop_mark()
            stack.append(OTHER)
        elif op in (0x65, 0x75, 0x90):  # APPENDS, SETITEMS, ADDITEMS: into the item below the MARK
            pop_mark()
            need(1)
        elif op == 0x61:  # APPEND
            need(2)
            stack.pop()
        elif op == 0x73:  # SETITEM
            need(3)
            del stack[-2:]
        elif op == 0x62:  # BUILD: on a plain value it can only fail or do nothing
            need(2)
            stack.pop()
        elif op == 0x98:  # READONLY_BUFFER
            need(1)
        elif op in (0x6F, 0x81, 0x92):  # OBJ, NEWOBJ, NEWOBJ_EX: need a class, which needs a global
            raise _Undecided("it builds an object")
        else:
            raise _Stop("unknown opcode")
    raise _Undecided(f"it runs more than {MAX_OPCODES:,} opcodes")


def _c_string(line):
    """`line` as C code reads it: up to its first NUL."""
    return line.split(b"\0", 1)[0]


def _decimal(line):
    """A memo index as PyLong_FromString(s, NULL, 10) reads it."""
    try:
        return int(line.decode("ascii"), 10)
    except (UnicodeDecodeError, ValueError):
        raise _Stop("not a number") from None

