"""Loading and comparing checkpoints with torch, for the tests that need it."""

import contextlib
import zipfile

import pytest

torch = pytest.importorskip("torch", reason="torch==2.13.0 is needed to make and load real checkpoints")


def load(path, **kwargs):
    return torch.load(path, map_location="cpu", weights_only=True, **kwargs)


@contextlib.contextmanager
def calculated_storage_offsets():
    """torch.load's mode that computes each tensor's offset from torch's layout rules."""
    config = torch.utils.serialization.config.load
    config.calculate_storage_offsets = True
    try:
        yield
    finally:
        config.calculate_storage_offsets = False


def load_every_way(path):
    """Load `path` plainly, weights-only, mmapped and with computed offsets; all must agree."""
    results = [
        torch.load(path, map_location="cpu", weights_only=False),
        load(path),
        load(path, mmap=True),
    ]
    with calculated_storage_offsets():
        results.append(load(path, mmap=True))
    for other in results[1:]:
        assert_same_tree(results[0], other)
    return results[1]


def assert_same_tree(a, b):
    """Equal structure, keys in the same order, tensors bit-equal with the same dtype."""
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same_tree(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_tree(x, y)
    elif isinstance(a, torch.Tensor):
        assert_bit_equal(a, b)
    else:
        assert a == b


def assert_bit_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(_raw_bytes(a), _raw_bytes(b))


def _raw_bytes(tensor):
    return tensor.detach().reshape(-1).contiguous().view(torch.uint8)


def records(path):
    """Every zip record's name and bytes, in order."""
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]
