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
  peak RSS of our fix   55 MB and 550 MB           < 64 MiB each
  installed package size (without __pycache__)     < 1 MB

It also checks that our fix produced the right file.  Exit 0 if every target
passes, 1 otherwise.
"""
import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MIB = 2**20
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
    for i in range(6):
        attn = f"enc_p.encoder.attn_layers.{i}"
        for name in "qkvo":
            conv(f"{attn}.conv_{name}", (hidden, hidden, 1))
        keys += [(f"{attn}.emb_rel_k", (1, 21, hidden // 2)), (f"{attn}.emb_rel_v", (1, 21, hidden // 2))]
        keys += [(f"enc_p.encoder.norm_layers_1.{i}.{n}", (hidden,)) for n in ("gamma", "beta")]
        conv(f"enc_p.encoder.ffn_layers.{i}.conv_1", (ffn, hidden, 3))
        conv(f"enc_p.encoder.ffn_layers.{i}.conv_2", (hidden, ffn, 3))
        keys += [(f"enc_p.encoder.norm_layers_2.{i}.{n}", (hidden,)) for n in ("gamma", "beta")]
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
        weight_norm(f"{flow}.enc.cond_layer", (2 * hidden * 3, gin, 1))
        for j in range(3):
            weight_norm(f"{flow}.enc.in_layers.{j}", (2 * hidden, hidden, 5))
        for j in range(3):
            weight_norm(f"{flow}.enc.res_skip_layers.{j}", (2 * hidden if j < 2 else hidden, hidden, 1))
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
    if list(got) != list(expected):
        sys.exit("fixed file: key names/order differ from the expected legacy names")
    if not all(got[k].dtype == t.dtype and torch.equal(got[k], t) for k, t in expected.items()):
        sys.exit("fixed file: tensor contents differ")
    if fixed != original:
        sys.exit("fixed file: metadata besides the weights differs")


# --- measuring child processes -----------------------------------------------

class BenchError(Exception):
    pass


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
        return statistics.median(self.seconds) if self.seconds and not self.error else None

    def peak_rss_mib(self):
        return max(self.rss_kib) / 1024 if self.rss_kib and not self.error else None


def run_once(argv, expect_exit):
    """Run argv to completion; return (wall seconds, the child's peak RSS in KiB)."""
    with tempfile.TemporaryFile() as output:  # a file, not a pipe: wait4 can't deadlock
        start = time.perf_counter()
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
        except OSError as exc:
            raise BenchError(f"cannot start {argv[0]}: {exc}") from exc
        # wait4 gives this one child's rusage; RUSAGE_CHILDREN would mix all children.
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != expect_exit:
            output.seek(0)
            tail = output.read().decode(errors="replace")[-800:]
            raise BenchError(f"exit {child.returncode} (expected {expect_exit}): "
                             f"{shlex.join(argv)[:200]}\n{tail}")
    return elapsed, usage.ru_maxrss


def run_alternating(commands, rounds):
    """A, B, A, B, ... so drift (thermal, page cache, neighbours) hits both alike."""
    for _ in range(rounds):
        for cmd in commands:
            if cmd.error:
                continue
            if cmd.prepare:
                cmd.prepare()
                os.sync()  # flush the fresh copy now, not during the timed run
            try:
                elapsed, rss = run_once(cmd.argv, cmd.expect_exit)
            except BenchError as exc:
                cmd.error = str(exc)
                continue
            cmd.seconds.append(elapsed)
            cmd.rss_kib.append(rss)
    for cmd in commands:
        if cmd.error:
            print(f"  {cmd.label:<28} ERROR: {cmd.error.strip()}")
        else:
            print(f"  {cmd.label:<28} median {cmd.median_seconds():8.3f} s   "
                  f"peak RSS {cmd.peak_rss_mib():7.1f} MiB   ({len(cmd.seconds)} runs)")


def fresh_copy(src, dst):
    return lambda: shutil.copyfile(src, dst)


# --- targets --------------------------------------------------------------------

RESULTS = []  # (passed, line)


def report(name, value, op, target, unit=""):
    passed = value is not None and (value >= target if op == ">=" else
                                    value <= target if op == "<=" else value < target)
    shown = "n/a" if value is None else f"{value:.2f}{unit}"
    line = f"{'PASS' if passed else 'FAIL'}  {name}: {shown} (target {op} {target}{unit})"
    RESULTS.append((passed, line))
    print(line + "\n")


def ratio(numerator, denominator):
    a, b = numerator.median_seconds(), denominator.median_seconds()
    return a / b if a is not None and b else None


def resolve_cli(cli):
    """argv for our tool: look next to sys.executable (same venv) first, then PATH."""
    argv = shlex.split(cli)
    if os.sep not in argv[0]:
        beside = Path(sys.executable).parent / argv[0]
        found = str(beside) if beside.is_file() else shutil.which(argv[0])
        if not found:
            return None, (f"'{argv[0]}' not found next to {sys.executable} nor on PATH; "
                          "install the project (pip install -e .) or pass --cli")
        argv[0] = found
    return argv, None


def package_size_bytes():
    where = subprocess.run([sys.executable, "-c", "import pth_legacy_keys, os; "
                            "print(os.path.dirname(pth_legacy_keys.__file__))"],
                           capture_output=True, text=True)
    if where.returncode != 0:
        print("  cannot import pth_legacy_keys:", where.stderr.strip().splitlines()[-1:])
        return None
    root = Path(where.stdout.strip())
    return sum(p.stat().st_size for p in root.rglob("*")
               if p.is_file() and "__pycache__" not in p.relative_to(root).parts)


def prepare_inputs(workdir):
    """Create the inputs once; later runs reuse them (names say what they hold)."""
    small, large = workdir / "rvc_v2_40k_fp16_parametrized.pth", workdir / "train_fp32_parametrized.pth"
    for kind, path in (("small", small), ("large", large)):
        if not path.exists():
            print(f"generating {path} ...", flush=True)
            # In a child: bench.py must stay small, because Linux reports the
            # parent's peak RSS as a floor for every child's ru_maxrss.
            subprocess.run([sys.executable, __file__, "--internal", "generate", kind, str(path)],
                           check=True)
    many = [workdir / "many" / f"model_{i:02d}.pth" for i in range(20)]
    many[0].parent.mkdir(exist_ok=True)
    for path in many:
        if not path.exists() or path.stat().st_size != small.stat().st_size:
            shutil.copyfile(small, path)
    print(f"inputs: {small.stat().st_size / 1e6:.1f} MB, {large.stat().st_size / 1e6:.1f} MB, "
          f"20 x {small.stat().st_size / 1e6:.1f} MB in {workdir}\n")
    return small, large, many


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pth-legacy-keys-bench")
    parser.add_argument("--cli", default="pth-legacy-keys")
    parser.add_argument("--internal", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.internal:  # torch-side helpers, run as children of the benchmark
        action, *rest = args.internal
        return generate_checkpoint(*rest) if action == "generate" else verify_fix(*rest)

    args.workdir.mkdir(parents=True, exist_ok=True)
    small, large, many = prepare_inputs(args.workdir)
    torch_way_script = args.workdir / "torch_way.py"
    torch_way_script.write_text(TORCH_WAY_SOURCE)
    ours_argv, ours_error = resolve_cli(args.cli)
    scratch = args.workdir / "scratch"
    scratch.mkdir(exist_ok=True)

    def ours(label, *cli_args, expect_exit=0, prepare=None):
        argv = ours_argv + list(cli_args) if ours_argv else None
        return Command(label, argv, expect_exit, prepare, error=ours_error)

    def torch_way(label, mode, *paths, prepare=None):
        argv = [sys.executable, str(torch_way_script), mode, *map(str, paths)]
        return Command(label, argv, 1 if mode == "check" else 0, prepare)

    print("[check one 55 MB model]")
    a, b = ours("ours check", "check", small, expect_exit=1), torch_way("torch way check", "check", small)
    run_alternating([a, b], args.rounds)
    report("check 55 MB, torch way / ours", ratio(b, a), ">=", 15, "x")

    print("[check 20 x 55 MB in one invocation]")
    a, b = ours("ours check x20", "check", *many, expect_exit=1), torch_way("torch way check x20", "check", *many)
    run_alternating([a, b], args.rounds)
    report("check 20 x 55 MB, torch way / ours", ratio(b, a), ">=", 10, "x")

    print("[check 550 MB vs 55 MB, both ours]")
    a, b = ours("ours check 550 MB", "check", large, expect_exit=1), ours("ours check 55 MB", "check", small, expect_exit=1)
    run_alternating([a, b], args.rounds)
    report("check 550 MB / check 55 MB (ours)", ratio(a, b), "<=", 1.5, "x")

    ours_fixed, torch_fixed, copied = scratch / "fix_ours.pth", scratch / "fix_torch.pth", scratch / "copy.pth"
    print("[fix one 55 MB model]")
    a = ours("ours fix", "fix", ours_fixed, prepare=fresh_copy(small, ours_fixed))
    b = torch_way("torch way fix", "fix", torch_fixed, prepare=fresh_copy(small, torch_fixed))
    run_alternating([a, b], args.rounds)
    report("fix 55 MB, torch way / ours", ratio(b, a), ">=", 8, "x")

    print("[fix 55 MB vs copying the file in a Python process]")
    c = ours("ours fix", "fix", ours_fixed, prepare=fresh_copy(small, ours_fixed))
    d = Command("python shutil.copyfile", [sys.executable, "-c", COPY_SOURCE, str(small), str(copied)],
                prepare=lambda: copied.unlink(missing_ok=True))
    run_alternating([c, d], args.rounds)
    report("fix 55 MB / copy 55 MB", ratio(c, d), "<=", 1.5, "x")

    print("[fix 550 MB, ours]")
    large_fixed = scratch / "fix_ours_large.pth"
    e = ours("ours fix 550 MB", "fix", large_fixed, prepare=fresh_copy(large, large_fixed))
    run_alternating([e], args.rounds)
    rss_55 = [r for r in (a.peak_rss_mib(), c.peak_rss_mib()) if r is not None]
    report("peak RSS, our fix of 55 MB", max(rss_55) if len(rss_55) == 2 else None, "<", 64, " MiB")
    report("peak RSS, our fix of 550 MB", e.peak_rss_mib(), "<", 64, " MiB")

    print("[our fix produced the right files]")
    verified = ours_argv is not None and not (a.error or e.error)
    for original, fixed in ((small, ours_fixed), (large, large_fixed)):
        if verified:
            checked = subprocess.run([sys.executable, __file__, "--internal", "verify", str(original), str(fixed)])
            recheck = subprocess.run(ours_argv + ["check", str(fixed)], capture_output=True)
            verified = checked.returncode == 0 and recheck.returncode == 0
            print(f"  {fixed.name}: torch comparison exit {checked.returncode}, ours check exit {recheck.returncode}")
    RESULTS.append((verified, f"{'PASS' if verified else 'FAIL'}  fixed files load in torch with legacy names"))
    print(RESULTS[-1][1] + "\n")

    print("[installed package size]")
    size = package_size_bytes()
    report("pth_legacy_keys package size", None if size is None else size / 1e6, "<", 1, " MB")

    failed = [line for passed, line in RESULTS if not passed]
    print(f"SUMMARY: {len(RESULTS) - len(failed)}/{len(RESULTS)} targets passed"
          + (f"; failed: {'; '.join(line[6:].split(':')[0] for line in failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
