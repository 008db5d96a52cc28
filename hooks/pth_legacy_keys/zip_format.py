"""The zip container torch.save writes (the default since torch 1.6): read it, rewrite it.

Reading touches the end records, the central directory, the local header of the pickle
record and the pickle itself: never the tensor data.  Anything torch might read differently
from us (duplicate names, compression, overlapping or reordered records, a second central
directory, bytes before the first record) is refused, because a tool that rewrites files must
see exactly what torch will see.

The rewrite is laid out exactly as torch's writer (caffe2's PyTorchStreamWriter over miniz)
lays it out: records in their original order, each record's data aligned by an `FB` padding
extra field, sizes and CRC in a data descriptor, zip64 extras where a size or offset needs
them, zero times and versions.  So renaming keys one way and back gives back the `torch.save`
file byte for byte, and torch's mmap loader, which may compute record offsets from these
rules, finds every tensor.  Only the pickle record is new; every other record's data is a
range of the source.
"""

import re
import struct
import zlib
from collections import namedtuple

from .byte_source import ReadAhead
from .checkpoint import Checkpoint, PickleSummary, Rewrite, SourceRange
from .errors import CheckpointError, Refused
from .torch_pickle import rename_in_pickle, storage_reference, walk_whole

LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
CENTRAL_HEADER = struct.Struct("<IHHHHHHIIIHHHHHII")
END_RECORD = struct.Struct("<IHHHHIIH")
ZIP64_END_RECORD = struct.Struct("<IQHHIIQQQQ")
ZIP64_LOCATOR = struct.Struct("<IIQI")
DATA_DESCRIPTOR = struct.Struct("<IIII")
ZIP64_DATA_DESCRIPTOR = struct.Struct("<IIQQ")
LOCAL_SIG, CENTRAL_SIG, END_SIG = 0x04034B50, 0x02014B50, 0x06054B50
ZIP64_END_SIG, ZIP64_LOCATOR_SIG, DATA_DESCRIPTOR_SIG = 0x06064B50, 0x07064B50, 0x08074B50
ZIP64_EXTRA_ID = 0x0001
U16_MAX, U32_MAX = 0xFFFF, 0xFFFFFFFF
# General-purpose flag bits, named as Python's zipfile names them (_MASK_USE_DATA_DESCRIPTOR ...).
MASK_USE_DATA_DESCRIPTOR = 1 << 3  # CRC and sizes follow the data
MASK_UTF_FILENAME = 1 << 11  # the name is UTF-8
TORCH_FLAGS = MASK_USE_DATA_DESCRIPTOR | MASK_UTF_FILENAME  # every bit torch.save and zipfile set
ZIP64_MADE_BY, ZIP64_NEEDED = 0x031E, 0x002D  # miniz's constants in the zip64 end record
MAX_CENTRAL_DIRECTORY = 64 * 1024 * 1024
MAX_RECORDS = 1_000_000
DEFAULT_ALIGNMENT = 64
KNOWN_RECORD = re.compile(
    r"data\.pkl|\.format_version|\.storage_alignment|byteorder|data/\d+|version"
    r"|\.data/version|\.data/serialization_id"
)


class Record(namedtuple("Record", "name header_offset size crc flags method compressed_size data_offset",
                        defaults=(0, 0, -1))):
    """One zip record, as the central directory describes it; its data_offset is known (not -1)
    once its local header has been read."""

    __slots__ = ()


class ZipLayout(namedtuple("ZipLayout", "records pickle_record prefix alignment")):
    """records        in physical order; each located (data_offset) when read for a rewrite
    pickle_record  the Record of data.pkl
    prefix         the folder every record sits in ("archive/")
    alignment      what .storage_alignment says (read for a rewrite; else the default)"""

    __slots__ = ()


