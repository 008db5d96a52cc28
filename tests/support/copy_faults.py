"""Faulty copies for the writer tests: writer._Output.copy_from seen through a wrapper."""

from pth_legacy_keys import writer


def patch_copy(monkeypatch, wrapper):
    """Send every copied range through `wrapper(copy, output, source, offset, length)`, where
    `copy(output, source, offset, length)` is the real copy_from (call it to copy as usual)."""
    real_copy_from = writer._Output.copy_from

    def copy_from(self, source, offset, length):
        return wrapper(real_copy_from, self, source, offset, length)

    monkeypatch.setattr(writer._Output, "copy_from", copy_from)
