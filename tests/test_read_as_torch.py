"""We read every file by the route torch.load takes for its bytes, whatever its name.

Each rule of that route has its own test here (torch-free, so it runs on every supported
Python); tests/test_torch_route.py checks the same property against torch itself.
The two models of CPython that the rules rest on (how far the unpickler gets from byte 0,
and whether tarfile opens a file) are compared with this Python's own pickle and tarfile.
"""

import io
import os
import pickle
import pickletools
import random
import struct
import tarfile
import zipfile

import pytest
from support.cli_run import LEGACY_FORMAT, PARAMETRIZED, copy_of, lines_about, run
from pth_legacy_keys import scan
from pth_legacy_keys.pickle_reach import COMPLETES, IMPORTS, STOPS, UNKNOWN, reach
from pth_legacy_keys.tar_header import opens_as_tar
from support import LFS_POINTER, PROTO2, global_, number, text
from support.cli_run import assert_rejected
from support.hand_made import call, hand_made_checkpoint, system_payload, tensor_dict
from support.tar_bytes import tar_bytes
from support.zip_bytes import write_zip as hand_made_zip


# -- CPython as the reference -------------------------------------------------------------


class RecordingUnpickler(pickle.Unpickler):
    """pickle.load as torch's legacy route calls it, except that no global is ever resolved."""

    def __init__(self, file):
        super().__init__(file, encoding="utf-8")
        self.imported = []

    def find_class(self, module, name):
        self.imported.append(f"{module}.{name}")
        raise pickle.UnpicklingError("no globals here")


def cpython_outcome(data, folder=None):
    """What the real unpickler does with `data` from byte 0: imports, completes or stops.  With
    `folder`, read through a real file, as torch.load does (a FRAME reads differently then)."""
    if folder is not None:
        path = os.path.join(folder, "cpython-outcome")
        with open(path, "wb") as f:
            f.write(data)
        with open(path, "rb") as f:
            return _outcome(RecordingUnpickler(f))
    return _outcome(RecordingUnpickler(io.BytesIO(data)))


def _outcome(unpickler):
    try:
        unpickler.load()
    except RecursionError:
        return UNKNOWN
    except Exception:
        return IMPORTS if unpickler.imported else STOPS
    return IMPORTS if unpickler.imported else COMPLETES


def our_outcome(data):
    return reach(lambda offset, size: data[offset:offset + size], len(data)).kind


# Opcodes and fragments weighted toward what gets far: text lines, strings, marks, memo use.
FRAGMENTS = [
    b"(", b")", b"]", b"}", b"N", b".", b"0", b"1", b"2", b"a", b"b", b"d", b"e", b"l", b"s", b"t", b"u",
    b"\x85", b"\x86", b"\x87", b"\x88", b"\x89", b"\x8f", b"\x90", b"\x91", b"R", b"Q", b"o", b"\x81",
    b"K\x05", b"M\x01\x00", b"J\x01\x00\x00\x00", b"G" + bytes(8), b"\x8a\x01\x05", b"\x8b\x01\x00\x00\x00\x07",
    b"q\x00", b"q\x01", b"h\x00", b"h\x01", b"r\x00\x00\x00\x00", b"j\x00\x00\x00\x00", b"\x94",
    b"p0\n", b"g0\n", b"p1\n", b"g1\n", b"I12\n", b"I00\n", b"Lx\n", b"F1.5\n", b"F-\n", b"S'a'\n", b"Sa\n",
    "Vé\n".encode(), b"V\n", b"X\x01\x00\x00\x00a", b"\x8c\x01b", b"U\x01c", b"T\x01\x00\x00\x00d", b"C\x01e",
    b"B\x00\x00\x00\x00", b"\x8d\x01" + bytes(7) + b"f", b"\x80\x02", b"\x80\x09",
    b"cos\nsystem\n", b"c\n\n", b"cos\n", b"i", b"ios\nsystem\n", b"\x93", b"\x82\x01", b"P1\n", b"\x97",
    b"\x98", b"\n", b" ", b"x", b"/", b"#", b"import ", b"version ",
    # C code reads a text number up to its first NUL (found by the red team: "I1\0..." is 1).
    b"\0", b"I\0\n", b"I1\0x\n", b"I \0\n", b"L1\0\n", b"Lz\0\n", b"F1\0x\n", b"F\0\n", b"g0\0x\n",
    b"p0\0\n", b"p\0\n",
]


