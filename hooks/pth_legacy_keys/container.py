"""Read a checkpoint's container: the zip written by torch.save, the legacy format, or safetensors.

Reading a zip checkpoint touches the end records, the central directory, the local
header of the pickle record and the pickle itself: never the tensor data.  Anything
torch might read differently from us (duplicate names, compression, overlapping or
reordered records, a second central directory, bytes before the first record) is
refused, because a tool that rewrites files must see exactly what torch will see.
"""

import os
import re
import struct
import zlib

from .errors import CheckpointError, NotACheckpoint, Refused
from .lfs_pointer import is_lfs_pointer
from .pickle_reach import COMPLETES, IMPORTS, UNKNOWN, reach
from .pickle_walk import MAX_PICKLE_BYTES, Dict, Storage, Text, Truncated, storage_type_dtype, storage_type_size, walk
from .regular_file import open_regular
from .safetensors_file import looks_like_safetensors, read_header, tree
from .tar_header import opens_as_tar

LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
CENTRAL_HEADER = struct.Struct("<IHHHHHHIIIHHHHHII")
END_RECORD = struct.Struct("<IHHHHIIH")
ZIP64_END_RECORD = struct.Struct("<IQHHIIQQQQ")
ZIP64_LOCATOR = struct.Struct("<IIQI")
LOCAL_SIG, CENTRAL_SIG, END_SIG = 0x04034B50, 0x02014B50, 0x06054B50
ZIP64_END_SIG, ZIP64_LOCATOR_SIG = 0x06064B50, 0x07064B50
ZIP64_EXTRA_ID = 0x0001
U16_MAX, U32_MAX = 0xFFFF, 0xFFFFFFFF
ALLOWED_FLAGS = 0x0808  # data descriptor, UTF-8 names: what torch.save and zipfile write
MAX_CENTRAL_DIRECTORY = 64 * 1024 * 1024
MAX_RECORDS = 1_000_000

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# What torch.save writes first in the legacy format: protocol-2 pickles of the magic number
# (PROTO 2, LONG1 of 10 bytes) and of the format version (PROTO 2, BININT2).
LEGACY_MAGIC_PICKLE = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little") + b"."
LEGACY_PROTOCOL_PICKLE = b"\x80\x02M" + LEGACY_PROTOCOL.to_bytes(2, "little") + b"."
LFS_POINTER_HEAD = b"version https://git-lfs.github.com/spec/"
KNOWN_RECORD = re.compile(
    r"data\.pkl|\.format_version|\.storage_alignment|byteorder|data/\d+|version"
    r"|\.data/version|\.data/serialization_id"
)
SNIFF_BYTES = 4096


class Record:
    """One zip record, as the central directory describes it."""

    __slots__ = ("name", "header_offset", "size", "crc", "flags", "method", "compressed_size", "data_offset")

    def __init__(self, name, header_offset, size, crc, flags, method=0, compressed_size=None):
        self.name = name
        self.header_offset = header_offset
        self.size = size
        self.crc = crc
        self.flags = flags
        self.method = method
        self.compressed_size = size if compressed_size is None else compressed_size
        self.data_offset = -1  # known once the local header has been read


class Checkpoint:
    """What we read of one checkpoint: enough to report on it or rewrite it."""

    def __init__(self, path, format, file_size, pickle, pickle_start, root, records=(), pickle_record=None):
        self.path = path
        self.format = format  # "zip" or "legacy"
        self.file_size = file_size
        self.pickle = pickle  # the main pickle, the one holding the state dicts
        self.pickle_start = pickle_start  # its offset in the file
        self.root = root  # the inert tree walked from it
        self.records = list(records)  # zip: in physical order
        self.pickle_record = pickle_record
        self.alignment = 64  # zip: what .storage_alignment says, once read
        self.identity = None  # file_identity() of the file as it was read
        self.prefix = ""  # zip: the folder every record sits in ("archive/")
        self.globals = []  # the dotted names the pickle imports
        self.protocol = None  # the pickle protocol
        self.header = None  # safetensors: its SafetensorsHeader (and no pickle)