class ZipFormat:
    """torch.save's zip: `PK\\x03\\x04` first, read as torch's miniz reads it."""

    name = "zip"

    @staticmethod
    def detect(head):
        """torch.load's own test, `_is_zipfile`: the first four bytes and nothing else."""
        return head.startswith(b"PK\x03\x04")

    def read(self, source, head=b"", *, for_rewrite=False):
        """Read the archive in `source`; with `for_rewrite`, every record's local header too,
        as a rewrite needs (a check reads only what its verdict depends on)."""
        records, end_of_records = _read_central_directory(source)
        prefix, by_name = _check_records(records, end_of_records)
        pickle_record = by_name[prefix + "data.pkl"]
        headers = ReadAhead(source)
        if for_rewrite:
            ends = [r.header_offset for r in records[1:]] + [end_of_records]
            records = tuple(map(_located, [headers] * len(records), records, ends))
            by_name = {r.name: r for r in records}
            pickle_record = by_name[pickle_record.name]
        else:  # the pickle's, and the last: what follows it must be the central directory, not a second one
            records = list(records)
            at = records.index(pickle_record)
            records[at] = pickle_record = _located(headers, pickle_record, _next_start(records, at, end_of_records))
            records[-1] = _located(headers, records[-1], end_of_records)
            records = tuple(records)
        pickle = source.read(pickle_record.data_offset, pickle_record.size)
        if zlib.crc32(pickle) != pickle_record.crc:
            raise Refused("the pickle record's CRC does not match its contents")
        result = walk_whole(pickle, _storage_check(prefix, by_name), "the pickle record")
        alignment = by_name.get(prefix + ".storage_alignment")
        alignment = (_parse_alignment(source.read(alignment.data_offset, alignment.size))
                     if for_rewrite and alignment is not None else DEFAULT_ALIGNMENT)
        return Checkpoint(self, source.size, source.identity(), result.root, pickle,
                          ZipLayout(records, pickle_record, prefix, alignment),
                          PickleSummary(result.protocol, tuple(result.globals)))

    rename = staticmethod(rename_in_pickle)

    def write(self, checkpoint, key_bytes):
        """The archive with `key_bytes` as its pickle record; every other record's data copied."""
        layout = checkpoint.layout
        pieces, central, position = [], [], 0
        for record in layout.records:
            is_pickle = record.name == layout.pickle_record.name
            size = len(key_bytes) if is_pickle else record.size
            crc = zlib.crc32(key_bytes) if is_pickle else record.crc
            header, descriptor, entry = _record_framing(record.name, size, crc, position, layout.alignment)
            data = key_bytes if is_pickle else SourceRange(record.data_offset, size, crc, f"record '{record.name}'")
            pieces += [header, data, descriptor] if size else [header]
            central.append(entry)
            position += len(header) + size + len(descriptor)
        pieces.append(_central_directory(central, position))
        return Rewrite(tuple(pieces), key_bytes)

    @staticmethod
    def kept(checkpoint):
        """The copied records: their names, sizes and CRCs."""
        layout = checkpoint.layout
        return [(r.name, r.size, r.crc) for r in layout.records if r.name != layout.pickle_record.name]

    @staticmethod
    def describe(checkpoint):
        layout = checkpoint.layout
        zip64 = any(r.size >= U32_MAX or r.header_offset >= U32_MAX for r in layout.records)
        fields = {"format": "zip", "bytes": checkpoint.size, "prefix": layout.prefix,
                  "alignment": layout.alignment, "records": len(layout.records), "zip64": zip64}
        text = (f"torch zip, prefix '{layout.prefix}', alignment {layout.alignment}, {len(layout.records)} "
                f"records, {'zip64' if zip64 else 'no zip64'}")
        return fields, text

    @staticmethod
    def load_with_torch(path):
        # mmap: the tensors stay in the page cache instead of being copied into memory.
        from .verify import torch_load

        return torch_load(path, mmap=True)


ZIP = ZipFormat()


# -- reading ------------------------------------------------------------------------


