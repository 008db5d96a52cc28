"""Walk a checkpoint's pickle as an opcode stream and build an inert tree.

Nothing here imports or calls what the pickle names.  Every opcode and every global
must be one that ``torch.save`` writes for a plain checkpoint (protocol 2); anything
else is refused by name.  The tree holds only dicts, lists, tuples, numbers, `Text`
(a string and where it was defined) and `Tensor` placeholders, so later code can
decide what to rename and where those strings sit in the bytes.
"""

import struct

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


OPCODE_NAMES = {
    0x28: "MARK", 0x2E: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT",
    0x49: "INT", 0x4A: "BININT", 0x4B: "BININT1", 0x4C: "LONG", 0x4D: "BININT2",
    0x4E: "NONE", 0x50: "PERSID", 0x51: "BINPERSID", 0x52: "REDUCE", 0x53: "STRING",
    0x54: "BINSTRING", 0x55: "SHORT_BINSTRING", 0x56: "UNICODE", 0x58: "BINUNICODE",
    0x61: "APPEND", 0x62: "BUILD", 0x63: "GLOBAL", 0x64: "DICT", 0x7D: "EMPTY_DICT",
    0x65: "APPENDS", 0x67: "GET", 0x68: "BINGET", 0x69: "INST", 0x6A: "LONG_BINGET",
    0x6C: "LIST", 0x5D: "EMPTY_LIST", 0x6F: "OBJ", 0x70: "PUT", 0x71: "BINPUT",
    0x72: "LONG_BINPUT", 0x73: "SETITEM", 0x74: "TUPLE", 0x29: "EMPTY_TUPLE",
    0x75: "SETITEMS", 0x47: "BINFLOAT", 0x80: "PROTO", 0x81: "NEWOBJ", 0x82: "EXT1",
    0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3",
    0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8A: "LONG1", 0x8B: "LONG4",
    0x42: "BINBYTES", 0x43: "SHORT_BINBYTES", 0x8C: "SHORT_BINUNICODE",
    0x8D: "BINUNICODE8", 0x8E: "BINBYTES8", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS",
    0x91: "FROZENSET", 0x92: "NEWOBJ_EX", 0x93: "STACK_GLOBAL", 0x94: "MEMOIZE",
    0x95: "FRAME", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
}

_unpack_i32 = struct.Struct("<i").unpack_from
_unpack_u32 = struct.Struct("<I").unpack_from
_unpack_u16 = struct.Struct("<H").unpack_from
_unpack_f64 = struct.Struct(">d").unpack_from


class Truncated(CheckpointError):
    """The pickle ended before STOP (the caller may have more bytes to offer)."""


