"""Walk a checkpoint's pickle as an opcode stream and build an inert tree.

Nothing here imports or calls what the pickle names.  Every opcode and every global
must be one that ``torch.save`` writes for a plain checkpoint (protocol 2); anything
else is refused by name.  The tree holds only dicts, lists, tuples, numbers, `Text`
(a string and where it was defined) and `Tensor` placeholders, so later code can
decide what to rename and where those strings sit in the bytes.
"""

import struct
import sys

from .errors import CheckpointError, Refused

# Hostile-size caps.  A 457-tensor RVC model has a ~60 KB pickle with ~15,000
# opcodes and ~3,700 memo entries; these leave room for checkpoints 1,000x larger.
MAX_PICKLE_BYTES = 64 * 1024 * 1024
MAX_MEMO = 10_000_000
MAX_STACK = 100_000
MAX_MARKS = 10_000
MAX_DEPTH = 100
MAX_INT_BYTES = 64

# torch's typed storage classes: element size, dtype
STORAGE_TYPES = {
    "DoubleStorage": (8, "float64"), "FloatStorage": (4, "float32"), "HalfStorage": (2, "float16"),
    "BFloat16Storage": (2, "bfloat16"), "LongStorage": (8, "int64"), "IntStorage": (4, "int32"),
    "ShortStorage": (2, "int16"), "CharStorage": (1, "int8"), "ByteStorage": (1, "uint8"),
    "BoolStorage": (1, "bool"), "ComplexDoubleStorage": (16, "complex128"),
    "ComplexFloatStorage": (8, "complex64"), "QUInt8Storage": (1, "quint8"), "QInt8Storage": (1, "qint8"),
    "QInt32Storage": (4, "qint32"), "QUInt4x2Storage": (1, "quint4x2"), "QUInt2x4Storage": (1, "quint2x4"),
}
DTYPES = frozenset((
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
    "uint8", "uint16", "uint32", "uint64", "bool", "complex128", "complex64", "complex32",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
    "float4_e2m1fn_x2", "qint8", "quint8", "qint32", "quint4x2", "quint2x4",
    "bits1x8", "bits2x4", "bits4x2", "bits8", "bits16",
))

# Exactly the globals a plain checkpoint uses, each with the one role it may play.
TENSOR_V2, TENSOR_V3, PARAMETER = "tensor_v2", "tensor_v3", "parameter"
ORDERED_DICT, ENCODE, STORAGE, DTYPE = "ordered_dict", "encode", "storage", "dtype"
ROLES = {
    ("torch._utils", "_rebuild_tensor_v2"): TENSOR_V2,
    ("torch._utils", "_rebuild_tensor_v3"): TENSOR_V3,
    ("torch._utils", "_rebuild_parameter"): PARAMETER,
    ("collections", "OrderedDict"): ORDERED_DICT,
    ("_codecs", "encode"): ENCODE,  # how protocol 2 spells a bytes value
    ("torch.storage", "UntypedStorage"): STORAGE,
    **{("torch", name): STORAGE for name in STORAGE_TYPES},
    **{("torch", name): DTYPE for name in DTYPES},
}


# Values people save by accident: say how to save them so that any loader can read them.
# No flag allows them: a tool that runs on strangers' files should not widen what it trusts.
HINTS = {
    "numpy": " (save plain numbers instead: float(x), int(x), x.tolist())",
    "datetime": " (save dates as strings instead: x.isoformat())",
}
# torch.save writes these for tensors that carry Python attributes, which torch.load restores
# with setattr on the tensor: any name, even one that replaces its own `size` or `data`.
TENSOR_STATE_HINT = (" (a tensor saved with Python attributes, which torch.load sets on the tensor "
                     "and can replace its own methods and data; save tensors without attributes)")
TENSOR_STATE_GLOBALS = {("torch._utils", "_rebuild_parameter_with_state"), ("torch._tensor", "_rebuild_from_type_v2")}


class Text:
    """A pickled string.  One object per definition: memo fetches share it."""

    __slots__ = ("value", "offset", "nbytes")

    def __init__(self, value, offset, nbytes):
        self.value = value
        self.offset = offset  # of its BINUNICODE opcode
        self.nbytes = nbytes  # of its UTF-8 payload


class Global:
    __slots__ = ("module", "name", "role")

    def __init__(self, module, name, role):
        self.module = module
        self.name = name
        self.role = role

    @property
    def dotted(self):
        return f"{self.module}.{self.name}"


