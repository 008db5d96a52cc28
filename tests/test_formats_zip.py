"""The zip format unit on its own: read from any byte source, renamed, written as pieces with
torch's framing (zip64 exactly where miniz puts it), and a fix that meets a bad record CRC."""

import io
import re
import struct
import zipfile
import zlib

import pytest
from support.cli_run import LEGACY, PARAMETRIZED, copy_of, lines_about, run
from pth_legacy_keys import zip_format
from pth_legacy_keys.byte_source import BytesSource, FileSource, ReadAhead
from pth_legacy_keys.checkpoint import Checkpoint, SourceRange
from pth_legacy_keys.errors import CheckpointError, Refused
from pth_legacy_keys.rename import LEGACY as TO_LEGACY
from pth_legacy_keys.rename import PARAMETRIZED as TO_PARAMETRIZED
from pth_legacy_keys.torch_route import read
from pth_legacy_keys.zip_format import U32_MAX, ZIP, Record, ZipLayout
from support import build_zip, zip_records
from support.formats_helpers import materialized, renamed_rewrite


def test_a_file_and_its_bytes_read_alike():
    """The reader sees only a byte source: a local file and the same bytes in memory give one result."""
    with FileSource(PARAMETRIZED) as source:
        from_file = read(source, for_rewrite=True)
    from_bytes = read(BytesSource(PARAMETRIZED.read_bytes()), for_rewrite=True)
    assert from_file.unit is from_bytes.unit is ZIP
    assert from_file.key_bytes == from_bytes.key_bytes
    assert from_file.layout == from_bytes.layout
    assert from_file.pickle == from_bytes.pickle
    assert from_file.identity != from_bytes.identity  # an inode and an mtime, or the bytes' own


def test_the_result_is_immutable():
    checkpoint = read(BytesSource(PARAMETRIZED.read_bytes()))
    assert isinstance(checkpoint, tuple) and isinstance(checkpoint.layout.records, tuple)
    with pytest.raises(AttributeError):
        checkpoint.size = 0
    with pytest.raises(AttributeError):
        checkpoint.layout.records[0].crc = 0


def test_a_check_locates_only_the_pickle_and_the_last_record():
    checkpoint = read(BytesSource(PARAMETRIZED.read_bytes()))
    layout = checkpoint.layout
    located = [r.name for r in layout.records if r.data_offset >= 0]
    assert located == [layout.pickle_record.name, layout.records[-1].name]
    assert layout.alignment == 64  # not read: the default
    with zipfile.ZipFile(PARAMETRIZED) as archive:
        assert [r.name for r in layout.records] == archive.namelist()
        assert all(r.crc == archive.getinfo(r.name).CRC for r in layout.records)


class CountingSource(BytesSource):
    def __init__(self, data):
        super().__init__(data)
        self.reads = 0

    def read(self, offset, n):
        self.reads += 1
        return super().read(offset, n)


def test_a_rewrite_reads_the_local_headers_of_small_records_together(monkeypatch):
    """Every record's local header and data descriptor are read for a rewrite: through a window, so
    that a run of small records costs one read of the source, not two each."""
    data = PARAMETRIZED.read_bytes()
    windowed = CountingSource(data)
    checkpoint = read(windowed, for_rewrite=True)
    monkeypatch.setattr(zip_format, "ReadAhead", lambda source: source)
    plain = CountingSource(data)
    unwindowed = read(plain, for_rewrite=True)
    assert (unwindowed.layout, unwindowed.key_bytes) == (checkpoint.layout, checkpoint.key_bytes)
    records = len(checkpoint.layout.records)
    assert plain.reads >= 2 * records  # a header and a descriptor each, besides the directory
    assert windowed.reads <= plain.reads - 2 * records + len(data) // 4096 + 1


