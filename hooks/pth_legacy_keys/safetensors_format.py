"""safetensors: an 8-byte header length, a JSON header, the tensor bytes.  Read it, rewrite it.

Only the header is read, and only its key strings are rewritten: every other header byte
stays, the space padding is redone so the tensor bytes keep their 8-byte alignment, and the
tensor bytes are copied as they are (their offsets count from the end of the header, so they
do not move).  What the safetensors library refuses to load, we refuse to touch.
"""

import struct
from collections import namedtuple

from .checkpoint import Checkpoint, Rewrite, SourceRange
from .errors import CheckpointError, FixAbandoned, Refused
from .pickle_walk import Dict, Storage, Tensor, Text

HEADER_LENGTH = struct.Struct("<Q")
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
METADATA_KEY = "__metadata__"
ALIGNMENT = 8
WHITESPACE = " \t\n\r"
# safetensors dtype -> (bits per element, torch's name for it)
DTYPES = {
    "BOOL": (8, "bool"), "U8": (8, "uint8"), "I8": (8, "int8"), "F8_E5M2": (8, "float8_e5m2"),
    "F8_E4M3": (8, "float8_e4m3fn"), "F8_E8M0": (8, "float8_e8m0fnu"), "F4": (4, "float4_e2m1fn_x2"),
    "F6_E2M3": (6, "float6_e2m3"), "F6_E3M2": (6, "float6_e3m2"),
    "I16": (16, "int16"), "U16": (16, "uint16"), "F16": (16, "float16"), "BF16": (16, "bfloat16"),
    "I32": (32, "int32"), "U32": (32, "uint32"), "F32": (32, "float32"), "C64": (64, "complex64"),
    "F64": (64, "float64"), "I64": (64, "int64"), "U64": (64, "uint64"),
}


def looks_like_safetensors(head):
    """A little-endian length, then a JSON object: what every safetensors file starts with."""
    return len(head) >= HEADER_LENGTH.size + 1 and head[HEADER_LENGTH.size:HEADER_LENGTH.size + 1] == b"{"


class SafetensorsHeader(namedtuple("SafetensorsHeader", "tensors metadata data_start")):
    """The parsed header: the tensors in header order, the metadata, where the tensor bytes begin.

    tensors     ((Text key, dtype, shape, (begin, end)), ...)
    metadata    the __metadata__ dict, or None
    data_start  file offset of the first tensor byte

    Each tensor's key is a Text whose offset and nbytes are the byte span of its JSON string
    (quotes included) in the file, so in the checkpoint's key bytes."""

    __slots__ = ()


class SafetensorsFormat:
    """A safetensors file: examined as one only when torch.load's pickle route stops harmlessly."""

    name = "safetensors"
    detect = staticmethod(looks_like_safetensors)

    def read(self, source, head=b"", *, for_rewrite=False):
        """Read and validate the header; tensor bytes are not read."""
        header_bytes, header = read_header(source)
        return Checkpoint(self, source.size, source.identity(), tree(header), header_bytes, header)

    @staticmethod
    def rename(checkpoint, replacements):
        """The length and header with each key string in `replacements` ((Text, new name)) replaced.

        A header whose length was a multiple of 8 stays one, by its trailing spaces, as the
        safetensors library pads it; any other header keeps its trailing whitespace as it was.
        """
        import json  # here, not at the top: a check of a torch file never needs it

        old = checkpoint.key_bytes
        out = []
        pos = HEADER_LENGTH.size
        for key, new in sorted(replacements, key=lambda pair: pair[0].offset):
            out.append(old[pos:key.offset])
            out.append(json.dumps(new, ensure_ascii=False).encode("utf-8"))
            pos = key.offset + key.nbytes
        out.append(old[pos:])
        encoded = b"".join(out)
        if not len(old) % ALIGNMENT:
            encoded = encoded.rstrip(WHITESPACE.encode())
            encoded += b" " * (-len(encoded) % ALIGNMENT)
        return HEADER_LENGTH.pack(len(encoded)) + encoded

    @staticmethod
    def write(checkpoint, key_bytes):
        """The new length and header, then the tensor bytes as they are."""
        data_start = checkpoint.layout.data_start
        tensors = SourceRange(data_start, checkpoint.size - data_start, None, "the tensor bytes", plural=True)
        return Rewrite((key_bytes, tensors), key_bytes)

    @staticmethod
    def kept(checkpoint):
        return []  # the header is compared whole; the tensor bytes with the source's as they are written

    @staticmethod
    def describe(checkpoint):
        header = checkpoint.layout
        metadata = header.metadata
        described = (f"{len(metadata)} metadata {'field' if len(metadata) == 1 else 'fields'}" if metadata
                     else "no metadata")
        return ({"format": "safetensors", "bytes": checkpoint.size, "header_bytes": header.data_start,
                 "metadata": metadata}, f"safetensors, {header.data_start}-byte header, {described}")

    @staticmethod
    def load_with_torch(path):
        from .verify import INSTALL_HINT

        try:
            from safetensors.torch import load_file
        except ImportError:
            raise FixAbandoned(f"--verify needs the safetensors package for this file ({INSTALL_HINT})") from None
        return load_file(path)


