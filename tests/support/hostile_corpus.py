"""The hostile and broken files every reader must turn away: damaged zips, rezipped archives,
pickles that would run code, and files that cannot be read.  Each entry is a builder and the
status and reason the CLI must give; test_bad_input runs them through the CLI, test_torch_route
through torch.load itself."""

import io
import struct
import zipfile

from support.cli_run import PARAMETRIZED
from support.hand_made import call, hand_made_checkpoint, system_payload, tensor_dict
from support.pickle_ops import PROTO2, global_, text
from support.zip_bytes import write_zip, zip_records


PREFIX = "parametrized/"


def fixture_records(source=PARAMETRIZED):
    return zip_records(source)


def central_entry(data, name):
    """Offset of `name`'s central-directory header in the zip `data`."""
    encoded = name.encode()
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        (name_len,) = struct.unpack_from("<H", data, at + 28)
        if data[at + 46:at + 46 + name_len] == encoded:
            return at
        at = data.find(b"PK\x01\x02", at + 1)
    raise AssertionError(f"no central-directory entry for {name}")


def patched_central_entry(data, name, field_offset, fmt, change):
    data = bytearray(data)
    at = central_entry(data, name) + field_offset
    (value,) = struct.unpack_from(fmt, data, at)
    struct.pack_into(fmt, data, at, change(value))
    return bytes(data)


def flip_key_byte(data):
    at = data.index(b"parametrizations.weight.original0")
    return data[:at] + b"P" + data[at + 1:]


def header_offset(data, name):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.getinfo(name).header_offset


def overlapping_records(data):
    """data/1's directory entry points into data/0's local header: two records share bytes."""
    inside_data_0 = header_offset(data, PREFIX + "data/0") + 40
    return patched_central_entry(data, PREFIX + "data/1", 42, "<I", lambda _: inside_data_0)


def swapped_records(data):
    """data/0 and data/1 trade places in the directory only: it no longer matches the file's order."""
    first, second = header_offset(data, PREFIX + "data/0"), header_offset(data, PREFIX + "data/1")
    data = patched_central_entry(data, PREFIX + "data/0", 42, "<I", lambda _: second)
    return patched_central_entry(data, PREFIX + "data/1", 42, "<I", lambda _: first)


def renamed_local_header(data):
    """The pickle's local header names another record than the central directory does."""
    at = 30 + len(PREFIX)
    assert data[at:at + 8] == b"data.pkl"
    return data[:at] + b"D" + data[at + 1:]


def second_central_directory(data):
    """A decoy central directory before the real one: the end records point past it."""
    end = data.rindex(b"PK\x05\x06")
    (cd_size, cd_offset) = struct.unpack_from("<II", data, end + 12)
    zip64_end = data.rindex(b"PK\x06\x06")
    cd_offset = struct.unpack_from("<Q", data, zip64_end + 48)[0]
    directory = data[cd_offset:zip64_end]
    shifted = bytearray(data[:cd_offset] + directory + data[cd_offset:])
    moved = len(directory)
    zip64_end += moved
    struct.pack_into("<Q", shifted, zip64_end + 48, cd_offset + moved)  # the real directory, moved
    locator = bytes(shifted).rindex(b"PK\x06\x07")
    struct.pack_into("<Q", shifted, locator + 8, zip64_end)
    end = bytes(shifted).rindex(b"PK\x05\x06")
    struct.pack_into("<I", shifted, end + 16, cd_offset + moved)
    return bytes(shifted)


ZIP_DAMAGE = {
    "overlapping-records": (overlapping_records, "overlaps what follows it"),
    "records-out-of-directory-order": (swapped_records, "not in the order of its central directory"),
    "local-header-name-differs": (renamed_local_header, "local header of 'parametrized/data.pkl' disagrees"),
    "bad-crc-in-central-directory": (
        lambda data: patched_central_entry(data, PREFIX + "data.pkl", 16, "<I", lambda crc: crc ^ 1),
        "CRC does not match"),
    "pickle-byte-changed": (flip_key_byte, "CRC does not match"),
    "encryption-flag": (
        lambda data: patched_central_entry(data, PREFIX + "data.pkl", 8, "<H", lambda flags: flags | 1),
        "flag bits 0x0001"),
    "pickle-glued-in-front": (lambda data: b"\x80\x02K\x01." + data, "bare pickle"),
    "patched-data-flag": (
        lambda data: patched_central_entry(data, PREFIX + "data.pkl", 8, "<H", lambda flags: flags | 0x20),
        "flag bits 0x0020"),
    "strong-encryption-flag": (
        lambda data: patched_central_entry(data, PREFIX + "data.pkl", 8, "<H", lambda flags: flags | 0x40),
        "flag bits 0x0040"),
    "second-central-directory": (second_central_directory, "unexplained bytes follow record"),
}


