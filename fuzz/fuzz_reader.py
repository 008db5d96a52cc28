"""Coverage-guided fuzzing of the checkpoint reader: `scan()` must never raise.

With atheris (pip install atheris), libFuzzer drives the inputs:

    python fuzz/make_corpus.py
    python fuzz/fuzz_reader.py fuzz/corpus -max_total_time=600 -timeout=10 -rss_limit_mb=2048

Each input is written to a file and scanned in both directions (`to="legacy"` and
`to="parametrized"`).  A crash is any exception out of `scan`, a status outside the known
ones, a changed file, or (with PTH_FUZZ_OUTPUT=1) a report line or JSON document that cannot
be written as UTF-8 the way the CLI prints it.  libFuzzer's own -timeout and -rss_limit_mb
catch hangs and memory blow-ups.

A custom mutator re-stamps the CRC of a zip's data.pkl record after most mutations, so that
pickle mutations reach the pickle walker and the rename rules instead of stopping at the
CRC check (the legacy non-zip format has no CRC to get past).

Without atheris the same TestOneInput runs under a plain random-mutation loop (bit flips,
byte/slice insertion and deletion, splices, extreme length values, CRC re-stamping):

    python fuzz/fuzz_reader.py fuzz/corpus --fallback -max_total_time=600

Crashing inputs are written to ./crash-<sha1> (libFuzzer) or fuzz/crashes/ (fallback); replay
one with `python fuzz/fuzz_reader.py CRASH_FILE` (atheris) or `--fallback CRASH_FILE`.

With PTH_FUZZ_TORCH_ROUTE=1 (torch needed, and only then imported) every input the tool
accepts (any status but refused or error) is also loaded by torch.load through
tests/support/torch_oracle.py, whose pickle module records instead of importing: a forbidden global,
an allowed one outside its role, or a hand-over to torch.jit.load is a crash.  That checks that
the tool's verdict follows torch's own reading of the file.
"""

import json
import os
import random
import struct
import sys
import tempfile
import time
import traceback
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "hooks"))

FALLBACK = "--fallback" in sys.argv
try:
    if FALLBACK:
        raise ImportError
    import atheris
except ImportError:
    atheris = None

if atheris is not None:
    with atheris.instrument_imports():
        import pth_legacy_keys  # noqa: F401
        from pth_legacy_keys import engine, scan  # noqa: F401
        from pth_legacy_keys.status import Status
else:
    from pth_legacy_keys import scan
    from pth_legacy_keys.status import Status

STATUSES = frozenset(Status)
CHECK_OUTPUT = os.environ.get("PTH_FUZZ_OUTPUT") == "1"
REJECTED = frozenset({"refused", "error"})
if os.environ.get("PTH_FUZZ_TORCH_ROUTE") == "1":
    # Imported only when asked for: torch is large, and the plain harness must not need it.
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    from support.torch_oracle import torch_route
else:
    torch_route = None
WORK_DIR = tempfile.mkdtemp(prefix="pth-fuzz-")
INPUT_PATH = os.path.join(WORK_DIR, "input.pth")


def TestOneInput(data):  # atheris' name
    with open(INPUT_PATH, "wb") as f:
        f.write(data)
    accepted = []
    for to in ("legacy", "parametrized"):
        report = scan(INPUT_PATH, to)
        if report.status not in STATUSES:
            raise AssertionError(f"unknown status {report.status!r}")
        if report.status not in REJECTED:
            accepted.append(report.status)
        if CHECK_OUTPUT:
            # What the CLI prints: one text line, or the JSON document, to a UTF-8 stream.
            report.line().encode("utf-8")
            json.dumps(report.to_json(), ensure_ascii=False).encode("utf-8")
    with open(INPUT_PATH, "rb") as f:
        if f.read() != data:
            raise AssertionError("scan changed the file")
    if torch_route is not None and accepted:
        route = torch_route(INPUT_PATH)
        if route.hostile:
            raise AssertionError(f"scan said {accepted[0]}, but torch.load {route.describe()}")


# -- zip CRC re-stamping (so mutations of data.pkl get past the CRC check) -------------


def restamp_pickle_crc(data):
    """Return `data` with its data.pkl record's CRC recomputed, where the layout can be parsed."""
    try:
        end = data.rfind(b"PK\x05\x06")
        if end < 0 or end + 22 > len(data):
            return data
        count, _cd_size, cd_offset = struct.unpack_from("<HII", data, end + 10)
        if cd_offset == 0xFFFFFFFF:
            locator = end - 20
            if locator < 0 or data[locator:locator + 4] != b"PK\x06\x07":
                return data
            (z64,) = struct.unpack_from("<Q", data, locator + 8)
            count, cd_offset = struct.unpack_from("<Q", data, z64 + 32)[0], struct.unpack_from("<Q", data, z64 + 48)[0]
        at = cd_offset
        for _ in range(min(count, 4096)):
            if data[at:at + 4] != b"PK\x01\x02":
                return data
            size, name_len, extra_len, comment_len = struct.unpack_from("<IHHH", data, at + 24)
            (local,) = struct.unpack_from("<I", data, at + 42)
            name = data[at + 46:at + 46 + name_len]
            if name.endswith(b"/data.pkl") and data[local:local + 4] == b"PK\x03\x04":
                local_name_len, local_extra_len = struct.unpack_from("<HH", data, local + 26)
                start = local + 30 + local_name_len + local_extra_len
                if start + size > len(data):
                    return data
                crc = zlib.crc32(data[start:start + size])
                out = bytearray(data)
                struct.pack_into("<I", out, at + 16, crc)
                if struct.unpack_from("<I", out, local + 14)[0]:
                    struct.pack_into("<I", out, local + 14, crc)
                if out[start + size:start + size + 4] == b"PK\x07\x08":
                    struct.pack_into("<I", out, start + size + 4, crc)
                return bytes(out)
            at += 46 + name_len + extra_len + comment_len
    except (struct.error, IndexError, ValueError):
        pass
    return data