# FRAME is left out: CPython's unpickler can take seconds and gigabytes on a frame that ends
# inside an argument (a memo index read past it), which is its problem, not a verdict of ours;
# test_pickle_reach_follows_frames covers it.

# Fragments that push a value, so that many streams get as far as STOP or a global.
PUSHES = [f for f in FRAGMENTS
          if f[:1] and (f[:1] in b")]}NKMJG\x8a\x8bXU\x8cTCB\x88\x89" or f[:1] in (b"I", b"F", b"S", b"V"))]


# Bytes a text argument may hold that C and Python read differently: NUL, signs, prefixes,
# underscores, dots, exponents, quotes, backslashes, whitespace, bytes above 0x7f.
LINE_BYTES = b"0123456789xXoObBeEL+-_. \t\r\x0b\x0c\0'\"\\uUnaif\x80\xc3\xa9"


def random_line(rng):
    """A text opcode with a line of random bytes: INT, LONG, FLOAT, STRING, UNICODE, GET, PUT."""
    line = bytes(rng.choice(LINE_BYTES) for _ in range(rng.randint(0, 6)))
    return bytes([rng.choice(b"ILFSVgp")]) + line + b"\n"


def random_pickles(count, seed):
    rng = random.Random(seed)
    for _ in range(count):
        parts = [random_line(rng) if rng.random() < 0.2 else rng.choice(PUSHES if rng.random() < 0.6 else FRAGMENTS)
                 for _ in range(rng.randint(1, 12))]
        yield b"".join(parts) + (b"." if rng.random() < 0.5 else b"")


def test_pickle_reach_never_says_stops_where_cpython_imports():
    """Soundness: where we say the unpickler stops or completes, it imports nothing."""
    tally = {STOPS: 0, COMPLETES: 0, IMPORTS: 0, UNKNOWN: 0}
    for data in random_pickles(20_000, seed=10):
        ours = our_outcome(data)
        tally[ours] += 1
        if ours in (STOPS, COMPLETES):
            theirs = cpython_outcome(data)
            assert theirs != IMPORTS, (data, ours, theirs)
    # The generator reaches every outcome often, so the comparison means something.
    assert min(tally[STOPS], tally[COMPLETES], tally[IMPORTS]) > 300, tally


@pytest.mark.parametrize("data", [
    b"cos\nsystem\n(S'echo hi'\ntR.",  # a path-like text that is a protocol-0 pickle
    b"(ios\nsystem\nS'echo hi'\n.",  # INST after a MARK
    PROTO2 + b"\x8c\x05posix\x8c\x06system\x93.",
    b"X\x02\x00\x00\x00hi0cos\nsystem\n.",  # after a string and a POP
])
def test_pickle_reach_sees_each_way_to_import(data):
    assert our_outcome(data) == cpython_outcome(data) == IMPORTS


def frame(content):
    return b"\x95" + struct.pack("<Q", len(content)) + content


def frame_whose_end_cuts_an_argument(length=140_000):
    """Found by our red team: _pickle.c reading a file buffers a frame longer than its prefetch
    with read(); a SHORT_BINSTRING that starts 2 bytes before the frame's end is refilled from
    after the frame, so its 5 bytes are 'abcyz', not 'ababc', and a GLOBAL follows."""
    content = b"B" + struct.pack("<I", length - 9) + bytes(length - 9) + b"U\x05ab"
    return frame(content) + b"abcyz" + b"cos\nsystem\n(S'true'\ntR."


@pytest.mark.parametrize("data, outcome", [
    (frame(b"cos\nsystem\n."), UNKNOWN),
    (frame(b"K\x01.") + b"cos\nsystem\n.", UNKNOWN),
    (b"\x95" + struct.pack("<Q", 99) + b"cos\nsystem\n.", STOPS),  # the frame's bytes must all be there
])
def test_pickle_reach_takes_no_frame_for_harmless(tmp_path, data, outcome):
    assert our_outcome(data) == outcome
    if outcome == STOPS:
        assert cpython_outcome(data, tmp_path) == STOPS


def test_a_frame_that_cpython_reads_out_of_order_is_refused(tmp_path, capsys):
    """In order the 5-byte string is 'ababc' and 'y' is no opcode; read from a file it imports."""
    data = frame_whose_end_cuts_an_argument()
    assert cpython_outcome(data, tmp_path) == IMPORTS
    path = tmp_path / "model.pth"
    path.write_bytes(data)
    assert_rejected(capsys, path, "refused", "it has a FRAME")


