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

HIGHEST_PROTOCOL = 5
MAX_OPCODES = 100_000  # the legacy magic number takes 3; text stops within a few lines
# What strtol/PyLong_FromString/PyOS_string_to_double could possibly accept on a line.  They
# read it as a C string: it ends at its first NUL, and strtol takes an empty one for 0.
NUMBER_LINE = re.compile(rb"[0-9A-Za-z_+\-. \t\r\x0b\x0c]*")

STOPS, IMPORTS, COMPLETES, UNKNOWN = "stops", "imports", "completes", "unknown"

# Value types, as far as they decide anything: only text can name a global.
TEXT, OTHER = "text", "other"


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


class _Reached(Exception):
    """Raised by the opcodes that end the walk with an outcome (STOP, the global ones)."""

    def __init__(self, outcome):
        super().__init__()
        self.outcome = outcome


class _Reach:
    """What the opcode handlers share: the bytes, the stack of value types, the MARKs, the memo."""

    __slots__ = ("marks", "memo", "source", "stack")

    def __init__(self, source):
        self.source = source
        self.stack = []
        self.marks = []  # stack depths
        self.memo = {}  # index -> value type


def reach(read, size, head=b""):
    """Follow the pickle at byte 0 of a `size`-byte file whose first bytes are `head`;
    `read(offset, n)` gives the rest as far as it is needed."""
    source = _Source(read, size, head)
    try:
        return _follow(source)
    except _Reached as reached:
        return reached.outcome
    except _Stop as stop:
        return Outcome(STOPS, str(stop))
    except _Undecided as why:
        return Outcome(UNKNOWN, str(why))


def _follow(source):
    # Each handler gets the offset just past its opcode and returns the next opcode's.
    state = _Reach(source)
    dispatch = _DISPATCH
    pos = 0
    for _ in range(MAX_OPCODES):
        pos = dispatch[_argument(source, pos, 1)[0]](state, pos + 1)
    raise _Undecided(f"it runs more than {MAX_OPCODES:,} opcodes")


# -- what the handlers share ----------------------------------------------------------------


def _need(state, count):
    """Stop unless `count` items sit above the last MARK."""
    if len(state.stack) - (state.marks[-1] if state.marks else 0) < count:
        raise _Stop("stack underflow")


def _pop_mark(state):
    if not state.marks:
        raise _Stop("no MARK")
    del state.stack[state.marks.pop():]


def _argument(source, start, length):
    if not source.ensure(start + length):
        raise _Stop("data ends inside an argument")
    return source.data[start:start + length]


def _text_line(source, start, minimum=2):
    line, end = source.line(start)
    if line is None or len(line) < minimum:
        raise _Stop("bad line")
    return line[:-1], end


def _c_string(line):
    """`line` as C code reads it: up to its first NUL."""
    return line.split(b"\0", 1)[0]


def _decimal(line):
    """A memo index as PyLong_FromString(s, NULL, 10) reads it."""
    try:
        return int(line.decode("ascii"), 10)
    except (UnicodeDecodeError, ValueError):
        raise _Stop("not a number") from None


# -- opcode handlers: (state, offset past the opcode) -> offset of the next opcode -------------
# The opcodes that make the unpickler resolve a global (find_class) end the walk with IMPORTS:
# GLOBAL, INST, STACK_GLOBAL and the copyreg extension codes.


def _global(state, pos):
    """GLOBAL: two lines, each at least one character and UTF-8."""
    module, pos = _text_line(state.source, pos)
    qualname, pos = _text_line(state.source, pos)
    try:
        name = f"{module.decode('utf-8')}.{qualname.decode('utf-8')}"
    except UnicodeDecodeError:
        raise _Stop("a GLOBAL name that is not UTF-8") from None
    raise _Reached(Outcome(IMPORTS, name))


def _inst(state, pos):
    """INST: _pickle.c looks for its MARK before reading the name."""
    if not state.marks:
        raise _Stop("no MARK")
    raise _Reached(Outcome(IMPORTS, "INST"))


def _stack_global(state, pos):
    _need(state, 2)
    if state.stack[-1] is not TEXT or state.stack[-2] is not TEXT:
        raise _Stop("STACK_GLOBAL without two strings")
    raise _Reached(Outcome(IMPORTS, "STACK_GLOBAL"))


def _extension(name):
    """EXT1, EXT2, EXT4: the copyreg extension codes."""
    def handler(state, pos):
        raise _Reached(Outcome(IMPORTS, name))
    return handler


def _stop(state, pos):
    _need(state, 1)
    raise _Reached(Outcome(COMPLETES))


def _pushes(kind):
    """An opcode without an argument that pushes one value."""
    def handler(state, pos):
        state.stack.append(kind)
        return pos
    return handler


