"""The command line: `pth-legacy-keys {check,fix} [PATH ...]`."""

import argparse
import sys

from . import __version__
from .discover import collect
from .engine import LFS_POINTER_CHOICES, fix, scan
from .rename import DIRECTIONS, LEGACY
from .report import exit_code, render_json, render_text

DESCRIPTION = """\
Keep PyTorch checkpoints loadable by software that expects legacy weight-norm keys
(X.weight_g / X.weight_v) rather than torch>=2.1's parametrized ones
(X.parametrizations.weight.original0 / original1). Never unpickles; never needs torch.
"""
EPILOG = """\
exit codes: 0 every file is in the target format (after fixing, for fix);
            1 check found keys to rename, or fix met a module it cannot convert;
            2 a file could not be read or was refused.
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="pth-legacy-keys", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{check,fix}", required=True)
    for name, help_text in (
        ("check", "report checkpoints whose keys are not in the target format (changes nothing)"),
        ("fix", "rename the keys in place; files with nothing to rename are not written"),
    ):
        command = commands.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_argument("paths", nargs="*", metavar="PATH",
                             help="files (any name) or folders (walked for *.pth, *.pt, *.ckpt); "
                                  "default: the tracked checkpoints of the current git repository")
        command.add_argument("--to", choices=DIRECTIONS, default=LEGACY,
                             help="the key names to keep (default: %(default)s)")
        command.add_argument("--output", choices=("text", "json"), default="text",
                             help="text lines, or one JSON document on stdout (default: %(default)s)")
        command.add_argument("--lfs-pointers", choices=LFS_POINTER_CHOICES, default="error",
                             help="a Git LFS pointer instead of a checkpoint: fail (exit 2) or warn "
                                  "(default: %(default)s)")
        volume = command.add_mutually_exclusive_group()
        volume.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", default=0,
                            help="only the files that need attention, no summary")
        volume.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity",
                            help="every file, every rename and the reason a file was skipped")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    examine = scan if args.command == "check" else fix
    reports = [examine(path, args.to, lfs_pointers=args.lfs_pointers) for path in collect(args.paths)]
    if args.output == "json":
        print(render_json(args.command, args.to, reports, __version__))
    else:
        text = render_text(args.command, reports, args.verbosity)
        if text:
            print(text)
    return exit_code(reports)


if __name__ == "__main__":
    sys.exit(main())