@pytest.mark.parametrize("data", [
    b"./foo-1.0-py3.egg\n",
    b"import _virtualenv\n",  # INST without a MARK: _pickle.c stops before reading the name
    b"/usr/lib/python3/dist-packages\n",
    LFS_POINTER.encode(),
    b"# comment\ncos\nsystem\n",
])
def test_pickle_reach_lets_plain_text_stop(data):
    assert our_outcome(data) == cpython_outcome(data) == STOPS


# -- tar ------------------------------------------------------------------------------------------


def tarfile_opens(data):
    try:
        tarfile.open(fileobj=io.BytesIO(data), mode="r:").close()
    except tarfile.TarError:
        return False
    return True


def test_opens_as_tar_agrees_with_tarfile():
    rng = random.Random(11)
    real = tar_bytes([("storages", b"x" * 10)])
    samples = [real, bytes(512), bytes(511), b"\0" * 600]
    for _ in range(3000):
        block = bytearray(real[:512])
        for _ in range(rng.randint(0, 4)):
            block[rng.randrange(512)] = rng.randrange(256)
        if rng.random() < 0.5:  # a checksum written for the damaged header: tarfile then accepts it
            checksum = 256 + sum(block[:148]) + sum(block[156:])
            block[148:156] = rng.choice([b"%06o\0 " % checksum, b"%07o\0" % checksum, b"  %o\0" % checksum])
        samples.append(bytes(block) + real[512:])
    opened = 0
    for data in samples:
        assert opens_as_tar(data[:4096]) or not tarfile_opens(data), data[:600]
        opened += tarfile_opens(data)
    assert opened > 1000


def test_tar_checkpoint_is_refused_whatever_its_name(tmp_path, capsys):
    hostile = tar_bytes([("storages", system_payload(tmp_path / "MARKER")), ("tensors", b""), ("pickle", b"")])
    for name in ("model.pth", "model.bin", "model.safetensors", "model"):
        path = tmp_path / name
        path.write_bytes(hostile)
        assert_rejected(capsys, path, "refused", "a pre-1.6 tar checkpoint")


def legacy_with_tar_header():
    """A file that starts like the legacy format and whose first 512 bytes are also a tar
    header tarfile accepts (fields and checksum where a pickled string would hold them)."""
    data = bytearray(LEGACY_FORMAT.read_bytes())
    data[100:148] = b"0000644\0" + b"0000000\0" + b"0000000\0" + b"00000000000\0" + b"00000000000\0"
    data[156:157] = b"0"
    data[329:345] = b"0000000\0" * 2
    checksum = 256 + sum(data[:148]) + sum(data[156:512])
    data[148:156] = b"%06o\0 " % checksum
    return bytes(data)


def test_legacy_format_that_is_also_a_tar_is_refused(tmp_path, capsys):
    data = legacy_with_tar_header()
    assert tarfile_opens(data)  # torch.load would take the tar route
    path = tmp_path / "model.pth"
    path.write_bytes(data)
    assert_rejected(capsys, path, "refused", "a pre-1.6 tar checkpoint")


# -- zip: the end record miniz reads ----------------------------------------------------------


def with_comment(data, comment):
    data = bytearray(data)
    struct.pack_into("<H", data, len(data) - 2, len(comment))
    return bytes(data) + comment


@pytest.mark.parametrize("change, reason", [
    (lambda data: with_comment(data, b"hello"), "the zip end record is not the last 22 bytes"),
    (lambda data: data + b"\0" * 30, "the zip end record is not the last 22 bytes"),
    (lambda data: with_comment(data, b"x" * 40)[:-40], "the zip end record has a comment"),
], ids=["comment", "trailing-bytes", "comment-length-without-comment"])
def test_zip_end_record_must_be_the_last_22_bytes(tmp_path, capsys, change, reason):
    path = tmp_path / "model.pth"
    path.write_bytes(change(PARAMETRIZED.read_bytes()))
    assert_rejected(capsys, path, "refused", reason)


