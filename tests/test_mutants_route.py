"""The not-a-zip route and the pre-1.6 reader on committed and hand-made bytes, without torch:
exact verdicts for tar files, zip-like files, path-configuration files at the sniffing bound, and
pre-1.6 files cut short, grown into, or with a storage list that does not match."""

import io
import struct
import tarfile

import pytest
from support.cli_run import LEGACY_FORMAT
from pth_legacy_keys import pre16_format
from pth_legacy_keys.byte_source import BytesSource
from pth_legacy_keys.errors import CheckpointError, NotACheckpoint, Refused
from pth_legacy_keys.pre16_format import PRE16
from pth_legacy_keys.torch_route import SNIFF_BYTES, read


def verdict(data, reader=read):
    with pytest.raises(CheckpointError) as caught:
        reader(BytesSource(data))
    return type(caught.value), str(caught.value)


def test_a_tar_file_is_refused():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        member = tarfile.TarInfo("pickle")
        member.size = 1
        tar.addfile(member, io.BytesIO(b"x"))
    assert verdict(buffer.getvalue()) == (Refused, "a pre-1.6 tar checkpoint: torch.load would open it as a tar "
                                          "archive and unpickle its members, and this tool does not read that format")


@pytest.mark.parametrize("data", [b"PK" + bytes(100), b"PK\x01\x02" + bytes(60)])
def test_a_zip_like_file_that_is_no_zip_torch_reads(data):
    assert verdict(data) == (CheckpointError, "not a PyTorch checkpoint: a zip that does not start with a record")


def test_a_path_configuration_file_of_exactly_the_sniffed_size_is_named():
    data = b"a/b\n" * (SNIFF_BYTES // 4)
    assert len(data) == SNIFF_BYTES
    assert verdict(data) == (NotACheckpoint, "a Python path-configuration file (site-packages .pth), not a checkpoint")


# -- pre-1.6 ------------------------------------------------------------------------------------

LEGACY = LEGACY_FORMAT.read_bytes()


def keys_start():
    checkpoint = PRE16.read(BytesSource(LEGACY))
    return checkpoint.layout.main_pickle_start + len(checkpoint.key_bytes)


def test_a_legacy_file_cut_inside_its_pickles():
    assert verdict(LEGACY[:keys_start() - 10], PRE16.read) == (
        CheckpointError, "truncated: the file ends inside its pickles")


def test_a_legacy_file_cut_inside_its_storages():
    assert verdict(LEGACY[:-1], PRE16.read) == (CheckpointError, "truncated: the file ends inside its storages")


def test_a_storage_key_that_is_not_text_is_malformed():
    start = keys_start()
    at = LEGACY.index(b"X", start)  # the first key's BINUNICODE ...
    length = struct.unpack_from("<I", LEGACY, at + 1)[0]
    data = LEGACY[:at] + b"K\x07" + LEGACY[at + 5 + length:]  # ... as the int 7
    assert verdict(data, PRE16.read) == (CheckpointError,
                                         "corrupt legacy checkpoint: its storage key list is malformed")


def test_a_storage_key_list_that_names_another_storage_does_not_match():
    at = LEGACY.index(b"X", keys_start()) + 5  # the first key's first character
    data = LEGACY[:at] + b"z" + LEGACY[at + 1:]
    assert verdict(data, PRE16.read) == (CheckpointError,
                                         "corrupt legacy checkpoint: its storage list does not match its pickle")


class Counting(BytesSource):
    def __init__(self, data):
        super().__init__(data)
        self.reads = []

    def read(self, offset, n):
        self.reads.append((offset, n))
        return super().read(offset, n)


def test_the_pickles_are_read_in_reads_four_times_larger_each(monkeypatch):
    monkeypatch.setattr(pre16_format, "FIRST_READ", 32)  # past the magic number and format version
    source = Counting(LEGACY)
    checkpoint = PRE16.read(source)
    assert checkpoint.size == len(LEGACY)
    assert [n for offset, n in source.reads if offset == 0] == [32, 128, 512, len(LEGACY)]


def test_pickles_larger_than_the_limit_are_refused(monkeypatch):
    """A key string that claims 100 MiB: the reads grow to the limit, then stop."""
    checkpoint = PRE16.read(BytesSource(LEGACY))
    key = checkpoint.root.items[0][0].value.encode()
    main = checkpoint.layout.main_pickle_start
    at = LEGACY.index(b"X" + struct.pack("<I", len(key)) + key, main)
    data = LEGACY[:at] + b"X" + struct.pack("<I", 100 << 20) + bytes(5 << 20)
    monkeypatch.setattr(pre16_format, "FIRST_READ", 1 << 20)
    monkeypatch.setattr(pre16_format, "MAX_PICKLE_BYTES", 4 << 20)
    assert verdict(data, PRE16.read) == (Refused, "the pickles are larger than 4 MiB")