def read_checkpoint(path, *, locate_all_records=False):
    """Read and walk the checkpoint at `path`, by the route torch.load takes for its bytes.

    With `locate_all_records` every record's local header is read too, as a rewrite
    needs; a check reads only what its verdict depends on.
    """
    # Unbuffered: every read is one system call for exactly the bytes we need.
    with open_regular(path) as f:
        status = os.fstat(f.fileno())
        file_size = status.st_size
        head = f.read(SNIFF_BYTES)
        # torch.load's own test, `_is_zipfile`: the first four bytes and nothing else.
        if head.startswith(b"PK\x03\x04"):
            checkpoint = _read_zip(f, path, file_size, locate_all_records)
        else:
            checkpoint = _read_not_zip(f, path, file_size, head)
        checkpoint.identity = file_identity(status)
        return checkpoint


def file_identity(status):
    """What changes when a file is replaced or rewritten: compared before a fix writes or swaps."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _read_not_zip(f, path, file_size, head):
    """torch.load's route for a file that is not a zip: tar if tarfile opens it, else
    pickles from byte 0.  We may examine the content as something else (safetensors, a
    path-configuration file, an LFS pointer) only when that pickle stops before it
    resolves any global: otherwise torch.load of these very bytes would run it."""
    if file_size == 0:
        raise CheckpointError("empty file")
    if opens_as_tar(head):
        raise Refused("a pre-1.6 tar checkpoint: torch.load would open it as a tar archive and "
                      "unpickle its members, and this tool does not read that format")
    outcome = reach(lambda offset, size: _pread(f, offset, size), file_size, head)
    if outcome.kind == IMPORTS:
        raise Refused(f"{_what_it_looks_like(head, file_size)}: torch.load would unpickle it from its "
                      f"first byte, and that pickle can reach an import of '{outcome.detail}'")
    if outcome.kind == UNKNOWN:
        raise Refused(f"{_what_it_looks_like(head, file_size)}: torch.load would unpickle it from its "
                      f"first byte, and {outcome.detail}")
    if outcome.kind == COMPLETES:
        # torch.load compares that pickle with the legacy magic number and, if it is
        # equal, unpickles four more: every one of them must pass our walk.
        return _read_legacy(f, path, file_size)
    if is_lfs_pointer(head, file_size):
        raise NotACheckpoint("Git LFS pointer; fetch the real file (git lfs pull)", is_lfs_pointer=True)
    if looks_like_safetensors(head):
        return _read_safetensors(f, path, file_size)
    if file_size <= SNIFF_BYTES and not head.startswith(LFS_POINTER_HEAD) and _is_path_configuration(head):
        raise NotACheckpoint("a Python path-configuration file (site-packages .pth), not a checkpoint")
    if head.startswith(b"PK"):
        raise CheckpointError("not a PyTorch checkpoint: a zip that does not start with a record")
    return _unrecognised(head)


def _what_it_looks_like(head, file_size):
    if head.startswith(LFS_POINTER_HEAD):
        return "not a Git LFS pointer (the spec's exact form)"
    if looks_like_safetensors(head):
        return "a safetensors-like file"
    if file_size <= SNIFF_BYTES and _is_path_configuration(head):
        return "a text file"
    return "a bare pickle, not a torch.save checkpoint"


def _unrecognised(head):
    if LEGACY_MAGIC_PICKLE.startswith(head):
        raise CheckpointError("truncated: the file ends inside its pickles")
    if head.startswith(LFS_POINTER_HEAD):
        raise CheckpointError("not a Git LFS pointer (the spec's exact form) nor a checkpoint")
    raise CheckpointError("not a PyTorch checkpoint (unrecognised content)")


def _is_path_configuration(head):
    """True for the text files site.py reads: paths, comments and `import` lines."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith(("import ", "import\t")):
            continue
        if any(c in line for c in "<>|\"*?\x00") or not line.isprintable():
            return False
    return True


# -- zip --------------------------------------------------------------------------


