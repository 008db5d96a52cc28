"""The pickle walk's rules, one table at a time, over hand-built opcode streams.

Every stream is spelled with `pickle`'s own opcode constants.  `pickletools.dis`, which
reads opcodes without running anything, vouches that the streams a rule should accept,
and the streams with a forbidden opcode, are well-formed pickles: what refuses them is
the rule under test, nothing else.  No pickle is ever loaded, and nothing here needs torch.
"""

import io
import pickle
import pickletools
import struct
import subprocess
import sys
import zipfile

import pytest
from support.cli_run import DATA, LEGACY, LEGACY_FORMAT, PARAMETRIZED
from pth_legacy_keys import pickle_walk, scan
from pth_legacy_keys.errors import CheckpointError, Refused
from pth_legacy_keys.pickle_walk import Dict, Storage, Tensor, Text, Truncated, walk
from support.pickle_ops import PROTO2, global_, text

# -- builders -------------------------------------------------------------------------------

UNDERFLOW = "the pickle takes more items from its stack than it put there"
NO_MARK = "the pickle pops a MARK it never set"


def stream(*parts):
    """A protocol-2 pickle: PROTO 2, the parts, STOP."""
    return PROTO2 + b"".join(parts) + pickle.STOP


def int1(value):
    return pickle.BININT1 + bytes([value])


def long1(value, size):
    return pickle.LONG1 + bytes([size]) + value.to_bytes(size, "little", signed=True)