def test_read_ahead_gives_exactly_what_the_source_gives():
    data = bytes(range(256)) * 40
    source = BytesSource(data)
    reader = ReadAhead(source, window=100)
    for offset in (0, 1, 50, 99, 100, 150, 9_899, 9_900, 9_950, 10_239, 10_240, 10_300):
        for n in (0, 1, 30, 99, 100, 101, 400):
            try:
                expected = source.read(offset, n)
            except CheckpointError as exc:
                with pytest.raises(CheckpointError, match=str(exc)):
                    reader.read(offset, n)
            else:
                assert reader.read(offset, n) == expected


def test_there_and_back_as_pieces_gives_the_torch_save_bytes():
    original = PARAMETRIZED.read_bytes()
    source = BytesSource(original)
    checkpoint = read(source, for_rewrite=True)
    rewrite = renamed_rewrite(checkpoint, TO_LEGACY)
    # Only the pickle record is new: every other record's data is a range of the source, with its CRC.
    ranges = [piece for piece in rewrite.pieces if type(piece) is SourceRange]
    copied = [r for r in checkpoint.layout.records if r.size and r.name != checkpoint.layout.pickle_record.name]
    assert [(p.offset, p.length, p.crc) for p in ranges] == [(r.data_offset, r.size, r.crc) for r in copied]
    assert all(p.what == f"record '{r.name}'" for p, r in zip(ranges, copied))
    legacy = materialized(rewrite, source)
    assert len(legacy) == rewrite.size
    with zipfile.ZipFile(io.BytesIO(legacy)) as archive:
        assert archive.testzip() is None
    back_source = BytesSource(legacy)
    back = read(back_source, for_rewrite=True)
    assert back.key_bytes == rewrite.key_bytes
    assert materialized(renamed_rewrite(back, TO_PARAMETRIZED), back_source) == original


def test_describe():
    fields, text = ZIP.describe(read(BytesSource(PARAMETRIZED.read_bytes()), for_rewrite=True))
    assert fields == {"format": "zip", "bytes": PARAMETRIZED.stat().st_size, "prefix": "parametrized/",
                      "alignment": 64, "records": len(zipfile.ZipFile(PARAMETRIZED).namelist()), "zip64": False}
    assert text.startswith("torch zip, prefix 'parametrized/', alignment 64, ") and text.endswith(", no zip64")


def test_flag_bits_are_zipfiles():
    # zipfile names the bits from Python 3.11 on (APPNOTE 4.4.4: bit 3, bit 11)
    assert zip_format.MASK_USE_DATA_DESCRIPTOR == getattr(zipfile, "_MASK_USE_DATA_DESCRIPTOR", 1 << 3) == 0x08
    assert zip_format.MASK_UTF_FILENAME == getattr(zipfile, "_MASK_UTF_FILENAME", 1 << 11) == 0x0800
    assert zip_format.TORCH_FLAGS == 0x0808


# -- zip64: exactly where miniz (torch's writer) puts it --------------------------------------
# miniz writes zip64 extras for a record when `uncomp_size >= MZ_UINT32_MAX || local_dir_header_ofs
# >= MZ_UINT32_MAX`: at 0xFFFFFFFF, the value a 32-bit field uses to say "see the zip64 extra".


def synthetic(sizes, prefix="a/", version_record=True):
    """A checkpoint whose layout has a data.pkl record and records of `sizes` after it (no bytes needed:
    the writer only describes ranges of the source)."""
    pickle = b"\x80\x02}q\x00."
    records = [Record(prefix + "data.pkl", 0, len(pickle), zlib.crc32(pickle), 0x0808, data_offset=64)]
    offset = 64 + len(pickle)
    for n, size in enumerate(sizes):
        records.append(Record(f"{prefix}data/{n}", offset, size, 0x12345678, 0x0808, data_offset=offset + 64))
        offset += 64 + size + 16
    if version_record:
        records.append(Record(prefix + "version", offset, 2, zlib.crc32(b"3\n"), 0x0808, data_offset=offset + 64))
    layout = ZipLayout(tuple(records), records[0], prefix, 64)
    return Checkpoint(ZIP, offset + 200, None, None, pickle, layout)


