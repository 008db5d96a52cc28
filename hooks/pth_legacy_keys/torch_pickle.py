"""What the two torch.save formats (zip and pre-1.6) share: their main pickle, walked whole,
whose persistent ids must be torch storages, and renamed in place."""

from .errors import CheckpointError, Refused
from .pickle_edit import replace_strings
from .pickle_walk import Storage, Text, Truncated, storage_type_dtype, storage_type_size, walk


def storage_reference(pid, length):
    """Check a persistent id is ('storage', <torch storage class>, key, location, numel, ...)."""
    if (type(pid) is not tuple or len(pid) != length or type(pid[0]) is not Text
            or pid[0].value != "storage" or type(pid[2]) is not Text or type(pid[3]) is not Text
            or type(pid[4]) is not int or pid[4] < 0):
        raise Refused("the pickle has a persistent id that is not a torch storage reference")
    key = pid[2].value
    if not (key.isascii() and key.isdigit()):
        raise Refused(f"the pickle names a storage key that is not a number: {key[:40]!r}")
    return Storage(key, storage_type_size(pid[1]), pid[4], storage_type_dtype(pid[1]), pid[3].value)


def walk_whole(data, persistent_id, what):
    """Walk the pickle that is all of `data` (`what` names it in messages)."""
    try:
        result = walk(data, 0, persistent_id)
    except Truncated:
        raise CheckpointError(f"{what} is truncated") from None
    if result.end != len(data):
        raise Refused(f"{len(data) - result.end} bytes follow the pickle's STOP opcode")
    return result


def rename_in_pickle(checkpoint, replacements):
    """The main pickle with each (Text, new name) of `replacements` in place of its string."""
    return replace_strings(checkpoint.key_bytes, replacements)
