"""A file's status: what examining it found, and the exit code that calls for.

The members are strings ("ok", "needs-fix" ...), so JSON documents, the Python API and
comparisons with the words keep working; each word is spelled here and nowhere else.
"""

from enum import Enum


class Status(str, Enum):
    OK = "ok", 0  # already in the target format
    FIXED = "fixed", 0  # rewritten to the target format
    SKIPPED = "skipped", 0  # not a checkpoint (a path-configuration file) or a tolerated LFS pointer
    NEEDS_FIX = "needs-fix", 1  # check: keys to rename
    CANNOT_CONVERT = "cannot-convert", 1  # a module that is not a plain weight norm; the file was not changed
    NOT_CHECKED = "not-checked", 2  # a Git LFS pointer, not the file itself
    REFUSED = "refused", 2  # holds what a plain checkpoint never holds
    ERROR = "error", 2  # missing, unreadable, truncated, corrupt, not a checkpoint

    def __new__(cls, word, exit_code):
        member = str.__new__(cls, word)
        member._value_ = word
        member.exit_code = exit_code
        return member

    def __str__(self):
        return self.value

    def __format__(self, spec):
        return format(self.value, spec)

    @property
    def needs_attention(self):
        """Whether the file is "offending": not in the target format, or not read."""
        return self.exit_code != 0


def exit_code(statuses):
    """The exit code for files with these statuses: the worst one decides."""
    return max((Status(status).exit_code for status in statuses), default=0)