def local_headers(rewrite):
    """(header offset, local header bytes, the data descriptor after its data) for each record."""
    found, position, pieces = [], 0, list(rewrite.pieces)
    for i, piece in enumerate(pieces):
        length = piece.length if type(piece) is SourceRange else len(piece)
        if type(piece) is bytes and piece[:4] == b"PK\x03\x04":
            descriptor = pieces[i + 2] if i + 2 < len(pieces) and type(pieces[i + 1]) is SourceRange else b""
            found.append((position, piece, descriptor))
        position += length
    return found


def has_zip64_extra(local_header):
    name_length, extra_length = struct.unpack_from("<HH", local_header, 26)
    extra = local_header[30 + name_length:30 + name_length + extra_length]
    return extra[:2] == b"\x01\x00"


@pytest.mark.parametrize("size, zip64", [(U32_MAX - 1, False), (U32_MAX, True), (U32_MAX + 1, True)])
def test_a_record_takes_zip64_from_0xffffffff_bytes(size, zip64):
    rewrite = ZIP.write(synthetic([size]), synthetic([size]).key_bytes)
    [_, (_, header, descriptor), _] = local_headers(rewrite)
    assert has_zip64_extra(header) is zip64
    assert len(descriptor) == (24 if zip64 else 16)
    if zip64:
        assert struct.unpack_from("<IIQQ", descriptor) == (0x08074B50, 0x12345678, size, size)
    # The central directory says the same, and our reader reads the size back.
    directory = rewrite.pieces[-1]
    records = zip_format._parse_central_directory(directory[:directory.index(b"PK\x06\x06")], 3)
    assert records[1].size == size


@pytest.mark.parametrize("offset, zip64", [(U32_MAX - 1, False), (U32_MAX, True)])
def test_a_record_takes_zip64_from_offset_0xffffffff(offset, zip64):
    """A record whose local header starts at `offset`: a filler before it, sized to put it there."""
    def header_offset_of_last(filler):
        checkpoint = synthetic([filler])
        return local_headers(ZIP.write(checkpoint, checkpoint.key_bytes))[-1][0]

    guess = 0xF0000000
    filler = guess + offset - header_offset_of_last(guess)
    checkpoint = synthetic([filler])
    rewrite = ZIP.write(checkpoint, checkpoint.key_bytes)
    (at, header, descriptor) = local_headers(rewrite)[-1]
    assert at == offset
    assert has_zip64_extra(header) is zip64
    assert len(descriptor) == (24 if zip64 else 16)
    directory = rewrite.pieces[-1]
    records = zip_format._parse_central_directory(directory[:directory.index(b"PK\x06\x06")], 3)
    assert records[-1].header_offset == offset


def test_inspect_calls_a_record_of_0xffffffff_bytes_zip64():
    assert ZIP.describe(synthetic([U32_MAX], version_record=False))[0]["zip64"] is True
    assert ZIP.describe(synthetic([U32_MAX - 1], version_record=False))[0]["zip64"] is False


# -- a record whose bytes are not what its CRC says ------------------------------------------


def flip_a_tensor_byte(path):
    with zipfile.ZipFile(path) as archive:
        info = [i for i in archive.infolist() if "/data/" in i.filename and i.file_size][-1]
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_length + extra_length] ^= 0xFF
    path.write_bytes(bytes(data))
    return info.filename


def test_fix_refuses_a_record_that_does_not_match_its_crc(tmp_path, capsys):
    """check reads no tensor data; fix copies it and finds the file's own record damaged."""
    path = copy_of(tmp_path)
    name = flip_a_tensor_byte(path)
    before = path.read_bytes()
    assert run(capsys, "check", path)[0] == 1
    code, out = run(capsys, "fix", path)
    assert code == 2
    assert lines_about(out, path) == [f"{path}: refused: record '{name}' does not match its CRC; nothing was changed"]
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_the_legacy_fixture_reads_as_zip():
    assert read(BytesSource(LEGACY.read_bytes())).format == "zip"