def with_record(name, data, after=PREFIX + "data/5"):
    def change(records):
        at = [n for n, _ in records].index(after) + 1
        return records[:at] + [(name, data)] + records[at:]
    return change


REZIPPED = {
    "compressed": (lambda records: records, zipfile.ZIP_DEFLATED, "is compressed"),
    "duplicate-name": (with_record(PREFIX + "data/0", bytes(12)), zipfile.ZIP_STORED,
                       f"two records named '{PREFIX}data/0'"),
    "outside-prefix": (with_record("other/x", b"x"), zipfile.ZIP_STORED, "outside the archive prefix"),
    "no-version": (lambda records: [r for r in records if r[0] != PREFIX + "version"], zipfile.ZIP_STORED,
                   "no version record"),
    "junk-after-stop": (
        lambda records: [(n, d + b"junk" if n == PREFIX + "data.pkl" else d) for n, d in records],
        zipfile.ZIP_STORED, "4 bytes follow the pickle's STOP"),
    "second-pickle-after-stop": (
        lambda records: [(n, d + system_payload("/nonexistent/MARKER") if n == PREFIX + "data.pkl" else d)
                         for n, d in records],
        zipfile.ZIP_STORED, "bytes follow the pickle's STOP"),
    "extra-pickle-record": (with_record(PREFIX + "extra.pkl", system_payload("/nonexistent/MARKER")),
                            zipfile.ZIP_STORED, f"unexpected record '{PREFIX}extra.pkl'"),
}


def frame(body):
    return b"\x95" + struct.pack("<Q", len(body)) + body


def stack_global_system(marker):
    return (b"\x8c\x05posix\x94\x8c\x06system\x94\x93\x94"
            + b"\x8c" + bytes([len(f"touch {marker}")]) + f"touch {marker}".encode() + b"\x94\x85\x94R\x94.")