SAFETENSORS = SafetensorsFormat()


def read_header(source):
    """(the length and header bytes, the SafetensorsHeader) of the safetensors file in `source`."""
    head = source.read(0, HEADER_LENGTH.size)
    length = HEADER_LENGTH.unpack(head)[0]
    if length > MAX_HEADER_BYTES:
        raise Refused(f"the safetensors header claims {length} bytes, more than the "
                      f"{MAX_HEADER_BYTES} the safetensors library reads")
    if HEADER_LENGTH.size + length > source.size:
        raise CheckpointError("truncated: the file ends inside its safetensors header")
    raw = source.read(HEADER_LENGTH.size, length)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("the safetensors header is not UTF-8") from None
    entries = _top_level_entries(text, len(raw))
    data_start = HEADER_LENGTH.size + length
    tensors, metadata = _validate(entries, source.size - data_start)
    if "\\u" in text:  # only a JSON escape can spell a surrogate: UTF-8 cannot
        _refuse_lone_surrogates([key.value for key, _ in entries])
        _refuse_lone_surrogates(text for item in (metadata or {}).items() for text in item)
    return head + raw, SafetensorsHeader(tuple(tensors), metadata, data_start)


def tree(header):
    """The header as the inert tree the rename rules read: one state dict of tensors."""
    state_dict = Dict()
    for key, dtype, shape, (begin, end) in header.tensors:
        storage = Storage(key.value, 1, end - begin, DTYPES[dtype][1])  # safetensors holds no device
        state_dict.items.append((key, Tensor(storage, tuple(shape), DTYPES[dtype][1])))
    return state_dict


def _refuse_lone_surrogates(strings):
    """The safetensors library (serde_json) refuses a header with an escaped lone surrogate
    ("lone leading surrogate in hex escape"), so a tool that rewrites what it loads must too."""
    for value in strings:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise Refused(f"the safetensors header spells a lone surrogate (\\u{ord(value[exc.start]):04x}), "
                          "which the safetensors library refuses to read") from None


def _top_level_entries(text, raw_length):
    """[(Text key, value)] of the header's object, refusing repeated keys anywhere.  Each key's
    offset and nbytes are its JSON string's byte span in the file (after the 8 length bytes)."""
    try:
        members, pos = _members(text)
    except _RepeatedKey as exc:
        raise Refused(str(exc)) from None
    except _BadJson as exc:
        raise CheckpointError(f"the safetensors header is not valid JSON (at character {exc.pos})") from None
    if _skip(text, pos) != len(text):
        raise CheckpointError("the safetensors header has text after its JSON object")
    names = [value for value, _, _, _ in members]
    if len(set(names)) != len(names):
        raise Refused("the safetensors header names a tensor twice")
    ascii_only = raw_length == len(text)  # then characters are bytes
    entries = []
    byte_at = char_at = 0
    for value, start, end, item in members:
        if ascii_only:
            byte_start, byte_end = start, end
        else:  # count the bytes between the spans once: linear however many keys
            byte_start = byte_at + len(text[char_at:start].encode("utf-8"))
            byte_end = byte_start + len(text[start:end].encode("utf-8"))
            byte_at, char_at = byte_end, end
        entries.append((Text(value, HEADER_LENGTH.size + byte_start, byte_end - byte_start), item))
    return entries


