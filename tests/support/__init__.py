"""What the tests (and nothing else) share: byte builders, the git and GitHub plumbing, torch helpers.

Import a piece from its module (`from support.zip_bytes import write_zip`) or, for the
dependency-free ones, from the package (`from support import LFS_POINTER, git`).
`support.torch_helpers` skips the importing test module without torch, so it is not imported here.
"""

from support.git import GIT_IDENTITY, git
from support.github_output import parse_file_command
from support.lfs import LFS_POINTER
from support.pickle_ops import PROTO2, global_, number, text
from support.zip_bytes import build_zip, write_zip, zip_records

__all__ = ["GIT_IDENTITY", "LFS_POINTER", "PROTO2", "build_zip", "git", "global_", "number", "parse_file_command",
           "text", "write_zip", "zip_records"]
