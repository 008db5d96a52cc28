"""torch_route's verdicts on files that are not checkpoints, without torch: the exact reason each
kind of file gets, and which text counts as a Python path-configuration file."""

import struct

import pytest
from pth_legacy_keys.byte_source import BytesSource
from pth_legacy_keys.errors import CheckpointError, NotACheckpoint, Refused
from pth_legacy_keys.torch_route import SNIFF_BYTES, read
from support import PROTO2, global_

PATH_CONFIGURATION = "a Python path-configuration file (site-packages .pth), not a checkpoint"
UNRECOGNISED = "not a PyTorch checkpoint (unrecognised content)"


def verdict(data):
    """(the exception type, its message) that reading `data` gives."""
    with pytest.raises(CheckpointError) as raised:
        read(BytesSource(data))
    return type(raised.value), str(raised.value)


# Every one starts with a byte that is no pickle opcode ('#', '/'), so torch.load's pickle stops at once.
@pytest.mark.parametrize("text", [
    "# a comment\n\n/usr/lib/python3/dist-packages\n",
    "# a comment may say <anything> | \"quoted\" *?\n/opt/lib\n",
    "# imports run, and may hold what a path may not\nimport os; os.environ.get('<x>')\n",
    "# a tab after import\nimport\tsys; '|'\n",
    "# an X in a path\n/opt/X11/lib\n",
], ids=["paths", "comment-with-any-character", "import-line", "import-tab-line", "capital-x"])
def test_path_configuration_text_is_skipped(text):
    assert verdict(text.encode()) == (NotACheckpoint, PATH_CONFIGURATION)


@pytest.mark.parametrize("text", [
    "/usr/lib/<python>\n",
    "# a comment first\n/usr/lib/a|b\n",
    "/usr/lib\n/a\x01b\n",
    "# only the import statement is skipped\nimports <x>\n",
], ids=["forbidden-character", "after-a-comment", "unprintable", "not-an-import"])
def test_text_with_a_line_no_path_holds_is_unrecognised(text):
    assert verdict(text.encode()) == (CheckpointError, UNRECOGNISED)


def test_reasons_for_what_torch_would_unpickle_say_what_the_file_looks_like():
    imports = PROTO2 + global_("posix", "system") + b"."
    assert verdict(imports) == (Refused, ("a bare pickle, not a torch.save checkpoint: torch.load would unpickle it "
                                          "from its first byte, and that pickle can reach an import of 'posix.system'"))
    text_import = b"cos\nsystem\n"
    text = text_import + b"\n" * (SNIFF_BYTES - len(text_import))  # a text file of SNIFF_BYTES bytes exactly
    assert verdict(text)[1].startswith("a text file: torch.load would unpickle it from its first byte")
    assert verdict(text + b"\n")[1].startswith("a bare pickle, not a torch.save checkpoint: ")
    # A header of 99 bytes: its length starts with 'c', a GLOBAL of "c\0\0..." and the header's "system".
    start, end = b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}', b"\nsystem\n}"
    header = start + b" " * (ord("c") - len(start) - len(end)) + end
    kind, message = verdict(struct.pack("<Q", len(header)) + header + b"\0")
    assert kind is Refused and message.startswith("a safetensors-like file: torch.load would unpickle it"), message


@pytest.mark.parametrize("data, message", [
    (b"\x80\x02\x8a\x0a", "truncated: the file ends inside its pickles"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n", "not a Git LFS pointer (the spec's exact form) nor a checkpoint"),
    (b"hello\x01 world", UNRECOGNISED),
], ids=["start-of-a-legacy-file", "almost-an-lfs-pointer", "binary"])
def test_unrecognised_content_says_what_it_is_not(data, message):
    assert verdict(data) == (CheckpointError, message)


def test_an_empty_file_is_an_error():
    assert verdict(b"") == (CheckpointError, "empty file")
