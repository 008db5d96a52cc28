"""Scale benchmark for pth-legacy-keys: many files, and one very large file.

Run with a Python that has torch and the project installed (torch is only used,
in a child process, to generate the inputs):

    python bench/scale.py [--rounds N] [--workdir DIR] [--cli "pth-legacy-keys"] [--keep]

It reuses bench.py (in this folder) for the model, the measuring of child
processes (wall clock, peak RSS through os.wait4) and the verdict lines, and
measures:

  1. a repository of N checkpoints checked in one call, `check -q FOLDER`, for
     N = 100, 250, 500 and 1,000 hard links of the 55 MB RVC model (457 keys,
     208 parametrized): seconds per file at each N;
     target: per-file time at 1,000 <= 1.5 x per-file time at 100.
     When the CLI has --jobs, also `--jobs 1` vs the default at 1,000 (information).
  2. `check` of a ~5 GB fp32 checkpoint with the same 457 key names vs the 55 MB one;
     target: median time ratio 5 GB / 55 MB <= 1.5 (--rounds alternating runs).
  3. `fix` of the 5 GB checkpoint, each run on a fresh copy; target: peak RSS < 64 MiB.
     Its wall time is shown next to a plain `cp` of the file and a `cp` followed by
     `sync FILE` (fix fsyncs its output before swapping it in), for context.

Every comparison alternates its commands and drops a first warm-up round, as
bench.py does.  The hard links all share one inode, so part 1 measures the tool's
own per-file cost with the file in the page cache, not disk reads.

Disk: about 15 GB free in --workdir at the peak (the 5 GB input, a 5 GB copy and
the 5 GB file fix writes beside it before swapping it in); the links cost nothing.
Generating the 5 GB file takes about a minute and ~6 GB of RAM.  The generated
files are deleted at the end unless --keep is given (then the next run reuses them).
Exit 0 if every target passes, 1 otherwise.
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (bench.py: model shapes, Command, run_once, run_alternating, verdict)
from bench import Command, verdict  # noqa: E402

REPO_SIZES = (100, 250, 500, 1000)
HUGE_WIDTH = 6.75  # channel multiplier of bench.rvc_v2_40k_shapes: fp32 -> ~5.0 GB, still 457 keys
SMALL_NAME = "rvc_v2_40k_fp16_parametrized.pth"  # bench.py's name: a workdir can be shared
HUGE_NAME = "rvc_v2_40k_fp32_x6.75_parametrized.pth"


def generate_huge(path):
    """The small model's layout (same keys and metadata), wider and in fp32 (runs in a child)."""
    import torch
    torch.manual_seed(0)
    sd = {key: torch.randn(shape, dtype=torch.float32) for key, shape in bench.rvc_v2_40k_shapes(HUGE_WIDTH)}
    ckpt = {"weight": sd, "config": bench.RVC_V2_40K_CONFIG, "info": "200epoch",
            "sr": "40k", "f0": 1, "version": "v2"}
    torch.save(ckpt, path + ".tmp")
    os.replace(path + ".tmp", path)


def prepare_inputs(workdir):
    small, huge = workdir / SMALL_NAME, workdir / HUGE_NAME
    if not small.exists():
        print(f"generating {small} ...", flush=True)
        if bench.run_torch_helper("generate", "small", small):
            sys.exit(f"generating {small} failed")
    if not huge.exists():
        print(f"generating {huge} (about a minute) ...", flush=True)
        if subprocess.run([sys.executable, __file__, "--internal", str(huge)]).returncode:
            sys.exit(f"generating {huge} failed")
    repos = {}
    for n in REPO_SIZES:  # rebuilt every run: cheap, and always links to the current model
        repo = workdir / f"repo_{n}"
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir()
        for i in range(n):
            os.link(small, repo / f"model_{i:04d}.pth")
        repos[n] = repo
    print(f"inputs in {workdir}: {small.stat().st_size / 1e6:.1f} MB, {huge.stat().st_size / 1e9:.2f} GB, "
          f"hard-link folders of {', '.join(map(str, REPO_SIZES))} files\n")
    return small, huge, repos


def has_jobs_option(argv):
    out = subprocess.run(argv + ["check", "--help"], capture_output=True, text=True).stdout
    return "--jobs" in out