class Storage:
    __slots__ = ("key", "element_size", "numel", "dtype", "location")

    def __init__(self, key, element_size, numel, dtype=None, location=None):
        self.key = key
        self.element_size = element_size
        self.numel = numel
        self.dtype = dtype  # "float32" ...; None for an untyped storage
        self.location = location  # the device it was saved from: "cpu", "cuda:0" ...


class Tensor:
    __slots__ = ("storage", "shape", "dtype")

    def __init__(self, storage, shape, dtype=None):
        self.storage = storage
        self.shape = shape
        self.dtype = dtype


class Dict:
    """A dict or OrderedDict, its items in pickle order (keys may repeat)."""

    __slots__ = ("items", "ordered", "metadata", "frozen")

    def __init__(self, ordered=False):
        self.items = []
        self.ordered = ordered
        self.metadata = None  # an OrderedDict's `_metadata` attribute, a Dict
        # Handed to a tensor rebuild (backward hooks, metadata): torch keeps or applies that very
        # object then, so a later SETITEM through the memo would change what we checked.
        self.frozen = False


class Bytes:
    """bytes, which protocol 2 spells as _codecs.encode(text, 'latin1')."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


class WalkResult:
    __slots__ = ("root", "end", "storages", "globals", "protocol")

    def __init__(self, root, end, storages, globals, protocol):
        self.root = root
        self.end = end  # offset just past STOP
        self.storages = storages
        self.globals = globals  # the dotted names it imports, in first-use order
        self.protocol = protocol  # from its PROTO opcode; None without one


_unpack_i32 = struct.Struct("<i").unpack_from
_unpack_u32 = struct.Struct("<I").unpack_from
_unpack_u16 = struct.Struct("<H").unpack_from
_unpack_f64 = struct.Struct(">d").unpack_from


class Truncated(CheckpointError):
    """The pickle ended before STOP (the caller may have more bytes to offer)."""


class _Walk:
    """What the opcode handlers share besides the bytes and the stack."""

    __slots__ = ("checked", "fence", "imported", "made", "marks", "memo", "persistent_id", "start", "storages")

    def __init__(self, start, persistent_id):
        self.made = []  # every container the walk made, oldest first: see _release
        self.start = start
        self.persistent_id = persistent_id
        self.memo = {}
        self.marks = []
        self.fence = 0  # like CPython's unpickler: no opcode may take items from below the last MARK
        self.checked = {}  # id -> an argument already validated (kept alive so its id stays its own)
        self.storages = []
        self.imported = {}  # dotted name -> None: the globals in first-use order


class _Stop(Exception):
    """Raised by STOP to end the walk, as CPython's own unpickler does."""

    def __init__(self, result, tree):
        super().__init__()
        self.result = result
        self.tree = tree  # ids of the containers in the result's tree


def walk(data, start=0, persistent_id=None):
    """Walk one pickle in `data` from `start`; return its inert tree and end offset.

    `persistent_id(pid_tuple)` turns a BINPERSID tuple into a `Storage`; it
    raises `Refused` for anything else.
    """
    if len(data) - start > MAX_PICKLE_BYTES:
        raise Refused(f"the pickle is larger than {MAX_PICKLE_BYTES >> 20} MiB")
    state = _Walk(start, persistent_id)
    stack = []
    dispatch = _DISPATCH  # a local: these loops are the hot path
    pos = start
    # Every opcode takes at least one byte, so the size cap also caps the opcode count.
    # Each handler gets the offset just past its opcode and returns the next opcode's.
    # No opcode adds more than one item to the stack, so it cannot outgrow MAX_STACK in the
    # first MAX_STACK bytes: only the opcodes after them need that check (a smaller pickle has none).
    try:
        unchecked_until = start + MAX_STACK
        # `while True` with the test inside, not `while pos < unchecked_until`: CPython 3.11
        # specializes a function's bytecode after 8 unconditional backward jumps (or 8 calls), and
        # a `while <test>` loop ends in a conditional one. Walked once per file, this loop would run
        # unspecialized for the first 8 files of a run (about 0.25 ms more each).
        while True:
            if pos >= unchecked_until:
                break
            pos = dispatch[data[pos]](data, pos + 1, stack, state)
        while True:
            pos = dispatch[data[pos]](data, pos + 1, stack, state)
            if len(stack) > MAX_STACK:
                raise Refused(f"the pickle's stack grows beyond {MAX_STACK:,} items")
    except _Stop as stop:
        _release(state, stack, stop.tree)
        return stop.result
    except struct.error as exc:
        _release(state, stack, failure=exc)
        raise Truncated("the pickle ends before its STOP opcode") from None
    except IndexError as exc:  # `pos` is still the failing opcode's offset: a handler returns only when done
        _release(state, stack, failure=exc)
        if pos + 1 >= len(data):
            raise Truncated("the pickle ends before its STOP opcode") from None
        raise CheckpointError(f"the pickle is malformed near byte {pos - start}") from None
    except BaseException as exc:
        _release(state, stack, failure=exc)
        raise