def test_zip_whose_comment_hides_a_second_archive_is_refused(tmp_path, capsys):
    """miniz takes the last end signature with 22 bytes after it: an end record inside the
    comment wins, and its central directory (a hostile data.pkl) is what torch reads."""
    real = PARAMETRIZED.read_bytes()
    hostile = io.BytesIO()
    with zipfile.ZipFile(hostile, "w") as archive:
        archive.writestr("parametrized/data.pkl", system_payload(tmp_path / "MARKER"))
        archive.writestr("parametrized/version", b"3\n")
    path = tmp_path / "model.pth"
    path.write_bytes(with_comment(real, hostile.getvalue()))
    # We now read the comment's end record, as miniz does; its directory does not fit here.
    assert_rejected(capsys, path, "refused", "")


# -- content that torch reads as a pickle from byte 0 ---------------------------------------------


def safetensors_whose_length_starts_a_pickle(first=b"c"):
    """A valid safetensors file whose header length's low bytes start an opcode whose line runs
    to a newline the header holds (JSON allows one as space).  With `c` the length starts a
    GLOBAL of `<length bytes>...` and `system`; with `I`, `F1` or `L1` a text number that C code
    reads only up to the length's NULs, after which the tensor bytes import os.system."""
    payload = b"cos\nsystem\n(S'echo hi'\ntR."
    start = b'{"w":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}' % (len(payload), len(payload))
    end = b"\nsystem\n}" if first == b"c" else b"\n}"
    length = len(start) + len(end)
    while not struct.pack("<Q", length).startswith(first):
        length += 1
    header = start + b" " * (length - len(start) - len(end)) + end
    return struct.pack("<Q", length) + header + payload


@pytest.mark.parametrize("name", ["model.pth", "model.safetensors", "model"])
@pytest.mark.parametrize("first", [b"c", b"I", b"F1", b"L1"], ids=["GLOBAL", "INT", "FLOAT", "LONG"])
def test_safetensors_whose_first_bytes_import_a_global_is_refused(tmp_path, capsys, name, first):
    data = safetensors_whose_length_starts_a_pickle(first)
    assert cpython_outcome(data) == IMPORTS
    path = tmp_path / name
    path.write_bytes(data)
    assert_rejected(capsys, path, "refused", "torch.load would unpickle it from its first byte, and that "
                                             "pickle can reach an import of")


@pytest.mark.parametrize("content", [
    b"cos\nsystem\n(S'echo hi'\ntR.\n",
    b"./src\ncos\nsystem\n",  # '.' is STOP on an empty stack: stops first, so this one is skipped
], ids=["pickle", "stops-first"])
def test_path_configuration_text_is_skipped_only_if_torch_stops_first(tmp_path, capsys, content):
    path = tmp_path / "site.pth"
    path.write_bytes(content)
    expected = cpython_outcome(content)
    code, out = run(capsys, "check", "-v", path)
    [line] = lines_about(out, path)
    if expected == IMPORTS:
        assert code == 2 and line.startswith(f"{path}: refused: a text file: torch.load would unpickle"), line
        assert "'os.system'" in line
    else:
        assert code == 0 and line.startswith(f"{path}: skipped: a Python path-configuration file"), line


@pytest.mark.parametrize("content", [
    LFS_POINTER + "extra\n",
    LFS_POINTER.replace("oid sha256:", "oid sha1:"),
    LFS_POINTER + "\n" * 2000,
    LFS_POINTER.replace("size 12345", "size 12345 and more"),
], ids=["extra-line", "other-hash", "too-long", "bad-size"])
def test_only_an_exact_lfs_pointer_is_a_pointer(tmp_path, capsys, content):
    path = tmp_path / "model.pth"
    path.write_text(content)
    assert_rejected(capsys, path, "error", "not a Git LFS pointer (the spec's exact form)")


def test_lfs_pointer_with_extensions_is_a_pointer(tmp_path):
    path = tmp_path / "model.pth"
    pointer = LFS_POINTER.replace("oid ", "ext-0-foo sha256:" + "ab" * 32 + "\noid ")
    path.write_text(pointer)
    assert scan(path).status == "not-checked"


# -- the legacy format: every pickle torch unpickles --------------------------------------------


def legacy_pickles(data):
    """The byte spans of the legacy format's first three pickles (read as opcodes, never loaded)."""
    spans, start = [], 0
    for _ in range(3):
        *_, (_, _, stop) = pickletools.genops(data[start:])
        spans.append((start, start + stop + 1))
        start += stop + 1
    return spans