def _read_zip(f, path, file_size, locate_all_records):
    records, end_of_records = _read_central_directory(f, file_size)
    _refuse_code_carrying(records)
    prefix = _archive_prefix(records)
    by_name = {r.name: r for r in records}
    pickle_record = by_name.get(prefix + "data.pkl")
    if pickle_record is None:
        raise CheckpointError("not a PyTorch checkpoint: a zip archive without data.pkl")
    if prefix + "version" not in by_name and prefix + ".data/version" not in by_name:
        raise Refused("the archive has no version record")
    for record in records:
        if not KNOWN_RECORD.fullmatch(record.name[len(prefix):]):
            raise Refused(f"the archive holds an unexpected record '{record.name}'")
        if record.method != 0:
            raise Refused(f"record '{record.name}' is compressed (method {record.method}); "
                          "torch.save stores every record")
        if record.flags & ~ALLOWED_FLAGS:
            raise Refused(f"record '{record.name}' has flag bits 0x{record.flags & ~ALLOWED_FLAGS:04x} set "
                          "(encrypted or patched data)")
        if record.compressed_size != record.size:
            raise CheckpointError(f"record '{record.name}' has two different sizes")
    _check_layout(records, end_of_records)

    next_starts = dict(zip(map(id, records), [r.header_offset for r in records[1:]] + [end_of_records]))
    # The last record too, always: what follows it must be the central directory, not a second one.
    for record in records if locate_all_records else [pickle_record, records[-1]]:
        _locate_data(f, record, next_starts[id(record)])
    pickle = _pread(f, pickle_record.data_offset, pickle_record.size)
    if zlib.crc32(pickle) != pickle_record.crc:
        raise Refused("the pickle record's CRC does not match its contents")

    def persistent_id(pid):
        storage = _storage_reference(pid, 5)
        record = by_name.get(f"{prefix}data/{storage.key}")
        if record is None:
            raise CheckpointError(f"the pickle refers to record data/{storage.key}, which the archive lacks")
        if storage.numel * storage.element_size > record.size:
            raise Refused(f"storage data/{storage.key} claims more bytes than its record holds")
        return storage

    result = _walk_whole(pickle, persistent_id, "the pickle record")
    checkpoint = Checkpoint(path, "zip", file_size, pickle, pickle_record.data_offset, result.root,
                            records, pickle_record)
    checkpoint.prefix, checkpoint.globals, checkpoint.protocol = prefix, result.globals, result.protocol
    alignment = by_name.get(prefix + ".storage_alignment")
    if locate_all_records and alignment is not None:
        checkpoint.alignment = _parse_alignment(_pread(f, alignment.data_offset, alignment.size))
    return checkpoint


def _read_central_directory(f, file_size):
    """Return the records in central-directory order and where the directory ends."""
    # miniz, torch's zip reader, takes the last end-record signature with 22 bytes after it
    # and ignores the comment length; torch.save writes no comment.  So the end record must
    # sit at the very end with an empty comment: then miniz and we read the same one.
    tail_size = min(file_size, END_RECORD.size + ZIP64_LOCATOR.size + ZIP64_END_RECORD.size)
    tail_start = file_size - tail_size
    tail = _pread(f, tail_start, tail_size)
    at = tail_size - END_RECORD.size
    if at < 0 or tail[at:at + 4] != b"PK\x05\x06":
        window = _pread(f, max(0, file_size - 22 - U16_MAX), min(file_size, 22 + U16_MAX))
        last = window.rfind(b"PK\x05\x06")
        if 0 <= last < len(window) - END_RECORD.size:
            raise Refused("the zip end record is not the last 22 bytes (a comment or bytes after it); "
                          "torch.save never writes that, and torch may read another archive than we would")
        raise CheckpointError("truncated or corrupt: no zip end-of-central-directory record")
    _, disk, cd_disk, _, count, cd_size, cd_offset, comment_length = END_RECORD.unpack_from(tail, at)
    if comment_length:
        raise Refused("the zip end record has a comment; torch.save never writes one, and torch "
                      "ignores its length, so torch and we could read different archives")
    if disk or cd_disk:
        raise Refused("the archive spans several disks")
    end_of_cd = tail_start + at
    locator = at - ZIP64_LOCATOR.size
    if locator >= 0 and tail[locator:locator + 4] == b"PK\x06\x07":
        _, _, z64_offset, _ = ZIP64_LOCATOR.unpack_from(tail, locator)
        if z64_offset + ZIP64_END_RECORD.size != tail_start + locator:
            raise Refused("the zip64 end record is not where its locator says")
        sig, _, _, _, disk, cd_disk, _, count, cd_size, cd_offset = ZIP64_END_RECORD.unpack_from(
            _pread(f, z64_offset, ZIP64_END_RECORD.size))
        if sig != ZIP64_END_SIG or disk or cd_disk:
            raise CheckpointError("corrupt zip64 end record")
        end_of_cd = z64_offset
    elif U32_MAX in (cd_size, cd_offset) or count == U16_MAX:
        raise CheckpointError("truncated or corrupt: zip64 fields without a zip64 end record")
    if cd_offset + cd_size != end_of_cd:
        raise Refused("the central directory is not where the end record says "
                      "(a second central directory, or bytes between)")
    if cd_size > MAX_CENTRAL_DIRECTORY or count > MAX_RECORDS:
        raise Refused("the central directory is larger than any checkpoint's")
    cd = _pread(f, cd_offset, cd_size)
    return _parse_central_directory(cd, count), cd_offset


