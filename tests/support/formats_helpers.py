"""What the format-unit tests share: a rewrite's pieces made into bytes, and a unit's rename."""

from pth_legacy_keys.checkpoint import SourceRange
from pth_legacy_keys.rename import plan


def materialized(rewrite, source):
    """The new file a rewrite describes, in memory: its new bytes and the source ranges it names."""
    return b"".join(source.read(piece.offset, piece.length) if type(piece) is SourceRange else piece
                    for piece in rewrite.pieces)


def renamed_rewrite(checkpoint, to):
    """What fix writes for `checkpoint`: its unit renames the planned keys and describes the file."""
    renames = plan(checkpoint.root, to)
    assert renames.renames and not renames.problems
    unit = checkpoint.unit
    return unit.write(checkpoint, unit.rename(checkpoint, renames.new_text.values()))