def _read_central_directory(source):
    """Return the records in central-directory order and where the directory starts."""
    # miniz, torch's zip reader, takes the last end-record signature with 22 bytes after it
    # and ignores the comment length; torch.save writes no comment.  So the end record must
    # sit at the very end with an empty comment: then miniz and we read the same one.
    file_size = source.size
    tail_size = min(file_size, END_RECORD.size + ZIP64_LOCATOR.size + ZIP64_END_RECORD.size)
    tail_start = file_size - tail_size
    tail = source.read(tail_start, tail_size)
    at = tail_size - END_RECORD.size
    if at < 0 or tail[at:at + 4] != b"PK\x05\x06":
        _refuse_hidden_end_record(source)
    _, disk, cd_disk, _, count, cd_size, cd_offset, comment_length = END_RECORD.unpack_from(tail, at)
    if comment_length:
        raise Refused("the zip end record has a comment; torch.save never writes one, and torch "
                      "ignores its length, so torch and we could read different archives")
    if disk or cd_disk:
        raise Refused("the archive spans several disks")
    end_of_cd = tail_start + at
    locator = at - ZIP64_LOCATOR.size
    if locator >= 0 and tail[locator:locator + 4] == b"PK\x06\x07":
        end_of_cd, count, cd_size, cd_offset = _read_zip64_end(source, tail, locator, tail_start)
    elif U32_MAX in (cd_size, cd_offset) or count == U16_MAX:
        raise CheckpointError("truncated or corrupt: zip64 fields without a zip64 end record")
    if cd_offset + cd_size != end_of_cd:
        raise Refused("the central directory is not where the end record says "
                      "(a second central directory, or bytes between)")
    if cd_size > MAX_CENTRAL_DIRECTORY or count > MAX_RECORDS:
        raise Refused("the central directory is larger than any checkpoint's")
    return _parse_central_directory(source.read(cd_offset, cd_size), count), cd_offset


def _refuse_hidden_end_record(source):
    window_start = max(0, source.size - 22 - U16_MAX)
    window = source.read(window_start, source.size - window_start)
    last = window.rfind(b"PK\x05\x06")
    if 0 <= last < len(window) - END_RECORD.size:
        raise Refused("the zip end record is not the last 22 bytes (a comment or bytes after it); "
                      "torch.save never writes that, and torch may read another archive than we would")
    raise CheckpointError("truncated or corrupt: no zip end-of-central-directory record")


def _read_zip64_end(source, tail, locator, tail_start):
    """(where the directory ends, record count, directory size and offset) from the zip64 records."""
    _, _, z64_offset, _ = ZIP64_LOCATOR.unpack_from(tail, locator)
    if z64_offset + ZIP64_END_RECORD.size != tail_start + locator:
        raise Refused("the zip64 end record is not where its locator says")
    sig, _, _, _, disk, cd_disk, _, count, cd_size, cd_offset = ZIP64_END_RECORD.unpack_from(
        source.read(z64_offset, ZIP64_END_RECORD.size))
    if sig != ZIP64_END_SIG or disk or cd_disk:
        raise CheckpointError("corrupt zip64 end record")
    return z64_offset, count, cd_size, cd_offset


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
        name = _record_name(cd[pos:pos + name_len])
        extra = cd[pos + name_len:pos + name_len + extra_len]
        pos += name_len + extra_len + comment_len
        size, compressed, offset = _apply_zip64_extra(extra, size, compressed, offset)
        if name in names:
            raise Refused(f"the archive has two records named '{name}'")
        names.add(name)
        records.append(Record(name, offset, size, crc, flags, method, compressed))
    if pos != len(cd):
        raise Refused("the central directory holds more than its records")
    return records


def _record_name(raw_name):
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("a record name is not UTF-8") from None
    if "\x00" in name:
        # miniz hands names to torch as C strings, cut at the first NUL: torch would see another name.
        raise Refused("a record name holds a NUL byte")
    return name


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


def _check_records(records, end_of_records):
    """The archive's prefix and its records by name, once every record is one torch.save writes."""
    _refuse_code_carrying(records)
    prefix = _archive_prefix(records)
    by_name = {r.name: r for r in records}
    if prefix + "data.pkl" not in by_name:
        raise CheckpointError("not a PyTorch checkpoint: a zip archive without data.pkl")
    if prefix + "version" not in by_name and prefix + ".data/version" not in by_name:
        raise Refused("the archive has no version record")
    # Unpacked, not record.name ...: Python 3.11 does not specialize a namedtuple's field
    # lookups, and this loop runs for every one of a model's hundreds of records.
    for name, _, size, _, flags, method, compressed_size, _ in records:
        if not KNOWN_RECORD.fullmatch(name[len(prefix):]):
            raise Refused(f"the archive holds an unexpected record '{name}'")
        if method != 0:
            raise Refused(f"record '{name}' is compressed (method {method}); torch.save stores every record")
        if flags & ~TORCH_FLAGS:
            raise Refused(f"record '{name}' has flag bits 0x{flags & ~TORCH_FLAGS:04x} set "
                          "(encrypted or patched data)")
        if compressed_size != size:
            raise CheckpointError(f"record '{name}' has two different sizes")
    _check_layout(records, end_of_records)
    return prefix, by_name