@pytest.mark.parametrize("which, replacement, reason", [
    (0, PROTO2 + call("posix", "system", "true") + b".", "an import of 'posix.system'"),
    (0, b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"0" + number(1) + b"0"
        + b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b".", "bare pickle"),
    (1, PROTO2 + b"M\xe9\x03" + b"0" + global_("collections", "OrderedDict") + b"0M\xe9\x03.",
     "legacy format version is not 1001"),
    (2, PROTO2 + b"}" + text("protocol_version") + b"M\xe9\x03s.", "sys_info is not what torch.save writes"),
    (2, PROTO2 + global_("collections", "OrderedDict") + b")R.", "sys_info is not what torch.save writes"),
], ids=["hostile-magic", "magic-with-extra-opcodes", "version-with-a-global", "short-sys-info",
        "sys-info-as-ordered-dict"])
def test_legacy_pickles_before_the_main_one_must_be_what_torch_writes(tmp_path, capsys, which, replacement,
                                                                       reason):
    data = LEGACY_FORMAT.read_bytes()
    start, end = legacy_pickles(data)[which]
    path = tmp_path / "model.pth"
    path.write_bytes(data[:start] + replacement + data[end:])
    assert_rejected(capsys, path, "refused", reason)


def test_the_real_legacy_format_still_reads():
    assert scan(LEGACY_FORMAT).status == "needs-fix"


# -- allowed globals only in their roles -----------------------------------------------------------


