"""The command line: `pth-legacy-keys {check,fix} [PATH ...]`."""

import argparse
import os
import signal
import sys
from functools import partial

from . import __version__
from .byte_source import is_url
from .discover import DiscoveryError, Selection, collect, read_path_list
from .engine import LFS_POINTER_CHOICES, fix, scan
from .rename import DIRECTIONS, FAMILIES, LEGACY
from .report import console_line, printable, summary, text_lines, write_inspections, write_json
from .status import Status, exit_code
from .verify import INSTALL_HINT

DESCRIPTION = """\
Keep PyTorch checkpoints loadable by software that expects legacy weight-norm keys
(X.weight_g / X.weight_v) rather than torch>=2.1's parametrized ones
(X.parametrizations.weight.original0 / original1), and likewise for spectral norm.
Never unpickles; needs no torch (only fix --verify loads files with torch).
"""
EPILOG = """\
exit codes: 0 every file is in the target format (after fixing, for fix); files that
              are not checkpoints are skipped;
            1 check found keys to rename, or a module cannot be converted;
            2 a file could not be read, is not a checkpoint, is a Git LFS pointer
              (unless --lfs-pointers skip) or was refused; a named folder or glob matched
              no checkpoint; a usage error; the output could not be written.
"""


class _Sized:
    """An argparse formatter told its width: argparse makes one for every add_argument and
    would work the width out with shutil, whose import (bz2, lzma) costs a hook run more than
    the rest of its command line."""

    def __init__(self, prog, **options):
        options.setdefault("width", _terminal_columns() - 2)  # argparse's own margin
        super().__init__(prog, **options)


class _HelpFormatter(_Sized, argparse.RawDescriptionHelpFormatter):
    pass


class _WrappingHelpFormatter(_Sized, argparse.HelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """A parser whose usage errors are console lines: the message quotes the user's argument, which
    a workflow may take from a pull request (`--only='##[error]x'`), and a CI log reads `##[`
    anywhere in a line as a command."""

    def error(self, message):
        super().error(console_line(message))


class _CommandParser(_Parser):
    """A subcommand's parser that stops at an argument it does not know, with its own usage: the
    top-level parser would report it under `pth-legacy-keys {check,fix,inspect} ...`."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return namespace, unknown


def _terminal_columns():
    """What shutil.get_terminal_size() gives argparse: $COLUMNS, the terminal's width, or 80."""
    try:
        columns = int(os.environ.get("COLUMNS", 0))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def build_parser():
    parser = _Parser(
        prog="pth-legacy-keys", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{check,fix,inspect}", required=True,
                                     parser_class=_CommandParser)
    for name, help_text in (
        ("check", "report checkpoints whose keys are not in the target format (changes nothing)"),
        ("fix", "rename the keys in place; files with nothing to rename are not written"),
    ):
        command = commands.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                                      formatter_class=_HelpFormatter)
        command.add_argument("paths", nargs="*", metavar="PATH",
                             help="files (any name), folders (walked for *.pth, *.pt, *.ckpt, *.safetensors) or globs; "
                                  "default: the tracked checkpoints of the current git repository")
        command.add_argument("--files-from", metavar="FILE",
                             help="more PATHs, one per line, from FILE (- for standard input)")
        command.add_argument("--changed-since", metavar="REV",
                             help="only the files changed between REV and HEAD (as git diff REV...HEAD)")
        command.add_argument("--to", choices=DIRECTIONS, default=LEGACY,
                             help="the key names to keep (default: %(default)s)")
        command.add_argument("--only", type=_families, metavar="FAMILY[,FAMILY]",
                             help="the parametrizations to convert: weight-norm, spectral-norm, or both "
                                  "(comma-separated); default: both with --to legacy, weight-norm with "
                                  "--to parametrized (nothing reads legacy spectral-norm names into a "
                                  "parametrized module, and libraries keep them)")
        command.add_argument("--output", choices=("text", "json", "github"), default="text",
                             help="text lines; one JSON document; or GitHub Actions annotations, job "
                                  "summary and step outputs (default: %(default)s)")
        command.add_argument("--report", metavar="FILE",
                             help="also write the JSON document to FILE")
        command.add_argument("-j", "--jobs", type=_positive_int, default=os.cpu_count() or 1, metavar="N",
                             help="examine files in N processes (default: the number of cores, %(default)s); "
                                  "the output keeps the files' order")
        command.add_argument("--lfs-pointers", choices=LFS_POINTER_CHOICES, default="error",
                             help="a Git LFS pointer instead of a checkpoint: fail (exit 2), warn, or read "
                                  "its object from the repository's LFS server by ranges (remote; fix "
                                  "downloads only the objects that need a fix) (default: %(default)s)")
        command.add_argument("--hook", action="store_true",
                             help="run as a pre-commit hook: the file names follow --, so that none is read as "
                                  "an option, and only the options a hook needs are accepted")
        if name == "fix":
            command.add_argument("--verify", action="store_true",
                                 help="before replacing a file, load the original and the rewrite with torch "
                                      "(weights_only) and require every tensor bit-equal under the renames; "
                                      f"needs torch: {INSTALL_HINT}")
        volume = command.add_mutually_exclusive_group()
        volume.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", default=0,
                            help="only the files that need attention, no summary")
        volume.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity",
                            help="every file, every rename and the reason a file was skipped")
    _add_inspect(commands)
    return parser


