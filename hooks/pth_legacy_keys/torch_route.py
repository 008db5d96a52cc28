"""Which readers a file must pass: torch.load's own dispatch, in torch.load's order.

torch.load reads a file whose first four bytes are `PK\\x03\\x04` as a zip; any other file it
first tries as a pre-1.6 tar archive, then unpickles from byte 0.  Our verdict is only worth
anything about the bytes torch.load would unpickle, by the route it takes, whatever the file is
called, so `read` follows that route and hands the file to the format unit torch would use.
Only where torch.load's pickle stops before it resolves any global may the content be
examined as something torch.load never reads (safetensors, a path-configuration file, a Git
LFS pointer).
"""

from .byte_source import FileSource
from .errors import CheckpointError, NotACheckpoint, Refused
from .lfs_pointer import is_lfs_pointer
from .pickle_reach import COMPLETES, IMPORTS, UNKNOWN, reach
from .pre16_format import MAGIC_NUMBER_PICKLE, PRE16
from .safetensors_format import SAFETENSORS
from .tar_header import opens_as_tar
from .zip_format import ZIP

FORMATS = {unit.name: unit for unit in (ZIP, PRE16, SAFETENSORS)}
LFS_POINTER_HEAD = b"version https://git-lfs.github.com/spec/"
SNIFF_BYTES = 4096


def read_checkpoint(path, *, for_rewrite=False):
    """Read the local file at `path` (see `read`)."""
    with FileSource(path) as source:
        return read(source, for_rewrite=for_rewrite)


def read(source, *, for_rewrite=False):
    """Read the checkpoint in `source` (a byte_source) by the route torch.load takes for its
    bytes.  With `for_rewrite`, read all that a rewrite needs; a check reads only what its
    verdict depends on."""
    if source.size == 0:
        raise CheckpointError("empty file")
    head = source.read(0, min(source.size, SNIFF_BYTES))
    if ZIP.detect(head):
        return ZIP.read(source, head, for_rewrite=for_rewrite)
    return _read_not_zip(source, head, for_rewrite)


def _read_not_zip(source, head, for_rewrite):
    """torch.load's route for a file that is not a zip: tar if tarfile opens it, else
    pickles from byte 0.  We may examine the content as something else (safetensors, a
    path-configuration file, an LFS pointer) only when that pickle stops before it
    resolves any global: otherwise torch.load of these very bytes would run it."""
    if opens_as_tar(head):
        raise Refused("a pre-1.6 tar checkpoint: torch.load would open it as a tar archive and "
                      "unpickle its members, and this tool does not read that format")
    outcome = reach(source.read, source.size, head)
    if outcome.kind == IMPORTS:
        raise Refused(f"{_what_it_looks_like(head, source.size)}: torch.load would unpickle it from its "
                      f"first byte, and that pickle can reach an import of '{outcome.detail}'")
    if outcome.kind == UNKNOWN:
        raise Refused(f"{_what_it_looks_like(head, source.size)}: torch.load would unpickle it from its "
                      f"first byte, and {outcome.detail}")
    if outcome.kind == COMPLETES:
        # torch.load compares that pickle with the pre-1.6 format's magic number and, if it is
        # equal, unpickles four more: every one of them must pass our walk.
        return PRE16.read(source, head, for_rewrite=for_rewrite)
    if is_lfs_pointer(head, source.size):
        raise NotACheckpoint("Git LFS pointer; fetch the real file (git lfs pull)", is_lfs_pointer=True)
    if SAFETENSORS.detect(head):
        return SAFETENSORS.read(source, head, for_rewrite=for_rewrite)
    if source.size <= SNIFF_BYTES and not head.startswith(LFS_POINTER_HEAD) and _is_path_configuration(head):
        raise NotACheckpoint("a Python path-configuration file (site-packages .pth), not a checkpoint")
    if head.startswith(b"PK"):
        raise CheckpointError("not a PyTorch checkpoint: a zip that does not start with a record")
    return _unrecognised(head)


def _what_it_looks_like(head, file_size):
    if head.startswith(LFS_POINTER_HEAD):
        return "not a Git LFS pointer (the spec's exact form)"
    if SAFETENSORS.detect(head):
        return "a safetensors-like file"
    if file_size <= SNIFF_BYTES and _is_path_configuration(head):
        return "a text file"
    return "a bare pickle, not a torch.save checkpoint"


def _unrecognised(head):
    if MAGIC_NUMBER_PICKLE.startswith(head):
        raise CheckpointError("truncated: the file ends inside its pickles")
    if head.startswith(LFS_POINTER_HEAD):
        raise CheckpointError("not a Git LFS pointer (the spec's exact form) nor a checkpoint")
    raise CheckpointError("not a PyTorch checkpoint (unrecognised content)")


def _is_path_configuration(head):
    """True for the text files site.py reads: paths, comments and `import` lines."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith(("import ", "import\t")):
            continue
        if any(c in line for c in "<>|\"*?\x00") or not line.isprintable():
            return False
    return True
