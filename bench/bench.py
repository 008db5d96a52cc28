"""Benchmark pth-legacy-keys against the usual "load it with torch" script.

Run with a Python that has torch and the project installed:

    python bench/bench.py [--rounds N] [--workdir DIR] [--cli "pth-legacy-keys"]

It generates (once, cached in --workdir) a ~55 MB fp16 RVC v2 40k inference
model, a ~550 MB fp32 training checkpoint with the same 457 keys, and 20
copies of the small model; all use the parametrized weight-norm names
(`X.parametrizations.weight.original0/1`, 208 keys).  It then times whole
processes (wall clock) and records each child's peak RSS, alternating the two
commands of every comparison for --rounds rounds and comparing medians:

  check 55 MB           ours vs torch way          torch/ours  >= 15
  check 20 x 55 MB      ours vs torch way          torch/ours  >= 10
  check 550 vs 55 MB    ours vs ours               550/55      <= 1.5
  fix 55 MB             ours vs torch way          torch/ours  >= 8
  fix 55 MB             ours vs python file copy   ours/copy   <= 1.5
  fix 55 MB, 550 MB     ours vs durable copy       ours/copy   <= 1.5
                        (copyfile to a temporary name, fsync, rename), twice:
                        renamed over a copy of the input, as fix renames
                        over the file it rewrites (the old file's blocks are
                        freed in the timed run), and renamed to a new name
  peak RSS of our fix   55 MB and 550 MB           < 64 MiB each
  installed package size (without __pycache__)     < 1 MB

It also checks that our fix produced the right file.  Exit 0 if every target
passes, 1 otherwise.  Delete --workdir to regenerate the inputs.
"""
import argparse
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PARAM_SUFFIX = ".parametrizations.weight.original"
# RVC v2 40k: the 18 hyper-parameters stored next to the weights.
RVC_V2_40K_CONFIG = [1025, 32, 192, 192, 768, 2, 6, 3, 0, "1", [3, 7, 11],
                     [[1, 3, 5]] * 3, [10, 10, 2, 2], 512, [16, 16, 4, 4], 109, 256, 40000]
LARGE_WIDTH = 2.25  # channel multiplier: ~5x the elements, x2 for fp32 -> ~550 MB

# The script people pass around; it reads the checkpoint with torch.
TORCH_WAY_SOURCE = '''\
import sys, torch
mode, paths = sys.argv[1], sys.argv[2:]
found = 0
for path in paths:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    key = "weight" if "weight" in ckpt else "model"
    renamed = {}
    for name, tensor in ckpt[key].items():
        if name.endswith(".parametrizations.weight.original0"):
            name, found = name[:-34] + ".weight_g", found + 1
        elif name.endswith(".parametrizations.weight.original1"):
            name, found = name[:-34] + ".weight_v", found + 1
        renamed[name] = tensor
    if mode == "fix":
        ckpt[key] = renamed
        torch.save(ckpt, path)
sys.exit(1 if mode == "check" and found else 0)
'''
COPY_SOURCE = "import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2])"
# Our fix writes a temporary file, fsyncs it and renames it over the original (a crash must not
# leave a half-written model); this copy does the same, the least any durable rewrite costs.
DURABLE_COPY_SOURCE = (
    "import os, shutil, sys; tmp = sys.argv[2] + '.tmp'; shutil.copyfile(sys.argv[1], tmp); "
    "fd = os.open(tmp, os.O_RDONLY); os.fsync(fd); os.close(fd); os.replace(tmp, sys.argv[2])"
)


# --- input generation (runs in a child process, see main) -------------------

