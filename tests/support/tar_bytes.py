"""Tar archives in memory: torch.load tries a file as a tar after a zip."""

import io
import tarfile


def tar_bytes(members, tar_format=tarfile.USTAR_FORMAT, end_blocks=True):
    """A tar archive of (name, bytes) members; without `end_blocks`, no end-of-archive blocks."""
    buffer = io.BytesIO()
    archive = tarfile.open(fileobj=buffer, mode="w", format=tar_format)
    for name, payload in members:
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(payload), 0
        archive.addfile(info, io.BytesIO(payload))
    members_end = archive.offset
    archive.close()
    data = buffer.getvalue()
    return data if end_blocks else data[:members_end]
