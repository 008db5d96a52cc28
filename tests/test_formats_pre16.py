"""The pre-1.6 format unit ("legacy" in reports) on its own: five pickles and raw storages, the
fourth pickle replaced, the bytes around it copied and compared with the source's."""

import os

import pytest
from helpers import LEGACY_FORMAT, copy_of, lines_about, run
from pth_legacy_keys import writer
from pth_legacy_keys.byte_source import BytesSource, FileSource
from pth_legacy_keys.checkpoint import SourceRange
from pth_legacy_keys.pre16_format import MAGIC_NUMBER_PICKLE, PRE16
from pth_legacy_keys.rename import LEGACY as TO_LEGACY
from pth_legacy_keys.rename import PARAMETRIZED as TO_PARAMETRIZED
from pth_legacy_keys.torch_route import read
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
    real_copy_from = writer._Output.copy_from
    copies = []

    def copy_zeros(self, source, offset, length):
        if len(copies) == which:  # the last bytes of this range, zeroed as a faulty copy could leave them
            self.write(source.read(offset, length - 8) + bytes(8))
        else:
            real_copy_from(self, source, offset, length)
        copies.append(offset)

    monkeypatch.setattr(writer._Output, "copy_from", copy_zeros)
    code, out = run(capsys, "fix", path)
    assert code == 2
    assert lines_about(out, path) == [f"{path}: error: {message}; nothing was changed"]
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]
