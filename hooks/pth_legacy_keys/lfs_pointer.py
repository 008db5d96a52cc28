"""Git LFS pointer files, recognised only in the exact form the Git LFS spec gives.

Anything else that merely starts like one is examined as content: to torch.load it is
just bytes, and a pointer's first line must not let a pickle hide behind it.
"""

import re

MAX_POINTER_BYTES = 1024
POINTER = re.compile(
    rb"version https://(?:git-lfs|hawser)\.github\.com/spec/v1\n"
    rb"(?:ext-[0-9]-[a-z0-9.-]{1,64} sha256:[0-9a-f]{64}\n){0,10}"
    rb"oid sha256:[0-9a-f]{64}\n"
    rb"size [0-9]{1,20}\n"
)


def is_lfs_pointer(data, file_size):
    """True for a whole file (`data`, `file_size` bytes) that is exactly a Git LFS pointer."""
    return file_size <= MAX_POINTER_BYTES and len(data) == file_size and POINTER.fullmatch(data) is not None