def _fixed(length, kind):
    """An opcode with an argument of `length` bytes that pushes one value."""
    def handler(state, pos):
        _argument(state.source, pos, length)
        state.stack.append(kind)
        return pos + length
    return handler


def _counted(width, signed, kind):
    """An opcode with a counted payload: its length in `width` bytes, then the bytes."""
    def handler(state, pos):
        count = int.from_bytes(_argument(state.source, pos, width), "little", signed=signed)
        if count < 0:
            raise _Stop("negative length")
        pos += width
        if pos + count > state.source.size:
            raise _Stop("data ends inside a value")
        state.stack.append(kind)
        return pos + count  # its bytes are never needed: a bad encoding would only stop it sooner
    return handler


def _mark(state, pos):
    state.marks.append(len(state.stack))
    return pos


def _proto(state, pos):
    if _argument(state.source, pos, 1)[0] > HIGHEST_PROTOCOL:
        raise _Stop("unsupported protocol")
    return pos + 1


def _frame(state, pos):
    """FRAME: its bytes must exist, or it stops."""
    length = int.from_bytes(_argument(state.source, pos, 8), "little")
    if pos + 8 + length > state.source.size:
        raise _Stop("data ends inside a frame")
    # Reading from a file, _pickle.c buffers exactly the frame and, when an argument runs
    # past its end, refills from after the frame: the frame's unread bytes are dropped,
    # so the opcodes it then reads are not the bytes in order (found by our red team).
    raise _Undecided("it has a FRAME, which _pickle.c reads from a file differently than in order")


def _binput(width):
    """BINPUT, LONG_BINPUT (an index of `width` bytes) and MEMOIZE (width 0: the memo's size)."""
    def handler(state, pos):
        index = int.from_bytes(_argument(state.source, pos, width), "little") if width else len(state.memo)
        _need(state, 1)
        state.memo[index] = state.stack[-1]
        return pos + width
    return handler


def _binget(width):
    """BINGET, LONG_BINGET"""
    def handler(state, pos):
        index = int.from_bytes(_argument(state.source, pos, width), "little")
        if index not in state.memo:
            raise _Stop("memo entry missing")
        state.stack.append(state.memo[index])
        return pos + width
    return handler


def _put(state, pos):
    """PUT: the line is read before the stack is checked."""
    line, pos = _text_line(state.source, pos)
    _need(state, 1)
    state.memo[_decimal(_c_string(line))] = state.stack[-1]
    return pos


def _get(state, pos):
    line, pos = _text_line(state.source, pos)
    index = _decimal(_c_string(line))
    if index not in state.memo:
        raise _Stop("memo entry missing")
    state.stack.append(state.memo[index])
    return pos


def _number(state, pos):
    """INT, LONG, FLOAT"""
    line, pos = _text_line(state.source, pos)
    if not NUMBER_LINE.fullmatch(_c_string(line)):
        raise _Stop("not a number")
    state.stack.append(OTHER)
    return pos


def _string(state, pos):
    """STRING: must be quoted."""
    line, pos = _text_line(state.source, pos)
    stripped = line.rstrip(b" \t\r")
    if not any(len(s) >= 2 and s[:1] == s[-1:] and s[:1] in (b"'", b'"') for s in (line, stripped)):
        raise _Stop("STRING not quoted")
    state.stack.append(TEXT)
    return pos


def _unicode(state, pos):
    _, pos = _text_line(state.source, pos, minimum=1)
    state.stack.append(TEXT)
    return pos


def _cannot_go_on(state, pos):
    """PERSID, BINPERSID: pickle.load has no persistent_load; REDUCE: nothing on the stack can be
    called before a global is resolved; NEXT_BUFFER: no buffers given."""
    raise _Stop("cannot go on")


def _pop(state, pos):
    """POP: a MARK on top is popped instead."""
    if state.marks and state.marks[-1] == len(state.stack):
        state.marks.pop()
    else:
        _need(state, 1)
        state.stack.pop()
    return pos


def _pop_mark_opcode(state, pos):
    _pop_mark(state)
    return pos


def _dup(state, pos):
    _need(state, 1)
    state.stack.append(state.stack[-1])
    return pos


def _tuple_of(count):
    """TUPLE1-3"""
    def handler(state, pos):
        _need(state, count)
        del state.stack[len(state.stack) - count:]
        state.stack.append(OTHER)
        return pos
    return handler


def _collect(state, pos):
    """TUPLE, LIST, DICT, FROZENSET: the items above the MARK become one value."""
    _pop_mark(state)
    state.stack.append(OTHER)
    return pos


def _add_items(state, pos):
    """APPENDS, SETITEMS, ADDITEMS: into the item below the MARK."""
    _pop_mark(state)
    _need(state, 1)
    return pos