def _archive_prefix(records):
    if not records or "/" not in records[0].name:
        raise CheckpointError("not a PyTorch checkpoint: a zip archive without data.pkl")
    prefix = records[0].name.split("/", 1)[0] + "/"
    for name, *_ in records:  # unpacked: see _check_records
        if not name.startswith(prefix):
            raise Refused(f"record '{name}' is outside the archive prefix '{prefix}'")
    return prefix


def _refuse_code_carrying(records):
    """torch.load hands a zip with a constants.pkl record to torch.jit.load, which runs the
    archive's scripted code with no pickle allowlist at all; torch.package archives carry
    Python modules.  Neither is a checkpoint we could vouch for."""
    for name, *_ in records:  # unpacked: see _check_records
        rest = name.split("/", 1)[-1]
        if rest == "constants.pkl" or rest.startswith("code/"):
            kind = "TorchScript"
        elif rest in (".data/extern_modules", ".data/python_version") or rest.endswith(".py"):
            kind = "torch.package"
        else:
            continue
        raise Refused(_code_carrying_message(kind))


def _code_carrying_message(kind):
    """The one refusal of both kinds of code-carrying archive, each named with what runs its code:
    torch.load itself for TorchScript; torch.package's PackageImporter (torch.load cannot read one,
    having no data.pkl) for a torch.package archive, as descript-audio-codec saves its models."""
    runs = "torch.load would run its code" if kind == "TorchScript" else "torch.package's importer would run its code"
    return (f"a code-carrying archive ({kind}): {runs}, and pth-legacy-keys does not vouch for "
            "code-carrying archives; exclude the ones you trust from this check (leave them out of the "
            "paths, or match them in the hook's `exclude`)")


def _check_layout(records, end_of_records):
    ordered = sorted(records, key=lambda r: r.header_offset)
    if ordered != records:
        raise Refused("the archive's records are not in the order of its central directory")
    if records[0].header_offset != 0:
        raise Refused(f"{records[0].header_offset} bytes precede the archive's first record")
    for (name, header_offset, size, *_), next_start in zip(records, [r.header_offset for r in records[1:]]
                                                                 + [end_of_records]):
        if header_offset + LOCAL_HEADER.size + len(name.encode()) + size > next_start:
            raise Refused(f"record '{name}' overlaps what follows it")


def _next_start(records, at, end_of_records):
    """Where what follows records[at] starts: the next record's local header, or the directory."""
    return records[at + 1].header_offset if at + 1 < len(records) else end_of_records


def _located(source, record, next_start):
    """`record` with its data offset, read from its local header, which must agree with it."""
    expected_name = record.name.encode()
    header = source.read(record.header_offset, LOCAL_HEADER.size + len(expected_name))
    sig, _, flags, method, _, _, _, _, _, name_len, extra_len = LOCAL_HEADER.unpack_from(header)
    name = header[LOCAL_HEADER.size:LOCAL_HEADER.size + name_len]
    if sig != LOCAL_SIG or name != expected_name or flags != record.flags or method != 0:
        raise Refused(f"the local header of '{record.name}' disagrees with the central directory")
    data_offset = record.header_offset + LOCAL_HEADER.size + name_len + extra_len
    data_end = data_offset + record.size
    if data_end > next_start:
        raise Refused(f"record '{record.name}' overlaps what follows it")
    gap = next_start - data_end
    if gap and not (record.flags & MASK_USE_DATA_DESCRIPTOR
                    and _is_data_descriptor(source.read(data_end, min(gap, 24)), gap)):
        raise Refused(f"{gap} unexplained bytes follow record '{record.name}'")
    return record._replace(data_offset=data_offset)


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


