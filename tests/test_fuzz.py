"""Property tests: mutated torch-made checkpoints never crash, hang, bloat or get half-written.

The three committed seeds (tests/data) are mutated by hypothesis strategies: bit flips,
truncation, splices, inserted/deleted bytes, extreme values in the pickle's and the zip's
length fields, opcode substitutions, and zip records duplicated, dropped or swapped (the
archive rebuilt with `zipfile`).  Mutations of the zip's pickle record may re-stamp its CRC, so
that they reach the pickle walker instead of stopping at the CRC check.  For every mutant:

- `scan` returns a FileReport with a known status, in bounded time and memory, and never
  changes the file;
- `fix` either leaves the file byte for byte as it was, or fixes it into a file that checks as
  ok, that fixes back to `parametrized` names, and no temporary file is ever left beside it;
- `pth-legacy-keys check` exits 0, 1 or 2 with one line about the file and a summary, never a
  traceback.

Nothing here imports torch.  The runs are derandomized (the same examples on every run) and
keep no example database, so CI is reproducible; PTH_FUZZ_SCALE=N runs N times as many
random examples.  Known findings are regression tests at the end.
"""

import contextlib
import io
import json
import os
import tempfile
import sys
import tracemalloc
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the property tests need hypothesis")
from hypothesis import event, given, settings  # noqa: E402
from pth_legacy_keys import FileReport, fix, scan  # noqa: E402
from pth_legacy_keys.cli import main  # noqa: E402
from pth_legacy_keys.status import Status  # noqa: E402
from support.fuzz_settings import FUZZ_SETTINGS, SCALE  # noqa: E402  (PTH_FUZZ_SCALE=N: N times the examples)
from support.pickle_ops import text as binunicode  # noqa: E402  (BINUNICODE, as pickle writes it)
from support.mutants import mutants, seed  # noqa: E402
from support.zip_bytes import build_zip, zip_records  # noqa: E402

STATUSES = frozenset(Status)
UNCHANGED_FIX_STATUSES = frozenset(STATUSES - {"fixed", "needs-fix"})
MAX_PEAK_BYTES = 64 * 1024 * 1024
# Function calls one scan may make: a seed takes ~2,300; a loop that runs away takes millions. A
# count of work, not a clock: the same on every machine, whatever its load.
MAX_CALLS = 2_000_000
FILE_NAME = "model.pth"


# -- what each seed looks like (parsed here, independently of the package) -------------


# Opcodes whose argument starts with a fixed-width little-endian number (length, index or value).


# -- mutations ----------------------------------------------------------------------


@contextlib.contextmanager
def mutant_file(data):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, FILE_NAME)
        with open(path, "wb") as f:
            f.write(data)
        yield folder, path


def assert_report(report, path):
    assert isinstance(report, FileReport)
    assert report.status in STATUSES, report
    assert report.path == path
    if report.status in ("error", "refused", "skipped", "not-checked"):
        assert report.reason, report
    report.line()  # renders without raising
    report.to_json()


class WorkExceeded(Exception):
    """A scan made more than MAX_CALLS calls (raised from the profiler, so nothing catches it)."""