def _parse_central_directory(cd, count):
    records = []
    names = set()
    pos = 0
    for _ in range(count):
        if pos + CENTRAL_HEADER.size > len(cd):
            raise CheckpointError("corrupt central directory")
        (sig, _, _, flags, method, _, _, crc, compressed, size, name_len, extra_len, comment_len,
         _, _, _, offset) = CENTRAL_HEADER.unpack_from(cd, pos)
        if sig != CENTRAL_SIG:
            raise CheckpointError("corrupt central directory")
        pos += CENTRAL_HEADER.size
        raw_name = cd[pos:pos + name_len]
        extra = cd[pos + name_len:pos + name_len + extra_len]
        pos += name_len + extra_len + comment_len
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused("a record name is not UTF-8") from None
        if "\x00" in name:
            # miniz hands names to torch as C strings, cut at the first NUL: torch would see another name.
            raise Refused("a record name holds a NUL byte")
        size, compressed, offset = _apply_zip64_extra(extra, size, compressed, offset)
        if name in names:
            raise Refused(f"the archive has two records named '{name}'")
        names.add(name)
        records.append(Record(name, offset, size, crc, flags, method, compressed))
    if pos != len(cd):
        raise Refused("the central directory holds more than its records")
    return records


def _apply_zip64_extra(extra, size, compressed, offset):
    pos = 0
    while pos + 4 <= len(extra):
        field_id, field_size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + field_size]
        pos += 4 + field_size
        if field_id != ZIP64_EXTRA_ID:
            continue
        values = list(struct.unpack_from(f"<{len(body) // 8}Q", body))
        try:
            if size == U32_MAX:
                size = values.pop(0)
            if compressed == U32_MAX:
                compressed = values.pop(0)
            if offset == U32_MAX:
                offset = values.pop(0)
        except IndexError:
            raise CheckpointError("corrupt zip64 extra field") from None
    return size, compressed, offset


def _archive_prefix(records):
    if not records or "/" not in records[0].name:
        raise CheckpointError("not a PyTorch checkpoint: a zip archive without data.pkl")
    prefix = records[0].name.split("/", 1)[0] + "/"
    for record in records:
        if not record.name.startswith(prefix):
            raise Refused(f"record '{record.name}' is outside the archive prefix '{prefix}'")
    return prefix


def _refuse_code_carrying(records):
    """torch.load hands a zip with a constants.pkl record to torch.jit.load, which runs the
    archive's scripted code with no pickle allowlist at all; torch.package archives carry
    Python modules.  Neither is a checkpoint we could vouch for."""
    for record in records:
        rest = record.name.split("/", 1)[-1]
        if rest == "constants.pkl" or rest.startswith("code/"):
            kind = "TorchScript"
        elif rest in (".data/extern_modules", ".data/python_version") or rest.endswith(".py"):
            kind = "torch.package"
        else:
            continue
        raise Refused(f"a code-carrying archive ({kind}): torch.load would run its code; "
                      "exclude archives you trust from this check")