def _storage_check(prefix, by_name):
    """The persistent_id hook for the pickle: every storage must be a record that holds it."""

    def persistent_id(pid):
        storage = storage_reference(pid, 5)
        record = by_name.get(f"{prefix}data/{storage.key}")
        if record is None:
            raise CheckpointError(f"the pickle refers to record data/{storage.key}, which the archive lacks")
        if storage.numel * storage.element_size > record.size:
            raise Refused(f"storage data/{storage.key} claims more bytes than its record holds")
        return storage

    return persistent_id


# -- writing ------------------------------------------------------------------------


def _record_framing(name, size, crc, offset, alignment):
    """(local header, data descriptor, central-directory entry) of a record of `size` bytes
    whose local header starts at `offset`, as torch's writer frames it."""
    encoded = name.encode("utf-8")
    big_size, big_offset = size >= U32_MAX, offset >= U32_MAX
    # The local zip64 extra is written before the data, when miniz's compressed size is still 0.
    local_zip64 = _zip64_extra(((size, 0) if big_size else ()) + ((offset,) if big_offset else ()))
    data_start = offset + LOCAL_HEADER.size + len(encoded) + len(local_zip64) + 4
    extra = local_zip64 + _alignment_padding(data_start, alignment, name, len(local_zip64))
    flags = TORCH_FLAGS if size else MASK_UTF_FILENAME
    header = LOCAL_HEADER.pack(LOCAL_SIG, 0, flags, 0, 0, 0, 0, 0, 0, len(encoded), len(extra)) + encoded + extra
    if not size:
        descriptor = b""
    elif big_size or big_offset:
        descriptor = ZIP64_DATA_DESCRIPTOR.pack(DATA_DESCRIPTOR_SIG, crc, size, size)
    else:
        descriptor = DATA_DESCRIPTOR.pack(DATA_DESCRIPTOR_SIG, crc, size, size)
    central_zip64 = _zip64_extra(((size, size) if big_size else ()) + ((offset,) if big_offset else ()))
    entry = CENTRAL_HEADER.pack(
        CENTRAL_SIG, 0, 0, flags, 0, 0, 0, crc, min(size, U32_MAX), min(size, U32_MAX),
        len(encoded), len(central_zip64), 0, 0, 0, 0, min(offset, U32_MAX),
    ) + encoded + central_zip64
    return header, descriptor, entry


def _central_directory(entries, offset):
    """The central directory at `offset` and the end records after it (zip64 ones always)."""
    directory = b"".join(entries)
    count = len(entries)
    return (
        directory
        + ZIP64_END_RECORD.pack(ZIP64_END_SIG, ZIP64_END_RECORD.size - 12, ZIP64_MADE_BY, ZIP64_NEEDED,
                                0, 0, count, count, len(directory), offset)
        + ZIP64_LOCATOR.pack(ZIP64_LOCATOR_SIG, 0, offset + len(directory), 1)
        + END_RECORD.pack(END_SIG, 0, 0, min(count, U16_MAX), min(count, U16_MAX),
                          min(len(directory), U32_MAX), min(offset, U32_MAX), 0)
    )


def _alignment_padding(data_start, alignment, name, other_extra_bytes):
    """The `FB` extra field that moves a record's data from `data_start` to a multiple of `alignment`,
    as caffe2's getPadding writes it: b"FB", the padding's length (16 bits), that many b"Z".

    Both that length and the header's extra-field length are 16 bits.  torch's writer truncates
    them past 65,535 bytes yet writes every padding byte, so its own reader then takes padding for
    data: torch.save with a 1 MiB .storage_alignment makes a file torch.load cannot read.  Such
    a file, or any whose alignment needs that much padding, we refuse to write.
    """
    if type(alignment) is not int or alignment < 1:
        raise Refused(f"the archive's .storage_alignment {alignment!r} is not a positive number")
    padding = -data_start % alignment
    if other_extra_bytes + 4 + padding > U16_MAX:
        raise Refused(f"its .storage_alignment of {alignment} needs {padding:,} bytes of padding before "
                      f"record '{name}', more than a zip extra field holds (torch's own writer makes "
                      "files torch cannot load at such an alignment)")
    return b"FB" + struct.pack("<H", padding) + b"Z" * padding


def _zip64_extra(values):
    if not values:
        return b""
    return struct.pack(f"<HH{len(values)}Q", ZIP64_EXTRA_ID, 8 * len(values), *values)