# Where the C stack is small and Python's trashcan does not guard it (Pyodide: WebAssembly's stack
# is the browser's JavaScript stack), freeing containers nested some thousands deep crashes the
# interpreter, and a pickle can nest them 100,000 deep, through the memo, before _check_depth
# refuses the tree. There the walk lets go of what it made by hand.
RELEASE_BY_HAND = sys.platform == "emscripten"


def _release(state, stack, tree=(), failure=None):
    """Drop every container the walk made without a deep chain of frees: empty each list and dict
    that is not in `tree` (ids: the result, which the caller keeps), then let go of them newest
    first. A tuple holds only what was made before it, so each free then ends at once. The
    `failure` being raised keeps the finished frames it passed through, whose locals (_stop's
    root, _check_depth's node) would free a tuple chain from its outer end later: they go first."""
    if not RELEASE_BY_HAND:
        return
    if failure is not None:
        import traceback

        traceback.clear_frames(failure.__traceback__)
    stack.clear()
    state.memo.clear()
    state.checked.clear()
    made = state.made
    for node in made:
        if id(node) in tree:
            continue
        if type(node) is list:
            node.clear()
        elif type(node) is Dict and (not node.frozen or not tree):  # a frozen one a tensor may keep
            node.items.clear()
            node.metadata = None
    node = None  # the loop's last: the newest container, which would free the rest from its end
    while made:
        made.pop()


# -- the stack and the memo ---------------------------------------------------------------


def _fence(stack, state, count):
    """Refuse an opcode that takes `count` items from below the last MARK or an empty stack."""
    if len(stack) - count < state.fence:
        raise CheckpointError("the pickle takes more items from its stack than it put there")


def _pop_mark(stack, state):
    """Pop the items above the last MARK; return them (the fence drops to the MARK before)."""
    marks = state.marks
    if not marks:
        raise CheckpointError("the pickle pops a MARK it never set")
    at = marks.pop()
    items = stack[at:]
    del stack[at:]
    state.fence = marks[-1] if marks else 0
    return items


def _put(stack, state):
    """The value a PUT stores: the top of the stack, while the memo has room."""
    # torch.save puts almost every value in the memo: on that path, test before calling _fence.
    if len(stack) <= state.fence or len(state.memo) >= MAX_MEMO:
        _fence(stack, state, 1)
        raise Refused(f"the pickle's memo grows beyond {MAX_MEMO:,} entries")
    return stack[-1]


def _never_stored(index):
    return CheckpointError(f"the pickle fetches memo entry {index}, which was never stored")


def _target(stack, kind, opcode):
    """The container on top of the stack (its caller has checked the fence)."""
    target = stack[-1]
    if type(target) is not kind:
        raise Refused(f"the pickle applies {opcode} to something that is not a {kind.__name__.lower()}")
    if kind is Dict and target.frozen:
        raise Refused(f"the pickle applies {opcode} to a dict after a tensor rebuild took it as an argument")
    return target


# -- opcode handlers: (data, offset past the opcode, stack, state) -> offset of the next opcode --


def _mark(data, pos, stack, state):
    marks = state.marks
    if len(marks) >= MAX_MARKS:
        raise Refused(f"the pickle nests more than {MAX_MARKS:,} MARKs")
    state.fence = fence = len(stack)
    marks.append(fence)
    return pos


def _binput(data, pos, stack, state):
    state.memo[data[pos]] = _put(stack, state)
    return pos + 1


def _long_binput(data, pos, stack, state):
    state.memo[_unpack_u32(data, pos)[0]] = _put(stack, state)
    return pos + 4


def _binget(data, pos, stack, state):
    index = data[pos]
    try:
        stack.append(state.memo[index])
    except KeyError:
        raise _never_stored(index) from None
    return pos + 1


def _long_binget(data, pos, stack, state):
    index = _unpack_u32(data, pos)[0]
    try:
        stack.append(state.memo[index])
    except KeyError:
        raise _never_stored(index) from None
    return pos + 4


