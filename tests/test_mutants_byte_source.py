"""byte_source.py rule by rule: what a bytes source says it is, the URL test, the read-ahead window."""

import pytest
from pth_legacy_keys.byte_source import BytesSource, FileSource, ReadAhead, is_url, open_source
from pth_legacy_keys.errors import CheckpointError

DATA = bytes(range(200))


def test_a_bytes_source_names_itself_by_its_bytes_unless_told():
    assert BytesSource(b"ab").identity() == ("bytes", 2, hash(b"ab"))
    assert BytesSource(b"ab", identity=("etag", "x")).identity() == ("etag", "x")
    assert BytesSource(b"ab", identity=0).identity() == 0


@pytest.mark.parametrize("offset, n", [(-1, 1), (8, 3), (11, 0)])
def test_a_bytes_source_refuses_reads_outside_it(offset, n):
    with pytest.raises(CheckpointError) as caught:
        BytesSource(b"0123456789").read(offset, n)
    assert str(caught.value) == "truncated: the file ends before a record it lists"


@pytest.mark.parametrize("path, expected", [
    ("http://host/m.pth", True), ("https://host/m.pth", True), ("HTTPS://HOST/m.pth", True),
    ("Http://h", True), ("httpx://h", False), ("ftp://h/m.pth", False), ("http:/h", False),
    ("m.pth", False), ("./http://x", False), (b"http://h", False), (None, False), ("", False),
])
def test_is_url(path, expected):
    assert is_url(path) is expected


def test_a_local_path_opens_as_a_file_source(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(DATA)
    with open_source(str(path)) as source:
        assert type(source) is FileSource and source.read(5, 3) == DATA[5:8]


class Counting:
    def __init__(self, data):
        self.inner = BytesSource(data)
        self.size = self.inner.size
        self.reads = []

    def read(self, offset, n):
        self.reads.append((offset, n))
        return self.inner.read(offset, n)


def test_read_ahead_reads_a_window_and_serves_reads_inside_it():
    source = Counting(DATA)
    reader = ReadAhead(source, window=16)
    assert reader.size == 200
    assert reader.read(10, 2) == DATA[10:12]
    assert reader.read(12, 14) == DATA[12:26]  # the whole rest of the window
    assert reader.read(10, 0) == b""
    assert source.reads == [(10, 16)]
    assert reader.read(26, 1) == DATA[26:27]  # just past it: a new window
    assert source.reads == [(10, 16), (26, 16)]
    assert reader.read(25, 2) == DATA[25:27]  # straddles the window's start
    assert source.reads[-1] == (25, 16)


def test_read_ahead_passes_big_reads_and_reads_near_the_end_through():
    source = Counting(DATA)
    reader = ReadAhead(source, window=16)
    assert reader.read(0, 16) == DATA[:16]  # no smaller than the window: read as it is
    assert reader.read(0, 1) == DATA[:1]
    assert reader.read(195, 5) == DATA[195:]  # a window cut short by the end of the file
    assert reader.read(197, 3) == DATA[197:]  # ... and read from it
    assert source.reads == [(0, 16), (0, 16), (195, 5)]
    with pytest.raises(CheckpointError):
        reader.read(198, 5)  # fails as the source's read does
    assert source.reads[-1] == (198, 5)


def test_read_ahead_has_a_default_window_of_4096():
    source = Counting(bytes(10000))
    reader = ReadAhead(source)
    reader.read(0, 1)
    reader.read(4095, 1)
    reader.read(4096, 1)
    assert source.reads == [(0, 4096), (4096, 4096)]


def test_a_url_opens_as_a_remote_source(monkeypatch):
    from pth_legacy_keys import http_source

    monkeypatch.setattr(http_source, "url_source", lambda url: ("remote", url))
    assert open_source("https://host/m.pth") == ("remote", "https://host/m.pth")


@pytest.mark.parametrize("pread", [True, False], ids=["pread", "seek-and-read"])
def test_a_file_source_reads_exactly_with_or_without_pread(tmp_path, monkeypatch, pread):
    path = tmp_path / "f"
    path.write_bytes(DATA)
    if not pread:
        monkeypatch.delattr("os.pread")
    with FileSource(path) as source:
        assert source.read(7, 5) == DATA[7:12]
        assert source.read(190, 10) == DATA[190:]
        assert source.read(3, 2) == DATA[3:5]
        with pytest.raises(CheckpointError) as caught:
            source.read(195, 6)
        assert str(caught.value) == "truncated: the file ends before a record it lists"