# -- .storage_alignment: read for a rewrite, refused unless a sane number ---------------------


def with_alignment(raw):
    """The fixture's records with a .storage_alignment record holding `raw` (zipfile's framing)."""
    records = [(name, data) for name, data in zip_records(PARAMETRIZED) if not name.endswith(".storage_alignment")]
    return BytesSource(build_zip(records + [("parametrized/.storage_alignment", raw)]))


@pytest.mark.parametrize("raw, alignment", [
    (b"64", 64), (b" 64\n", 64), (b"1", 1), (b"00000064", 64), (b"1048576", 1 << 20),
], ids=["64", "spaced", "1", "eight-digits", "1-MiB"])
def test_a_sane_storage_alignment_is_read(raw, alignment):
    assert read(with_alignment(raw), for_rewrite=True).layout.alignment == alignment
    assert read(with_alignment(raw)).layout.alignment == 64  # a check does not read it


@pytest.mark.parametrize("raw, shown", [
    (b"0", "'0'"), (b"1048577", "'1048577'"), (b"2097152", "'2097152'"), (b"000000064", "'000000064'"),
    (b"abc", "'abc'"), (b"\xff64", repr("\ufffd64")), (b"-64", "'-64'"), (b"9" * 30, repr("9" * 20)),
], ids=["zero", "past-1-MiB", "2-MiB", "nine-digits", "letters", "not-ascii", "negative", "long"])
def test_an_insane_storage_alignment_is_refused(raw, shown):
    with pytest.raises(Refused) as refused:
        read(with_alignment(raw), for_rewrite=True)
    assert str(refused.value) == f"the archive's .storage_alignment is not a sane number: {shown}"


def test_an_alignment_of_one_pads_nothing():
    checkpoint = synthetic([5])
    rewrite = ZIP.write(checkpoint._replace(layout=checkpoint.layout._replace(alignment=1)), checkpoint.key_bytes)
    for _, header, _ in local_headers(rewrite):
        name_length, extra_length = struct.unpack_from("<HH", header, 26)
        assert header[30 + name_length:] == b"FB\x00\x00" and extra_length == 4


def write_at_alignment(alignment):
    checkpoint = synthetic([5])
    return ZIP.write(checkpoint._replace(layout=checkpoint.layout._replace(alignment=alignment)), checkpoint.key_bytes)


def test_padding_up_to_what_an_extra_field_holds_is_written():
    # The first header ends at 30 + len("a/data.pkl") + 4 = 44: 65575 - 44 = 65531 bytes of padding,
    # and 4 + 65531 = 65535, the most a 16-bit extra-field length says.
    header = local_headers(write_at_alignment(65_575))[0][1]
    name_length, extra_length = struct.unpack_from("<HH", header, 26)
    assert extra_length == 0xFFFF and header[30 + name_length:30 + name_length + 4] == b"FB\xfb\xff"
    assert len(header) % 65_575 == 0


@pytest.mark.parametrize("alignment, message", [
    (65_576, ("its .storage_alignment of 65576 needs 65,532 bytes of padding before record 'a/data.pkl', more "
              "than a zip extra field holds (torch's own writer makes files torch cannot load at such an alignment)")),
    (0, "the archive's .storage_alignment 0 is not a positive number"),
    ("64", "the archive's .storage_alignment '64' is not a positive number"),
])
def test_an_alignment_a_zip_cannot_frame_is_refused(alignment, message):
    with pytest.raises(Refused) as refused:
        write_at_alignment(alignment)
    assert str(refused.value) == message


def test_an_empty_record_has_no_data_descriptor_and_the_directory_finds_every_record():
    checkpoint = synthetic([0, 5])
    rewrite = ZIP.write(checkpoint, checkpoint.key_bytes)
    headers = local_headers(rewrite)
    empty = headers[1]
    assert struct.unpack_from("<H", empty[1], 6)[0] == zip_format.MASK_UTF_FILENAME  # no data-descriptor bit
    assert empty[1] in rewrite.pieces and empty[2] == b""
    at = rewrite.pieces.index(empty[1])
    assert rewrite.pieces[at + 1][:4] == b"PK\x03\x04"  # the next record's header follows at once
    directory = rewrite.pieces[-1]
    records = zip_format._parse_central_directory(directory[:directory.index(b"PK\x06\x06")], 4)
    assert [r.header_offset for r in records] == [position for position, _, _ in headers]
    assert [r.flags for r in records] == [0x0808, 0x0800, 0x0808, 0x0808]