def _members(text):
    """[(key, start, end, value)] of the JSON object that is `text` (start and end: the key
    string's character span, quotes included), and the character just past the object."""
    import json  # here, not at the top: a check of a torch file never needs it
    from json.decoder import scanstring

    decoder = json.JSONDecoder(object_pairs_hook=_no_repeated_keys, parse_constant=_no_constant)
    pos = _skip(text, 0)
    if text[pos:pos + 1] != "{":
        raise CheckpointError("the safetensors header is not a JSON object")
    pos = _skip(text, pos + 1)
    members = []
    if text[pos:pos + 1] == "}":
        return members, pos + 1
    while True:
        try:
            if text[pos:pos + 1] != '"':
                raise ValueError("expected a key")
            key, end = scanstring(text, pos + 1, True)
            start, pos = pos, _skip(text, end)
            if text[pos:pos + 1] != ":":
                raise ValueError("expected ':'")
            item, pos = decoder.raw_decode(text, _skip(text, pos + 1))
        except _RepeatedKey:
            raise
        except ValueError:
            raise _BadJson(pos) from None
        members.append((key, start, end, item))
        pos = _skip(text, pos)
        if text[pos:pos + 1] == ",":
            pos = _skip(text, pos + 1)
            continue
        if text[pos:pos + 1] != "}":
            raise _BadJson(pos)
        return members, pos + 1


class _BadJson(Exception):
    def __init__(self, pos):
        super().__init__(pos)
        self.pos = pos


class _RepeatedKey(ValueError):
    pass


def _no_repeated_keys(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _RepeatedKey("the safetensors header repeats a key inside an entry")
    return dict(pairs)


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _skip(text, pos):
    while pos < len(text) and text[pos] in WHITESPACE:
        pos += 1
    return pos


def _validate(entries, data_size):
    """Check the entries as the safetensors library does: known dtypes, sizes that match the
    shapes, and tensor bytes that tile the data exactly, from its first byte to its last."""
    tensors = []
    metadata = None
    for key, info in entries:
        if key.value == METADATA_KEY:
            if type(info) is not dict or any(type(v) is not str for v in info.values()):
                raise Refused("the safetensors __metadata__ is not a map of strings")
            metadata = info
            continue
        if type(info) is not dict or set(info) != {"dtype", "shape", "data_offsets"}:
            raise Refused(f"the safetensors entry '{key.value}' is not a tensor description")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if type(dtype) is not str or dtype not in DTYPES:
            raise Refused(f"the safetensors entry '{key.value}' has an unknown dtype {str(dtype)[:20]!r}")
        if (type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape)
                or type(offsets) is not list or len(offsets) != 2
                or not all(type(n) is int and n >= 0 for n in offsets) or offsets[0] > offsets[1]):
            raise Refused(f"the safetensors entry '{key.value}' has a malformed shape or data_offsets")
        # A product past the data's bits fails anyway: stop before it grows huge, unless a later
        # dimension is 0 (then there are no elements, however large the others).
        numel, most = (0 if 0 in shape else 1), data_size * 8
        for n in shape if numel else ():
            numel *= n
            if numel > most:
                break
        if numel * DTYPES[dtype][0] != (offsets[1] - offsets[0]) * 8:
            raise Refused(f"the safetensors tensor '{key.value}' has {offsets[1] - offsets[0]} bytes, "
                          f"not what its dtype and shape need")
        tensors.append((key, dtype, shape, tuple(offsets)))
    end = 0
    for key, _, _, (begin, stop) in sorted(tensors, key=lambda t: t[3]):
        if begin != end:
            raise Refused(f"the safetensors tensor '{key.value}' does not start where the one before "
                          "it ends")
        end = stop
    if end != data_size:
        if end > data_size:
            raise CheckpointError("truncated: the file ends inside its tensor data")
        raise Refused(f"{data_size - end} bytes follow the last safetensors tensor")
    return tensors, metadata