def CustomMutator(data, max_size, seed):  # atheris' name
    data = atheris.Mutate(data, max_size)
    if seed % 5:  # four times in five: make the pickle's CRC right again
        data = restamp_pickle_crc(data)
    return data


# -- the fallback loop, for when atheris is not installed -------------------------------

EXTREMES = (0, 2**31 - 1, 2**32 - 1, 2**63 - 1)


def mutate(rng, data, corpus):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(7)
        n = len(data)
        if kind == 0 and n:  # bit flips
            for _ in range(rng.randint(1, 8)):
                at = rng.randrange(n)
                data[at] ^= 1 << rng.randrange(8)
        elif kind == 1 and n:  # truncate
            del data[rng.randrange(n):]
        elif kind == 2:  # insert random bytes
            at = rng.randint(0, n)
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind == 3 and n:  # delete a slice
            at = rng.randrange(n)
            del data[at:at + rng.randint(1, 64)]
        elif kind == 4 and n:  # copy a slice over another place, or splice in another input
            source = rng.choice(corpus) if rng.random() < 0.3 else bytes(data)
            if source:
                start = rng.randrange(len(source))
                piece = source[start:start + rng.randint(1, 64)]
                at = rng.randrange(n)
                if rng.random() < 0.5:
                    data[at:at + len(piece)] = piece
                else:
                    data[at:at] = piece
        elif kind == 5 and n >= 8:  # an extreme 4- or 8-byte little-endian value
            width = rng.choice((4, 8))
            at = rng.randrange(n - width + 1)
            data[at:at + width] = (rng.choice(EXTREMES) & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        elif kind == 6 and n:  # an interesting byte
            data[rng.randrange(n)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x28, 0x2E, 0x58, 0x68, 0x71, 0x72))
    data = bytes(data)
    return restamp_pickle_crc(data) if rng.random() < 0.8 else data


def fallback_main(argv):
    max_total_time, runs, paths = 600, None, []
    for arg in argv:
        if arg.startswith("-max_total_time="):
            max_total_time = int(arg.split("=", 1)[1])
        elif arg.startswith("-runs="):
            runs = int(arg.split("=", 1)[1])
        elif arg.startswith("-seed="):
            random.seed(int(arg.split("=", 1)[1]))
        elif not arg.startswith("-"):
            paths.append(arg)
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += [os.path.join(path, name) for name in sorted(os.listdir(path))]
        else:
            files.append(path)
    corpus = []
    for path in files:
        with open(path, "rb") as f:
            corpus.append(f.read())
    if len(files) == 1 and not os.path.isdir(paths[0]):
        TestOneInput(corpus[0])  # replay one input: raises if it still crashes
        print(f"{files[0]}: no crash")
        return 0
    if not corpus:
        sys.exit("give a corpus folder (python fuzz/make_corpus.py makes fuzz/corpus)")
    crashes_dir = os.path.join(HERE, "crashes")
    rng = random.Random()
    started, executions, crashes, slowest = time.monotonic(), 0, 0, 0.0
    while time.monotonic() - started < max_total_time and (runs is None or executions < runs):
        data = mutate(rng, rng.choice(corpus), corpus)
        t0 = time.monotonic()
        try:
            TestOneInput(data)
        except Exception:  # noqa: BLE001 (every exception is a finding)
            crashes += 1
            os.makedirs(crashes_dir, exist_ok=True)
            name = os.path.join(crashes_dir, f"crash-{zlib.crc32(data):08x}")
            with open(name, "wb") as f:
                f.write(data)
            print(f"CRASH written to {name}:\n{traceback.format_exc()}", flush=True)
        slowest = max(slowest, time.monotonic() - t0)
        executions += 1
        if executions % 10000 == 0:
            print(f"#{executions} execs, {crashes} crashes, slowest {slowest:.3f} s", flush=True)
    elapsed = time.monotonic() - started
    print(f"done: {executions} execs in {elapsed:.0f} s ({executions / elapsed:.0f}/s), {crashes} crashes, "
          f"slowest input {slowest:.3f} s")
    return 1 if crashes else 0


def main():
    argv = [arg for arg in sys.argv if arg != "--fallback"]
    if atheris is None:
        if not FALLBACK:
            print("atheris is not installed: running the random-mutation fallback", file=sys.stderr)
        sys.exit(fallback_main(argv[1:]))
    atheris.Setup(argv, TestOneInput, custom_mutator=CustomMutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
