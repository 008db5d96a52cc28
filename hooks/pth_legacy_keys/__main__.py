import sys

from .cli import main

# Guarded: worker processes started by --jobs import this module again under another name.
if __name__ == "__main__":
    sys.exit(main())
