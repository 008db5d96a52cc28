"""writer.py on real files, rule by rule: partial writes retried, small writes gathered, ranges
copied by either route and their shrinking reported, the checks' backlog and stop, the disk told
to write back whole pages, temporary files (names, O_EXCL, 0600, stale ones removed only for dead
processes), owner and mode kept, new files never written through a link, folders fsynced."""

import os
import re
import stat
import subprocess
import sys
import threading
import zlib
from types import SimpleNamespace

import pytest
from pth_legacy_keys import writer
from pth_legacy_keys.byte_source import BytesSource, FileSource, file_identity
from pth_legacy_keys.checkpoint import SourceRange
from pth_legacy_keys.errors import CheckpointError, FixAbandoned, Refused

DATA = bytes(range(256)) * 4  # 1 KiB, no two 4-byte windows alike at different offsets mod 256


def new_output(tmp_path, source=None, name="out"):
    fd = os.open(tmp_path / name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    checks = writer._Checks(source if source is not None else BytesSource(b""))
    return fd, checks, writer._Output(fd, checks)


def close(fd, checks):
    checks.finish()
    os.close(fd)


# -- the kernel may write fewer bytes than asked ------------------------------------------------


def stingy(monkeypatch, most):
    """os.write and os.writev that write at most `most` bytes a call, as the kernel may."""
    real_write = os.write
    calls = []

    def write(fd, data):
        calls.append("write")
        return real_write(fd, bytes(data)[:most])

    def writev(fd, views):
        calls.append("writev")
        joined = b"".join(bytes(v) for v in views)
        return real_write(fd, joined[:most])

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "writev", writev)
    return calls


@pytest.mark.parametrize("most", [1, 3, 7, 1000])
def test_partial_writes_are_retried_until_every_byte_is_written_in_order(tmp_path, monkeypatch, most):
    monkeypatch.setattr(writer, "SMALL", 16)
    fd, checks, out = new_output(tmp_path)
    stingy(monkeypatch, most)
    pieces = [b"ab", b"", b"cdefg", DATA[:40], b"h", b"ijklmnopq", DATA[100:117], b"r"]
    for piece in pieces:
        out.write(piece)
    out.flush()
    monkeypatch.undo()
    close(fd, checks)
    assert (tmp_path / "out").read_bytes() == b"".join(pieces)
    assert out.position == sum(map(len, pieces))


def test_gathered_writes_are_one_system_call(tmp_path, monkeypatch):
    fd, checks, out = new_output(tmp_path)
    calls = stingy(monkeypatch, 1 << 20)
    out.write(b"abc")
    out.write(b"de")
    assert calls == []  # gathered, not yet written
    out.flush()
    assert calls == ["writev"]
    monkeypatch.undo()
    close(fd, checks)
    assert (tmp_path / "out").read_bytes() == b"abcde"


def test_without_writev_gathered_writes_go_one_by_one(tmp_path, monkeypatch):
    fd, checks, out = new_output(tmp_path)
    calls = stingy(monkeypatch, 2)
    monkeypatch.delattr(os, "writev")
    for piece in (b"abc", b"de", b"fgh"):
        out.write(piece)
    out.flush()
    monkeypatch.undo()
    close(fd, checks)
    assert set(calls) == {"write"}
    assert (tmp_path / "out").read_bytes() == b"abcdefgh"


def test_at_most_gathered_small_writes_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "GATHERED", 3)
    fd, checks, out = new_output(tmp_path)
    out.write(b"a")
    out.write(b"b")
    assert os.fstat(fd).st_size == 0
    out.write(b"c")
    assert os.fstat(fd).st_size == 3  # the third is handed over with the two before it
    close(fd, checks)


# -- copy_from: both routes, and a file that shrank ---------------------------------------------


@pytest.mark.parametrize("offset, length", [(5, 40), (0, 1024), (17, 1000)])
def test_a_range_of_a_source_without_a_descriptor_is_copied_chunk_by_chunk(tmp_path, monkeypatch, offset, length):
    monkeypatch.setattr(writer, "SMALL", 8)
    monkeypatch.setattr(writer, "COPY_CHUNK", 16)
    source = BytesSource(DATA)
    fd, checks, out = new_output(tmp_path, source)
    piece = SourceRange(offset, length, None, "the range")
    out.begin(piece)
    out.copy_from(source, offset, length)
    out.end()
    out.flush()
    close(fd, checks)
    assert (tmp_path / "out").read_bytes() == DATA[offset:offset + length]