def _binint1(data, pos, stack, state):
    stack.append(data[pos])
    return pos + 1


def _binint2(data, pos, stack, state):
    stack.append(_unpack_u16(data, pos)[0])
    return pos + 2


def _binint(data, pos, stack, state):
    stack.append(_unpack_i32(data, pos)[0])
    return pos + 4


def _long1(data, pos, stack, state):
    n = data[pos]
    stack.append(_long(data, pos + 1, n))
    return pos + 1 + n


def _long4(data, pos, stack, state):
    n = _unpack_u32(data, pos)[0]
    stack.append(_long(data, pos + 4, n))
    return pos + 4 + n


def _long(data, pos, n):
    if n > MAX_INT_BYTES:
        raise Refused(f"the pickle holds an integer of {n:,} bytes")
    if pos + n > len(data):
        raise Truncated("the pickle ends inside an integer")
    return int.from_bytes(data[pos:pos + n], "little", signed=True)


def _binfloat(data, pos, stack, state):
    if pos + 8 > len(data):
        raise Truncated("the pickle ends inside a float")
    stack.append(_unpack_f64(data, pos)[0])
    return pos + 8


def _binunicode(data, pos, stack, state):
    n = _unpack_u32(data, pos)[0]
    pos += 4
    if pos + n > len(data):
        raise Truncated("the pickle ends inside a string")
    try:
        value = data[pos:pos + n].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise CheckpointError("the pickle holds a string that is not UTF-8") from None
    stack.append(Text(value, pos - 5, n))
    return pos + n


def _pushes(value):
    """The handler of an opcode that pushes one immutable constant."""
    def push(data, pos, stack, state):
        stack.append(value)
        return pos
    return push


def _empty_dict(data, pos, stack, state):
    made = Dict()
    state.made.append(made)
    stack.append(made)
    return pos


def _empty_list(data, pos, stack, state):
    made = []
    state.made.append(made)
    stack.append(made)
    return pos


def _tuple(data, pos, stack, state):
    made = tuple(_pop_mark(stack, state))
    state.made.append(made)
    stack.append(made)
    return pos


def _tuple_of(size):
    """The handler of TUPLE1, TUPLE2 or TUPLE3: the top `size` items become one tuple."""
    def tuple_of(data, pos, stack, state):
        _fence(stack, state, size)
        items = tuple(stack[-size:])
        del stack[-size:]
        state.made.append(items)
        stack.append(items)
        return pos
    return tuple_of


def _setitem(data, pos, stack, state):
    _fence(stack, state, 3)
    value = stack.pop()
    key = stack.pop()
    _target(stack, Dict, "SETITEM").items.append((key, value))
    return pos


def _setitems(data, pos, stack, state):
    items = _pop_mark(stack, state)
    if len(items) % 2:
        raise CheckpointError("the pickle has an odd number of items for SETITEMS")
    _fence(stack, state, 1)
    _target(stack, Dict, "SETITEMS").items.extend(zip(items[::2], items[1::2]))
    return pos


def _append(data, pos, stack, state):
    _fence(stack, state, 2)
    value = stack.pop()
    _target(stack, list, "APPEND").append(value)
    return pos


def _appends(data, pos, stack, state):
    items = _pop_mark(stack, state)
    _fence(stack, state, 1)
    _target(stack, list, "APPENDS").extend(items)
    return pos


def _binpersid(data, pos, stack, state):
    _fence(stack, state, 1)
    if state.persistent_id is None:
        raise Refused("the pickle has a persistent id where none is expected")
    storage = state.persistent_id(stack[-1])
    state.storages.append(storage)
    stack[-1] = storage
    return pos


def _reduce(data, pos, stack, state):
    _fence(stack, state, 2)
    args = stack.pop()
    made = stack[-1] = _call(stack[-1], args, state.checked)
    if type(made) is Dict:  # an OrderedDict(): see _release
        state.made.append(made)
    return pos


def _build(data, pos, stack, state):
    """torch.save's one BUILD: a state dict's {"_metadata": OrderedDict}, set once."""
    _fence(stack, state, 2)
    attributes = stack.pop()
    target = stack[-1]
    if (type(target) is Dict and target.ordered and target.metadata is None and not target.frozen
            and type(attributes) is Dict and len(attributes.items) == 1):
        [(key, value)] = attributes.items
        if type(key) is Text and key.value == "_metadata" and type(value) is Dict:
            target.metadata = value
            return pos
    raise Refused("the pickle sets object state (BUILD) in a way a plain checkpoint never does")


