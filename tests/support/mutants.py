"""Hypothesis strategies that mutate the three torch-made seeds in tests/data: bit flips,
truncation, splices, extreme length fields, opcode swaps, zip records shuffled, pickle edits.
test_fuzz checks every mutant against the CLI, test_torch_route against torch.load."""

import io
import pickletools
import struct
import zipfile
import zlib
from functools import cache
from pathlib import Path

from hypothesis import event
from hypothesis import strategies as st
from support.pickle_ops import text as binunicode  # BINUNICODE, as pickle writes it
from support.zip_bytes import build_zip
from support.zip_bytes import zip_records as records_of  # zip_records here is a mutator


DATA = Path(__file__).parents[1] / "data"
SEEDS = ("parametrized.bin", "legacy.bin", "parametrized_legacy_format.bin")
EXTREMES = (0, 2**31 - 1, 2**32 - 1, 2**63 - 1)


class Seed:
    def __init__(self, name):
        self.name = name
        self.data = (DATA / name).read_bytes()
        self.is_zip = self.data.startswith(b"PK\x03\x04")
        self.length_fields = []  # (offset, width): sizes, counts, offsets, lengths
        self.pickle_span = None  # (start, end) of the main pickle (zip: the data.pkl record)
        self.crc_at = []  # zip: where data.pkl's CRC is written (central header, data descriptor)
        self.opcodes = []  # offsets of every pickle opcode
        if self.is_zip:
            self._parse_zip()
        else:
            self._parse_legacy()

    def _parse_zip(self):
        data = self.data
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
        for info in infos:
            at = info.header_offset
            name_len, extra_len = struct.unpack_from("<HH", data, at + 26)
            self.length_fields += [(at + 18, 4), (at + 22, 4), (at + 26, 2), (at + 28, 2)]
            start = at + 30 + name_len + extra_len
            descriptor = start + info.file_size
            if data[descriptor:descriptor + 4] == b"PK\x07\x08":
                self.length_fields += [(descriptor + 8, 4), (descriptor + 12, 4)]
            if info.filename.endswith("/data.pkl"):
                self.pickle_span = (start, start + info.file_size)
                self.crc_at.append(descriptor + 4)
        end = data.rfind(b"PK\x05\x06")
        count, _cd_size, cd_offset = struct.unpack_from("<HII", data, end + 10)
        self.length_fields += [(end + 8, 2), (end + 10, 2), (end + 12, 4), (end + 16, 4), (end + 20, 2)]
        at = cd_offset
        for _ in range(count):
            name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, at + 28)
            self.length_fields += [(at + 20, 4), (at + 24, 4), (at + 28, 2), (at + 30, 2),
                                   (at + 32, 2), (at + 42, 4)]
            if data[at + 46:at + 46 + name_len].endswith(b"/data.pkl"):
                self.crc_at.append(at + 16)
            at += 46 + name_len + extra_len + comment_len
        zip64_end = data.rfind(b"PK\x06\x06")
        if zip64_end >= 0:
            self.length_fields += [(zip64_end + 4, 8), (zip64_end + 24, 8), (zip64_end + 32, 8),
                                   (zip64_end + 40, 8), (zip64_end + 48, 8)]
        locator = data.rfind(b"PK\x06\x07")
        if locator >= 0:
            self.length_fields += [(locator + 8, 8)]
        self._parse_pickles(*self.pickle_span, count=1)

    def _parse_legacy(self):
        self._parse_pickles(0, len(self.data), count=5)
        # The main pickle is the fourth.
        starts = [pos for pos in self.opcodes if self.data[pos] == 0x80]
        self.pickle_span = (starts[3], starts[4])

    def _parse_pickles(self, start, end, count):
        stream = io.BytesIO(self.data[start:end])
        for _ in range(count):
            for opcode, _arg, pos in pickletools.genops(stream):
                at = start + pos
                self.opcodes.append(at)
                width = {"I": 4, "i": 4, "H": 2}.get(_ARG_FORMAT.get(opcode.name))
                if width:
                    self.length_fields.append((at + 1, width))


_ARG_FORMAT = {
    "BINUNICODE": "I", "LONG_BINPUT": "I", "LONG_BINGET": "I", "LONG4": "i", "BININT": "i",
    "BINSTRING": "i", "BINBYTES": "I", "BININT2": "H",
}


