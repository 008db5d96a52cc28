// Run pytest inside Pyodide (Python 3.14 in WebAssembly, as the web page runs it) under Node:
//   node pyodide_pytest.mjs PYODIDE_DIR WHEELS_DIR REPO [pytest arguments...]
// The wheels (pytest and what it needs, all pure Python) are unpacked onto sys.path; the checkout
// is mounted at /host/repo, so the tests and the package are read from it. Exits with pytest's code.
import { pathToFileURL } from "node:url";

const [pyodideDir, wheels, repo, ...args] = process.argv.slice(2);
const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href);
const pyodide = await loadPyodide({ indexURL: `${pyodideDir}/` });
for (const [from, to] of [[wheels, "/host/wheels"], [repo, "/host/repo"]]) {
  pyodide.FS.mkdirTree(to);
  pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: from }, to);
}
pyodide.globals.set("ARGS", pyodide.toPy(args));
const code = pyodide.runPython(`
import glob, os, sys, zipfile
site = "/lib/test-site"
os.makedirs(site, exist_ok=True)
for wheel in glob.glob("/host/wheels/*.whl"):
    zipfile.ZipFile(wheel).extractall(site)
sys.path[:0] = [site, "/host/repo/hooks"]
os.chdir("/tmp")
import pytest
int(pytest.main(list(ARGS)))
`);
process.exit(code);