def rvc_v2_40k_shapes(width=1.0):
    """(key, shape) of the RVC v2 40k generator, in state_dict order."""
    import math
    ch = lambda c: int(round(c * width / 16)) * 16  # noqa: E731
    hidden, ffn, phone, up0, gin = ch(192), ch(768), ch(768), ch(512), ch(256)
    keys = []

    def conv(prefix, shape, bias=True):
        keys.append((f"{prefix}.weight", shape))
        if bias:
            keys.append((f"{prefix}.bias", shape[:1]))

    def weight_norm(prefix, v_shape):
        # Parametrized modules list their own bias before the parametrizations.
        keys.append((f"{prefix}.bias", v_shape[:1]))
        keys.append((f"{prefix}{PARAM_SUFFIX}0", v_shape[:1] + (1,) * (len(v_shape) - 1)))
        keys.append((f"{prefix}{PARAM_SUFFIX}1", v_shape))

    conv("enc_p.emb_phone", (hidden, phone))
    keys.append(("enc_p.emb_pitch.weight", (256, hidden)))
    # state_dict order: a module's own parameters, then its children in
    # registration order (so each ModuleList comes out whole).
    for i in range(6):
        attn = f"enc_p.encoder.attn_layers.{i}"
        keys += [(f"{attn}.emb_rel_k", (1, 21, hidden // 2)), (f"{attn}.emb_rel_v", (1, 21, hidden // 2))]
        for name in "qkvo":
            conv(f"{attn}.conv_{name}", (hidden, hidden, 1))
    keys += [(f"enc_p.encoder.norm_layers_1.{i}.{n}", (hidden,)) for i in range(6) for n in ("gamma", "beta")]
    for i in range(6):
        conv(f"enc_p.encoder.ffn_layers.{i}.conv_1", (ffn, hidden, 3))
        conv(f"enc_p.encoder.ffn_layers.{i}.conv_2", (hidden, ffn, 3))
    keys += [(f"enc_p.encoder.norm_layers_2.{i}.{n}", (hidden,)) for i in range(6) for n in ("gamma", "beta")]
    conv("enc_p.proj", (2 * hidden, hidden, 1))
    conv("dec.m_source.l_linear", (1, 1))
    rates, up_kernels = [10, 10, 2, 2], [16, 16, 4, 4]
    for i in range(4):
        stride = math.prod(rates[i + 1:])
        conv(f"dec.noise_convs.{i}", (up0 >> (i + 1), 1, 2 * stride if i < 3 else 1))
    conv("dec.conv_pre", (up0, hidden, 7))
    for i in range(4):  # ConvTranspose1d weight is (in, out, k): g is (in, 1, 1)
        weight_norm(f"dec.ups.{i}", (up0 >> i, up0 >> (i + 1), up_kernels[i]))
    for i in range(12):
        channels, kernel = up0 >> (i // 3 + 1), [3, 7, 11][i % 3]
        for convs in ("convs1", "convs2"):
            for j in range(3):
                weight_norm(f"dec.resblocks.{i}.{convs}.{j}", (channels, channels, kernel))
    conv("dec.conv_post", (1, up0 >> 4, 7), bias=False)
    conv("dec.cond", (up0, gin, 1))
    for n in (0, 2, 4, 6):  # odd flows are Flip layers without weights
        flow = f"flow.flows.{n}"
        conv(f"{flow}.pre", (hidden, hidden // 2, 1))
        for j in range(3):
            weight_norm(f"{flow}.enc.in_layers.{j}", (2 * hidden, hidden, 5))
        for j in range(3):  # the last res_skip layer has no skip half
            weight_norm(f"{flow}.enc.res_skip_layers.{j}", (2 * hidden if j < 2 else hidden, hidden, 1))
        weight_norm(f"{flow}.enc.cond_layer", (2 * hidden * 3, gin, 1))
        conv(f"{flow}.post", (hidden // 2, hidden, 1))
    keys.append(("emb_g.weight", (109, gin)))
    return keys


def generate_checkpoint(kind, path):
    import torch
    torch.manual_seed(0)
    dtype, width = (torch.float16, 1.0) if kind == "small" else (torch.float32, LARGE_WIDTH)
    sd = {key: torch.randn(shape, dtype=dtype) for key, shape in rvc_v2_40k_shapes(width)}
    if kind == "small":
        ckpt = {"weight": sd, "config": RVC_V2_40K_CONFIG, "info": "200epoch",
                "sr": "40k", "f0": 1, "version": "v2"}
    else:
        ckpt = {"model": sd, "iteration": 1, "learning_rate": 1e-4}
    torch.save(ckpt, path + ".tmp")
    os.replace(path + ".tmp", path)  # never leave a half-written file in the cache


def verify_fix(original_path, fixed_path):
    """Exit 1 unless fixed == original with legacy names (same tensors and metadata)."""
    import torch
    original = torch.load(original_path, map_location="cpu", weights_only=True)
    fixed = torch.load(fixed_path, map_location="cpu", weights_only=True)
    key = "weight" if "weight" in original else "model"
    legacy = {"0": ".weight_g", "1": ".weight_v"}
    expected = {name.split(PARAM_SUFFIX)[0] + legacy[name[-1]] if PARAM_SUFFIX in name else name: t
                for name, t in original.pop(key).items()}
    got = fixed.pop(key)
    if set(got) != set(expected):  # order is irrelevant to load_state_dict
        sys.exit("fixed file: key names differ from the expected legacy names")
    if not all(got[k].dtype == t.dtype and torch.equal(got[k], t) for k, t in expected.items()):
        sys.exit("fixed file: tensor contents differ")
    if fixed != original:
        sys.exit("fixed file: metadata besides the weights differs")


# --- measuring child processes ---------------------------------------------

@dataclass
class Command:
    label: str
    argv: list | None          # None: cannot run, `error` says why
    expect_exit: int = 0
    prepare: object = None     # untimed callable run before every timed run
    error: str | None = None
    seconds: list = field(default_factory=list)
    rss_kib: list = field(default_factory=list)

    def median_seconds(self):
        return None if self.error or not self.seconds else statistics.median(self.seconds)

    def peak_rss_mib(self):
        return None if self.error or not self.rss_kib else max(self.rss_kib) / 1024


# Installed packages run from cached bytecode; a machine that sets PYTHONDONTWRITEBYTECODE
# would otherwise time the compiling of an editable install's modules on every run.
CHILD_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def run_once(cmd):
    """Run cmd to completion; record wall seconds and that child's peak RSS (KiB)."""
    with tempfile.TemporaryFile() as output:  # a file, not a pipe: wait4 can't deadlock
        start = time.perf_counter()
        try:
            child = subprocess.Popen(cmd.argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                     env=CHILD_ENV)
        except OSError as exc:
            cmd.error = f"cannot start: {exc}"
            return
        # wait4 returns this one child's rusage; RUSAGE_CHILDREN deltas can't give a max.
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != cmd.expect_exit:
            output.seek(0)
            cmd.error = (f"exit {child.returncode}, expected {cmd.expect_exit}: {shlex.join(cmd.argv)[:160]}\n"
                         + output.read().decode(errors="replace")[-600:])
            return
    cmd.seconds.append(elapsed)
    cmd.rss_kib.append(usage.ru_maxrss)


def run_alternating(commands, rounds):
    """A, B, A, B, ... so drift (CPU clocks, page cache, neighbours) hits both alike.

    The first round warms the page cache and bytecode caches and is not counted.
    """
    for round_number in range(rounds + 1):
        for cmd in (c for c in commands if not c.error):
            if cmd.prepare:
                cmd.prepare()
                os.sync()  # write the fresh copy back now, not during the timed run
            run_once(cmd)
            if round_number == 0 and cmd.seconds:
                cmd.seconds.clear()
                cmd.rss_kib.clear()
    for cmd in commands:
        if cmd.error:
            print(f"  {cmd.label:<24} ERROR: {cmd.error.strip()}")
        else:
            print(f"  {cmd.label:<24} median {cmd.median_seconds():7.3f} s  "
                  f"peak RSS {cmd.peak_rss_mib():6.1f} MiB  ({len(cmd.seconds)} runs)")


def fresh_copy(src, dst):
    return lambda: shutil.copyfile(src, dst)


# --- targets -------------------------------------------------------------------

RESULTS = []  # (passed, verdict line)


def verdict(name, value, op, target, unit, detail=""):
    passes = {">=": lambda: value >= target, "<=": lambda: value <= target, "<": lambda: value < target}
    passed = value is not None and passes[op]()
    shown = "n/a" if value is None else f"{value:.2f}{unit}"
    line = f"{'PASS' if passed else 'FAIL'}  {name}: {detail}{shown} (target {op} {target}{unit})"
    RESULTS.append((passed, line))
    print(line + "\n")


def compare(name, numerator, denominator, op, target, rounds):
    """Alternate both commands; judge median(numerator) / median(denominator)."""
    print(f"[{name}]")
    run_alternating([numerator, denominator], rounds)
    a, b = numerator.median_seconds(), denominator.median_seconds()
    detail = "" if a is None or b is None else f"{numerator.label} {a:.3f} s / {denominator.label} {b:.3f} s = "
    verdict(name, a / b if detail else None, op, target, "x", detail)


def compare_check(torch_way, ours, small, large, many, rounds):
    compare("check 55 MB", torch_way("torch way", "check", small),
            ours("ours", "check", small, expect_exit=1), ">=", 15, rounds)
    compare("check 20 x 55 MB", torch_way("torch way", "check", *many),
            ours("ours", "check", *many, expect_exit=1), ">=", 10, rounds)
    compare("check 550 MB vs 55 MB", ours("ours 550 MB", "check", large, expect_exit=1),
            ours("ours 55 MB", "check", small, expect_exit=1), "<=", 1.5, rounds)


def resolve_cli(cli):
    """argv for our tool: look next to sys.executable (same venv) first, then PATH."""
    argv = shlex.split(cli)
    if os.sep not in argv[0]:
        beside = Path(sys.executable).parent / argv[0]
        found = str(beside) if beside.is_file() else shutil.which(argv[0])
        if not found:
            return None, (f"'{argv[0]}' is not installed next to {sys.executable} nor on PATH "
                          "(pip install -e . in this venv, or pass --cli)")
        argv[0] = found
    return argv, None


def package_size_bytes():
    where = subprocess.run([sys.executable, "-c", "import pth_legacy_keys, os; "
                            "print(os.path.dirname(pth_legacy_keys.__file__))"],
                           capture_output=True, text=True)
    if where.returncode != 0:
        print("  cannot import pth_legacy_keys:", where.stderr.strip().splitlines()[-1])
        return None
    root = Path(where.stdout.strip())
    return sum(p.stat().st_size for p in root.rglob("*")
               if p.is_file() and "__pycache__" not in p.relative_to(root).parts)


def run_torch_helper(*args):
    # Torch work runs in a child: bench.py itself must stay small, because on
    # Linux a child's ru_maxrss is never below its parent's peak RSS at spawn.
    return subprocess.run([sys.executable, __file__, "--internal", *map(str, args)]).returncode


def prepare_inputs(workdir):
    """Create the inputs once; later runs reuse them (names say what they hold)."""
    small, large = workdir / "rvc_v2_40k_fp16_parametrized.pth", workdir / "train_fp32_parametrized.pth"
    for kind, path in (("small", small), ("large", large)):
        if not path.exists():
            print(f"generating {path} ...", flush=True)
            if run_torch_helper("generate", kind, path):
                sys.exit(f"generating {path} failed")
    many = [workdir / "many" / f"model_{i:02d}.pth" for i in range(20)]
    many[0].parent.mkdir(exist_ok=True)
    for path in many:
        if not path.exists() or path.stat().st_mtime < small.stat().st_mtime:
            shutil.copyfile(small, path)
    print(f"inputs in {workdir}: {small.stat().st_size / 1e6:.1f} MB, "
          f"{large.stat().st_size / 1e6:.1f} MB, 20 x {small.stat().st_size / 1e6:.1f} MB\n")
    return small, large, many


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pth-legacy-keys-bench")
    parser.add_argument("--cli", default="pth-legacy-keys")
    parser.add_argument("--fix-only", action="store_true",
                        help="only fix's comparisons with file copies, its peak RSS and its output")
    parser.add_argument("--internal", nargs="+", help=argparse.SUPPRESS)
    return parser.parse_args()


def compare_fix(ours, torch_way, small, large, scratch, rounds, with_torch):
    """fix against the torch way and against file copies; returns {input: [its fix commands]}."""
    # fix rewrites in place: every run gets a fresh copy of the parametrized input.
    fixed = {small: scratch / "fix_ours.pth", large: scratch / "fix_ours_large.pth"}
    torch_fixed, copied = scratch / "fix_torch.pth", scratch / "copy.pth"
    fixes = {small: [], large: []}

    def fix(source):
        fixes[source].append(ours("ours fix", "fix", fixed[source], prepare=fresh_copy(source, fixed[source])))
        return fixes[source][-1]

    if with_torch:
        compare("fix 55 MB", torch_way("torch way", "fix", torch_fixed, prepare=fresh_copy(small, torch_fixed)),
                fix(small), ">=", 8, rounds)
    compare("fix 55 MB vs file copy", fix(small),
            Command("python copy", [sys.executable, "-c", COPY_SOURCE, str(small), str(copied)],
                    prepare=lambda: copied.unlink(missing_ok=True)), "<=", 1.5, rounds)

    def durable_copy(source, over_a_copy):
        argv = [sys.executable, "-c", DURABLE_COPY_SOURCE, str(source), str(copied)]
        if over_a_copy:
            return Command("durable copy", argv, prepare=fresh_copy(source, copied))
        return Command("durable copy", argv, prepare=lambda: copied.unlink(missing_ok=True))

    for size, source in (("55 MB", small), ("550 MB", large)):
        for over_a_copy, how in ((True, "over the file"), (False, "to a new name")):
            compare(f"fix {size} vs durable copy {how}", fix(source), durable_copy(source, over_a_copy),
                    "<=", 1.5, rounds)
    copied.unlink(missing_ok=True)
    for source, size in ((small, "55 MB"), (large, "550 MB")):
        rss = [cmd.peak_rss_mib() for cmd in fixes[source]]
        verdict(f"peak RSS of our fix, {size}", None if None in rss else max(rss), "<", 64, " MiB")
    return {source: (fixed[source], commands) for source, commands in fixes.items()}


def check_fix_outputs(ours_argv, fixes):
    """A fast fix that writes the wrong thing is worthless: check the last outputs."""
    print("[our fix output: same tensors and metadata under legacy names; check exits 0]")
    correct = not any(cmd.error for _, commands in fixes.values() for cmd in commands)
    for original, (fixed, _) in fixes.items():
        if correct:
            same = run_torch_helper("verify", original, fixed)
            recheck = subprocess.run(ours_argv + ["check", str(fixed)], capture_output=True).returncode
            print(f"  {fixed.name}: torch comparison exit {same}, ours check exit {recheck}")
            correct = same == 0 and recheck == 0
    RESULTS.append((correct, f"{'PASS' if correct else 'FAIL'}  fix output correct"))
    print(RESULTS[-1][1] + "\n")


def main():
    args = parse_arguments()
    if args.internal:  # torch-side helpers, see run_torch_helper
        action, *rest = args.internal
        return generate_checkpoint(*rest) if action == "generate" else verify_fix(*rest)

    args.workdir.mkdir(parents=True, exist_ok=True)
    small, large, many = prepare_inputs(args.workdir)
    torch_way_script = args.workdir / "torch_way.py"
    torch_way_script.write_text(TORCH_WAY_SOURCE)
    scratch = args.workdir / "scratch"
    scratch.mkdir(exist_ok=True)
    ours_argv, ours_error = resolve_cli(args.cli)
    if ours_error:
        print(f"ERROR: {ours_error}\nEvery comparison involving it will FAIL.\n")
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"note: a child's peak RSS reads at least this process's own peak, {floor:.1f} MiB\n")

    def ours(label, *cli_args, expect_exit=0, prepare=None):
        argv = ours_argv and ours_argv + [str(a) for a in cli_args]
        return Command(label, argv, expect_exit, prepare, error=ours_error and "not installed")

    def torch_way(label, mode, *paths, prepare=None):
        argv = [sys.executable, str(torch_way_script), mode, *map(str, paths)]
        return Command(label, argv, 1 if mode == "check" else 0, prepare)

    if not args.fix_only:
        compare_check(torch_way, ours, small, large, many, args.rounds)
    fixes = compare_fix(ours, torch_way, small, large, scratch, args.rounds, with_torch=not args.fix_only)
    check_fix_outputs(ours_argv, fixes)

    print("[installed package size]")
    size = package_size_bytes()
    verdict("package size", None if size is None else size / 1e6, "<", 1, " MB")

    failed = [line.split(":")[0][6:] for passed, line in RESULTS if not passed]
    print(f"SUMMARY: {len(RESULTS) - len(failed)}/{len(RESULTS)} targets passed"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
