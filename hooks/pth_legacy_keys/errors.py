"""The ways a file can fail to be a checkpoint we may read or change."""


class CheckpointError(Exception):
    """The file could not be read as a checkpoint: truncated, corrupt, unreadable."""

    label = "error"


class Refused(CheckpointError):
    """The file holds something a plain checkpoint never holds, so we do not touch it."""

    label = "refused"


class NotACheckpoint(CheckpointError):
    """The file is a known kind of non-checkpoint (path configuration, TorchScript, LFS pointer)."""

    label = "skipped"

    def __init__(self, message, *, is_lfs_pointer=False):
        super().__init__(message)
        self.is_lfs_pointer = is_lfs_pointer