def _check_layout(records, end_of_records):
    ordered = sorted(records, key=lambda r: r.header_offset)
    if ordered != records:
        raise Refused("the archive's records are not in the order of its central directory")
    if records[0].header_offset != 0:
        raise Refused(f"{records[0].header_offset} bytes precede the archive's first record")
    for record, next_start in zip(records, [r.header_offset for r in records[1:]] + [end_of_records]):
        minimum_end = record.header_offset + LOCAL_HEADER.size + len(record.name.encode()) + record.size
        if minimum_end > next_start:
            raise Refused(f"record '{record.name}' overlaps what follows it")


def _locate_data(f, record, next_start):
    expected_name = record.name.encode()
    header = _pread(f, record.header_offset, LOCAL_HEADER.size + len(expected_name))
    sig, _, flags, method, _, _, _, _, _, name_len, extra_len = LOCAL_HEADER.unpack_from(header)
    name = header[LOCAL_HEADER.size:LOCAL_HEADER.size + name_len]
    if sig != LOCAL_SIG or name != expected_name or flags != record.flags or method != 0:
        raise Refused(f"the local header of '{record.name}' disagrees with the central directory")
    record.data_offset = record.header_offset + LOCAL_HEADER.size + name_len + extra_len
    data_end = record.data_offset + record.size
    if data_end > next_start:
        raise Refused(f"record '{record.name}' overlaps what follows it")
    gap = next_start - data_end
    if gap and not (record.flags & 0x08 and _is_data_descriptor(_pread(f, data_end, min(gap, 24)), gap)):
        raise Refused(f"{gap} unexplained bytes follow record '{record.name}'")


def _is_data_descriptor(data, length):
    """A data descriptor: CRC and two sizes (4 or 8 bytes each), with or without its signature."""
    if data[:4] == b"PK\x07\x08":
        return length in (16, 24)
    return length in (12, 20)


def _parse_alignment(raw):
    text = raw.decode("ascii", "replace").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 8) or not 0 < int(text) <= 1 << 20:
        raise Refused(f"the archive's .storage_alignment is not a sane number: {text[:20]!r}")
    return int(text)


def _storage_reference(pid, length):
    """Check a persistent id is ('storage', <torch storage class>, key, location, numel, ...)."""
    if (type(pid) is not tuple or len(pid) != length or type(pid[0]) is not Text
            or pid[0].value != "storage" or type(pid[2]) is not Text or type(pid[3]) is not Text
            or type(pid[4]) is not int or pid[4] < 0):
        raise Refused("the pickle has a persistent id that is not a torch storage reference")
    key = pid[2].value
    if not (key.isascii() and key.isdigit()):
        raise Refused(f"the pickle names a storage key that is not a number: {key[:40]!r}")
    return Storage(key, storage_type_size(pid[1]), pid[4], storage_type_dtype(pid[1]), pid[3].value)


def _walk_whole(data, persistent_id, what):
    try:
        result = walk(data, 0, persistent_id)
    except Truncated:
        raise CheckpointError(f"{what} is truncated") from None
    if result.end != len(data):
        raise Refused(f"{len(data) - result.end} bytes follow the pickle's STOP opcode")
    return result


def record_crc(f, record):
    """The CRC-32 of a located record's data, read in chunks."""
    return region_crc(f, record.data_offset, record.size)


def region_crc(f, offset, remaining):
    """The CRC-32 of `remaining` bytes of `f` from `offset`, read in chunks."""
    crc = 0
    while remaining:
        chunk = _pread(f, offset, min(remaining, 1 << 20))
        crc = zlib.crc32(chunk, crc)
        offset += len(chunk)
        remaining -= len(chunk)
    return crc


# -- legacy -----------------------------------------------------------------------


def _read_legacy(f, path, file_size):
    """Read the five pickles of the pre-1.6 format; the raw storages after them are not read."""
    limit = min(file_size, 1 << 20)
    while True:
        data = _pread(f, 0, limit)
        try:
            return _walk_legacy(data, path, file_size)
        except Truncated:
            if limit >= file_size:
                raise CheckpointError("truncated: the file ends inside its pickles") from None
            if limit >= MAX_PICKLE_BYTES:
                raise Refused(f"the pickles are larger than {MAX_PICKLE_BYTES >> 20} MiB") from None
            limit = min(file_size, limit * 4)