PAYLOADS = {
    "posix-system": (system_payload, "refused", "'posix.system'"),
    "os-system": (lambda m: PROTO2 + call("os", "system", f"touch {m}") + b".", "refused", "'os.system'"),
    "builtins-eval": (lambda m: PROTO2 + call("builtins", "eval", f"__import__('os').system('touch {m}')")
                      + b".", "refused", "'builtins.eval'"),
    "builtins-exec": (lambda m: PROTO2 + call("builtins", "exec", f"import os; os.system('touch {m}')")
                      + b".", "refused", "'builtins.exec'"),
    "builtin-getattr": (lambda m: PROTO2 + global_("__builtin__", "getattr") + b"(" + global_("posix", "system")
                        + text("__call__") + b"tR(" + text(f"touch {m}") + b"tR.", "refused",
                        "'__builtin__.getattr'"),
    "operator-getitem": (lambda m: PROTO2 + call("_operator", "getitem", "a", "b") + b".", "refused",
                         "'_operator.getitem'"),
    "commands-getoutput": (lambda m: PROTO2 + call("commands", "getoutput", f"touch {m}") + b".", "refused",
                           "'commands.getoutput'"),
    "allowed-name-with-suffix": (
        lambda m: PROTO2 + global_("torch._utils", "_rebuild_tensor_v2.__globals__") + b".", "refused",
        "'torch._utils._rebuild_tensor_v2.__globals__'"),
    "inst": (lambda m: PROTO2 + b"(" + text(f"touch {m}") + b"iposix\nsystem\n.", "refused", "opcode INST"),
    "obj": (lambda m: PROTO2 + b"(" + global_("collections", "OrderedDict") + b"o.", "refused", "opcode OBJ"),
    "ext1": (lambda m: PROTO2 + b"\x82\x01" + b"(" + text(f"touch {m}") + b"tR.", "refused", "opcode EXT1"),
    "stack-global-in-protocol-2": (
        lambda m: PROTO2 + text("posix") + text("system") + b"\x93(" + text(f"touch {m}") + b"tR.",
        "refused", "opcode STACK_GLOBAL"),
    "protocol-4": (lambda m: b"\x80\x04" + frame(stack_global_system(m)), "refused", "protocol 4"),
    "protocol-5": (lambda m: b"\x80\x05" + frame(stack_global_system(m)), "refused", "protocol 5"),
    "build-sets-object-state": (
        lambda m: PROTO2 + global_("collections", "OrderedDict") + b")R}" + text("__setstate__")
        + text("x") + b"sb.", "refused", "BUILD"),
    "storage-type-posix-system": (lambda m: tensor_dict(storage_type=("posix", "system")), "refused",
                                  "'posix.system'"),
    "storage-type-not-a-storage": (lambda m: tensor_dict(storage_type=("collections", "OrderedDict")),
                                   "refused", "storage type"),
    "storage-key-path": (lambda m: tensor_dict(key="../../etc/passwd"), "refused",
                         "storage key that is not a number"),
    "storage-larger-than-record": (lambda m: tensor_dict(numel=1000), "refused",
                                   "claims more bytes than its record holds"),
    "100k-nested-lists": (lambda m: PROTO2 + b"]" * 100_000 + b"a" * 99_999 + b".", "refused", "deeper than"),
    "million-marks": (lambda m: PROTO2 + b"(" * 1_000_000, "refused", "MARKs"),
    "huge-string-length": (lambda m: PROTO2 + b"X\xff\xff\xff\xff" + b"touch.", "error", "truncated"),
    "truncated-after-reduce": (lambda m: PROTO2 + global_("collections", "OrderedDict") + b")R", "error",
                               "truncated"),
    "system-truncated-after-reduce": (lambda m: system_payload(m)[:-1], "refused", "'posix.system'"),
    "builtins-getattr-import": (
        lambda m: PROTO2 + global_("builtins", "getattr") + b"(" + call("builtins", "__import__", "os")
        + text("system") + b"tR(" + text(f"touch {m}") + b"tR.", "refused", "'builtins.getattr'"),
    "stack-global-from-memo": (
        lambda m: PROTO2 + text("posix") + b"q\x00" + text("system") + b"q\x01"
        + b"h\x00h\x01\x93(" + text(f"touch {m}") + b"tR.", "refused", "opcode STACK_GLOBAL"),
    "stack-global-through-memo-hops": (
        lambda m: PROTO2 + text("posix") + b"q\x00h\x00q\x01h\x01q\x02" + text("system") + b"q\x03"
        + b"h\x02h\x03\x93(" + text(f"touch {m}") + b"tR.", "refused", "opcode STACK_GLOBAL"),
    "stack-global-after-decoys": (
        lambda m: PROTO2 + text("torch._utils") + text("_rebuild_tensor_v2") + b"00" + text("posix")
        + text("system") + b"\x93(" + text(f"touch {m}") + b"tR.", "refused", "opcode POP"),
    "bare-global-with-import-side-effects": (lambda m: PROTO2 + global_("this", "s") + b".", "refused",
                                             "'this.s'"),
    "text-persistent-id": (lambda m: PROTO2 + b"P" + f"touch {m}".encode() + b"\n.", "refused",
                           "opcode PERSID"),
    "long4-length-2-to-the-32": (lambda m: PROTO2 + b"\x8b\xff\xff\xff\xff" + b".", "refused",
                                 "integer of 4,294,967,295 bytes"),
    "binunicode8-length-2-to-the-62": (
        lambda m: PROTO2 + b"\x8d" + (2 ** 62).to_bytes(8, "little") + b"x.", "refused", "opcode BINUNICODE8"),
    "numpy-scalar-with-a-hint": (
        lambda m: PROTO2 + call("numpy.core.multiarray", "scalar") + b".", "refused",
        "'numpy.core.multiarray.scalar', which a plain checkpoint never does (save plain numbers instead"),
    "reduce-reaching-below-a-mark": (
        lambda m: PROTO2 + global_("collections", "OrderedDict") + b"()R" + b".", "error",
        "takes more items from its stack than it put there"),
    "stack-of-100001-items": (lambda m: PROTO2 + b"K\x01" * 100_001 + b".", "refused", "stack grows beyond"),
    "datetime-with-a-hint": (
        lambda m: PROTO2 + call("datetime", "datetime") + b".", "refused", "(save dates as strings instead"),
}


def empty_file(folder):
    path = folder / "empty.pth"
    path.write_bytes(b"")
    return path


BAD_FILES = {
    "missing": lambda folder: folder / "missing.pth",
    "empty": empty_file,
    "payload": lambda folder: hand_made_checkpoint(folder / "evil.pth", system_payload(folder / "MARKER")),
    "duplicate-name": lambda folder: write_zip(folder / "dup.pth",
                                               with_record(PREFIX + "data/0", bytes(12))(fixture_records())),
}
