// The Web Worker that runs pth-legacy-keys in Pyodide, so the page never freezes.
//
// Everything is loaded once, up front, from files served beside the page (never a CDN):
// Pyodide itself and the package's sources (pth_legacy_keys.zip, made by build.py). After
// that, examining and fixing a file makes no network request: a dropped File is mounted
// with WORKERFS, so Python reads it synchronously, a slice at a time, through
// File.slice + FileReaderSync, and the whole file is never copied into WebAssembly memory.
//
// Messages in:  {type: "examine", id, job, file, to}
// Messages out: {type: "progress", text}
//               {type: "ready", version, pyodide}
//               {type: "failed", text}                 (Pyodide could not load)
//               {type: "result", id, job, to, check, fix, pieces}
//                 check:  browser.check()'s dict (status, line, inspect, inspect_lines ...)
//                 fix:    null, or {status, line, reason} of the planned fix
//                 pieces: null, or [{bytes: Uint8Array} | {offset, length}] for the download
//               {type: "error", id, job, text}              (an error in the page's own code)

import { loadPyodide } from "./pyodide/pyodide.mjs";

const PACKAGE_DIR = "/lib/pth-legacy-keys";
const INPUT_DIR = "/input";

let pyodide = null;
let examineFile = null;

function post(message, transfer) {
  self.postMessage(message, transfer || []);
}

const ready = (async () => {
  post({ type: "progress", text: "Loading Python (Pyodide, about 13 MB) …" });
  pyodide = await loadPyodide({
    indexURL: new URL("./pyodide/", import.meta.url).href,
    stdout: () => {},
    stderr: () => {},
  });
  post({ type: "progress", text: "Loading pth-legacy-keys …" });
  const response = await fetch(new URL("./pth_legacy_keys.zip", import.meta.url));
  if (!response.ok) {
    throw new Error(`pth_legacy_keys.zip: HTTP ${response.status}`);
  }
  pyodide.unpackArchive(await response.arrayBuffer(), "zip", { extractDir: PACKAGE_DIR });
  pyodide.FS.mkdirTree(INPUT_DIR);
  // Import everything a check and a fix use now, so that nothing is loaded later.
  pyodide.runPython(`
import sys
# No sockets in here, whatever a file's name says: Pyodide's sockets would be WebSockets, and a
# page that promises to send nothing must not be able to open one (browser.py reads only local files).
for blocked in ("socket", "_socket", "ssl", "_ssl"):
    sys.modules[blocked] = None
sys.path.insert(0, ${JSON.stringify(PACKAGE_DIR)})
import json, os
import pth_legacy_keys
from pth_legacy_keys import browser, inspection, engine, safetensors_format, zip_format, pre16_format

def page_examine(folder, name, to):
    """check, then (for a file that needs a fix) the checked plan: (check's JSON, fix's JSON, pieces)."""
    os.chdir(folder)  # the report names the file as the person knows it, not by its mount point
    try:
        checked = browser.check(name, to)
        fixed, pieces = None, None
        if checked["status"] == "needs-fix":
            report, planned = browser.plan_fix(name, to)
            fixed = {"status": str(report.status), "line": report.line(), "verdict": report.verdict(),
                     "reason": report.reason}
            pieces = planned
        return json.dumps(checked), json.dumps(fixed), pieces
    finally:
        os.chdir("/")
`);
  examineFile = pyodide.globals.get("page_examine");
  self.pyodide = pyodide; // for a test or a console: its heap size, its version
  const version = pyodide.runPython("pth_legacy_keys.__version__");
  post({ type: "ready", version, pyodide: pyodide.version });
})();

ready.catch((error) => {
  post({ type: "failed", text: String(error && error.message ? error.message : error) });
});

// Each file is examined in turn: one Python, one file at a time.
let queue = Promise.resolve();

self.onmessage = (event) => {
  const message = event.data;
  if (message.type !== "examine") {
    return;
  }
  queue = queue.then(() => examine(message)).catch(() => {});
};

async function examine({ id, job, file, to }) {
  try {
    await ready;
  } catch {
    return; // "failed" was posted
  }
  const folder = `${INPUT_DIR}/${id}`;
  let mounted = false;
  try {
    post({ type: "progress", id, text: `Examining ${file.name} …` });
    pyodide.FS.mkdirTree(folder);
    pyodide.FS.mount(pyodide.FS.filesystems.WORKERFS, { files: [file] }, folder);
    mounted = true;
    const result = examineFile(folder, file.name, to);
    let pieces = null;
    let checkJson, fixJson;
    try {
      checkJson = result.get(0);
      fixJson = result.get(1);
      const planned = result.get(2);
      if (planned !== undefined && planned !== null) {
        pieces = piecesOf(planned);
        planned.destroy();
      }
    } finally {
      result.destroy();
    }
    const transfer = pieces ? pieces.filter((p) => p.bytes).map((p) => p.bytes.buffer) : [];
    post({ type: "result", id, job, to, check: JSON.parse(checkJson), fix: JSON.parse(fixJson), pieces }, transfer);
  } catch (error) {
    post({ type: "error", id, job, text: String(error && error.message ? error.message : error) });
  } finally {
    if (mounted) {
      try {
        pyodide.FS.unmount(folder);
        pyodide.FS.rmdir(folder);
      } catch {
        // nothing to tidy
      }
    }
  }
}

// browser.fix_plan's pieces as plain JavaScript: new bytes copied out of WebAssembly memory
// (they are small: a pickle, a header, zip framing), ranges as numbers.
function piecesOf(planned) {
  const pieces = [];
  for (const piece of planned) {
    try {
      if (piece.has("bytes")) {
        const data = piece.get("bytes");
        let bytes = data;
        if (!(data instanceof Uint8Array)) {
          bytes = data.toJs();
          data.destroy();
        }
        pieces.push({ bytes: new Uint8Array(bytes) }); // its own buffer, transferred to the page
      } else {
        pieces.push({ offset: piece.get("offset"), length: piece.get("length") });
      }
    } finally {
      piece.destroy();
    }
  }
  return pieces;
}