@pytest.mark.parametrize("size", [U32_MAX, U32_MAX + 1])
def test_a_big_record_has_miniz_zip64_extras_and_aligned_data(size):
    rewrite = ZIP.write(synthetic([size]), synthetic([size]).key_bytes)
    _, (at, header, _), _ = local_headers(rewrite)
    name_length = struct.unpack_from("<H", header, 26)[0]
    extra = header[30 + name_length:]
    # the local extra: the size, then miniz's compressed size, still 0 when the header is written
    assert struct.unpack_from("<HHQQ", extra) == (1, 16, size, 0) and extra[20:22] == b"FB"
    assert (at + len(header)) % 64 == 0
    directory = rewrite.pieces[-1]
    entry = directory[[m.start() for m in re.finditer(b"PK\x01\x02", directory)][1]:]
    entry_name_length, entry_extra_length = struct.unpack_from("<HH", entry, 28)
    central_extra = entry[46 + entry_name_length:46 + entry_name_length + entry_extra_length]
    assert struct.unpack("<HHQQ", central_extra) == (1, 16, size, size)


def test_a_record_past_4_gib_has_its_offset_in_the_zip64_extras():
    checkpoint = synthetic([U32_MAX + 10])
    rewrite = ZIP.write(checkpoint, checkpoint.key_bytes)
    at = local_headers(rewrite)[-1][0]
    assert at > U32_MAX
    directory = rewrite.pieces[-1]
    records = zip_format._parse_central_directory(directory[:directory.index(b"PK\x06\x06")], 3)
    assert records[-1].header_offset == at
    fields, text = ZIP.describe(checkpoint._replace(layout=checkpoint.layout._replace(records=tuple(records))))
    assert fields["zip64"] is True and text.endswith(", zip64")


def test_a_record_at_offset_0xffffffff_makes_the_archive_zip64():
    checkpoint = synthetic([1])
    records = checkpoint.layout.records
    moved = records[:-1] + (records[-1]._replace(header_offset=U32_MAX),)
    assert ZIP.describe(checkpoint._replace(layout=checkpoint.layout._replace(records=moved)))[0]["zip64"] is True


# -- the end record must be the last 22 bytes ----------------------------------------------------


@pytest.mark.parametrize("trailing", [1, 0xFFFF], ids=["one-byte", "the-longest-comment"])
def test_bytes_after_the_end_record_are_refused(trailing):
    with pytest.raises(Refused) as refused:
        read(BytesSource(PARAMETRIZED.read_bytes() + b"\0" * trailing))
    assert str(refused.value) == ("the zip end record is not the last 22 bytes (a comment or bytes after it); "
                                  "torch.save never writes that, and torch may read another archive than we would")


@pytest.mark.parametrize("tail", [b"", b"PK\x05\x06\0\0\0\0"], ids=["no-end-record", "a-cut-end-record"])
def test_a_zip_without_a_whole_end_record_is_corrupt(tail):
    data = PARAMETRIZED.read_bytes()
    with pytest.raises(CheckpointError) as error:
        read(BytesSource(data[:-22] + tail))
    assert type(error.value) is CheckpointError
    assert str(error.value) == "truncated or corrupt: no zip end-of-central-directory record"


def test_an_end_record_further_back_than_the_longest_comment_is_not_found():
    with pytest.raises(CheckpointError) as error:
        read(BytesSource(PARAMETRIZED.read_bytes() + b"\0" * 0x10000))
    assert str(error.value) == "truncated or corrupt: no zip end-of-central-directory record"