def walk(data, start=0, persistent_id=None):
    """Walk one pickle in `data` from `start`; return its inert tree and end offset.

    `persistent_id(pid_tuple)` turns a BINPERSID tuple into a `Storage`; it
    raises `Refused` for anything else.
    """
    if len(data) - start > MAX_PICKLE_BYTES:
        raise Refused(f"the pickle is larger than {MAX_PICKLE_BYTES >> 20} MiB")
    stack = []
    push = stack.append
    pop = stack.pop
    unpack_u32, memo_get, text = _unpack_u32, _memo_get, Text  # locals: this loop is the hot path
    marks = []
    fence = 0  # like CPython's unpickler: no opcode may take items from below the last MARK
    memo = {}
    checked = {}  # id -> an argument already validated (kept alive so its id stays its own)
    storages = []
    imported = {}  # dotted name -> None: the globals in first-use order
    pos = start
    end = len(data)
    # Every opcode takes at least one byte, so the size cap also caps the opcode count.
    # The branches are ordered by how often torch.save emits each opcode.
    try:
        while True:
            op = data[pos]
            pos += 1
            if op == 0x72:  # LONG_BINPUT
                if len(stack) <= fence or len(memo) >= MAX_MEMO:
                    _underflow_or_memo_cap(stack, fence)
                memo[unpack_u32(data, pos)[0]] = stack[-1]
                pos += 4
            elif op == 0x4B:  # BININT1
                push(data[pos])
                pos += 1
            elif op == 0x68:  # BINGET
                push(memo_get(memo, data[pos]))
                pos += 1
            elif op == 0x58:  # BINUNICODE
                n = unpack_u32(data, pos)[0]
                pos += 4
                if pos + n > end:
                    raise Truncated("the pickle ends inside a string")
                try:
                    value = data[pos:pos + n].decode("utf-8", "surrogatepass")
                except UnicodeDecodeError:
                    raise CheckpointError("the pickle holds a string that is not UTF-8") from None
                push(text(value, pos - 5, n))
                pos += n
            elif op == 0x28:  # MARK
                if len(marks) >= MAX_MARKS:
                    raise Refused(f"the pickle nests more than {MAX_MARKS:,} MARKs")
                fence = len(stack)
                marks.append(fence)
            elif op == 0x74:  # TUPLE
                items, fence = _pop_mark(stack, marks)
                push(tuple(items))
            elif op == 0x52:  # REDUCE
                if len(stack) - 2 < fence:
                    raise _underflow()
                args = pop()
                stack[-1] = _reduce(stack[-1], args, checked)
            elif op == 0x87 or op == 0x86:  # TUPLE3, TUPLE2
                size = op - 0x84
                if len(stack) - size < fence:
                    raise _underflow()
                items = tuple(stack[-size:])
                del stack[-size:]
                push(items)
            elif op == 0x4D:  # BININT2
                push(_unpack_u16(data, pos)[0])
                pos += 2
            elif op == 0x51:  # BINPERSID
                if len(stack) <= fence:
                    raise _underflow()
                if persistent_id is None:
                    raise Refused("the pickle has a persistent id where none is expected")
                storage = persistent_id(stack[-1])
                storages.append(storage)
                stack[-1] = storage
            elif op == 0x89:  # NEWFALSE
                push(False)
            elif op == 0x29:  # EMPTY_TUPLE
                push(())
            elif op == 0x85:  # TUPLE1
                if len(stack) <= fence:
                    raise _underflow()
                stack[-1] = (stack[-1],)
            elif op == 0x71:  # BINPUT
                if len(stack) <= fence or len(memo) >= MAX_MEMO:
                    _underflow_or_memo_cap(stack, fence)
                memo[data[pos]] = stack[-1]
                pos += 1
            elif op == 0x4A:  # BININT
                push(_unpack_i32(data, pos)[0])
                pos += 4
            elif op == 0x6A:  # LONG_BINGET
                push(memo_get(memo, unpack_u32(data, pos)[0]))
                pos += 4
            elif op == 0x88:  # NEWTRUE
                push(True)
            elif op == 0x4E:  # NONE
                push(None)
            elif op == 0x7D:  # EMPTY_DICT
                push(Dict())
            elif op == 0x5D:  # EMPTY_LIST
                push([])
            elif op == 0x75:  # SETITEMS
                items, fence = _pop_mark(stack, marks)
                if len(items) % 2:
                    raise CheckpointError("the pickle has an odd number of items for SETITEMS")
                _target(stack, Dict, "SETITEMS", fence).items.extend(zip(items[::2], items[1::2]))
            elif op == 0x73:  # SETITEM
                if len(stack) - 3 < fence:
                    raise _underflow()
                value = pop()
                key = pop()
                _target(stack, Dict, "SETITEM", fence).items.append((key, value))
            elif op == 0x65:  # APPENDS
                items, fence = _pop_mark(stack, marks)
                _target(stack, list, "APPENDS", fence).extend(items)
            elif op == 0x61:  # APPEND
                if len(stack) - 2 < fence:
                    raise _underflow()
                value = pop()
                _target(stack, list, "APPEND", fence).append(value)
            elif op == 0x63:  # GLOBAL
                value, pos = _global(data, pos)
                imported[value.dotted] = None
                push(value)
            elif op == 0x62:  # BUILD
                if len(stack) - 2 < fence:
                    raise _underflow()
                state = pop()
                _build(stack[-1], state)
            elif op == 0x47:  # BINFLOAT
                if pos + 8 > end:
                    raise Truncated("the pickle ends inside a float")
                push(_unpack_f64(data, pos)[0])
                pos += 8
            elif op == 0x8A:  # LONG1
                n = data[pos]
                push(_long(data, pos + 1, n, end))
                pos += 1 + n
            elif op == 0x8B:  # LONG4
                n = unpack_u32(data, pos)[0]
                push(_long(data, pos + 4, n, end))
                pos += 4 + n
            elif op == 0x80:  # PROTO
                if pos != start + 1:
                    raise Refused("the pickle has a PROTO opcode in its middle")
                if data[pos] != 2:
                    raise Refused(f"the pickle uses protocol {data[pos]}; torch.save writes protocol 2")
                pos += 1
            elif op == 0x2E:  # STOP
                if len(stack) != 1 or marks:
                    raise CheckpointError("the pickle stops with a malformed stack")
                root = stack[0]
                _check_depth(root)
                protocol = data[start + 1] if data[start] == 0x80 else None
                return WalkResult(root, pos, storages, list(imported), protocol)
            else:
                name = OPCODE_NAMES.get(op, f"0x{op:02x}")
                raise Refused(f"the pickle uses opcode {name}, which a plain checkpoint never does")
            if len(stack) > MAX_STACK:
                raise Refused(f"the pickle's stack grows beyond {MAX_STACK:,} items")
    except struct.error:
        raise Truncated("the pickle ends before its STOP opcode") from None
    except IndexError:
        if pos >= end:
            raise Truncated("the pickle ends before its STOP opcode") from None
        raise CheckpointError(f"the pickle is malformed near byte {pos - start - 1}") from None


