"""The pre-1.6 torch.save format (`_use_new_zipfile_serialization=False`; "legacy" in reports).

Five protocol-2 pickles back to back: the magic number, the format version, a `sys_info`
dict, the main object and the sorted list of storage keys; then each storage as an 8-byte
element count and its bytes.  No alignment, no CRC, no offsets: a rewrite replaces the
fourth pickle and copies the bytes before and after it as they are.
"""

from collections import namedtuple

from .checkpoint import Checkpoint, PickleSummary, Rewrite, SourceRange
from .errors import CheckpointError, Refused
from .pickle_walk import MAX_PICKLE_BYTES, Dict, Text, Truncated, walk
from .torch_pickle import rename_in_pickle, storage_reference

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
FORMAT_VERSION = 1001
# What torch.save writes first: protocol-2 pickles of the magic number (PROTO 2, LONG1 of
# 10 bytes) and of the format version (PROTO 2, BININT2).
MAGIC_NUMBER_PICKLE = b"\x80\x02\x8a\x0a" + MAGIC_NUMBER.to_bytes(10, "little") + b"."
FORMAT_VERSION_PICKLE = b"\x80\x02M" + FORMAT_VERSION.to_bytes(2, "little") + b"."
FIRST_READ = 1 << 20


class Pre16Layout(namedtuple("Pre16Layout", "main_pickle_start")):
    """main_pickle_start: the file offset of the main pickle (the key bytes)."""

    __slots__ = ()


class Pre16Format:
    """What torch.load reads when a file is no zip and no tar, and its first pickle completes."""

    name = "legacy"  # the report's word for it, which users and scripts read

    @staticmethod
    def detect(head):
        return head.startswith(MAGIC_NUMBER_PICKLE)

    def read(self, source, head=b"", *, for_rewrite=False):
        """Read the five pickles; the raw storages after them are not read."""
        limit = min(source.size, FIRST_READ)
        while True:
            data = source.read(0, limit)
            try:
                return self._walk(source, data)
            except Truncated:
                if limit >= source.size:
                    raise CheckpointError("truncated: the file ends inside its pickles") from None
                if limit >= MAX_PICKLE_BYTES:
                    raise Refused(f"the pickles are larger than {MAX_PICKLE_BYTES >> 20} MiB") from None
                limit = min(source.size, limit * 4)

    def _walk(self, source, data):
        main_start = _walk_preamble(data)
        # Walked on its own so that string offsets count from the pickle's first byte.
        main_pickle = data[main_start:]
        main = walk(main_pickle, 0, _persistent_id)
        keys = walk(data, main_start + main.end)
        if type(keys.root) is not list or any(type(k) is not Text for k in keys.root):
            raise CheckpointError("corrupt legacy checkpoint: its storage key list is malformed")
        storage_bytes = {storage.key: storage.numel * storage.element_size for storage in main.storages}
        listed = [k.value for k in keys.root]
        if sorted(storage_bytes) != sorted(listed):
            raise CheckpointError("corrupt legacy checkpoint: its storage list does not match its pickle")
        # Each storage follows the pickles as an 8-byte element count and its bytes, in listed order.
        expected_size = keys.end + sum(8 + storage_bytes[key] for key in listed)
        if expected_size > source.size:
            raise CheckpointError("truncated: the file ends inside its storages")
        if expected_size < source.size:
            raise Refused(f"{source.size - expected_size} bytes follow the last storage")
        return Checkpoint(self, source.size, source.identity(), main.root, main_pickle[:main.end],
                          Pre16Layout(main_start), PickleSummary(main.protocol, tuple(main.globals)))

    rename = staticmethod(rename_in_pickle)

    @staticmethod
    def write(checkpoint, key_bytes):
        """The bytes before and after the main pickle, as they are, around `key_bytes`."""
        start = checkpoint.layout.main_pickle_start
        tail = start + len(checkpoint.key_bytes)
        pieces = (SourceRange(0, start, None, "the pickles before the main one", plural=True), key_bytes,
                  SourceRange(tail, checkpoint.size - tail, None, "the storage list and storages", plural=True))
        return Rewrite(pieces, key_bytes)

    @staticmethod
    def kept(checkpoint):
        return []  # the copied bytes are compared with the source's as they are written

    @staticmethod
    def describe(checkpoint):
        return ({"format": "legacy", "bytes": checkpoint.size},
                "legacy torch format (before torch 1.6, not a zip)")

    @staticmethod
    def load_with_torch(path):
        from .verify import torch_load

        return torch_load(path, mmap=False)  # this format cannot be mmapped


PRE16 = Pre16Format()


def _walk_preamble(data):
    """Check the magic number, format version and sys_info pickles; return where the main one starts."""
    # torch.save writes the magic number and the format version as these exact pickles;
    # anything else at byte 0 is some other pickle, which torch.load would still unpickle.
    if not data.startswith(MAGIC_NUMBER_PICKLE):
        if len(data) < len(MAGIC_NUMBER_PICKLE) and MAGIC_NUMBER_PICKLE.startswith(data):
            raise Truncated("the file ends inside its pickles")
        raise Refused("a bare pickle, not a torch.save checkpoint")
    if not data.startswith(FORMAT_VERSION_PICKLE, len(MAGIC_NUMBER_PICKLE)):
        rest = data[len(MAGIC_NUMBER_PICKLE):]
        if len(rest) < len(FORMAT_VERSION_PICKLE) and FORMAT_VERSION_PICKLE.startswith(rest):
            raise Truncated("the file ends inside its pickles")
        raise Refused(f"legacy format version is not {FORMAT_VERSION}")
    sys_info = walk(data, len(MAGIC_NUMBER_PICKLE) + len(FORMAT_VERSION_PICKLE))
    if not _is_sys_info(sys_info.root):
        raise Refused("the legacy format's sys_info is not what torch.save writes")
    return sys_info.end


def _is_sys_info(root):
    """{"protocol_version": 1001, "little_endian": bool, "type_sizes": {"short": n, "int": n, "long": n}}"""
    if type(root) is not Dict or root.ordered or root.metadata is not None:
        return False
    fields = _text_keyed(root)
    if fields is None:
        return False
    sizes = fields.get("type_sizes")
    if (sorted(fields) != ["little_endian", "protocol_version", "type_sizes"]
            or type(fields["protocol_version"]) is not int or fields["protocol_version"] != FORMAT_VERSION
            or type(fields["little_endian"]) is not bool or type(sizes) is not Dict or sizes.ordered):
        return False
    sizes = _text_keyed(sizes)
    return (sizes is not None and sorted(sizes) == ["int", "long", "short"]
            and all(type(size) is int and size in (2, 4, 8) for size in sizes.values()))


def _text_keyed(node):
    """A Dict's items as {str: value} when every key is a distinct string, else None."""
    fields = {key.value: value for key, value in node.items if type(key) is Text}
    return fields if len(fields) == len(node.items) else None


def _persistent_id(pid):
    storage = storage_reference(pid, 6)
    view = pid[5]
    if view is not None and not (type(view) is tuple and len(view) == 3 and type(view[0]) is Text
                                 and type(view[1]) is int and type(view[2]) is int):
        raise Refused("the pickle has a storage view that is not a torch storage reference")
    return storage