def _walk_legacy(data, path, file_size):
    # torch.save writes the magic number and the format version as these exact pickles;
    # anything else at byte 0 is some other pickle, which torch.load would still unpickle.
    if not data.startswith(LEGACY_MAGIC_PICKLE):
        if len(data) < len(LEGACY_MAGIC_PICKLE) and LEGACY_MAGIC_PICKLE.startswith(data):
            raise Truncated("the file ends inside its pickles")
        raise Refused("a bare pickle, not a torch.save checkpoint")
    if not data.startswith(LEGACY_PROTOCOL_PICKLE, len(LEGACY_MAGIC_PICKLE)):
        raise Refused(f"legacy format version is not {LEGACY_PROTOCOL}")
    sys_info = walk(data, len(LEGACY_MAGIC_PICKLE) + len(LEGACY_PROTOCOL_PICKLE))
    if not _is_sys_info(sys_info.root):
        raise Refused("the legacy format's sys_info is not what torch.save writes")
    main_start = sys_info.end
    # Walked on its own so that string offsets count from the pickle's first byte.
    main_pickle = data[main_start:]
    main = walk(main_pickle, 0, _legacy_persistent_id)
    keys = walk(data, main_start + main.end)
    if type(keys.root) is not list or any(type(k) is not Text for k in keys.root):
        raise CheckpointError("corrupt legacy checkpoint: its storage key list is malformed")
    storage_bytes = {storage.key: storage.numel * storage.element_size for storage in main.storages}
    listed = [k.value for k in keys.root]
    if sorted(storage_bytes) != sorted(listed):
        raise CheckpointError("corrupt legacy checkpoint: its storage list does not match its pickle")
    # Each storage follows the pickles as an 8-byte element count and its bytes, in listed order.
    expected_size = keys.end + sum(8 + storage_bytes[key] for key in listed)
    if expected_size > file_size:
        raise CheckpointError("truncated: the file ends inside its storages")
    if expected_size < file_size:
        raise Refused(f"{file_size - expected_size} bytes follow the last storage")
    checkpoint = Checkpoint(path, "legacy", file_size, main_pickle[:main.end], main_start, main.root)
    checkpoint.globals, checkpoint.protocol = main.globals, main.protocol
    return checkpoint


def _is_sys_info(root):
    """{"protocol_version": 1001, "little_endian": bool, "type_sizes": {"short": n, "int": n, "long": n}}"""
    if type(root) is not Dict or root.ordered or root.metadata is not None:
        return False
    fields = _text_keyed(root)
    if fields is None:
        return False
    sizes = fields.get("type_sizes")
    if (sorted(fields) != ["little_endian", "protocol_version", "type_sizes"]
            or type(fields["protocol_version"]) is not int or fields["protocol_version"] != LEGACY_PROTOCOL
            or type(fields["little_endian"]) is not bool or type(sizes) is not Dict or sizes.ordered):
        return False
    sizes = _text_keyed(sizes)
    return (sizes is not None and sorted(sizes) == ["int", "long", "short"]
            and all(type(size) is int and size in (2, 4, 8) for size in sizes.values()))


def _text_keyed(node):
    """A Dict's items as {str: value} when every key is a distinct string, else None."""
    fields = {key.value: value for key, value in node.items if type(key) is Text}
    return fields if len(fields) == len(node.items) else None


def _read_safetensors(f, path, file_size):
    header = read_header(f, file_size, _pread)
    checkpoint = Checkpoint(path, "safetensors", file_size, None, None, tree(header))
    checkpoint.header = header
    return checkpoint


def _legacy_persistent_id(pid):
    storage = _storage_reference(pid, 6)
    view = pid[5]
    if view is not None and not (type(view) is tuple and len(view) == 3 and type(view[0]) is Text
                                 and type(view[1]) is int and type(view[2]) is int):
        raise Refused("the pickle has a storage view that is not a torch storage reference")
    return storage


# -- small helpers ----------------------------------------------------------------


def _pread(f, offset, size):
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise CheckpointError("truncated: the file ends before a record it lists")
    return data