def _global(data, pos, stack, state):
    module_end = data.find(b"\n", pos, pos + 256)
    name_end = data.find(b"\n", module_end + 1, module_end + 257)
    if module_end < 0 or name_end < 0:
        if len(data) - pos < 512:
            raise Truncated("the pickle ends inside a GLOBAL opcode")
        raise Refused("the pickle imports a name longer than 255 characters")
    try:
        module = bytes(data[pos:module_end]).decode("ascii")
        name = bytes(data[module_end + 1:name_end]).decode("ascii")
    except UnicodeDecodeError:
        raise Refused("the pickle imports a name that is not ASCII") from None
    role = ROLES.get((module, name))
    if role is None:
        raise Refused(f"the pickle imports '{module}.{name}', which a plain checkpoint never does"
                      + (TENSOR_STATE_HINT if (module, name) in TENSOR_STATE_GLOBALS
                         else HINTS.get(module.split(".", 1)[0], "")))
    value = Global(module, name, role)
    state.imported[value.dotted] = None
    stack.append(value)
    return name_end + 1


def _proto(data, pos, stack, state):
    if pos != state.start + 1:
        raise Refused("the pickle has a PROTO opcode in its middle")
    if data[pos] != 2:
        raise Refused(f"the pickle uses protocol {data[pos]}; torch.save writes protocol 2")
    return pos + 1


def _stop(data, pos, stack, state):
    if len(stack) != 1 or state.marks:
        raise CheckpointError("the pickle stops with a malformed stack")
    root = stack[0]
    tree = _check_depth(root)
    start = state.start
    protocol = data[start + 1] if data[start] == 0x80 else None  # 0x80: PROTO
    raise _Stop(WalkResult(root, pos, state.storages, list(state.imported), protocol), tree)


def _refuse(data, pos, stack, state):
    import pickletools  # only here: a refusal may spend what importing it costs

    op = data[pos - 1]
    info = pickletools.code2op.get(chr(op))
    name = info.name if info else f"0x{op:02x}"
    raise Refused(f"the pickle uses opcode {name}, which a plain checkpoint never does")


# What torch.save writes for a plain checkpoint (protocol 2); every other byte is refused.
_HANDLERS = {  # opcode byte (pickle's constant): handler
    b'\x80': _proto,  # PROTO
    b'.': _stop,  # STOP
    b'(': _mark,  # MARK
    b'q': _binput,  # BINPUT
    b'r': _long_binput,  # LONG_BINPUT
    b'h': _binget,  # BINGET
    b'j': _long_binget,  # LONG_BINGET
    b'K': _binint1,  # BININT1
    b'M': _binint2,  # BININT2
    b'J': _binint,  # BININT
    b'\x8a': _long1,  # LONG1
    b'\x8b': _long4,  # LONG4
    b'G': _binfloat,  # BINFLOAT
    b'X': _binunicode,  # BINUNICODE
    b'N': _pushes(None),  # NONE
    b'\x88': _pushes(True),  # NEWTRUE
    b'\x89': _pushes(False),  # NEWFALSE
    b')': _pushes(()),  # EMPTY_TUPLE
    b't': _tuple,  # TUPLE
    b'\x85': _tuple_of(1),  # TUPLE1
    b'\x86': _tuple_of(2),  # TUPLE2
    b'\x87': _tuple_of(3),  # TUPLE3
    b']': _empty_list,  # EMPTY_LIST
    b'a': _append,  # APPEND
    b'e': _appends,  # APPENDS
    b'}': _empty_dict,  # EMPTY_DICT
    b's': _setitem,  # SETITEM
    b'u': _setitems,  # SETITEMS
    b'c': _global,  # GLOBAL
    b'R': _reduce,  # REDUCE
    b'b': _build,  # BUILD
    b'Q': _binpersid,  # BINPERSID
}
_DISPATCH = [_refuse] * 256  # indexed by opcode byte
for _opcode, _handler in _HANDLERS.items():
    _DISPATCH[_opcode[0]] = _handler
del _opcode, _handler


def _role(value):
    return value.role if type(value) is Global else None


