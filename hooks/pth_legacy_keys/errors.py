"""The ways a file can fail to be a checkpoint we may read or change, and the status each gives."""

from .status import Status


class CheckpointError(Exception):
    """The file could not be read as a checkpoint: truncated, corrupt, unreadable."""

    def status(self, lfs_pointers):
        return Status.ERROR


class FixAbandoned(CheckpointError):
    """fix met a problem after reading the file (it is read-only, changed meanwhile, did not read
    back as meant): the rewrite was thrown away and the file is as it was."""


class Refused(CheckpointError):
    """The file holds something a plain checkpoint never holds, so we do not touch it."""

    def status(self, lfs_pointers):
        return Status.REFUSED


class NotACheckpoint(CheckpointError):
    """The file is a known kind of non-checkpoint (path configuration, LFS pointer)."""

    def __init__(self, message, *, is_lfs_pointer=False):
        super().__init__(message)
        self.is_lfs_pointer = is_lfs_pointer

    def status(self, lfs_pointers):
        if self.is_lfs_pointer and lfs_pointers != "skip":
            return Status.NOT_CHECKED
        return Status.SKIPPED
