"""Zip checkpoints written by Python's zipfile: torch's record layout, another writer's bytes."""

import io
import warnings
import zipfile


def zip_records(source):
    """(name, bytes) for each record of the zip at `source` (a path, or the zip's bytes), in order."""
    with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def write_zip(target, records, compression=zipfile.ZIP_STORED, date_time=None):
    """Write `records` ((name, bytes) pairs, names as torch lays them out) as a zip to `target`; return it.

    `target` is a path or a binary file object. Duplicate names are written as given. With
    `date_time` (e.g. (1980, 1, 1, 0, 0, 0)) every record carries that date: the same bytes on every run.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile only warns about duplicate names
        with zipfile.ZipFile(target, "w", compression) as archive:
            for name, data in records:
                archive.writestr(name if date_time is None else zipfile.ZipInfo(name, date_time), data,
                                 None if date_time is None else compression)
    return target


def build_zip(records, compression=zipfile.ZIP_STORED, date_time=None):
    """The bytes of the zip `write_zip` would write for `records`."""
    buffer = io.BytesIO()
    write_zip(buffer, records, compression, date_time)
    return buffer.getvalue()