def _memo_get(memo, index):
    try:
        return memo[index]
    except KeyError:
        raise CheckpointError(f"the pickle fetches memo entry {index}, which was never stored") from None


def _pop_mark(stack, marks):
    """Pop the items above the last MARK; return them and the new fence."""
    if not marks:
        raise CheckpointError("the pickle pops a MARK it never set")
    at = marks.pop()
    items = stack[at:]
    del stack[at:]
    return items, (marks[-1] if marks else 0)


def _underflow():
    return CheckpointError("the pickle takes more items from its stack than it put there")


def _underflow_or_memo_cap(stack, fence):
    if len(stack) <= fence:
        raise _underflow()
    raise Refused(f"the pickle's memo grows beyond {MAX_MEMO:,} entries")


def _target(stack, kind, opcode, fence):
    if len(stack) <= fence:
        raise _underflow()
    target = stack[-1]
    if type(target) is not kind:
        raise Refused(f"the pickle applies {opcode} to something that is not a {kind.__name__.lower()}")
    if kind is Dict and target.frozen:
        raise Refused(f"the pickle applies {opcode} to a dict after a tensor rebuild took it as an argument")
    return target


def _long(data, pos, n, end):
    if n > MAX_INT_BYTES:
        raise Refused(f"the pickle holds an integer of {n:,} bytes")
    if pos + n > end:
        raise Truncated("the pickle ends inside an integer")
    return int.from_bytes(data[pos:pos + n], "little", signed=True)


def _global(data, pos):
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
    return Global(module, name, role), name_end + 1


def _role(value):
    return value.role if type(value) is Global else None


def _reduce(callable_, args, checked):
    role = _role(callable_)
    if role is None:
        raise Refused("the pickle calls something that is not an allowed global")
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


def _build(target, state):
    """torch.save's one BUILD: a state dict's {"_metadata": OrderedDict}, set once."""
    if (type(target) is Dict and target.ordered and target.metadata is None and not target.frozen
            and type(state) is Dict and len(state.items) == 1):
        [(key, value)] = state.items
        if type(key) is Text and key.value == "_metadata" and type(value) is Dict:
            target.metadata = value
            return
    raise Refused("the pickle sets object state (BUILD) in a way a plain checkpoint never does")


def _check_depth(root):
    """Refuse trees nested deeper than any checkpoint is, before anyone recurses into them,
    and allowed globals left as plain values instead of playing their role."""
    seen = set()
    todo = [(root, 0)]
    while todo:
        node, depth = todo.pop()
        kind = type(node)
        if kind is Global:
            raise Refused(f"the pickle holds '{node.dotted}' itself as a value, which a plain checkpoint never does")
        if kind is Dict:
            children = [x for pair in node.items for x in pair]
            if node.metadata is not None:
                children.append(node.metadata)
        elif kind is list or kind is tuple:
            children = node
        else:
            continue
        if depth >= MAX_DEPTH:
            raise Refused(f"the pickle nests containers deeper than {MAX_DEPTH} levels")
        if id(node) in seen:
            continue
        seen.add(id(node))
        todo.extend((child, depth + 1) for child in children)


def storage_type_dtype(storage_type):
    """The dtype a typed storage class holds ("float32" for FloatStorage); None for UntypedStorage."""
    return STORAGE_TYPES.get(storage_type.name, (1, None))[1]


def storage_type_size(storage_type):
    """The element size for a persistent id's storage type, refusing any other global."""
    if _role(storage_type) is not STORAGE:
        raise Refused("the pickle names a storage type that is not a torch storage class")
    return STORAGE_TYPES.get(storage_type.name, (1, None))[0]  # UntypedStorage counts bytes
