"""The format units' torch hooks, without torch: what each hands to the loader, and pre16's detect."""

import sys
import types

import pytest
from pth_legacy_keys import verify
from pth_legacy_keys.pre16_format import MAGIC_NUMBER_PICKLE, PRE16
from pth_legacy_keys.safetensors_format import SAFETENSORS
from pth_legacy_keys.zip_format import ZIP


@pytest.mark.parametrize("unit, mmap", [(ZIP, True), (PRE16, False)], ids=["zip", "pre16"])
def test_torch_loads_the_file_mmapped_where_the_format_allows(monkeypatch, unit, mmap):
    monkeypatch.setattr(verify, "torch_load", lambda path, **kwargs: ("loaded", path, kwargs))
    assert unit.load_with_torch("model.pth") == ("loaded", "model.pth", {"mmap": mmap})


def test_safetensors_are_loaded_with_the_safetensors_library(monkeypatch):
    module = types.ModuleType("safetensors.torch")
    module.load_file = lambda path: ("loaded", path)
    monkeypatch.setitem(sys.modules, "safetensors", types.ModuleType("safetensors"))  # torch-free, installed or not
    monkeypatch.setitem(sys.modules, "safetensors.torch", module)
    assert SAFETENSORS.load_with_torch("model.safetensors") == ("loaded", "model.safetensors")


def test_pre16_is_detected_by_its_magic_number_pickle():
    assert PRE16.detect(MAGIC_NUMBER_PICKLE + b"rest")
    assert not PRE16.detect(b"PK\x03\x04" + MAGIC_NUMBER_PICKLE)