def test_a_file_that_shrank_during_the_copy_is_reported_and_its_buffer_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "SMALL", 8)
    monkeypatch.setattr(writer, "COPY_CHUNK", 16)
    path = tmp_path / "source"
    path.write_bytes(DATA)
    with FileSource(path) as source:
        fd, checks, out = new_output(tmp_path, source)
        os.truncate(path, 100)
        with pytest.raises(CheckpointError) as caught:
            out.copy_from(source, 90, 16)
        assert (type(caught.value), str(caught.value)) == (CheckpointError, "the file shrank while it was being copied")
        for step in range(writer.BUFFERS + 1):  # every chunk buffer is still there to copy with
            out.begin(SourceRange(step * 16, 16, None, "a chunk"))
            out.copy_from(source, step * 16, 16)
            out.end()
        out.flush()
        close(fd, checks)
    assert (tmp_path / "out").read_bytes() == DATA[:16 * (writer.BUFFERS + 1)]


def test_a_small_range_that_is_gone_is_reported_as_a_shrunk_file(tmp_path):
    fd, checks, out = new_output(tmp_path)
    with pytest.raises(CheckpointError) as caught:
        out.copy_from(BytesSource(b"12345"), 0, 10)
    assert (type(caught.value), str(caught.value)) == (CheckpointError, "the file shrank while it was being copied")
    close(fd, checks)


# -- the checks ---------------------------------------------------------------------------------


def blocked(checks):
    """Hold the checks' thread until the returned event is set."""
    gate = threading.Event()
    checks.then(gate.wait)
    return gate


def waits(checks, limit):
    """Whether catch_up(limit) would wait for the checks (found without waiting)."""
    asked = []
    checks.then = lambda action: (asked.append(action), action())
    try:
        checks.catch_up(limit)
    finally:
        del checks.then
    return bool(asked)


def test_catch_up_waits_only_for_a_backlog_past_its_limit():
    piece = SourceRange(0, 5, zlib.crc32(b"abcde"), "the range")
    checks = writer._Checks(BytesSource(b"abcde"))
    gate = blocked(checks)
    checks.add(piece, 0, memoryview(b"abc"))
    checks.add(piece, 3, memoryview(b"de"))
    checks.add(piece, 5, None)
    assert not waits(checks, 5)
    assert waits(checks, 4)
    gate.set()
    done = threading.Event()
    checks.then(done.set)
    done.wait()
    assert not waits(checks, 0)  # every byte added has been checked
    assert waits(checks, -1)
    checks.finish()
    assert not waits(checks, -1)  # the thread is gone: nothing to wait for


def test_stopped_checks_check_nothing_more():
    checks = writer._Checks(BytesSource(b"abcde"))
    stopping = threading.Event()
    real_end = checks._end
    checks._end = lambda: (stopping.set(), real_end())
    checks.then(stopping.wait)  # the checks wait until stop() was called
    checks.add(SourceRange(0, 5, None, "the range"), 0, memoryview(b"XXXXX"))
    checks.stop()
    assert checks.error is None


def test_a_copy_past_the_end_of_its_range_is_not_intact_even_at_the_end_of_the_file():
    checks = writer._Checks(BytesSource(b"abcde"))
    piece = SourceRange(2, 3, None, "the tail")
    checks.add(piece, 0, memoryview(b"cdeX"))
    checks.add(piece, 4, None)
    with pytest.raises(CheckpointError) as caught:
        checks.finish()
    assert (type(caught.value), str(caught.value)) == (FixAbandoned, "the tail was not copied intact")


@pytest.mark.parametrize("source_crc_ok", [True, False])
def test_a_bad_copy_of_a_good_range_is_abandoned_and_a_bad_range_refused(monkeypatch, source_crc_ok):
    """The CRC of the source range is computed chunk by chunk, over exactly the range."""
    monkeypatch.setattr(writer, "COPY_CHUNK", 4)
    source = BytesSource(DATA)
    crc = zlib.crc32(DATA[3:13]) if source_crc_ok else zlib.crc32(b"not it")
    piece = SourceRange(3, 10, crc, "record 'r'")
    checks = writer._Checks(source)
    checks.add(piece, 0, memoryview(b"x" * 10))
    checks.add(piece, 10, None)
    with pytest.raises(CheckpointError) as caught:
        checks.finish()
    expected = ((FixAbandoned, "record 'r' was not copied intact") if source_crc_ok
                else (Refused, "record 'r' does not match its CRC"))
    assert (type(caught.value), str(caught.value)) == expected