@cache
def seed(name):
    return Seed(name)


def restamp_pickle_crc(s, data):
    """Give data.pkl the CRC of its (mutated) bytes, so the mutation reaches the pickle walker."""
    if not s.is_zip or len(data) != len(s.data):
        return data
    start, end = s.pickle_span
    crc = zlib.crc32(data[start:end])
    for at in s.crc_at:
        struct.pack_into("<I", data, at, crc)
    return data


@st.composite
def bit_flips(draw, s, data):
    lo, hi = (0, len(data)) if draw(st.booleans()) or not data else s.pickle_span
    hi = min(hi, len(data))
    if hi <= lo:
        return data
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(lo, hi - 1))
        data[at] ^= 1 << draw(st.integers(0, 7))
    return restamp_pickle_crc(s, data) if (lo, hi) == s.pickle_span and draw(st.booleans()) else data


@st.composite
def truncation(draw, s, data):
    return data[:draw(st.integers(0, max(len(data) - 1, 0)))]


@st.composite
def splice(draw, s, data):
    """Copy a slice of the file over another offset, or insert or delete bytes."""
    n = len(data)
    if not n:
        return data
    kind = draw(st.sampled_from(["overwrite", "insert-copy", "insert-bytes", "delete"]))
    start = draw(st.integers(0, n - 1))
    length = draw(st.integers(1, min(64, n - start)))
    at = draw(st.integers(0, n - 1))
    if kind == "overwrite":
        piece = data[start:start + length]
        data[at:at + len(piece)] = piece
        return data[:n] if len(data) > n else data
    if kind == "insert-copy":
        return data[:at] + data[start:start + length] + data[at:]
    if kind == "insert-bytes":
        return data[:at] + bytearray(draw(st.binary(min_size=1, max_size=16))) + data[at:]
    del data[start:start + length]
    return data


@st.composite
def length_field(draw, s, data):
    """Overwrite a length, count or offset field (pickle or zip header) with an extreme value."""
    offset, width = draw(st.sampled_from(s.length_fields))
    width = draw(st.sampled_from(sorted({width, 4, 8}))) if width >= 4 else width
    value = draw(st.sampled_from(EXTREMES)) & ((1 << (8 * width)) - 1)
    data[offset:offset + width] = value.to_bytes(width, "little")
    data = data[:len(s.data)]
    in_pickle = s.pickle_span[0] <= offset < s.pickle_span[1]
    return restamp_pickle_crc(s, data) if in_pickle and draw(st.booleans()) else data


@st.composite
def opcode_swap(draw, s, data):
    """Replace one pickle opcode by another byte (any opcode, or any byte at all)."""
    at = draw(st.sampled_from(s.opcodes))
    data[at] = draw(st.one_of(st.sampled_from(sorted({data[p] for p in s.opcodes})), st.integers(0, 255)))
    return restamp_pickle_crc(s, data) if draw(st.booleans()) else data


@st.composite
def zip_records(draw, s, data):
    """Rebuild the archive with zipfile: a record duplicated (same or other bytes), dropped or swapped."""
    records = records_of(bytes(s.data))
    kind = draw(st.sampled_from(["duplicate", "duplicate-other-bytes", "drop", "swap", "as-is"]))
    i = draw(st.integers(0, len(records) - 1))
    j = draw(st.integers(0, len(records)))
    if kind == "duplicate":
        records.insert(j, records[i])
    elif kind == "duplicate-other-bytes":
        records.insert(j, (records[i][0], records[draw(st.integers(0, len(records) - 1))][1]))
    elif kind == "drop":
        del records[i]
    elif kind == "swap":
        j = min(j, len(records) - 1)
        records[i], records[j] = records[j], records[i]
    event(f"zip records: {kind}")
    return bytearray(build_zip(records))


