"""What every format unit hands the engine: a read checkpoint, and a rewrite as pieces.

A format unit (zip_format, pre16_format, safetensors_format) is an object with

    name                     the word reports use: "zip", "legacy", "safetensors"
    detect(head)             whether a file's first bytes are this format's
    read(source, head, *, for_rewrite) -> Checkpoint
                             `source` is a byte_source; torch_route decides which units a file
                             must pass, in torch.load's order
    rename(checkpoint, replacements) -> bytes
                             the new key bytes, each (Text, new name) in `replacements` applied
    write(checkpoint, key_bytes) -> Rewrite
                             the new file as pieces: new bytes, or ranges of the source
    kept(checkpoint)         what a rewrite must keep as it was (compared after reading it back)
    describe(checkpoint) -> (dict, str)
                             what `inspect` shows of the container: JSON fields and a text line
    load_with_torch(path)    how --verify lets torch (or safetensors) load such a file

Nothing outside the units asks which format a file is in.
"""

from collections import namedtuple

# collections.namedtuple, not typing.NamedTuple: importing typing costs every run of the hook
# more than reading a model's pickle does.


class PickleSummary(namedtuple("PickleSummary", "protocol globals")):
    """protocol: from the pickle's PROTO opcode, None without one; globals: the dotted names
    it imports, in first-use order."""

    __slots__ = ()


class Checkpoint(namedtuple("Checkpoint", "unit size identity root key_bytes layout pickle", defaults=(None,))):
    """One checkpoint as it was read: immutable, and enough to report on it or rewrite it.

    unit       the format unit that read it, and rewrites it
    size       bytes in the file
    identity   the source's identity() when it was read
    root       the inert tree the rename rules read
    key_bytes  the bytes a rename rewrites: the main pickle, or safetensors' length and header
    layout     the unit's own description of the file (records, offsets, the header)
    pickle     a PickleSummary of the main pickle; None for a format without one
    """

    __slots__ = ()

    @property
    def format(self):
        return self.unit.name


class SourceRange(namedtuple("SourceRange", "offset length crc what plural", defaults=(False,))):
    """`length` bytes of the source from `offset`, copied as they are.

    `crc` is the CRC-32 the format promises for them (a zip record's), or None when the
    format stores none: then the copy is compared with the source itself.  `what` names
    them in messages ("record 'archive/data/0'"; "the tensor bytes", which is `plural`).
    """

    __slots__ = ()


class Rewrite(namedtuple("Rewrite", "pieces key_bytes")):
    """A new file: `pieces` (bytes, or SourceRange) in order, `size` bytes in all, holding
    `key_bytes` where the original held its key bytes."""

    __slots__ = ()

    @property
    def size(self):
        return sum(piece.length if type(piece) is SourceRange else len(piece) for piece in self.pieces)