def _takes(count, pops):
    """APPEND, SETITEM, BUILD (on a plain value it can only fail or do nothing), READONLY_BUFFER:
    need `count` items and leave all but `pops` of them."""
    def handler(state, pos):
        _need(state, count)
        if pops:
            del state.stack[-pops:]
        return pos
    return handler


def _builds_object(state, pos):
    """OBJ, NEWOBJ, NEWOBJ_EX: need a class, which needs a global."""
    raise _Undecided("it builds an object")


def _unknown(state, pos):
    raise _Stop("unknown opcode")


_HANDLERS = {  # opcode byte (pickle's constant): handler
    b'c': _global,  # GLOBAL
    b'i': _inst,  # INST
    b'\x93': _stack_global,  # STACK_GLOBAL
    b'\x82': _extension("EXT1"),  # EXT1
    b'\x83': _extension("EXT2"),  # EXT2
    b'\x84': _extension("EXT4"),  # EXT4
    b'N': _pushes(OTHER),  # NONE
    b'\x88': _pushes(OTHER),  # NEWTRUE
    b'\x89': _pushes(OTHER),  # NEWFALSE
    b'}': _pushes(OTHER),  # EMPTY_DICT
    b']': _pushes(OTHER),  # EMPTY_LIST
    b')': _pushes(OTHER),  # EMPTY_TUPLE
    b'\x8f': _pushes(OTHER),  # EMPTY_SET
    b'J': _fixed(4, OTHER),  # BININT
    b'K': _fixed(1, OTHER),  # BININT1
    b'M': _fixed(2, OTHER),  # BININT2
    b'G': _fixed(8, OTHER),  # BINFLOAT
    b'X': _counted(4, False, TEXT),  # BINUNICODE
    b'\x8c': _counted(1, False, TEXT),  # SHORT_BINUNICODE
    b'\x8d': _counted(8, False, TEXT),  # BINUNICODE8
    b'T': _counted(4, True, TEXT),  # BINSTRING (decoded as utf-8)
    b'U': _counted(1, False, TEXT),  # SHORT_BINSTRING
    b'B': _counted(4, False, OTHER),  # BINBYTES
    b'C': _counted(1, False, OTHER),  # SHORT_BINBYTES
    b'\x8e': _counted(8, False, OTHER),  # BINBYTES8
    b'\x96': _counted(8, False, OTHER),  # BYTEARRAY8
    b'\x8a': _counted(1, False, OTHER),  # LONG1
    b'\x8b': _counted(4, True, OTHER),  # LONG4
    b'(': _mark,  # MARK
    b'.': _stop,  # STOP
    b'\x80': _proto,  # PROTO
    b'\x95': _frame,  # FRAME
    b'q': _binput(1),  # BINPUT
    b'r': _binput(4),  # LONG_BINPUT
    b'\x94': _binput(0),  # MEMOIZE
    b'h': _binget(1),  # BINGET
    b'j': _binget(4),  # LONG_BINGET
    b'p': _put,  # PUT
    b'g': _get,  # GET
    b'I': _number,  # INT
    b'L': _number,  # LONG
    b'F': _number,  # FLOAT
    b'S': _string,  # STRING
    b'V': _unicode,  # UNICODE
    b'P': _cannot_go_on,  # PERSID
    b'Q': _cannot_go_on,  # BINPERSID
    b'R': _cannot_go_on,  # REDUCE
    b'\x97': _cannot_go_on,  # NEXT_BUFFER
    b'0': _pop,  # POP
    b'1': _pop_mark_opcode,  # POP_MARK
    b'2': _dup,  # DUP
    b'\x85': _tuple_of(1),  # TUPLE1
    b'\x86': _tuple_of(2),  # TUPLE2
    b'\x87': _tuple_of(3),  # TUPLE3
    b't': _collect,  # TUPLE
    b'l': _collect,  # LIST
    b'd': _collect,  # DICT
    b'\x91': _collect,  # FROZENSET
    b'e': _add_items,  # APPENDS
    b'u': _add_items,  # SETITEMS
    b'\x90': _add_items,  # ADDITEMS
    b'a': _takes(2, 1),  # APPEND
    b's': _takes(3, 2),  # SETITEM
    b'b': _takes(2, 1),  # BUILD
    b'\x98': _takes(1, 0),  # READONLY_BUFFER
    b'o': _builds_object,  # OBJ
    b'\x81': _builds_object,  # NEWOBJ
    b'\x92': _builds_object,  # NEWOBJ_EX
}
_DISPATCH = [_unknown] * 256  # indexed by opcode byte
for _opcode, _handler in _HANDLERS.items():
    _DISPATCH[_opcode[0]] = _handler
del _opcode, _handler