def repository_targets(ours, repos, jobs, rounds):
    print("[check -q FOLDER of N hard links to the 55 MB model, default options]")
    commands = {n: ours(f"{n} files", "check", "-q", repo, expect_exit=1) for n, repo in repos.items()}
    bench.run_alternating(list(commands.values()), rounds)
    per_file = {n: cmd.median_seconds() for n, cmd in commands.items()}
    per_file = {n: None if seconds is None else seconds / n for n, seconds in per_file.items()}
    for n, seconds in per_file.items():
        if seconds is not None:
            print(f"  {n:>5} files: {seconds:.5f} s per file")
    first, last = REPO_SIZES[0], REPO_SIZES[-1]
    ratio = None if None in (per_file[first], per_file[last]) else per_file[last] / per_file[first]
    detail = "" if ratio is None else (f"{per_file[last]:.5f} s at {last} / "
                                       f"{per_file[first]:.5f} s at {first} = ")
    print()
    verdict(f"per-file time, {last} vs {first} files", ratio, "<=", 1.5, "x", detail)

    if not jobs:
        print("INFO  this CLI has no --jobs option: no parallel comparison\n")
        return
    print(f"[for information: {last} files, --jobs 1 vs the default ({os.cpu_count()} cores)]")
    serial = ours("--jobs 1", "check", "-q", "--jobs", "1", repos[last], expect_exit=1)
    default = ours("default jobs", "check", "-q", repos[last], expect_exit=1)
    bench.run_alternating([serial, default], rounds)
    if serial.median_seconds() and default.median_seconds():
        print(f"INFO  speed-up of the default over --jobs 1: "
              f"{serial.median_seconds() / default.median_seconds():.2f}x\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per command (default: 5)")
    parser.add_argument("--fix-rounds", type=int, default=2, help="timed fixes of the 5 GB file (default: 2)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pth-legacy-keys-scale")
    parser.add_argument("--cli", default="pth-legacy-keys")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoints for the next run")
    parser.add_argument("--internal", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.internal:
        return generate_huge(args.internal)

    ours_argv, ours_error = bench.resolve_cli(args.cli)
    if ours_error:
        sys.exit(f"ERROR: {ours_error}")
    cp = shutil.which("cp")
    args.workdir.mkdir(parents=True, exist_ok=True)
    small, huge, repos = prepare_inputs(args.workdir)
    copy = args.workdir / "fix_copy.pth"

    def ours(label, *cli_args, expect_exit=0, prepare=None):
        return Command(label, ours_argv + [str(a) for a in cli_args], expect_exit, prepare)

    try:
        floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"note: a child's peak RSS reads at least this process's own peak, {floor:.1f} MiB\n")

        repository_targets(ours, repos, has_jobs_option(ours_argv), args.rounds)

        bench.compare("check 5 GB vs 55 MB", ours("ours 5 GB", "check", huge, expect_exit=1),
                      ours("ours 55 MB", "check", small, expect_exit=1), "<=", 1.5, args.rounds)

        # Each timed copy removes the last one first; the fix rewrites the copy made just
        # before it, so at most input + copy + fix's new file (15 GB) exist at once.
        print("[fix 5 GB, each run on the copy the timed cp + sync before it made]")
        remove_copy = lambda: copy.unlink(missing_ok=True)  # noqa: E731
        plain_cp = Command("cp", [cp, str(huge), str(copy)], prepare=remove_copy)
        durable_cp = Command("cp + sync FILE", ["sh", "-c", 'cp -- "$1" "$2" && sync -- "$2"', "sh",
                                                str(huge), str(copy)], prepare=remove_copy)
        fix = ours("ours fix", "fix", copy, prepare=lambda: None)  # a prepare makes bench sync first
        bench.run_alternating([plain_cp, durable_cp, fix], args.fix_rounds)
        verdict("peak RSS of our fix, 5 GB", fix.peak_rss_mib(), "<", 64, " MiB")
        fix_s, cp_s, durable_s = fix.median_seconds(), plain_cp.median_seconds(), durable_cp.median_seconds()
        if fix_s and cp_s and durable_s:
            print(f"INFO  fix 5 GB {fix_s:.1f} s = {fix_s / cp_s:.2f}x a plain cp, "
                  f"{fix_s / durable_s:.2f}x cp + sync\n")

        recheck = ours("check fixed", "check", "-q", copy)  # exit 0: no parametrized keys left
        if not fix.error:
            bench.run_once(recheck)
        ok = not fix.error and not recheck.error
        bench.RESULTS.append((ok, f"{'PASS' if ok else 'FAIL'}  fixed 5 GB file checks clean"))
        print(bench.RESULTS[-1][1] + ("" if ok else f": {recheck.error or fix.error}") + "\n")
    finally:
        copy.unlink(missing_ok=True)
        for repo in repos.values():
            shutil.rmtree(repo, ignore_errors=True)
        if not args.keep:
            small.unlink(missing_ok=True)
            huge.unlink(missing_ok=True)
            try:
                args.workdir.rmdir()  # only if we left it empty
            except OSError:
                pass

    failed = [line.split(":")[0][6:] for passed, line in bench.RESULTS if not passed]
    print(f"SUMMARY: {len(bench.RESULTS) - len(failed)}/{len(bench.RESULTS)} targets passed"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