def _add_inspect(commands):
    inspect = commands.add_parser(
        "inspect", help="describe checkpoints and say whether legacy torch code (and, for RVC files, legacy "
                        "RVC software) will load them",
        formatter_class=_WrappingHelpFormatter,
        description="Describe each checkpoint (container, pickle, tensors, key style, kind, metadata by the tool "
                    "that wrote it), give it check's status word, and say whether legacy torch code will load "
                    "it (and, for RVC and Applio files, legacy RVC loaders), and why. Changes nothing; exit 2 "
                    "when a file cannot be read, is a Git LFS pointer or was refused, 0 otherwise.")
    inspect.add_argument("paths", nargs="*", metavar="PATH", help="as for check")
    inspect.add_argument("--files-from", metavar="FILE", help="as for check")
    inspect.add_argument("--output", choices=("text", "json"), default="text",
                         help="a block of lines per file, or one JSON document (default: %(default)s)")
    inspect.add_argument("--lfs-pointers", choices=LFS_POINTER_CHOICES, default="error",
                         help="as for check (default: %(default)s)")


PARALLEL_FROM = 8  # files: below this, starting worker processes costs more than it saves
REMOTE_THREADS = 16  # files read over the network at once


def _families(text):
    """`--only`'s comma-separated parametrizations, in FAMILIES' order."""
    named = [name.strip() for name in text.split(",")]
    unknown = [name for name in named if name not in FAMILIES]
    if unknown or not named:
        raise argparse.ArgumentTypeError(f"{unknown[0] if unknown else text!r} is not one of "
                                         f"{', '.join(FAMILIES)} (comma-separated)")
    return tuple(family for family in FAMILIES if family in named)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def examine_all(examine, files, jobs, remote=False):
    """Yield `examine(path)` for `files`, in their order; in `jobs` processes when there are
    enough files, or, when some are read over the network, in REMOTE_THREADS threads (they
    mostly wait)."""
    if remote and len(files) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(REMOTE_THREADS, len(files))) as pool:
            yield from pool.map(examine, files)
        return
    context = _worker_context() if jobs > 1 and len(files) >= PARALLEL_FROM else None
    if context is None:
        for path in files:
            yield examine(path)
        return
    from concurrent.futures import ProcessPoolExecutor

    workers = min(jobs, len(files))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(examine, files, chunksize=max(1, len(files) // (workers * 4)))


def _worker_context():
    """How to start worker processes that cannot import the examined folder's code, or None.

    A spawned worker is `python -c ...`, whose sys.path starts with the current folder: a
    repository's `multiprocessing/__init__.py` would run in it before any of ours. A forked
    worker imports nothing; where there is no fork (Windows), Python 3.11's PYTHONSAFEPATH keeps
    the folder off sys.path; on older Pythons there, the files are examined in this process, as
    they are where there are no processes at all (Pyodide).
    """
    try:
        import multiprocessing
        import multiprocessing.synchronize  # noqa: F401  (what a pool needs: Pyodide has neither)
    except (ImportError, NotImplementedError):
        return None
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    if sys.version_info >= (3, 11):
        os.environ["PYTHONSAFEPATH"] = "1"  # inherited by the workers, which read it at start-up
        return multiprocessing.get_context("spawn")
    return None


def main(argv=None):
    _survive_any_name()
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader of our output went away (`| head`): stop without a traceback, and keep
        # Python's own flush at exit from failing again on the closed pipe.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 2


# What a pre-commit hook's `args:` may set: none of these names a file to write, a list of files
# or a revision, so even a file name read as an option could only make the hook fail.
HOOK_OPTIONS = {"to", "only", "lfs_pointers", "jobs", "verbosity", "verify"}


def _complain(problem):
    """One line on standard error. Its text may hold a file's name or git's message: never a command."""
    print(console_line(f"pth-legacy-keys: {problem}"), file=sys.stderr)


def _survive_any_name():
    """Write what the console cannot encode (a file's name on a cp1252 Windows console) as
    escapes: a crash after fix has rewritten files would hide what it did."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass  # not a text file we may reconfigure (a test's StringIO already takes anything)


def _main(argv):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = _usage_problem(parser, args, argv)
    if problem:
        _complain(problem)
        return 2
    _write_errors_instead_of_the_file_size_signal()
    try:
        selection = _files(args)
    except DiscoveryError as exc:
        _complain(exc)
        if args.output == "github":
            from .github import discovery_failed

            print(discovery_failed(str(exc)))
        return 2
    files = selection.files
    lfs_objects = None
    if args.lfs_pointers == "remote":
        from .lfs_remote import locate  # one Batch API request for up to 100 pointers

        lfs_objects = locate(files)
    remote = bool(lfs_objects) or any(map(is_url, files))
    if args.command == "inspect":
        return _inspect(files, args.output, args.lfs_pointers, lfs_objects, remote)
    options = {"to": args.to, "lfs_pointers": args.lfs_pointers, "families": args.only,
               "lfs_objects": lfs_objects}
    if args.command == "fix":
        options["verify"] = args.verify
    examine = partial(scan if args.command == "check" else fix, **options)
    reports = examine_all(examine, files, args.jobs, remote)
    if args.output == "text" and not args.report:
        return _print_text(args, reports, selection)
    return _print_all(args, list(reports), selection)  # the JSON document and GitHub's summary need them all at once


def _usage_problem(parser, args, argv):
    """Why these arguments cannot run (a usage error exits here through argparse), or None."""
    for name, value in vars(args).items():
        if name != "paths" and (isinstance(value, list) or value == "--"):
            # Python 3.9-3.12's argparse turns `--report=--` into an empty list, 3.13's into "--":
            # one meaning on every Python, and never a file named `--`.
            parser.error(f"argument --{name.replace('_', '-')}: expected a value, not --")
    if getattr(args, "hook", False):
        problem = _not_a_hook_invocation(parser, args, argv)
        if problem:
            return problem
    if getattr(args, "verify", False):
        from .verify import torch_missing

        missing = torch_missing()
        if missing and args.hook:  # the hook's environment is pre-commit's, not the user's
            missing += "; as a hook, add `additional_dependencies: [torch, safetensors]`"
        return missing
    return None


def _write_errors_instead_of_the_file_size_signal():
    """Past a file-size limit, write() should fail with EFBIG (and the fix be abandoned cleanly)
    instead of the signal killing us and leaving a temporary file behind."""
    if hasattr(signal, "SIGXFSZ"):
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        except ValueError:
            pass  # main() called from a thread: signals belong to the main thread


def _files(args):
    """The files to examine, from the paths, the path list and the repository."""
    paths = list(args.paths) + (read_path_list(args.files_from) if args.files_from else [])
    if args.files_from and not paths:
        return Selection([], 0, [])  # an empty list means nothing to examine, not "the whole repository"
    return collect(paths, changed_since=getattr(args, "changed_since", None), literal=getattr(args, "hook", False))


def _print_all(args, reports, selection):
    """The JSON document or GitHub's output (and the report file); what could not be written is
    said after the results, since fix may already have rewritten files."""
    unwritten = [_write_report(args, reports)] if args.report else []
    if args.output == "text":
        code = _print_text(args, reports, selection)
    elif args.output == "json":
        write_json(sys.stdout, args.command, args.to, reports, __version__)
        print()
        code = exit_code([report.status for report in reports])
    else:
        from .github import publish

        log, problems = publish(args.command, args.to, reports, args.report, families=args.only,
                                lfs_pointers=args.lfs_pointers, notes=selection.notes())
        print(log)
        unwritten += problems
        code = exit_code([report.status for report in reports])
    for problem in filter(None, unwritten):
        _complain(problem)
        code = 2
    return code


def _write_report(args, reports):
    """Write the JSON report; return why it could not be written, or None."""
    from .symlinks import describe, link_out_of
    from .writer import write_new_file

    escape = link_out_of(os.path.dirname(os.path.abspath(args.report)))
    if escape:
        return f"cannot write the report {args.report}: {describe(escape)}"

    def fill(f):
        write_json(f, args.command, args.to, reports, __version__)
        f.write("\n")

    try:
        write_new_file(args.report, fill)
    except OSError as exc:
        return f"cannot write the report {args.report}: {exc.strerror or exc}"
    return None


def _not_a_hook_invocation(parser, args, argv):
    """Why `argv` is not safe to run as a hook, or None.

    pre-commit and prek append the staged file names after the hook's `entry` and `args` with no
    separator of their own, so a file named `--report=x.pth` would be an option. The manifest's
    default `args: [--]` puts every name after `--`; a user's own `args:` must end with it too.
    """
    if "--" not in argv:
        return ("as a hook, the file names must follow --: end the hook's args with it, "
                "as in `args: [--to, parametrized, --]`")
    defaults = parser.parse_args([args.command])
    given = [name for name, value in vars(args).items()
             if name not in HOOK_OPTIONS | {"command", "hook", "paths"} and value != getattr(defaults, name)]
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        return f"{options}: not an option of the hook (pre-commit names the files to examine)"
    return None


def _inspect(files, output, lfs_pointers, lfs_objects, remote):
    from .inspection import inspect_file

    inspections = list(examine_all(partial(inspect_file, lfs_pointers=lfs_pointers, lfs_objects=lfs_objects),
                                   files, 1, remote))
    if output == "json":
        write_inspections(sys.stdout, inspections, __version__)
        print()
    else:
        for i, inspection in enumerate(inspections):
            if i:
                print()
            for line in inspection.text_lines():
                print(console_line(line))
    return max((inspection.exit_code for inspection in inspections), default=0)


def _print_text(args, reports, selection):
    """Print each file's lines as soon as it is examined, keeping only its status (and the names
    of files to fix): memory stays flat however many files there are. A failing check ends with
    the command that fixes it."""
    if args.verbosity > 0:
        for folder, reason in selection.left_out:
            print(console_line(printable(f"{folder}: left out: {reason} (name it to examine it)")))
    statuses, to_fix, objects_to_fix = [], [], False
    for report in reports:
        for line in text_lines(report, args.verbosity):
            print(console_line(line))
        statuses.append(report.status)
        if report.status == Status.NEEDS_FIX:
            to_fix.append(report.path)
            objects_to_fix = objects_to_fix or report.read_from_lfs
    lfs_pointers = args.lfs_pointers if objects_to_fix else "error"  # what the fix needs, not what the check took
    if args.verbosity >= 0:
        print(summary(args.command, statuses))
        for note in selection.notes():
            print(note)
    if to_fix:
        from .commands import HINT_NAMES, fix_hint

        # Only a hint of more names than it shows repeats the selection (and asks git for a commit).
        repeated = _selection_arguments(args) if len(to_fix) > HINT_NAMES and not args.hook else None
        for line in fix_hint(to_fix, args.to, args.only, lfs_pointers, args.hook, repeated):
            print(console_line(line))
    return exit_code(statuses)


def _selection_arguments(args):
    """(options, paths): how the user chose the files, for a command that chooses them again;
    None when that cannot be repeated (a list read from standard input or another stream). The
    revision is the commit it named: `HEAD~1` would name another after the next commit."""
    options = []
    if args.files_from is not None:
        if args.files_from == "-" or not os.path.isfile(args.files_from):
            return None
        options.append(f"--files-from={args.files_from}")  # one word: a name like `-l.txt` stays a value
    if args.changed_since is not None:
        from .discover import commit_of  # only here: the hint of a failing check needs it

        options.append(f"--changed-since={commit_of(args.changed_since)}")
    return options, list(args.paths)


if __name__ == "__main__":
    sys.exit(main())