def calls_counted(function, *args, limit=MAX_CALLS):
    """`function(*args)`, counting its Python and C calls; WorkExceeded past `limit`."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1
            if count > limit:
                sys.setprofile(None)
                raise WorkExceeded(f"more than {limit:,} calls")

    sys.setprofile(profile)
    try:
        return function(*args)
    finally:
        sys.setprofile(None)


def with_memory_peak(function, *args):
    """(`function(*args)`, the peak of the memory it allocated, by tracemalloc)."""
    tracemalloc.start()
    try:
        result = function(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def scan_measured(path, to="legacy"):
    """scan() under a bound on its work (calls counted) and, in a second run, on its memory
    (tracemalloc's peak); both runs must say the same."""
    report = calls_counted(scan, path, to)
    again, peak = with_memory_peak(scan, path, to)
    assert peak < MAX_PEAK_BYTES, (again, peak)
    assert (again.status, again.reason) == (report.status, report.reason)
    return report


def only_file(folder):
    """The folder holds the fixed file and nothing else: no temporary file left behind."""
    assert os.listdir(folder) == [FILE_NAME]


# -- the properties ---------------------------------------------------------------------


@settings(max_examples=600 * SCALE, **FUZZ_SETTINGS)
@given(mutants())
def test_scan_reports_a_known_status_and_changes_nothing(mutant):
    _seed, data = mutant
    with mutant_file(data) as (folder, path):
        for to in ("legacy", "parametrized"):
            report = scan_measured(path, to)
            assert_report(report, path)
            event(f"scan {to}: {report.status}")
            assert Path(path).read_bytes() == data
        only_file(folder)


@settings(max_examples=400 * SCALE, **FUZZ_SETTINGS)
@given(mutants())
def test_fix_is_all_or_nothing(mutant):
    _seed, data = mutant
    with mutant_file(data) as (folder, path):
        report = fix(path)
        assert_report(report, path)
        event(f"fix: {report.status}")
        only_file(folder)
        if report.status != "fixed":
            assert report.status in UNCHANGED_FIX_STATUSES, report
            assert Path(path).read_bytes() == data
            return
        fixed = Path(path).read_bytes()
        assert scan(path).status == "ok"
        back = fix(path, "parametrized")
        only_file(folder)
        assert back.status == "fixed", back
        assert sorted((r.new, r.old) for r in back.renames) == sorted((r.old, r.new) for r in report.renames)
        assert scan(path, "parametrized").status == "ok"
        roundtrip = Path(path).read_bytes()
        if not data.startswith(b"PK"):
            # The legacy format is rewritten by swapping its main pickle: back means byte for byte.
            assert roundtrip == data
        else:
            # A zip is rewritten in torch's layout: once in it, a round trip is byte for byte.
            assert fix(path).status == "fixed"
            assert Path(path).read_bytes() == fixed
            assert fix(path, "parametrized").status == "fixed"
            assert Path(path).read_bytes() == roundtrip
        only_file(folder)


def run_cli(*argv):
    """Run the CLI with a real UTF-8 stdout/stderr (strict, as a terminal or a CI log has)."""
    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict", newline="\n")
    err = io.TextIOWrapper(err_bytes, encoding="utf-8", errors="strict", newline="\n")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    out.flush()
    err.flush()
    return code, out_bytes.getvalue().decode("utf-8"), err_bytes.getvalue().decode("utf-8")


@settings(max_examples=300 * SCALE, **FUZZ_SETTINGS)
@given(mutants())
def test_cli_check_prints_one_line_per_file(mutant):
    _seed, data = mutant
    with mutant_file(data) as (folder, path):
        expected = scan(path)
        for options in ([], ["-v"], ["--output", "json"], ["--output", "github"]):
            code, out, err = run_cli("check", path, *options)
            assert "Traceback" not in out + err
            assert err == ""
            assert code in (0, 1, 2)
            assert code == Status(expected.status).exit_code
            if options == ["--output", "json"]:
                document = json.loads(out)
                assert [f["status"] for f in document["files"]] == [expected.status]
                continue
            lines = out.splitlines()
            if expected.status == "needs-fix" and options != ["--output", "github"]:
                assert lines.pop() == f"to fix them: pth-legacy-keys fix -- {path}", out
            assert lines[-1].startswith("checked 1 file: "), out
            if options == ["--output", "github"]:
                assert all(line.startswith("::") for line in lines[:-1]), out
                assert len(lines) <= 2, out
                continue
            about = [line for line in lines if line.startswith(f"{path}: ")]
            quiet_ok = expected.status == "ok" and not options
            assert about == ([] if quiet_ok else [expected.line()]), out
            others = [line for line in lines[:-1] if not line.startswith(f"{path}: ")]
            assert all(line.startswith("    ") for line in others) if options else not others, out
        assert Path(path).read_bytes() == data
        only_file(folder)


# -- regression tests for what the fuzzing found ------------------------------------------
#
# Each test states the behaviour the package should have; while the bug is there, it fails.
# They were found by reading the code the fuzzing exercises (rename._survey, the output
# writers) and building the smallest input that shows each one.


def checkpoint_with_pickle(pickle):
    """parametrized.bin's records around another data.pkl (zipfile layout, right CRC and sizes)."""
    records = zip_records(seed("parametrized.bin").data)
    return build_zip([(name, pickle if name.endswith("/data.pkl") else payload) for name, payload in records])


def seed_pickle():
    start, end = seed("parametrized.bin").pickle_span
    return seed("parametrized.bin").data[start:end]


def surrogate_key_checkpoint():
    """parametrized.bin with module 0's keys renamed to start with a lone surrogate (U+D800).

    Python's pickle writes and reads such strings (BINUNICODE is 'surrogatepass'), so
    torch.save/torch.load handle them; the walker reads them the same way.
    """
    pickle = seed_pickle()
    for leaf in ("original0", "original1"):
        old = f"0.parametrizations.weight.{leaf}"
        pickle = pickle.replace(binunicode(old), binunicode(f"\ud800.parametrizations.weight.{leaf}"))
    return checkpoint_with_pickle(pickle)


@pytest.mark.parametrize("options", [["--output", "json"], ["--output", "github"], ["--report", "REPORT"]])
def test_regression_surrogate_key_is_reported_not_a_traceback(options):
    # Finding 1: `check --output json|github` and `--report FILE` end in UnicodeEncodeError
    # (a traceback, exit 1) when a key holds a lone surrogate: the JSON document and the
    # annotations carry the raw key, which no UTF-8 stream or file accepts; `fix --output json`
    # even rewrites the file first and crashes after.  The text output escapes it (printable()).
    with mutant_file(surrogate_key_checkpoint()) as (_folder, path), tempfile.TemporaryDirectory() as elsewhere:
        assert scan(path).status == "needs-fix"
        report_path = os.path.join(elsewhere, "report.json")
        options = [report_path if option == "REPORT" else option for option in options]
        code, out, err = run_cli("check", path, *options)
        assert "Traceback" not in out + err
        assert code == 1
        if "--report" in options:
            with open(report_path, encoding="utf-8") as f:
                assert json.load(f)["files"][0]["status"] == "needs-fix"


def nested_list_key_checkpoint(levels, width=10):
    """{L: 0} where L0 = [0] * width and L(k+1) = [Lk] * width, each level shared through the memo.

    About 25 bytes of pickle per level; the key holds width**levels zeros.
    """
    def nest(k):
        if k == 0:
            return b"](" + b"K\x00" * width + b"eq\x00"
        return b"](" + nest(k - 1) + (b"h" + bytes([k - 1])) * (width - 1) + b"eq" + bytes([k])
    return checkpoint_with_pickle(b"\x80\x02}" + nest(levels) + b"K\x00s.")


def test_regression_shared_list_as_dict_key_is_not_expanded():
    # Finding 2: rename._survey builds each child's path as f"{where}[{key!r}]", and repr()
    # expands a memo-shared nested list in full: a 170-byte pickle (6 levels) takes ~2 s,
    # 7 levels (193 bytes) ~13 s and 690 MB, 8 levels OOM -- a "billion laughs" that the walker's
    # caps (size, memo, stack, depth) do not stop, on every `check`.
    data = nested_list_key_checkpoint(7)
    with mutant_file(data) as (_folder, path):
        report, peak = with_memory_peak(calls_counted, scan, path)
        assert report.status in STATUSES
        assert peak < MAX_PEAK_BYTES, f"peak {peak >> 20} MiB for a {len(data)}-byte file"


def long_nested_key_checkpoint(key_length, depth, items):
    """{K: {K: ... {K: 1, K: 1, ...}}}: one long key K (shared through the memo) at every level."""
    pickle = b"\x80\x02}(" + binunicode("x" * key_length) + b"q\x00"
    pickle += b"}(h\x00" * (depth - 1)
    pickle += b"}(" + b"h\x00K\x01" * items + b"u" * (depth + 1) + b"."
    return checkpoint_with_pickle(pickle)


def test_regression_long_nested_keys_do_not_multiply_memory():
    # Finding 3: the same eager path strings: each of the `items` children of a dict nested
    # `depth` levels deep gets a path of depth * key_length characters, all held at once.
    # This 23 KB file peaks at ~200 MiB under tracemalloc; 100 KB (key 100,000, depth 99,
    # 100 items) takes 1 GB of RSS, and 1,000 items ~10 GB.
    with mutant_file(long_nested_key_checkpoint(20_000, 50, 200)) as (_folder, path):
        report, peak = with_memory_peak(scan, path)
        assert report.status in STATUSES
        assert peak < MAX_PEAK_BYTES, f"peak {peak >> 20} MiB for a {os.path.getsize(path) >> 10} KiB file"


def many_keys_checkpoint(items):
    """{"a": parametrized.bin's state dict, then (key, tensor) items}: a state dict with len(items) more keys."""
    body = seed_pickle()[2:-1]  # pushes the seed's OrderedDict; its memo 13 is a tensor
    pairs = b"".join(binunicode(key) + b"h\x0d" for key in items)
    return checkpoint_with_pickle(b"\x80\x02}(" + binunicode("a") + body + pairs + b"u.")


def test_regression_duplicate_key_search_is_not_quadratic():
    # Finding 4: rename's duplicate check (then _duplicates_problem, now _StateDict.duplicate) found the repeated key with
    # next(k for k in keys if keys.count(k) > 1): quadratic when the repeat comes last.
    # 8,000 keys (a 96 KB pickle) take ~1.6 s, 30,000 keys (380 KB) ~20 s, per direction.
    # The work is counted in test_rename_rules.test_planning_work_grows_linearly_with_the_keys;
    # here the whole scan of such a file.
    keys = [f"k{i}" for i in range(8000)] + ["k7999"]
    with mutant_file(many_keys_checkpoint(keys)) as (_folder, path):
        report = calls_counted(scan, path)
        assert report.status == "cannot-convert"


def test_regression_to_parametrized_planning_is_not_quadratic():
    # Finding 5: rename's to-parametrized planner (then _plan_to_parametrized, now _target_taken) checked, for every legacy _g/_v pair, every key of
    # the dict ([name for name in values if ... name.startswith(base)]): quadratic in the
    # state dict's size.  3,000 pairs (125 KB pickle) take ~2 s, 20,000 pairs (860 KB) ~100 s
    # for `check --to parametrized`; `--to legacy` takes 0.12 s on the latter.
    # As above: the work is counted in test_rename_rules; here the whole scan of such a file.
    keys = [f"m{i}.weight_{leaf}" for i in range(3000) for leaf in "gv"]
    with mutant_file(many_keys_checkpoint(keys)) as (_folder, path):
        report = calls_counted(scan, path, "parametrized")
        assert report.status == "needs-fix"