ORDERED_DICT = global_("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE  # OrderedDict()
METADATA = pickle.EMPTY_DICT + text("_metadata") + pickle.EMPTY_DICT + pickle.SETITEM  # {"_metadata": {}}


def storage(pid):
    """A persistent-id callback: a Text key becomes a Storage (the format readers check more)."""
    if type(pid) is not Text:
        raise Refused("not a storage reference")
    return Storage(pid.value, 4, 1)


def plain(node):
    """The walked tree as comparable values (a Dict shows its kind, items and metadata)."""
    kind = type(node)
    if kind is Text:
        return node.value
    if kind is Dict:
        items = [(plain(k), plain(v)) for k, v in node.items]
        metadata = None if node.metadata is None else plain(node.metadata)
        return ("OrderedDict" if node.ordered else "dict", items, metadata)
    if kind is list:
        return [plain(x) for x in node]
    if kind is tuple:
        return tuple(plain(x) for x in node)
    if kind is Storage:
        return ("storage", node.key)
    if kind is Tensor:
        return ("tensor", node.storage.key, node.shape, node.dtype)
    if kind is pickle_walk.Bytes:
        return ("bytes", node.text.value)
    return node


def root_of(data, start=0):
    return plain(walk(data, start, storage).root)


def failure(data, start=0):
    """(exception type, message) of walking `data`, which must fail."""
    with pytest.raises(CheckpointError) as caught:
        walk(data, start, storage)
    return type(caught.value), str(caught.value)


def assert_well_formed(data):
    """pickletools reads it to STOP with a consistent stack (it runs nothing)."""
    pickletools.dis(data, out=io.StringIO())


# -- 1. opcodes: exactly what torch.save writes for a plain checkpoint --------------------------

# Written out here, not read from the module: a new entry in its table must fail this file.
ALLOWED = {
    pickle.PROTO, pickle.STOP, pickle.MARK,
    pickle.BINPUT, pickle.LONG_BINPUT, pickle.BINGET, pickle.LONG_BINGET,
    pickle.BININT1, pickle.BININT2, pickle.BININT, pickle.LONG1, pickle.LONG4, pickle.BINFLOAT,
    pickle.BINUNICODE, pickle.NONE, pickle.NEWTRUE, pickle.NEWFALSE,
    pickle.EMPTY_TUPLE, pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3,
    pickle.EMPTY_LIST, pickle.APPEND, pickle.APPENDS, pickle.EMPTY_DICT, pickle.SETITEM, pickle.SETITEMS,
    pickle.GLOBAL, pickle.REDUCE, pickle.BUILD, pickle.BINPERSID,
}
FORBIDDEN = [bytes([code]) for code in range(256) if bytes([code]) not in ALLOWED]


def opcode_name(code):
    info = pickletools.code2op.get(code.decode("latin-1"))
    return info.name if info else f"0x{code[0]:02x}"


def test_the_allowed_opcodes_are_the_protocol_2_ones_a_checkpoint_needs():
    assert len(ALLOWED) == 32 and len(FORBIDDEN) == 224
    assert all(pickletools.code2op[code.decode("latin-1")].proto <= 2 for code in ALLOWED)


@pytest.mark.parametrize("code", FORBIDDEN, ids=opcode_name)
def test_every_other_opcode_is_refused_by_its_pickletools_name(code):
    expected = f"the pickle uses opcode {opcode_name(code)}, which a plain checkpoint never does"
    assert failure(stream(code)) == (Refused, expected)
    # ... wherever it stands, whatever follows it
    assert failure(stream(int1(1), pickle.MARK, int1(2), code, b"\xff" * 16)) == (Refused, expected)


# Each forbidden opcode used the way CPython's unpickler would take it: well-formed, still refused.
WELL_FORMED_FORBIDDEN = {
    "DUP": (pickle.DUP, int1(1) + pickle.DUP + pickle.TUPLE2),
    "POP": (pickle.POP, int1(1) + int1(2) + pickle.POP),
    "POP_MARK": (pickle.POP_MARK, int1(1) + pickle.MARK + int1(2) + pickle.POP_MARK),
    "INST": (pickle.INST, pickle.MARK + pickle.INST + b"collections\nOrderedDict\n"),
    "OBJ": (pickle.OBJ, pickle.MARK + global_("collections", "OrderedDict") + pickle.OBJ),
    "EXT1": (pickle.EXT1, pickle.EXT1 + b"\x01"),
    "STACK_GLOBAL": (pickle.STACK_GLOBAL, text("collections") + text("OrderedDict") + pickle.STACK_GLOBAL
                     + pickle.EMPTY_TUPLE + pickle.REDUCE),
    "PERSID": (pickle.PERSID, pickle.PERSID + b"0\n"),
    "FRAME": (pickle.FRAME, pickle.FRAME + struct.pack("<Q", 2) + int1(1)),
    "MEMOIZE": (pickle.MEMOIZE, int1(1) + pickle.MEMOIZE),
    "SHORT_BINUNICODE": (pickle.SHORT_BINUNICODE, pickle.SHORT_BINUNICODE + b"\x01k"),
    "NEWOBJ": (pickle.NEWOBJ, global_("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.NEWOBJ),
    "DICT": (pickle.DICT, pickle.MARK + text("k") + int1(1) + pickle.DICT),
    "LIST": (pickle.LIST, pickle.MARK + int1(1) + pickle.LIST),
    "GET": (pickle.GET, int1(1) + pickle.BINPUT + b"\x00" + pickle.GET + b"0\n" + pickle.TUPLE2),
}


@pytest.mark.parametrize("name", sorted(WELL_FORMED_FORBIDDEN))
def test_a_forbidden_opcode_in_a_well_formed_pickle_is_refused(name):
    code, body = WELL_FORMED_FORBIDDEN[name]
    data = stream(body)
    assert_well_formed(data)
    assert code in {bytes([ord(op.code)]) for op, _, _ in pickletools.genops(data)}
    assert failure(data) == (Refused, f"the pickle uses opcode {name}, which a plain checkpoint never does")


# One stream per allowed opcode (bar PROTO and STOP, which every stream has): each is accepted.
ACCEPTED = {
    "MARK+TUPLE": (pickle.MARK + int1(1) + int1(2) + pickle.TUPLE, (1, 2)),
    "BINPUT+BINGET": (int1(7) + pickle.BINPUT + b"\x03" + pickle.BINGET + b"\x03" + pickle.TUPLE2, (7, 7)),
    "LONG_BINPUT+LONG_BINGET": (text("k") + pickle.LONG_BINPUT + struct.pack("<I", 70000)
                                + pickle.LONG_BINGET + struct.pack("<I", 70000) + pickle.TUPLE2, ("k", "k")),
    "BININT1": (int1(255), 255),
    "BININT2": (pickle.BININT2 + struct.pack("<H", 65535), 65535),
    "BININT": (pickle.BININT + struct.pack("<i", -5), -5),
    "LONG1": (long1(-(2 ** 70), 9), -(2 ** 70)),
    "LONG4": (pickle.LONG4 + struct.pack("<I", 2) + (300).to_bytes(2, "little"), 300),
    "BINFLOAT": (pickle.BINFLOAT + struct.pack(">d", 1e-4), 1e-4),
    "BINUNICODE": (text("héllo \udcff"), "héllo \udcff"),
    "NONE": (pickle.NONE, None),
    "NEWTRUE+NEWFALSE": (pickle.NEWTRUE + pickle.NEWFALSE + pickle.TUPLE2, (True, False)),
    "EMPTY_TUPLE": (pickle.EMPTY_TUPLE, ()),
    "TUPLE1": (int1(1) + pickle.TUPLE1, (1,)),
    "TUPLE2": (int1(1) + int1(2) + pickle.TUPLE2, (1, 2)),
    "TUPLE3": (int1(1) + int1(2) + int1(3) + pickle.TUPLE3, (1, 2, 3)),
    "EMPTY_LIST+APPEND": (pickle.EMPTY_LIST + int1(1) + pickle.APPEND, [1]),
    "APPENDS": (pickle.EMPTY_LIST + pickle.MARK + int1(1) + int1(2) + pickle.APPENDS, [1, 2]),
    "EMPTY_DICT+SETITEM": (pickle.EMPTY_DICT + text("a") + int1(1) + pickle.SETITEM, ("dict", [("a", 1)], None)),
    "SETITEMS": (pickle.EMPTY_DICT + pickle.MARK + text("a") + int1(1) + text("a") + int1(2) + pickle.SETITEMS,
                 ("dict", [("a", 1), ("a", 2)], None)),
    "GLOBAL+REDUCE": (ORDERED_DICT, ("OrderedDict", [], None)),
    "BUILD": (ORDERED_DICT + METADATA + pickle.BUILD, ("OrderedDict", [], ("dict", [], None))),
    "BINPERSID": (text("0") + pickle.BINPERSID, ("storage", "0")),
    "bytes": (global_("_codecs", "encode") + text("\xff") + text("latin1") + pickle.TUPLE2 + pickle.REDUCE,
              ("bytes", "\xff")),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_each_allowed_opcode_is_accepted(name):
    body, expected = ACCEPTED[name]
    data = stream(body)
    assert_well_formed(data)
    result = walk(data, 0, storage)
    assert plain(result.root) == expected
    assert result.end == len(data) and result.protocol == 2


def test_the_accepted_streams_use_every_allowed_opcode():
    used = {bytes([ord(op.code)]) for body, _ in ACCEPTED.values()
            for op, _, _ in pickletools.genops(stream(body))}
    assert used == ALLOWED


# -- 2. stack fences: no opcode takes items from below the last MARK or an empty stack ----------

# opcode: (its bytes, the items it takes in push order, the one item it leaves)
FENCED = {
    "TUPLE1": (pickle.TUPLE1, [int1(1)], (1,)),
    "TUPLE2": (pickle.TUPLE2, [int1(1), int1(2)], (1, 2)),
    "TUPLE3": (pickle.TUPLE3, [int1(1), int1(2), int1(3)], (1, 2, 3)),
    "BINPUT": (pickle.BINPUT + b"\x00", [int1(5)], 5),
    "LONG_BINPUT": (pickle.LONG_BINPUT + b"\x00\x00\x00\x00", [int1(5)], 5),
    "BINPERSID": (pickle.BINPERSID, [text("0")], ("storage", "0")),
    "REDUCE": (pickle.REDUCE, [global_("collections", "OrderedDict"), pickle.EMPTY_TUPLE],
               ("OrderedDict", [], None)),
    "APPEND": (pickle.APPEND, [pickle.EMPTY_LIST, int1(1)], [1]),
    "SETITEM": (pickle.SETITEM, [pickle.EMPTY_DICT, text("k"), int1(1)], ("dict", [("k", 1)], None)),
    "BUILD": (pickle.BUILD, [ORDERED_DICT, METADATA], ("OrderedDict", [], ("dict", [], None))),
}


def above_a_mark(below, above, code):
    """`below`, a MARK, `above` and the opcode; then TUPLE closes the MARK and TUPLE2 pairs it up."""
    return stream(below, pickle.MARK, *above, code, pickle.TUPLE, pickle.TUPLE2)


@pytest.mark.parametrize("name", sorted(FENCED))
def test_an_opcode_with_exactly_its_items_above_a_mark_is_accepted(name):
    code, items, result = FENCED[name]
    data = above_a_mark(int1(9), items, code)
    assert_well_formed(data)
    assert root_of(data) == (9, (result,))
    assert root_of(stream(*items, code)) == result  # on an otherwise empty stack


@pytest.mark.parametrize("name", sorted(FENCED))
def test_an_opcode_reaching_one_item_below_a_mark_is_refused(name):
    code, items, _ = FENCED[name]
    # its first item sits just below the MARK: taking it would take from outside the MARK
    assert failure(above_a_mark(items[0], items[1:], code)) == (CheckpointError, UNDERFLOW)


@pytest.mark.parametrize("name", sorted(FENCED))
def test_an_opcode_with_one_item_too_few_on_the_stack_is_refused(name):
    code, items, _ = FENCED[name]
    assert failure(stream(*items[1:], code)) == (CheckpointError, UNDERFLOW)


@pytest.mark.parametrize("name", ["TUPLE2", "TUPLE3"])
def test_a_tuple_opcode_fence_is_the_innermost_open_mark(name):
    code, items, result = FENCED[name]
    # all but one of its items above a MARK, and plenty below it
    data = stream(int1(7), int1(8), int1(9), pickle.MARK, *items[1:], code, pickle.TUPLE)
    assert failure(data) == (CheckpointError, UNDERFLOW)
    # two MARKs: the fence is the inner one
    data = stream(pickle.MARK, *items, pickle.MARK, *items[1:], code, pickle.TUPLE, pickle.TUPLE)
    assert failure(data) == (CheckpointError, UNDERFLOW)
    # once the inner MARK is closed (into an empty tuple), the fence drops back to the outer one
    closed = (pickle.MARK, pickle.TUPLE)
    data = stream(int1(7), pickle.MARK, int1(8), *closed, *items[2:], code, pickle.TUPLE, pickle.TUPLE2)
    assert root_of(data) == (7, ((8, ()) + result[2:],))
    data = stream(int1(7), pickle.MARK, *closed, *items[2:], code, pickle.TUPLE, pickle.TUPLE2)
    assert failure(data) == (CheckpointError, UNDERFLOW)


MARKED_TARGETS = {  # opcode: (its bytes, its container, the items above the MARK, the container after)
    "SETITEMS": (pickle.SETITEMS, pickle.EMPTY_DICT, [text("k"), int1(1)], ("dict", [("k", 1)], None)),
    "APPENDS": (pickle.APPENDS, pickle.EMPTY_LIST, [int1(1), int1(2)], [1, 2]),
}


@pytest.mark.parametrize("name", sorted(MARKED_TARGETS))
def test_setitems_and_appends_need_their_container_above_the_mark_before(name):
    code, container, items, result = MARKED_TARGETS[name]
    assert root_of(stream(container, pickle.MARK, *items, code)) == result
    assert root_of(stream(pickle.MARK, container, pickle.MARK, *items, code, pickle.TUPLE)) == (result,)
    assert failure(stream(pickle.MARK, *items, code)) == (CheckpointError, UNDERFLOW)
    # the container is there, but below another MARK
    assert failure(stream(container, pickle.MARK, pickle.MARK, *items, code)) == (CheckpointError, UNDERFLOW)
    assert failure(stream(container, *items, code)) == (CheckpointError, NO_MARK)


def test_tuple_without_a_mark_is_refused():
    assert failure(stream(int1(1), pickle.TUPLE)) == (CheckpointError, NO_MARK)
    assert failure(stream(pickle.MARK, pickle.TUPLE, pickle.TUPLE)) == (CheckpointError, NO_MARK)


def test_stop_needs_one_item_and_no_open_mark():
    malformed = (CheckpointError, "the pickle stops with a malformed stack")
    assert failure(stream()) == malformed
    assert failure(stream(int1(1), int1(2))) == malformed
    assert failure(stream(int1(1), pickle.MARK)) == malformed


def test_a_put_below_a_mark_is_refused_before_the_memo_cap(monkeypatch):
    monkeypatch.setattr(pickle_walk, "MAX_MEMO", 0)
    assert failure(stream(pickle.MARK, pickle.BINPUT, b"\x00")) == (CheckpointError, UNDERFLOW)
    assert failure(stream(int1(1), pickle.BINPUT, b"\x00")) == (Refused, "the pickle's memo grows beyond 0 entries")


# -- 3. bounds ---------------------------------------------------------------------------------


def test_pickle_size_cap():
    cap = pickle_walk.MAX_PICKLE_BYTES
    assert cap == 64 << 20
    small = stream(int1(1))
    assert walk(small + bytes(cap - len(small)), 0).end == len(small)  # what follows STOP is the caller's
    assert failure(small + bytes(cap - len(small) + 1)) == (Refused, "the pickle is larger than 64 MiB")
    assert walk(b"\0" + small + bytes(cap - len(small)), 1).end == 1 + len(small)  # counted from `start`


def test_string_lengths_are_bounded_by_the_data():
    assert failure(stream(pickle.BINUNICODE + struct.pack("<I", 2) + b"a")[:-1]) == (
        Truncated, "the pickle ends inside a string")
    assert failure(PROTO2 + pickle.BINUNICODE + b"\xff\xff\xff\xff" + b"x" * 64 + pickle.STOP) == (
        Truncated, "the pickle ends inside a string")
    assert failure(stream(pickle.BINUNICODE + struct.pack("<I", 1) + b"\xff")) == (
        CheckpointError, "the pickle holds a string that is not UTF-8")


def test_integer_sizes_are_capped_at_64_bytes():
    assert root_of(stream(long1(2 ** 511 - 1, 64))) == 2 ** 511 - 1
    assert failure(stream(long1(1, 65))) == (Refused, "the pickle holds an integer of 65 bytes")
    assert failure(stream(pickle.LONG4 + b"\xff\xff\xff\xff")) == (
        Refused, "the pickle holds an integer of 4,294,967,295 bytes")
    assert failure(PROTO2 + pickle.LONG1 + b"\x08" + b"\x01" * 4) == (Truncated, "the pickle ends inside an integer")
    assert failure(PROTO2 + pickle.BINFLOAT + b"\x01" * 4) == (Truncated, "the pickle ends inside a float")


def test_memo_cap(monkeypatch):
    monkeypatch.setattr(pickle_walk, "MAX_MEMO", 3)
    puts = [int1(i) + pickle.BINPUT + bytes([i]) for i in range(3)]
    assert root_of(stream(pickle.MARK, *puts, pickle.TUPLE)) == (0, 1, 2)
    refused = (Refused, "the pickle's memo grows beyond 3 entries")
    assert failure(stream(pickle.MARK, *puts, int1(3), pickle.BINPUT, b"\x03", pickle.TUPLE)) == refused
    # a full memo takes no more PUTs, not even over an entry it holds
    assert failure(stream(pickle.MARK, *puts, int1(3), pickle.LONG_BINPUT, bytes(4), pickle.TUPLE)) == refused


def test_memo_fetches_only_what_was_stored():
    assert failure(stream(int1(1), pickle.BINPUT, b"\x01", pickle.BINGET, b"\x02", pickle.TUPLE2)) == (
        CheckpointError, "the pickle fetches memo entry 2, which was never stored")
    assert failure(stream(pickle.LONG_BINGET, struct.pack("<I", 70000))) == (
        CheckpointError, "the pickle fetches memo entry 70000, which was never stored")


@pytest.mark.parametrize("start", [0, 3])
def test_stack_cap_is_exact_wherever_the_pickle_starts(start):
    cap = pickle_walk.MAX_STACK
    assert cap == 100_000
    # one-byte opcodes from the pickle's first byte: the tightest a stack can grow
    full = pickle.MARK + pickle.NONE * cap + pickle.TUPLE + pickle.STOP
    assert walk(b"N" * start + full, start).root == (None,) * cap
    over = pickle.NONE * (cap + 1) + pickle.STOP
    assert failure(b"N" * start + over, start) == (Refused, "the pickle's stack grows beyond 100,000 items")
    late = PROTO2 + pickle.EMPTY_LIST + pickle.MARK + int1(1) * cap + pickle.NONE + pickle.APPENDS + pickle.STOP
    assert failure(b"N" * start + late, start) == (Refused, "the pickle's stack grows beyond 100,000 items")


def test_mark_cap():
    cap = pickle_walk.MAX_MARKS
    assert cap == 10_000
    assert failure(stream(pickle.MARK * cap)) == (CheckpointError, "the pickle stops with a malformed stack")
    assert failure(stream(pickle.MARK * (cap + 1))) == (Refused, "the pickle nests more than 10,000 MARKs")


def test_nesting_cap():
    depth = pickle_walk.MAX_DEPTH
    assert root_of(stream(pickle.EMPTY_LIST * depth, pickle.APPEND * (depth - 1)))  # 100 levels
    assert failure(stream(pickle.EMPTY_LIST * (depth + 1), pickle.APPEND * depth)) == (
        Refused, "the pickle nests containers deeper than 100 levels")
    # dicts (keys and values alike), their metadata and tuples count too
    nested_lists = pickle.EMPTY_LIST * (depth - 1) + pickle.APPEND * (depth - 2)
    in_a_dict = pickle.EMPTY_DICT + int1(1) + nested_lists + pickle.SETITEM
    assert root_of(stream(in_a_dict))
    assert failure(stream(pickle.EMPTY_LIST, in_a_dict, pickle.APPEND)) == (
        Refused, "the pickle nests containers deeper than 100 levels")
    as_a_key = pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.TUPLE1 * (depth - 2) + int1(1) + pickle.SETITEM
    assert root_of(stream(as_a_key))
    assert failure(stream(as_a_key, pickle.TUPLE1)) == (
        Refused, "the pickle nests containers deeper than 100 levels")
    metadata = pickle.EMPTY_LIST * (depth - 2) + pickle.APPEND * (depth - 3)
    build = ORDERED_DICT + pickle.EMPTY_DICT + text("_metadata") + pickle.EMPTY_DICT + text("x") + metadata
    build += pickle.SETITEM + pickle.SETITEM + pickle.BUILD
    assert root_of(stream(build))
    assert failure(stream(build, pickle.TUPLE1)) == (Refused, "the pickle nests containers deeper than 100 levels")


def test_the_tree_check_looks_at_a_containers_items_last_to_first():
    too_deep = pickle.EMPTY_LIST * 101 + pickle.APPEND * 100
    value = (Refused,
             "the pickle holds 'collections.OrderedDict' itself as a value, which a plain checkpoint never does")
    deep = (Refused, "the pickle nests containers deeper than 100 levels")
    # whichever of a global value and a too-deep nesting comes later in the tuple is reported
    assert failure(stream(too_deep, global_("collections", "OrderedDict"), pickle.TUPLE2)) == value
    assert failure(stream(global_("collections", "OrderedDict"), too_deep, pickle.TUPLE2)) == deep


def test_global_names_are_bounded_and_ascii():
    long_name = "a" * 256
    assert failure(stream(global_("collections", long_name) + b"\0" * 600)) == (
        Refused, "the pickle imports a name longer than 255 characters")
    assert failure(PROTO2 + pickle.GLOBAL + b"collections\nOrdered") == (
        Truncated, "the pickle ends inside a GLOBAL opcode")
    assert failure(stream(pickle.GLOBAL + b"coll\xe9ctions\nOrderedDict\n")) == (
        Refused, "the pickle imports a name that is not ASCII")


# -- 4. the other rules, each where it bites -------------------------------------------------

OTHER_RULES = {
    "PROTO in the middle": (stream(int1(1), PROTO2, pickle.POP), Refused,
                            "the pickle has a PROTO opcode in its middle"),
    "protocol 3": (pickle.PROTO + b"\x03" + int1(1) + pickle.STOP, Refused,
                   "the pickle uses protocol 3; torch.save writes protocol 2"),
    "a global not allowed": (stream(global_("os", "system")), Refused,
                             "the pickle imports 'os.system', which a plain checkpoint never does"),
    "a global left as a value": (stream(global_("collections", "OrderedDict")), Refused,
                                 ("the pickle holds 'collections.OrderedDict' itself as a value, "
                                  "which a plain checkpoint never does")),
    "calling a non-global": (stream(pickle.EMPTY_LIST, pickle.EMPTY_TUPLE, pickle.REDUCE), Refused,
                             "the pickle calls something that is not an allowed global"),
    "calling with a list": (stream(global_("collections", "OrderedDict"), pickle.EMPTY_LIST, pickle.REDUCE), Refused,
                            "the pickle calls 'collections.OrderedDict' with arguments that are not a tuple"),
    "SETITEM on a list": (stream(pickle.EMPTY_LIST, int1(1), int1(2), pickle.SETITEM), Refused,
                          "the pickle applies SETITEM to something that is not a dict"),
    "APPEND on a dict": (stream(pickle.EMPTY_DICT, int1(1), pickle.APPEND), Refused,
                         "the pickle applies APPEND to something that is not a list"),
    "odd SETITEMS": (stream(pickle.EMPTY_DICT, pickle.MARK, int1(1), pickle.SETITEMS), CheckpointError,
                     "the pickle has an odd number of items for SETITEMS"),
    "BUILD on a plain dict": (stream(pickle.EMPTY_DICT, METADATA, pickle.BUILD), Refused,
                              "the pickle sets object state (BUILD) in a way a plain checkpoint never does"),
    "persistent id nobody expects": (stream(text("0"), pickle.BINPERSID), Refused,
                                     "the pickle has a persistent id where none is expected"),
    "no STOP": (PROTO2 + int1(1), Truncated, "the pickle ends before its STOP opcode"),
    "cut inside an argument": (PROTO2 + pickle.BININT + b"\x01\x02", Truncated,
                               "the pickle ends before its STOP opcode"),
    "cut after an opcode": (PROTO2 + pickle.BININT1, Truncated, "the pickle ends before its STOP opcode"),
}


@pytest.mark.parametrize("name", sorted(OTHER_RULES))
def test_other_rules(name):
    data, kind, message = OTHER_RULES[name]
    with pytest.raises(CheckpointError) as caught:
        walk(data, 0, None)
    assert (type(caught.value), str(caught.value)) == (kind, message)


@pytest.mark.parametrize("start", [0, 3])
def test_an_unexpected_index_error_names_the_opcode_offset(start):
    def broken(pid):
        raise IndexError("a bug in the caller's callback")

    data = b"N" * start + stream(text("0"), pickle.BINPERSID)
    with pytest.raises(CheckpointError) as caught:
        walk(data, start, broken)
    assert (type(caught.value), str(caught.value)) == (CheckpointError, "the pickle is malformed near byte 8")


def test_a_pickle_may_start_anywhere_and_omit_proto():
    data = b"junk" + int1(1) + text("k") + pickle.TUPLE2 + pickle.STOP
    result = walk(data, 4)
    assert plain(result.root) == (1, "k") and result.end == len(data) and result.protocol is None
    assert result.root[1].offset == 6 and result.root[1].nbytes == 1  # offsets count in `data`


def test_strings_remember_where_they_were_defined():
    data = stream(text("ab"), pickle.BINPUT, b"\x00", pickle.BINGET, b"\x00", text("c"), pickle.TUPLE3)
    first, again, other = walk(data).root
    assert first is again and (first.offset, first.nbytes) == (2, 2) and other.offset == 13


def test_refusing_an_opcode_is_the_only_reason_to_import_pickletools():
    code = (
        "import sys\n"
        "from pth_legacy_keys import pickle_walk, scan\n"
        f"pickle_walk.walk({stream(int1(1))!r})\n"
        f"assert scan({str(PARAMETRIZED)!r}).status == 'needs-fix'\n"
        "assert 'pickletools' not in sys.modules, 'imported on the hot path'\n"
        "try:\n"
        f"    pickle_walk.walk({stream(pickle.DUP)!r})\n"
        "except pickle_walk.Refused as e:\n"
        "    print(e)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "the pickle uses opcode DUP, which a plain checkpoint never does\n"


# -- 5. real torch.save output (committed fixtures, made by tests/data/make_fixtures.py) --------

FIXTURES = sorted(DATA.glob("*.bin"))
ZIP_FIXTURES = [PARAMETRIZED, LEGACY]
GLOBALS = ["collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage"]


def storage_reference(pid):
    """("storage", storage type, key, location, numel[, view]), as torch.save writes it."""
    size, dtype = pickle_walk.storage_type_size(pid[1]), pickle_walk.storage_type_dtype(pid[1])
    return Storage(pid[2].value, size, pid[4], dtype)


def data_pkl(path):
    with zipfile.ZipFile(path) as archive:
        [name] = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        return archive.read(name)


def test_the_fixtures_are_the_three_torch_made_files():
    assert FIXTURES == sorted([LEGACY, PARAMETRIZED, LEGACY_FORMAT])


def assert_a_torch_state_dict(result, keys):
    assert result.protocol == 2 and result.globals == GLOBALS
    kind, items, metadata = plain(result.root)
    assert kind == "OrderedDict" and metadata is not None  # with its _metadata
    assert [key for key, _ in items] == keys
    assert all(value[0] == "tensor" and value[3] == "float32" for _, value in items)
    assert [value[1] for _, value in items] == [s.key for s in result.storages]
    return sorted(s.key for s in result.storages)


PARAMETRIZED_KEYS = [f"{m}.{p}" for m in "01"
                     for p in ("bias", "parametrizations.weight.original0", "parametrizations.weight.original1")]
LEGACY_KEYS = ["0.bias", "0.weight_g", "0.weight_v", "1.bias", "1.weight_g", "1.weight_v"]


@pytest.mark.parametrize("path", ZIP_FIXTURES, ids=lambda p: p.name)
def test_torch_save_output_uses_only_allowed_opcodes_and_is_accepted(path):
    data = data_pkl(path)
    assert {bytes([ord(op.code)]) for op, _, _ in pickletools.genops(data)} <= ALLOWED
    result = walk(data, 0, storage_reference)
    assert result.end == len(data)
    keys = PARAMETRIZED_KEYS if path == PARAMETRIZED else LEGACY_KEYS
    assert assert_a_torch_state_dict(result, keys) == list("012345")  # data/0 ... data/5


def test_the_legacy_formats_five_pickles_are_accepted():
    data = LEGACY_FORMAT.read_bytes()
    magic = walk(data, 0)
    version = walk(data, magic.end)
    sys_info = walk(data, version.end)
    main = walk(data, sys_info.end, storage_reference)
    keys = walk(data, main.end)
    assert (magic.root, version.root) == (0x1950A86A20F9469CFC6C, 1001)
    assert [key for key, _ in plain(sys_info.root)[1]] == ["protocol_version", "little_endian", "type_sizes"]
    assert assert_a_torch_state_dict(main, PARAMETRIZED_KEYS) == sorted(plain(keys.root))
    # 6 storages follow, each an 8-byte count and its float32 elements
    assert len(data) - keys.end == sum(8 + 4 * s.numel for s in main.storages)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_torch_save_output_is_checked(path):
    assert scan(path).status == ("ok" if path == LEGACY else "needs-fix")


@pytest.mark.parametrize("path", ZIP_FIXTURES, ids=lambda p: p.name)
def test_torch_save_output_cut_anywhere_is_truncated_never_accepted(path):
    data = data_pkl(path)
    for end in range(len(data)):
        with pytest.raises(CheckpointError) as caught:
            walk(data[:end], 0, storage_reference)
        assert type(caught.value) is Truncated, (end, caught.value)


def test_the_dispatch_table_is_keyed_by_pickles_own_opcodes():
    """The table spells each opcode as a byte (importing pickle would cost every check ~1 ms);
    its comment names pickle's constant, and this holds the two to each other."""
    from pth_legacy_keys import pickle_walk
    from support.pickle_ops import assert_keyed_by_pickles_opcodes

    assert_keyed_by_pickles_opcodes(pickle_walk, more_than=30)


# -- 6. mutation-testing gaps (mutmut over pickle_walk.py) -------------------------------------

def tensor_v2(size=(3,), stride=(1,), metadata=b"", key="k"):
    """torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict()[, metadata])."""
    def ints(values):
        return pickle.MARK + b"".join(int1(v) if type(v) is int else v for v in values) + pickle.TUPLE
    return (global_("torch._utils", "_rebuild_tensor_v2") + pickle.MARK + text(key) + pickle.BINPERSID
            + int1(0) + (size if type(size) is bytes else ints(size)) + ints(stride) + pickle.NEWFALSE
            + ORDERED_DICT + metadata + pickle.TUPLE + pickle.REDUCE)


def tensor_v3(count=7, dtype=global_("torch", "float16"), extra=b""):
    """torch._utils._rebuild_tensor_v3 with `count` arguments: args[6] is `dtype`, args[7] `extra`."""
    args = (text("k") + pickle.BINPERSID + int1(0) + int1(3) + pickle.TUPLE1 + int1(1) + pickle.TUPLE1
            + pickle.NEWFALSE + ORDERED_DICT + dtype + extra)
    args += pickle.NONE * (count - 7 - (1 if extra else 0))
    return global_("torch._utils", "_rebuild_tensor_v3") + pickle.MARK + args + pickle.TUPLE + pickle.REDUCE


V3_REFUSED = "the pickle calls 'torch._utils._rebuild_tensor_v3' with arguments a plain checkpoint never has"
METADATA_NEG = pickle.EMPTY_DICT + text("neg") + pickle.NEWTRUE + pickle.SETITEM


def test_rebuild_tensor_v3_takes_its_dtype_from_its_seventh_argument():
    assert root_of(stream(tensor_v3())) == ("tensor", "k", (3,), "float16")
    assert root_of(stream(tensor_v3(extra=METADATA_NEG, count=8))) == ("tensor", "k", (3,), "float16")
    assert failure(stream(tensor_v3(count=8, extra=int1(1)))) == (Refused, V3_REFUSED)  # args[7] is no metadata
    for count in (6, 9):
        assert failure(stream(tensor_v3(count=count) if count > 7 else
                              global_("torch._utils", "_rebuild_tensor_v3") + pickle.MARK + text("k")
                              + pickle.BINPERSID + int1(0) + int1(3) + pickle.TUPLE1 + int1(1) + pickle.TUPLE1
                              + pickle.NEWFALSE + ORDERED_DICT + pickle.TUPLE + pickle.REDUCE)) == (Refused, V3_REFUSED)
    for not_a_dtype in (int1(1), global_("torch", "FloatStorage")):
        assert failure(stream(tensor_v3(dtype=not_a_dtype))) == (Refused, V3_REFUSED)


def test_rebuild_tensor_shape_is_its_size_and_both_must_be_tuples_of_ints():
    assert root_of(stream(tensor_v2(size=(3, 2), stride=(2, 1)))) == ("tensor", "k", (3, 2), None)
    refused = "the pickle calls 'torch._utils._rebuild_tensor_v2' with arguments a plain checkpoint never has"
    half = pickle.BINFLOAT + struct.pack(">d", 0.5)
    for size, stride in [((half,), (1,)), ((1,), (half,)), (int1(3), (1,))]:
        assert failure(stream(tensor_v2(size=size, stride=stride))) == (Refused, refused)


def test_a_tuple_checked_for_one_tensor_is_kept_alive_so_a_new_tuple_cannot_take_its_id():
    # The first tensor's stride tuple is dropped after its REDUCE; the next 1-tuples are new objects,
    # likely at its address: a checked cache keyed by an id it does not keep alive would pass them.
    half = pickle.BINFLOAT + struct.pack(">d", 0.5)
    bad = [tensor_v2(size=(half,), stride=(1,)), tensor_v2(size=(3,), stride=(half,))]
    for later in bad:
        data = stream(pickle.EMPTY_LIST, pickle.MARK, tensor_v2(), later, pickle.APPENDS)
        assert failure(data)[0] is Refused


def test_tensor_metadata_shared_through_the_memo_is_accepted_each_time():
    shared = METADATA_NEG + pickle.BINPUT + b"\x07"
    again = pickle.BINGET + b"\x07"
    root = root_of(stream(pickle.EMPTY_LIST, pickle.MARK, tensor_v2(metadata=shared), tensor_v2(metadata=again),
                          pickle.APPENDS))
    assert root == [("tensor", "k", (3,), None)] * 2


def test_a_parameter_is_its_tensor_and_freezes_its_backward_hooks():
    hooks = global_("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.BINPUT + b"\x09"
    parameter = (global_("torch._utils", "_rebuild_parameter") + pickle.MARK + tensor_v2() + pickle.NEWTRUE
                 + hooks + pickle.TUPLE + pickle.REDUCE)
    assert root_of(stream(parameter)) == ("tensor", "k", (3,), None)
    later = pickle.BINGET + b"\x09" + text("h") + int1(1) + pickle.SETITEM
    assert failure(stream(pickle.EMPTY_LIST, pickle.MARK, parameter, later, pickle.APPENDS)) == (
        Refused, "the pickle applies SETITEM to a dict after a tensor rebuild took it as an argument")


@pytest.mark.parametrize("args, ok", [
    (text("ab") + text("latin1"), True), (int1(1) + text("latin1"), False), (text("ab") + text("utf-8"), False),
    (text("ab") + int1(1), False),
])
def test_codecs_encode_is_bytes_only_from_text_and_latin1(args, ok):
    data = stream(global_("_codecs", "encode"), args, pickle.TUPLE2, pickle.REDUCE)
    if ok:
        assert root_of(data) == ("bytes", "ab")
    else:
        assert failure(data) == (Refused, "the pickle calls '_codecs.encode' in a way a plain checkpoint never does")


def test_build_sets_only_a_metadata_dict_named_metadata():
    for attributes in (pickle.EMPTY_DICT + text("_other") + pickle.EMPTY_DICT + pickle.SETITEM,
                       pickle.EMPTY_DICT + text("_metadata") + int1(1) + pickle.SETITEM,
                       pickle.EMPTY_DICT + int1(1) + pickle.EMPTY_DICT + pickle.SETITEM):
        assert failure(stream(ORDERED_DICT, attributes, pickle.BUILD)) == (
            Refused, "the pickle sets object state (BUILD) in a way a plain checkpoint never does")


def test_setitems_and_appends_on_the_wrong_container_name_their_opcode():
    assert failure(stream(pickle.EMPTY_LIST, pickle.MARK, int1(1), int1(2), pickle.SETITEMS)) == (
        Refused, "the pickle applies SETITEMS to something that is not a dict")
    assert failure(stream(pickle.EMPTY_DICT, pickle.MARK, int1(1), pickle.APPENDS)) == (
        Refused, "the pickle applies APPENDS to something that is not a list")


def test_a_value_ending_exactly_at_the_end_of_the_data_is_a_missing_stop():
    stop = (Truncated, "the pickle ends before its STOP opcode")
    for value in (long1(5, 1), pickle.BINFLOAT + struct.pack(">d", 0.5), text("ab")):
        assert failure(PROTO2 + value) == stop


def test_global_name_length_limits_are_exact():
    longer = (Refused, "the pickle imports a name longer than 255 characters")
    for module, name in (("m" * 256, "x"), ("m" * 600, "x"), ("torch", "n" * 256)):
        assert failure(stream(pickle.GLOBAL + f"{module}\n{name}\n".encode(), b"\x00" * 600)) == longer
    assert failure(stream(global_("m" * 255, "x"))) == (
        Refused, f"the pickle imports '{'m' * 255}.x', which a plain checkpoint never does")
    assert failure(stream(pickle.GLOBAL + b"torch\n\n" + b"x\n")) == (
        Refused, "the pickle imports 'torch.', which a plain checkpoint never does")
    # with no newline in reach: truncated while fewer than 512 bytes follow the opcode, else refused
    assert failure(PROTO2 + pickle.GLOBAL + b"m" * 511) == (Truncated, "the pickle ends inside a GLOBAL opcode")
    assert failure(PROTO2 + pickle.GLOBAL + b"m" * 512) == longer
    after = PROTO2 + text("s" * 600) + pickle.GLOBAL + b"m" * 300
    assert failure(after) == (Truncated, "the pickle ends inside a GLOBAL opcode")


@pytest.mark.parametrize("module, hint", [("numpy.core.multiarray", "numpy"), ("numpy", "numpy"),
                                          ("datetime", "datetime"), ("numpyx.y", None)])
def test_a_global_refusal_hints_by_the_modules_first_segment(module, hint):
    message = failure(stream(global_(module, "scalar")))[1]
    assert message == f"the pickle imports '{module}.scalar', which a plain checkpoint never does" + (
        pickle_walk.HINTS[hint] if hint else "")


def test_the_tree_check_goes_on_past_a_shared_node_and_visits_it_once():
    shared_list = pickle.EMPTY_LIST + pickle.BINPUT + b"\x01"
    # [OrderedDict (the global itself), x, x]: x is looked at last-to-first, twice, then the global
    data = stream(pickle.MARK, global_("collections", "OrderedDict"), shared_list, pickle.BINGET + b"\x01",
                  pickle.TUPLE)
    assert failure(data) == (Refused, "the pickle holds 'collections.OrderedDict' itself as a value, which a "
                                      "plain checkpoint never does")
    # 60 levels of [x, x]: 2**60 paths, 60 nodes
    parts = [pickle.EMPTY_LIST, pickle.BINPUT + b"\x00"]
    for level in range(1, 61):
        parts += [pickle.BINGET + bytes([level - 1]), pickle.TUPLE2, pickle.BINPUT + bytes([level])]
    assert len(walk(stream(*parts), 0, storage).root) == 2


def test_storage_type_helpers():
    untyped = pickle_walk.Global("torch.storage", "UntypedStorage", pickle_walk.STORAGE)
    half = pickle_walk.Global("torch", "HalfStorage", pickle_walk.STORAGE)
    assert (pickle_walk.storage_type_dtype(untyped), pickle_walk.storage_type_size(untyped)) == (None, 1)
    assert (pickle_walk.storage_type_dtype(half), pickle_walk.storage_type_size(half)) == ("float16", 2)
    for other in (pickle_walk.Global("torch", "float16", pickle_walk.DTYPE), 3, None):
        with pytest.raises(Refused) as caught:
            pickle_walk.storage_type_size(other)
        assert str(caught.value) == "the pickle names a storage type that is not a torch storage class"
    assert Storage("k", 4, 3, "float32", "cuda:0").location == "cuda:0"


def deep_chain(levels):
    """A list nested `levels` deep through the memo: x = [x] again and again, each new list left on
    the stack, all of them appended to one list at the end (APPENDS)."""
    return PROTO2 + b"]" + b"(" + b"]q\x00" + (b"]h\x00aq\x00" * levels) + b"e."


@pytest.mark.parametrize("chain", [
    pytest.param(lambda: deep_chain(50_000), id="lists-through-the-memo"),
    pytest.param(lambda: PROTO2 + b"K\x01" + b"\x85" * 50_000 + b".", id="tuple1"),  # 5 KB would do in a browser
    pytest.param(lambda: PROTO2 + b"K\x01" + b"K\x02\x86" * 50_000 + b".", id="tuple2"),
])
def test_a_chain_nested_50000_deep_is_let_go_of_without_a_deep_chain_of_frees(chain):
    """Freeing such a chain frees it level by level in C; in Pyodide (the web page's Python, where
    test_supported_pythons.test_suite_passes_in_pyodide runs this test) that overflowed the
    JavaScript stack and killed the interpreter. The walk now lets go of what it made by hand
    there (RELEASE_BY_HAND), and this refusal is one clean line."""
    with pytest.raises(Refused, match="deeper than 100 levels"):
        walk(chain())


def test_the_walk_lets_go_by_hand_where_the_platform_needs_it(monkeypatch):
    """What the test above relies on in Pyodide, checked here too: when the walk fails, every
    container it made is emptied before it is let go of, newest first."""
    monkeypatch.setattr(pickle_walk, "RELEASE_BY_HAND", True)
    released = []
    real = pickle_walk._release
    monkeypatch.setattr(pickle_walk, "_release", lambda state, stack, tree=(), failure=None: (
        released.append(list(state.made)), real(state, stack, tree, failure)))
    with pytest.raises(Refused, match="deeper than 100 levels"):
        walk(deep_chain(150))
    [made] = released
    assert len(made) == 152 and all(node == [] for node in made)  # the outer list and 151 links, emptied
    result = walk(PROTO2 + b"}" + text("k") + b"]s.")  # a tree the caller keeps is left whole
    assert result.root.items[0][1] == []
