"""Other Pythons, found as a user's machine offers them: on PATH, by `uv python find`, or among
pyenv's versions (where `pyenv root` says they are). Each candidate is asked its version, since a
pyenv shim on PATH answers only for the versions pyenv has made active."""

import glob
import os
import shutil
import subprocess


def find_python(version):
    """The real path of a Python `version` ("3.9"), or None."""
    for candidate in _candidates(version):
        asked = subprocess.run([candidate, "-c", "import sys; print(sys.executable); "
                                f"sys.exit(sys.version_info[:2] != {tuple(map(int, version.split('.')))})"],
                               capture_output=True, text=True, check=False)
        if asked.returncode == 0 and asked.stdout.strip():
            return asked.stdout.strip()  # the interpreter itself, not a shim
    return None


def _candidates(version):
    yield from filter(None, [shutil.which(f"python{version}")])
    uv = shutil.which("uv")
    if uv:
        found = subprocess.run([uv, "python", "find", version], capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout.strip():
            yield found.stdout.strip()
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False).stdout.strip()
        if root:
            yield from reversed(sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin",
                                                              f"python{version}"))))
