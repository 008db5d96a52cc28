"""Whether Python's tarfile would open a file: torch.load tries that before any pickle.

torch.load reads a file that does not start with a zip header as a pre-1.6 tar
checkpoint first (`tarfile.open(mode="r:")`) and unpickles its members when that
opens.  tarfile opens a stream whose first 512-byte block is all zeros (an empty
archive) or carries a valid header checksum.  This is the rule of every Python from
3.6 to 3.13, written out here so that our answer does not depend on our own Python.
"""

BLOCK_SIZE = 512
CHECKSUM_FIELD = slice(148, 156)


def opens_as_tar(first_block):
    """True when tarfile would accept `first_block` (a file's first 512 bytes) as its start."""
    if len(first_block) < BLOCK_SIZE:
        return False  # tarfile: "empty file"
    block = first_block[:BLOCK_SIZE]
    if block.count(0) == BLOCK_SIZE:
        return True  # an empty archive: it opens, and torch then fails to find its members
    checksum = _number(block[CHECKSUM_FIELD])
    return checksum is not None and checksum in _checksums(block)


def _number(field):
    """tarfile.nti: base-256 when the first byte is 0o200 or 0o377, else NUL-ended octal text."""
    if field[0] in (0o200, 0o377):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0o377 else value
    text = field.split(b"\0", 1)[0]
    try:
        return int(text.decode("ascii").strip() or "0", 8)
    except (UnicodeDecodeError, ValueError):
        return None


def _checksums(block):
    """The header's sum with its checksum field read as spaces, bytes unsigned and signed."""
    rest = block[:148] + block[156:]
    unsigned = 256 + sum(rest)
    signed = 256 + sum(b - 256 if b > 127 else b for b in rest)
    return unsigned, signed
