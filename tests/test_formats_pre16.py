"""The pre-1.6 format unit ("legacy" in reports) on its own: five pickles and raw storages, the
fourth pickle replaced, the bytes around it copied and compared with the source's."""

import os
import pickletools

import pytest
from support.cli_run import LEGACY_FORMAT, copy_of, lines_about, run
from pth_legacy_keys.byte_source import BytesSource, FileSource
from pth_legacy_keys.checkpoint import SourceRange
from pth_legacy_keys.errors import Refused
from pth_legacy_keys.pre16_format import MAGIC_NUMBER_PICKLE, PRE16
from pth_legacy_keys.rename import LEGACY as TO_LEGACY
from pth_legacy_keys.rename import PARAMETRIZED as TO_PARAMETRIZED
from pth_legacy_keys.torch_route import read
from support import PROTO2, global_, number, text
from support.copy_faults import patch_copy
from support.formats_helpers import materialized, renamed_rewrite


def test_a_file_and_its_bytes_read_alike():
    with FileSource(LEGACY_FORMAT) as source:
        from_file = read(source, for_rewrite=True)
    from_bytes = read(BytesSource(LEGACY_FORMAT.read_bytes()))
    assert from_file.unit is from_bytes.unit is PRE16
    assert from_file.format == "legacy"  # the word reports use
    assert (from_file.key_bytes, from_file.layout, from_file.pickle) == (
        from_bytes.key_bytes, from_bytes.layout, from_bytes.pickle)
    data = LEGACY_FORMAT.read_bytes()
    start = from_file.layout.main_pickle_start
    assert data.startswith(MAGIC_NUMBER_PICKLE) and data[start:start + len(from_file.key_bytes)] == from_file.key_bytes


def test_there_and_back_as_pieces_gives_the_original_bytes():
    original = LEGACY_FORMAT.read_bytes()
    source = BytesSource(original)
    checkpoint = read(source)
    rewrite = renamed_rewrite(checkpoint, TO_LEGACY)
    start, end = checkpoint.layout.main_pickle_start, checkpoint.layout.main_pickle_start + len(checkpoint.key_bytes)
    assert rewrite.pieces == (
        SourceRange(0, start, None, "the pickles before the main one", plural=True), rewrite.key_bytes,
        SourceRange(end, len(original) - end, None, "the storage list and storages", plural=True))
    legacy = materialized(rewrite, source)
    assert len(legacy) == rewrite.size == len(original) + len(rewrite.key_bytes) - len(checkpoint.key_bytes)
    back_source = BytesSource(legacy)
    assert materialized(renamed_rewrite(read(back_source), TO_PARAMETRIZED), back_source) == original


def test_describe():
    checkpoint = read(BytesSource(LEGACY_FORMAT.read_bytes()))
    assert PRE16.describe(checkpoint) == ({"format": "legacy", "bytes": LEGACY_FORMAT.stat().st_size},
                                          "legacy torch format (before torch 1.6, not a zip)")
    assert checkpoint.pickle.protocol == 2 and "collections.OrderedDict" in checkpoint.pickle.globals


@pytest.mark.parametrize("which, message", [
    (0, "the pickles before the main one were not copied intact"),
    (1, "the storage list and storages were not copied intact"),
], ids=["before-the-main-pickle", "storages"])
def test_bytes_that_were_not_copied_intact_are_never_swapped_in(tmp_path, capsys, monkeypatch, which, message):
    """The format stores no checksum: the copied bytes are compared with the source's."""
    path = copy_of(tmp_path, LEGACY_FORMAT)
    before = path.read_bytes()
    copies = []

    def copy_zeros(copy, output, source, offset, length):
        if len(copies) == which:  # the last bytes of this range, zeroed as a faulty copy could leave them
            output.write(source.read(offset, length - 8) + bytes(8))
        else:
            copy(output, source, offset, length)
        copies.append(offset)

    patch_copy(monkeypatch, copy_zeros)
    code, out = run(capsys, "fix", path)
    assert code == 2
    assert lines_about(out, path) == [f"{path}: error: {message}; nothing was changed"]
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


# -- what the reader accepts in the pickles around the main one ----------------------------------


def pickle_spans(data, count):
    """The byte spans of the first `count` pickles of `data` (read as opcodes, never loaded)."""
    spans, start = [], 0
    for _ in range(count):
        *_, (_, _, stop) = pickletools.genops(data[start:])
        spans.append((start, start + stop + 1))
        start += stop + 1
    return spans


def with_first_view(view):
    """The fixture with its first storage's persistent id holding `view` instead of None."""
    data = LEGACY_FORMAT.read_bytes()
    start, end = pickle_spans(data, 4)[3]
    at = data.index(b"Nt", start)  # (..., numel, view) as torch.save pickles it
    assert at < end
    return BytesSource(data[:at] + view + data[at + 1:])


def test_a_storage_view_as_torch_writes_it_is_accepted():
    assert read(with_first_view(text("view") + number(0) + number(3) + b"\x87")).format == "legacy"


@pytest.mark.parametrize("view", [
    number(5), text("view") + number(0) + b"\x86", number(1) + number(0) + number(3) + b"\x87",
    text("view") + text("0") + number(3) + b"\x87", text("view") + number(0) + text("3") + b"\x87",
], ids=["not-a-tuple", "two-items", "int-key", "text-offset", "text-size"])
def test_a_storage_view_that_is_not_a_reference_is_refused(view):
    with pytest.raises(Refused, match="^the pickle has a storage view that is not a torch storage reference$"):
        read(with_first_view(view))


def with_sys_info(pickle):
    data = LEGACY_FORMAT.read_bytes()
    start, end = pickle_spans(data, 3)[2]
    return BytesSource(data[:start] + pickle + data[end:])


def sys_info(top=b"", sizes=b"", ordered=False):
    return (PROTO2 + (global_("collections", "OrderedDict") + b")R" if ordered else b"}") + b"("
            + text("protocol_version") + number(1001) + text("little_endian") + b"\x88"
            + text("type_sizes") + b"}(" + text("short") + number(2) + text("int") + number(4)
            + text("long") + number(8) + sizes + b"u" + top + b"u.")


def test_sys_info_as_torch_writes_it_is_accepted():
    assert read(with_sys_info(sys_info())).format == "legacy"


@pytest.mark.parametrize("pickle", [
    sys_info(ordered=True), sys_info(top=number(5) + number(5)), sys_info(sizes=number(7) + number(2)),
    PROTO2 + b"]."], ids=["ordered", "int-key", "int-key-in-type-sizes", "a-list"])
def test_sys_info_that_torch_save_never_writes_is_refused(pickle):
    with pytest.raises(Refused, match="^the legacy format's sys_info is not what torch.save writes$"):
        read(with_sys_info(pickle))