@cache
def key_vocabulary(s):
    """Strings to put where the main pickle's strings are: its own, and names the rename rules test."""
    start, end = s.pickle_span
    texts = []
    for opcode, arg, _pos in pickletools.genops(io.BytesIO(s.data[start:end])):
        if opcode.name == "BINUNICODE":
            texts.append(arg)
    words = set(texts)
    for text in texts:
        for old, new in (("original0", "original1"), ("original1", "original0"), ("original0", "original"),
                         ("parametrizations.weight", "parametrizations.bias"), ("weight.original", "weight.0.o"),
                         ("0.", "1."), ("1.", "0."), ("_g", "_v"), ("_v", "_g"), ("_g", "_orig"), ("_v", "_u")):
            words.add(text.replace(old, new))
    words.update([
        "0.weight", "0.weight_g", "0.weight_v", "0.weight_orig", "0.weight_u", "1.weight_g", "1.weight_v",
        "0.parametrizations.weight.original0", "0.parametrizations.weight.original1",
        "0.parametrizations.weight.original", "0.parametrizations.weight.0.base", "parametrizations.weight.original0",
        "_metadata", "param_names", "storage", "cpu", "latin1", "", ".", "0", "4", "99", "-1", "x" * 300,
        "\ud800.parametrizations.weight.original0", "\ud800.parametrizations.weight.original1",
        "\u00e9.parametrizations.weight.original0", "a\nb.parametrizations.weight.original0",
    ])
    return sorted(words)


SMALL_INTS = (b"K\x00", b"K\x01", b"K\x02", b"K\x03", b"K\x04", b"K\xff", b"M\xff\xff",
              b"J\xff\xff\xff\xff", b"J\xff\xff\xff\x7f")


@st.composite
def pickle_edit(draw, s, data):
    """Edit the main pickle as opcodes (strings, small ints, whole opcodes), then re-wrap it.

    A zip is rebuilt with zipfile around the new data.pkl, so its CRC and sizes are right and
    the edit reaches the pickle walker and the rename rules.
    """
    start, end = s.pickle_span
    pickle = bytearray(s.data[start:end])
    ops = [(opcode, arg, pos) for opcode, arg, pos in pickletools.genops(io.BytesIO(bytes(pickle)))]
    bounds = [pos for _, _, pos in ops] + [len(pickle)]
    kind = draw(st.sampled_from(["text", "text", "text", "int", "delete-op", "copy-op", "swap-ops"]))
    event(f"pickle edit: {kind}")
    if kind == "text":
        i = draw(st.sampled_from([i for i, (opcode, _, _) in enumerate(ops) if opcode.name == "BINUNICODE"]))
        new = draw(st.one_of(st.sampled_from(key_vocabulary(s)),
                             st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)))
        pickle[bounds[i]:bounds[i + 1]] = binunicode(new)
    elif kind == "int":
        i = draw(st.sampled_from([i for i, (opcode, _, _) in enumerate(ops)
                                  if opcode.name in ("BININT1", "BININT2", "BININT")]))
        pickle[bounds[i]:bounds[i + 1]] = draw(st.sampled_from(SMALL_INTS))
    else:
        i = draw(st.integers(0, len(ops) - 3))  # neither STOP nor the opcode before it
        this, following = pickle[bounds[i]:bounds[i + 1]], pickle[bounds[i + 1]:bounds[i + 2]]
        pickle[bounds[i]:bounds[i + 2]] = {"delete-op": following, "copy-op": this + this + following,
                                           "swap-ops": following + this}[kind]
    pickle = bytes(pickle)
    if not s.is_zip:
        return bytearray(s.data[:start] + pickle + s.data[end:])
    records = records_of(s.data)
    return bytearray(build_zip([(name, pickle if name.endswith("/data.pkl") else payload)
                                for name, payload in records]))


MUTATORS = {
    "bit-flips": bit_flips, "truncation": truncation, "splice": splice,
    "length-field": length_field, "opcode": opcode_swap, "zip-records": zip_records,
    "pickle-edit": pickle_edit,
}


@st.composite
def mutants(draw):
    """(seed name, mutated bytes): one to three mutations of one seed."""
    s = seed(draw(st.sampled_from(SEEDS)))
    data = bytearray(s.data)
    names = [name for name in MUTATORS if s.is_zip or name != "zip-records"]
    for round_ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names))
        if round_ and name in ("zip-records", "length-field", "opcode", "pickle-edit"):
            continue  # these need the seed's own layout: only as the first mutation
        event(f"mutation: {name}")
        data = draw(MUTATORS[name](s, data))
    return s.name, bytes(data)
