"""Checkpoints built opcode by opcode: a zip around a pickle we spell out, so a test says exactly
what its file holds (torch-free)."""

import struct

from support.pickle_ops import PROTO2, global_, number, text
from support.zip_bytes import write_zip


def call(module, name, *args):
    """GLOBAL module.name, a tuple of string arguments, REDUCE."""
    return global_(module, name) + b"(" + b"".join(text(a) for a in args) + b"tR"


def system_payload(marker):
    return PROTO2 + call("posix", "system", f"touch {marker}") + b"."


def tensor_dict(storage_type=("torch", "FloatStorage"), key="0", numel=3):
    """{'w': a float tensor of 3 elements in storage `key`}, as torch.save pickles it."""
    storage = (b"(" + text("storage") + global_(*storage_type) + text(key) + text("cpu")
               + number(numel) + b"tQ")
    args = (storage + number(0) + number(3) + b"\x85" + number(1) + b"\x85" + b"\x89"
            + global_("collections", "OrderedDict") + b")R")
    return (PROTO2 + b"}" + text("w") + global_("torch._utils", "_rebuild_tensor_v2")
            + b"(" + args + b"tR" + b"s.")


def hand_made_checkpoint(path, pickle_bytes):
    """A zip checkpoint around `pickle_bytes`, with one 12-byte storage record data/0."""
    return write_zip(path, [
        ("archive/data.pkl", pickle_bytes),
        ("archive/byteorder", b"little"),
        ("archive/data/0", bytes(12)),
        ("archive/version", b"3\n"),
    ])


def put(index):
    return b"r" + struct.pack("<I", index)  # LONG_BINPUT


def get(index):
    return b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)  # BINGET, LONG_BINGET


def tensor(numel=3):
    """A float tensor of `numel` elements in storage data/0, as torch.save pickles it."""
    storage = (b"(" + text("storage") + global_("torch", "FloatStorage") + text("0") + text("cpu")
               + b"K" + bytes([numel]) + b"tQ")
    args = (storage + b"K\x00" + b"K" + bytes([numel]) + b"\x85" + b"K\x01\x85" + b"\x89"
            + global_("collections", "OrderedDict") + b")R")
    return global_("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"


def state_dict_of(path, keys):
    """A checkpoint holding {key: tensor} for each of `keys`, every value the same 3-element tensor."""
    body = b"".join(text(key) + (tensor() + put(0) if i == 0 else get(0)) + b"s" for i, key in enumerate(keys))
    return hand_made_checkpoint(path, b"\x80\x02}" + body + b".")
