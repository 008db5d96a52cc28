"""Assemble web/dist/: the page, the Pyodide files it loads, and this package's own sources.

    cd web && npm ci && python build.py && python -m http.server -d dist 8000

Everything the page needs is served from dist/ itself (no CDN): the page loads Pyodide and the
package once, and examining or fixing a file makes no network request at all.
"""

import json
import shutil
import sys
import zipfile
from pathlib import Path

WEB = Path(__file__).resolve().parent
ROOT = WEB.parent
PACKAGE = ROOT / "hooks" / "pth_legacy_keys"
PYODIDE = WEB / "node_modules" / "pyodide"
DIST = WEB / "dist"
PAGE_FILES = ("index.html", "app.js", "worker.js", "style.css")
# What loadPyodide() fetches from its indexURL: the module, the Emscripten glue, the
# WebAssembly binary, the standard library and the package index (read even when no
# package is loaded).
PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.js", "pyodide.asm.wasm",
                 "python_stdlib.zip", "pyodide-lock.json")
REQUIRED_PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json")
PACKAGE_ZIP = "pth_legacy_keys.zip"


def main():
    if not (PYODIDE / "package.json").is_file():
        sys.exit(f"{PYODIDE} is missing: run `npm ci` in {WEB} first")
    missing = [name for name in REQUIRED_PYODIDE_FILES if not (PYODIDE / name).is_file()]
    if missing or not any((PYODIDE / name).is_file() for name in ("pyodide.asm.mjs", "pyodide.asm.js")):
        sys.exit(f"{PYODIDE} lacks {', '.join(missing) or 'pyodide.asm.mjs / pyodide.asm.js'}")
    if DIST.exists():
        shutil.rmtree(DIST)
    (DIST / "pyodide").mkdir(parents=True)
    for name in PAGE_FILES:
        shutil.copyfile(WEB / name, DIST / name)
    copied = []
    for name in PYODIDE_FILES:
        if (PYODIDE / name).is_file():
            shutil.copyfile(PYODIDE / name, DIST / "pyodide" / name)
            copied.append(name)
    sources = sorted(PACKAGE.glob("*.py"))
    with zipfile.ZipFile(DIST / PACKAGE_ZIP, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in sources:
            info = zipfile.ZipInfo(f"pth_legacy_keys/{source.name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes())
    version = json.loads((PYODIDE / "package.json").read_text())["version"]
    (DIST / "build.json").write_text(json.dumps({
        "pyodide": version, "pyodide_files": copied, "package_files": [s.name for s in sources]}, indent=2) + "\n")
    print(f"built {DIST}: the page, Pyodide {version} ({', '.join(copied)}), "
          f"{len(sources)} package modules in {PACKAGE_ZIP}")


if __name__ == "__main__":
    main()