def _call(callable_, args, checked):
    if type(callable_) is not Global:
        raise Refused("the pickle calls something that is not an allowed global")
    role = callable_.role
    if type(args) is not tuple:
        raise Refused(f"the pickle calls '{callable_.dotted}' with arguments that are not a tuple")
    if role is TENSOR_V2 or role is TENSOR_V3:
        return _rebuild_tensor(callable_, args, checked)
    if role is ORDERED_DICT:
        if not args:
            return Dict(ordered=True)
    elif role is PARAMETER:
        # _rebuild_parameter(data, requires_grad, backward_hooks): torch.save never saves hooks.
        if (len(args) == 3 and type(args[0]) is Tensor and type(args[1]) is bool
                and _is_empty_ordered_dict(args[2])):
            args[2].frozen = True
            return args[0]
    elif role is ENCODE:
        if (len(args) == 2 and type(args[0]) is Text and type(args[1]) is Text
                and args[1].value == "latin1"):
            return Bytes(args[0])
    raise Refused(f"the pickle calls '{callable_.dotted}' in a way a plain checkpoint never does")


def _rebuild_tensor(callable_, args, checked):
    """(storage, offset, size, stride, requires_grad, backward_hooks[, dtype][, metadata])"""
    count = len(args)
    if callable_.role is TENSOR_V3:
        ok = (count == 7 or count == 8) and _role(args[6]) is DTYPE
        metadata_at = 7
    else:
        ok = count == 6 or count == 7
        metadata_at = 6
    if (ok and type(args[0]) is Storage and type(args[1]) is int and _is_ints(args[2], checked)
            and _is_ints(args[3], checked) and type(args[4]) is bool and _is_empty_ordered_dict(args[5])
            and (count == metadata_at or _is_tensor_metadata(args[metadata_at], checked))):
        args[5].frozen = True
        if count > metadata_at:
            args[metadata_at].frozen = True
        dtype = args[6].name if callable_.role is TENSOR_V3 else args[0].dtype
        return Tensor(args[0], args[2], dtype)
    raise Refused(f"the pickle calls '{callable_.dotted}' with arguments a plain checkpoint never has")


def _is_empty_ordered_dict(value):
    """The OrderedDict() torch.save writes for backward hooks, which it never saves."""
    return type(value) is Dict and value.ordered and not value.items and value.metadata is None


def _is_tensor_metadata(value, checked):
    """What torch._utils.get_tensor_metadata gives, when not empty: flags such as {"neg": True}."""
    if id(value) in checked:  # a frozen Dict shared through the memo: once is enough
        return True
    if (type(value) is Dict and not value.ordered and value.metadata is None and value.items
            and all(type(k) is Text and k.value.isidentifier() and type(v) is bool for k, v in value.items)):
        checked[id(value)] = value
        return True
    return False


def _is_ints(value, checked):
    """A tuple of ints; a tuple shared through the memo by many tensors is looked at once."""
    if id(value) in checked:
        return True
    if type(value) is not tuple:
        return False
    for item in value:
        if type(item) is not int:
            return False
    checked[id(value)] = value
    return True


# What _check_depth looks at below the root: containers, and globals (nothing else can fail it).
_CHECKED_DEEPER = frozenset((Dict, list, tuple, Global))


def _check_depth(root):
    """Refuse trees nested deeper than any checkpoint is, before anyone recurses into them,
    and allowed globals left as plain values instead of playing their role; return the ids of
    the tree's containers."""
    seen = set()
    todo = [(root, 0)]
    while todo:
        node, depth = todo.pop()
        kind = type(node)
        if kind is Global:
            raise Refused(f"the pickle holds '{node.dotted}' itself as a value, which a plain checkpoint never does")
        if kind is not Dict and kind is not list and kind is not tuple:
            continue
        if depth >= MAX_DEPTH:
            raise Refused(f"the pickle nests containers deeper than {MAX_DEPTH} levels")
        if id(node) in seen:
            continue
        seen.add(id(node))
        depth += 1
        if kind is Dict:
            todo.extend([(x, depth) for pair in node.items for x in pair if type(x) in _CHECKED_DEEPER])
            if node.metadata is not None:
                todo.append((node.metadata, depth))
        else:
            todo.extend([(child, depth) for child in node if type(child) in _CHECKED_DEEPER])
    return seen


def storage_type_dtype(storage_type):
    """The dtype a typed storage class holds ("float32" for FloatStorage); None for UntypedStorage."""
    return STORAGE_TYPES.get(storage_type.name, (1, None))[1]


def storage_type_size(storage_type):
    """The element size for a persistent id's storage type, refusing any other global."""
    if _role(storage_type) is not STORAGE:
        raise Refused("the pickle names a storage type that is not a torch storage class")
    return STORAGE_TYPES.get(storage_type.name, (1, None))[0]  # UntypedStorage counts bytes