def tensor_call(hooks=b")R", extra=b""):
    """_rebuild_tensor_v2 of a 3-element float storage, with the given backward hooks."""
    storage = (b"(" + text("storage") + global_("torch", "FloatStorage") + text("0") + text("cpu")
               + number(3) + b"tQ")
    return (global_("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + number(0) + number(3) + b"\x85"
            + number(1) + b"\x85" + b"\x89" + global_("collections", "OrderedDict") + hooks + extra + b"tR")


def parameter_call(name="_rebuild_parameter", hooks=b")R", state=b""):
    return (global_("torch._utils", name) + b"(" + tensor_call() + b"\x88"
            + global_("collections", "OrderedDict") + hooks + state + b"tR")


def state_dict_of(value):
    return PROTO2 + b"}" + text("w") + value + b"s."


@pytest.mark.parametrize("value, reason", [
    (global_("torch._utils", "_rebuild_tensor_v2"), "holds 'torch._utils._rebuild_tensor_v2' itself as a value"),
    (global_("collections", "OrderedDict"), "holds 'collections.OrderedDict' itself as a value"),
    (b"]" + global_("torch", "FloatStorage") + b"a", "holds 'torch.FloatStorage' itself as a value"),
    (tensor_call(hooks=b")R" + text("h") + number(1) + b"s"), "arguments a plain checkpoint never has"),
    (tensor_call(extra=b"}" + text("neg") + number(1) + b"s"), "arguments a plain checkpoint never has"),
    (parameter_call(hooks=b")R" + text("h") + number(1) + b"s"), "in a way a plain checkpoint never does"),
    (parameter_call("_rebuild_parameter_with_state", state=b"}" + text("size") + number(1) + b"s"),
     "imports 'torch._utils._rebuild_parameter_with_state', which a plain checkpoint never does (a tensor saved "
     "with Python attributes"),
    (parameter_call("_rebuild_parameter", state=b"}"), "in a way a plain checkpoint never does"),
    (global_("torch._tensor", "_rebuild_from_type_v2") + b"(" + global_("torch._utils", "_rebuild_tensor_v2")
     + global_("torch", "Tensor") + b")" + b"}" + text("note") + number(1) + b"s" + b"tR",
     "imports 'torch._tensor._rebuild_from_type_v2'"),
], ids=["function-as-value", "class-as-value", "storage-class-in-a-list", "backward-hooks", "metadata-not-bool",
        "parameter-hooks", "state-replaces-a-method", "state-without-with-state", "from-type-with-an-attribute"])
def test_allowed_globals_only_in_the_role_torch_save_gives_them(tmp_path, capsys, value, reason):
    path = hand_made_checkpoint(tmp_path / "model.pth", state_dict_of(value))
    assert_rejected(capsys, path, "refused", reason)


@pytest.mark.parametrize("value", [
    tensor_call(),
    tensor_call(extra=b"}" + text("neg") + b"\x88s"),
    parameter_call(),
], ids=["tensor", "tensor-with-neg-metadata", "parameter"])
def test_what_torch_save_writes_for_those_globals_is_accepted(tmp_path, value):
    path = hand_made_checkpoint(tmp_path / "model.pth", state_dict_of(value))
    assert scan(path).status == "ok", scan(path).reason


def test_a_plain_tensor_dict_is_still_accepted(tmp_path):
    assert scan(hand_made_checkpoint(tmp_path / "model.pth", tensor_dict())).status == "ok"


def test_a_copy_of_a_real_checkpoint_is_still_accepted(tmp_path):
    assert scan(copy_of(tmp_path, name="model.pth")).status == "needs-fix"


def test_record_name_with_a_nul_byte_is_refused(tmp_path, capsys):
    """torch sees record names as C strings: 'constants.pkl\\0x' would be a TorchScript archive to it."""
    records = [("archive/data.pkl", tensor_dict()), ("archive/data/0", bytes(12)), ("archive/version", b"3\n"),
               ("archive/constants.pkl-x", PROTO2 + b").")]
    path = hand_made_zip(tmp_path / "model.pth", records)
    path.write_bytes(path.read_bytes().replace(b"constants.pkl-x", b"constants.pkl\0x"))  # zipfile cuts at NUL
    assert_rejected(capsys, path, "refused", "a record name holds a NUL byte")


# -- an argument torch keeps must not change after we checked it ------------------------------


def shared_hooks_then_changed():
    """The backward-hooks OrderedDict is memoized, handed to the rebuild, then fetched back and
    given an item: torch keeps that very object as the tensor's _backward_hooks."""
    storage = (b"(" + text("storage") + global_("torch", "FloatStorage") + text("0") + text("cpu")
               + number(3) + b"tQ")
    rebuild = (global_("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + number(0) + number(3) + b"\x85"
               + number(1) + b"\x85" + b"\x89" + global_("collections", "OrderedDict") + b")Rq\x07" + b"tR")
    return PROTO2 + b"}" + text("w") + rebuild + b"s" + text("x") + b"h\x07" + number(1) + number(2) + b"s" + b"s."


def shared_metadata_then_changed():
    storage = (b"(" + text("storage") + global_("torch", "FloatStorage") + text("0") + text("cpu")
               + number(3) + b"tQ")
    rebuild = (global_("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + number(0) + number(3) + b"\x85"
               + number(1) + b"\x85" + b"\x89" + global_("collections", "OrderedDict") + b")R"
               + b"}q\x08" + text("neg") + b"\x88s" + b"tR")
    return PROTO2 + b"]" + rebuild + b"a" + b"h\x08" + text("conj") + b"\x88s" + b"a."


@pytest.mark.parametrize("pickle_bytes", [shared_hooks_then_changed(), shared_metadata_then_changed()],
                         ids=["backward-hooks", "metadata"])
def test_a_rebuild_argument_changed_afterwards_is_refused(tmp_path, capsys, pickle_bytes):
    path = hand_made_checkpoint(tmp_path / "model.pth", pickle_bytes)
    assert_rejected(capsys, path, "refused", "after a tensor rebuild took it as an argument")


def walk_line_events(pickle_bytes):
    """How many lines of pickle_walk run for `pickle_bytes`: a count of work, whatever the machine."""
    import sys

    from pth_legacy_keys import pickle_walk

    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename == pickle_walk.__file__:
            if event == "line":
                count += 1
            return tracer
        return None

    sys.settrace(tracer)
    try:
        pickle_walk.walk(pickle_bytes, 0, lambda pid: pickle_walk.Storage("0", 4, 10**9))
    finally:
        sys.settrace(None)
    return count


def tensors_sharing_one_shape(count, dims):
    """`count` tensors whose size and stride tuples (`dims` ints each) are one memoized tuple."""
    shape = b"(" + number(1) * dims + b"tq\x01"
    storage = b"(" + text("storage") + global_("torch", "FloatStorage") + text("0") + text("cpu") + number(1) + b"tQ"
    first = (global_("torch._utils", "_rebuild_tensor_v2") + b"q\x02(" + storage + b"q\x03" + number(0) + shape
             + b"h\x01\x89" + global_("collections", "OrderedDict") + b"q\x04)RtR")
    again = b"h\x02(h\x03" + number(0) + b"h\x01h\x01\x89h\x04)RtR"
    return PROTO2 + b"]" + first + b"a" + (again + b"a") * (count - 1) + b"."


def test_a_memo_shared_shape_is_checked_once():
    """Every step is linear in the pickle: twice the tensors sharing a tuple twice as long is a
    pickle twice the size, and twice the work (four times when each rebuild looked at the whole
    tuple again)."""
    small = walk_line_events(tensors_sharing_one_shape(100, 300))
    large = walk_line_events(tensors_sharing_one_shape(200, 600))
    assert large < 2.3 * small, (small, large)


def safetensors_that_fix_would_make_a_pickle():
    """Harmless as it is (its length starts with '{', no opcode), but renaming its two keys
    shortens the header by 50 bytes to a length whose bytes read `I1` and NULs: a text INT
    that runs to the header's newline, after which the tensor bytes import os.system."""
    payload = b"cos\nsystem\n(S'echo hi'\ntR."
    tensors = [("evil", "U8", [len(payload)], payload),
               ("0.parametrizations.weight.original0", "F32", [3, 1, 1], bytes(12)),
               ("0.parametrizations.weight.original1", "F32", [3, 2, 3], bytes(72))]
    entries, offset = [], 0
    for name, dtype, shape, data in tensors:
        entries.append('"%s":{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]}'
                       % (name, dtype, str(shape).replace(" ", ""), offset, offset + len(data)))
        offset += len(data)
    start = ("{" + ",".join(entries)).encode()
    length = len(start) + 2
    while struct.pack("<Q", length - 50)[:2] != b"I1" or length % 8 == 0:  # unpadded: fix keeps it so
        length += 1
    header = start + b" " * (length - len(start) - 2) + b"\n}"
    return struct.pack("<Q", length) + header + b"".join(t[3] for t in tensors)


def test_fix_never_writes_a_file_that_torch_would_read_as_a_pickle(tmp_path, capsys):
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_that_fix_would_make_a_pickle())
    before = path.read_bytes()
    assert cpython_outcome(before) == STOPS
    assert run(capsys, "check", path)[0] == 1  # harmless, and it has keys to rename
    code, out = run(capsys, "fix", path)
    [line] = lines_about(out, path)
    assert code == 2 and "did not read back" in line and "can reach an import of 'os.system'" in line, line
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_zip64_locator_must_point_at_the_record_before_it(tmp_path, capsys):
    """miniz reads the zip64 end record just before its locator first, then where the locator
    says: both must be the same place, so that we and miniz read one central directory."""
    data = bytearray(PARAMETRIZED.read_bytes())
    locator = data.rindex(b"PK\x06\x07")
    (z64_offset,) = struct.unpack_from("<Q", data, locator + 8)
    assert z64_offset + 56 == locator
    struct.pack_into("<Q", data, locator + 8, z64_offset - 56)
    path = tmp_path / "model.pth"
    path.write_bytes(bytes(data))
    assert_rejected(capsys, path, "refused", "the zip64 end record is not where its locator says")


def test_a_state_dict_build_sets_metadata_once(tmp_path, capsys):
    """torch.save's one BUILD is {'_metadata': OrderedDict}: a second item is not torch.save's."""
    metadata = global_("collections", "OrderedDict") + b")R"
    state = b"}(" + text("_metadata") + metadata + text("_metadata") + metadata + b"u"
    pickle_bytes = PROTO2 + global_("collections", "OrderedDict") + b")R" + state + b"b."
    path = hand_made_checkpoint(tmp_path / "model.pth", pickle_bytes)
    assert_rejected(capsys, path, "refused", "sets object state (BUILD) in a way a plain checkpoint never does")


def test_the_reach_dispatch_table_is_keyed_by_pickles_own_opcodes():
    """pickle_reach spells each opcode as a byte (importing pickle would cost every check ~1 ms);
    its comment names pickle's constant, and this holds the two to each other."""
    from pth_legacy_keys import pickle_reach
    from support.pickle_ops import assert_keyed_by_pickles_opcodes

    assert_keyed_by_pickles_opcodes(pickle_reach, more_than=60)
    # Every opcode pickletools knows is in the table: none falls to "unknown opcode" by omission.
    assert {op.code.encode("latin-1") for op in pickletools.opcodes} == set(pickle_reach._HANDLERS)