# -- replace_atomically -------------------------------------------------------------------------


def source_file(tmp_path, data=DATA, mode=0o640):
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def replace(path, pieces, **kwargs):
    identity = file_identity(os.stat(path))
    writer.replace_atomically(str(path), identity, pieces, kwargs.pop("read_back", lambda temporary: None), **kwargs)


def test_the_disk_is_told_to_write_back_whole_pages_as_the_copy_goes(tmp_path, monkeypatch):
    for name, value in (("PAGE", 4), ("WRITEBACK_STEP", 8), ("SMALL", 2), ("COPY_CHUNK", 4)):
        monkeypatch.setattr(writer, name, value)
    advised = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice:
                        advised.append((os.fstat(fd).st_ino, offset, length, advice)), raising=False)
    path = source_file(tmp_path)
    pieces = (b"new", SourceRange(0, 8, None, "first"), SourceRange(8, 9, None, "second"),
              SourceRange(17, 3, None, "third"), b"!")
    replace(path, pieces)
    assert path.read_bytes() == b"new" + DATA[:20] + b"!"
    new_file = os.stat(path).st_ino
    assert advised == [(new_file, 0, 8, os.POSIX_FADV_DONTNEED), (new_file, 8, 12, os.POSIX_FADV_DONTNEED)]


def test_a_read_only_file_is_not_replaced(tmp_path):
    path = source_file(tmp_path, mode=0o555)
    with pytest.raises(FixAbandoned, match="^the file is read-only$"):
        replace(path, (b"new",))
    assert path.read_bytes() == DATA and os.listdir(tmp_path) == [path.name]


def test_the_last_check_sees_the_finished_temporary_file(tmp_path):
    path = source_file(tmp_path)
    seen = []
    replace(path, (b"new", SourceRange(0, 4, None, "head")),
            last_check=lambda temporary: seen.append((os.path.dirname(temporary), open(temporary, "rb").read())))
    assert seen == [(str(tmp_path), b"new" + DATA[:4])]


def test_without_fchmod_the_mode_is_kept_with_chmod(tmp_path, monkeypatch):
    path = source_file(tmp_path, mode=0o751)
    monkeypatch.delattr(os, "fchmod")
    replace(path, (b"new",))
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o751


def test_a_file_replaced_before_it_is_opened_for_the_copy_is_left(tmp_path, monkeypatch):
    path = source_file(tmp_path)

    class Replaced(FileSource):
        def identity(self):
            return ("another", "file")

    monkeypatch.setattr(writer, "FileSource", Replaced)
    with pytest.raises(FixAbandoned) as caught:
        replace(path, (b"new",))
    assert str(caught.value) == "the file changed while it was being fixed"
    assert path.read_bytes() == DATA and os.listdir(tmp_path) == [path.name]


# -- the owner ----------------------------------------------------------------------------------


def refused_owner(tmp_path, monkeypatch, uid, gid):
    def fchown(fd, uid, gid):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", fchown)
    fd = os.open(tmp_path / "new", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        writer._keep_owner(fd, SimpleNamespace(st_uid=uid, st_gid=gid))
    finally:
        os.close(fd)


def names(uid=None, gid=None):
    import grp
    import pwd

    if uid is not None:
        try:
            return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
        except KeyError:
            return f"uid {uid}"
    try:
        return f"gid {gid} ({grp.getgrgid(gid).gr_name})"
    except KeyError:
        return f"gid {gid}"


@pytest.mark.parametrize("owner", [0, 4242421])
def test_an_owner_that_cannot_be_kept_abandons_the_fix(tmp_path, monkeypatch, owner):
    me = os.getuid()
    if owner == me:
        owner = me + 1
    with pytest.raises(FixAbandoned) as caught:
        refused_owner(tmp_path, monkeypatch, owner, os.getgid())
    assert str(caught.value) == (f"the file belongs to {names(uid=owner)}, and a rewrite by {names(uid=me)} "
                                 "cannot keep that owner (run fix as its owner or as root)")


@pytest.mark.parametrize("group", [0, 4242421])
def test_a_group_that_cannot_be_kept_abandons_the_fix(tmp_path, monkeypatch, group):
    if group == os.getgid():
        group = os.getgid() + 1
    with pytest.raises(FixAbandoned) as caught:
        refused_owner(tmp_path, monkeypatch, os.getuid(), group)
    assert str(caught.value) == (f"the file has the group {names(gid=group)}, which {names(uid=os.getuid())} "
                                 "cannot give the rewrite (run fix as its owner or as root)")


# -- temporary files ----------------------------------------------------------------------------


@pytest.fixture
def no_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def test_a_temporary_file_is_new_private_and_named_for_the_file_and_the_process(tmp_path, no_umask):
    path = tmp_path / "model.pth"
    fd, temporary = writer.create_temporary(str(path))
    os.close(fd)
    assert os.path.dirname(temporary) == str(tmp_path)
    assert re.fullmatch(rf"\.model\.pth\.pth-legacy-keys-{os.getpid()}\.[0-9a-f]{{12}}\.tmp",
                        os.path.basename(temporary))
    assert stat.S_IMODE(os.stat(temporary).st_mode) == 0o600


def test_a_relative_path_gets_its_temporary_file_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fd, temporary = writer.create_temporary("model.pth")
    os.close(fd)
    assert os.path.exists(tmp_path / os.path.basename(temporary))


def test_a_temporary_name_already_taken_is_never_opened(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    draws = iter([b"\x00" * 6, b"\x01" * 6])
    monkeypatch.setattr(os, "urandom", lambda n: next(draws)[:n])
    taken = tmp_path / f".model.pth.pth-legacy-keys-{os.getpid()}.{'00' * 6}.tmp"
    taken.write_bytes(b"someone's")
    fd, temporary = writer.create_temporary(str(path))
    os.close(fd)
    assert temporary == str(tmp_path / f".model.pth.pth-legacy-keys-{os.getpid()}.{'01' * 6}.tmp")
    assert taken.read_bytes() == b"someone's"


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_only_temporary_files_of_dead_processes_are_removed(tmp_path, monkeypatch):
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        dead, unknowable = dead_pid(), 4194399
        prefix = ".model.pth.pth-legacy-keys-"
        kept = [f"{prefix}{alive.pid}.aa.tmp", f"{prefix}{os.getpid()}.bb.tmp", f"{prefix}x{dead}.cc.tmp",
                f"{prefix}{unknowable}.dd.tmp", f"{prefix}{dead}.ee.part", "x" * len(prefix) + f"{dead}.ff.tmp",
                f".other.pth.pth-legacy-keys-{dead}.gg.tmp", "model.pth"]
        removed = [f"{prefix}{dead}.hh.tmp", f"{prefix}{dead}.ii.jj.tmp"]
        for name in kept + removed:
            (tmp_path / name).write_bytes(b"")
        real_listdir, real_kill = os.listdir, os.kill
        # the stale files last, whatever order the folder lists them in
        monkeypatch.setattr(os, "listdir", lambda folder: sorted(real_listdir(folder), key=lambda n: n in removed))

        def kill(pid, signal):
            if pid == unknowable:
                raise PermissionError(1, "Operation not permitted")  # a process we may not signal
            return real_kill(pid, signal)

        monkeypatch.setattr(os, "kill", kill)
        monkeypatch.chdir(tmp_path)
        writer.remove_stale_temporaries("model.pth")
        monkeypatch.undo()
        assert sorted(os.listdir(tmp_path)) == sorted(kept)
    finally:
        alive.stdin.close()
        assert alive.wait() == 0  # asked whether it runs, never signalled


# -- new files ----------------------------------------------------------------------------------


def test_a_new_file_is_written_beside_its_path_and_replaces_it(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = tmp_path / "summary.md"
    path.write_text("old")
    seen = []

    def fill(f):
        seen.extend(name for name in os.listdir(tmp_path) if name != "summary.md" and name != "cwd")
        f.write("é ✓\n")

    writer.write_new_file(str(path), fill)
    assert path.read_bytes() == "é ✓\n".encode("utf-8")
    [temporary] = seen
    assert re.fullmatch(rf"\.summary\.md\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", temporary)
    assert os.listdir(elsewhere) == []


def test_a_new_file_never_writes_through_a_link_at_its_temporary_name(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("victim")
    draws = iter([b"\x00" * 4, b"\x01" * 4])
    monkeypatch.setattr(os, "urandom", lambda n: next(draws))
    (tmp_path / f".out.txt.{os.getpid()}.00000000.tmp").symlink_to(victim)
    writer.write_new_file(str(tmp_path / "out.txt"), lambda f: f.write("new"))  # another name is tried
    assert victim.read_text() == "victim"
    assert (tmp_path / "out.txt").read_text() == "new"


def test_a_new_file_with_a_relative_path_fsyncs_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        status = os.fstat(fd)
        synced.append((status.st_ino, stat.S_ISDIR(status.st_mode)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    writer.write_new_file("out.txt", lambda f: f.write("new"))
    assert synced[-1] == (tmp_path.stat().st_ino, True)
    assert (tmp_path / "out.txt").read_text() == "new"


# -- move_into_place ----------------------------------------------------------------------------


def test_a_filled_temporary_file_replaces_the_file_keeping_its_mode_synced(tmp_path, monkeypatch, no_umask):
    path = source_file(tmp_path, mode=0o604)
    fd, temporary = writer.create_temporary(str(path))
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        status = os.fstat(fd)
        synced.append((status.st_ino, stat.S_ISDIR(status.st_mode), os.path.exists(temporary)))
        real_fsync(fd)

    def fill():
        with os.fdopen(fd, "wb") as out:
            out.write(b"downloaded")

    monkeypatch.setattr(os, "fsync", fsync)
    writer.move_into_place(temporary, str(path), fill, file_identity(os.stat(path)))
    monkeypatch.undo()
    assert path.read_bytes() == b"downloaded"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o604
    assert os.listdir(tmp_path) == [path.name]
    assert synced == [(os.stat(path).st_ino, False, True), (tmp_path.stat().st_ino, True, False)]


def test_a_failed_fill_leaves_the_file_and_no_temporary_file(tmp_path):
    path = source_file(tmp_path)
    fd, temporary = writer.create_temporary(str(path))

    def fill():
        os.write(fd, b"half")
        os.close(fd)
        raise FixAbandoned("the download failed")

    with pytest.raises(FixAbandoned, match="^the download failed$"):
        writer.move_into_place(temporary, str(path), fill, file_identity(os.stat(path)))
    assert path.read_bytes() == DATA and os.listdir(tmp_path) == [path.name]


def test_a_moved_file_keeps_the_owner_or_is_not_moved(tmp_path, monkeypatch):
    path = source_file(tmp_path)
    fd, temporary = writer.create_temporary(str(path))
    os.close(fd)
    original = os.stat(path)
    real_stat = os.stat
    taken = SimpleNamespace(st_uid=original.st_uid + 1, st_gid=original.st_gid, st_mode=original.st_mode,
                            st_dev=original.st_dev, st_ino=original.st_ino, st_size=original.st_size,
                            st_mtime_ns=original.st_mtime_ns)
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: taken if str(p) == str(path) else real_stat(p, *a, **k))
    seen = []
    monkeypatch.setattr(os, "fchown", lambda fd, uid, gid: seen.append((os.fstat(fd).st_ino, uid, gid)))
    writer.move_into_place(temporary, str(path), lambda: None, file_identity(original))
    monkeypatch.undo()
    assert seen == [(os.stat(path).st_ino, original.st_uid + 1, original.st_gid)]


def test_move_into_place_never_opens_a_link_at_the_temporary_name(tmp_path):
    path = source_file(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim")
    os.chmod(victim, 0o600)
    temporary = str(tmp_path / ".model.bin.pth-legacy-keys-1.aa.tmp")
    os.symlink(victim, temporary)
    with pytest.raises(OSError):
        writer.move_into_place(temporary, str(path), lambda: None, file_identity(os.stat(path)))
    assert path.read_bytes() == DATA and stat.S_IMODE(os.stat(victim).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, "victim"])


def test_a_file_that_changed_while_the_temporary_was_filled_is_left(tmp_path):
    path = source_file(tmp_path)
    identity = file_identity(os.stat(path))
    fd, temporary = writer.create_temporary(str(path))

    def fill():
        os.write(fd, b"downloaded")
        os.close(fd)
        path.write_bytes(b"changed meanwhile")

    with pytest.raises(FixAbandoned) as caught:
        writer.move_into_place(temporary, str(path), fill, identity)
    assert str(caught.value) == "the file changed while it was being fixed"
    assert path.read_bytes() == b"changed meanwhile" and os.listdir(tmp_path) == [path.name]
