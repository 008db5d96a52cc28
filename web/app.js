// The page: picks and drops files, shows what the worker found, and builds each download
// as new Blob(parts) from the new bytes and slices of the original File, so the fixed file
// is assembled by the browser and never held in WebAssembly memory.

const filesInput = document.getElementById("files");
const dropZone = document.getElementById("drop-zone");
const toSelect = document.getElementById("to");
const clearButton = document.getElementById("clear");
const progress = document.getElementById("progress");
const progressBar = document.getElementById("progress-bar");
const results = document.getElementById("results");
const empty = document.getElementById("empty");
const versions = document.getElementById("versions");

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const entries = new Map(); // id -> {id, file, element, url, to, job}
let nextId = 1;
let nextJob = 1;
let ready = false;
let failed = null;
let pending = 0;

function showProgress(text, busy) {
  progress.textContent = text;
  progressBar.hidden = !busy;
}

worker.onmessage = (event) => {
  const message = event.data;
  if (message.type === "progress") {
    showProgress(message.text, true);
  } else if (message.type === "ready") {
    ready = true;
    versions.textContent = `pth-legacy-keys ${message.version}, Python in Pyodide ${message.pyodide}.`;
    document.body.dataset.ready = "true";
    idle();
  } else if (message.type === "failed") {
    failed = message.text;
    document.body.dataset.ready = "failed";
    showProgress(`This browser could not start Python (${message.text}). Use the command line instead: `
      + "pip install pth-legacy-keys", false);
    for (const entry of entries.values()) {
      if (!entry.element.dataset.status) {
        showError(entry, "not examined: Python could not start in this browser");
      }
    }
  } else if (message.type === "result") {
    const entry = entries.get(message.id);
    if (entry && entry.job === message.job) { // not an answer for a direction since changed
      showResult(entry, message);
    }
    done();
  } else if (message.type === "error") {
    const entry = entries.get(message.id);
    if (entry && entry.job === message.job) {
      showError(entry, `internal error: ${message.text}`);
    }
    done();
  }
};

worker.onerror = (event) => {
  failed = event.message || "the worker failed";
  showProgress(`The page's worker failed (${failed}).`, false);
};

function done() {
  pending -= 1;
  idle();
}

function idle() {
  if (failed) {
    return;
  }
  if (!ready) {
    showProgress("Loading …", true);
  } else if (pending > 0) {
    showProgress(`Examining and fixing: ${pending} file${pending === 1 ? "" : "s"} to go …`, true);
  } else {
    const count = entries.size;
    showProgress(count ? `Done: ${count} file${count === 1 ? "" : "s"} examined. Nothing was uploaded.`
      : "Ready. Choose or drop a checkpoint.", false);
  }
}

function addFiles(fileList) {
  for (const file of fileList) {
    const id = nextId++;
    const element = document.createElement("li");
    element.className = "result";
    element.dataset.file = file.name;
    element.setAttribute("aria-busy", "true");
    const heading = document.createElement("h3");
    heading.textContent = file.name;
    const line = document.createElement("p");
    line.className = "line";
    line.textContent = "Waiting to be examined …";
    element.append(heading, line);
    results.append(element);
    const entry = { id, file, element, url: null, to: null, job: 0 };
    entries.set(id, entry);
    send(entry);
  }
  empty.hidden = entries.size > 0;
}

function send(entry) {
  entry.to = toSelect.value;
  entry.job = nextJob++;
  pending += 1;
  worker.postMessage({ type: "examine", id: entry.id, job: entry.job, file: entry.file, to: entry.to });
  idle();
}

function reset(entry) {
  if (entry.url) {
    URL.revokeObjectURL(entry.url);
    entry.url = null;
  }
  const { element } = entry;
  delete element.dataset.status;
  element.setAttribute("aria-busy", "true");
  element.replaceChildren(element.firstChild);
  const line = document.createElement("p");
  line.className = "line";
  line.textContent = "Waiting to be examined …";
  element.append(line);
}

function showError(entry, text) {
  const { element } = entry;
  element.replaceChildren(element.firstChild);
  const line = document.createElement("p");
  line.className = "line";
  line.textContent = `${entry.file.name}: error: ${text}`;
  element.append(line);
  element.dataset.status = "error";
  element.removeAttribute("aria-busy");
}

function paragraph(className, text) {
  const p = document.createElement("p");
  p.className = className;
  p.textContent = text;
  return p;
}

function showResult(entry, { check, fix, pieces }) {
  const { element, file } = entry;
  element.replaceChildren(element.firstChild);
  element.append(paragraph("line", check.line));
  for (const warning of check.warnings) {
    element.append(paragraph("warning", warning));
  }

  if (pieces && fix && fix.status === "fixed") {
    // The new bytes, and slices of the original: the browser reads those from the file itself.
    const parts = pieces.map((piece) => (piece.bytes ? piece.bytes
      : file.slice(piece.offset, piece.offset + piece.length)));
    const blob = new Blob(parts, { type: "application/octet-stream" });
    entry.url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = entry.url;
    link.download = file.name;
    link.dataset.download = entry.to;
    link.className = "download";
    link.textContent = `Download the fixed ${file.name} (${entry.to} names, ${formatSize(blob.size)})`;
    const box = document.createElement("p");
    box.append(link);
    const said = fix.verdict; // "fixed: renamed 4 keys to legacy names" (the line's name may be spelled with escapes)
    element.append(box, paragraph("hint", `${said}, checked as the command line's fix checks its output.`));
  } else if (fix) {
    // The check found keys to rename, but the fix could not be made: say why, as fix does.
    element.append(paragraph("problem", `No fixed file: ${fix.line}`));
  }

  element.append(inspectDetails(check));
  element.dataset.status = check.status;
  element.removeAttribute("aria-busy");
}

function inspectDetails(check) {
  const inspect = check.inspect;
  const box = document.createElement("div");
  box.className = "inspect";
  const list = document.createElement("dl");
  const add = (term, text) => {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = text;
    list.append(dt, dd);
    return dd;
  };
  if (inspect.kind) {
    add("Kind", inspect.kind);
  }
  if (inspect.container && inspect.container.format) {
    add("Container", `${inspect.container.format}, ${formatSize(inspect.container.bytes)}`);
  }
  if (inspect.keys && inspect.keys.style) {
    add("Key names", inspect.keys.style + (inspect.keys.parametrized_keys
      ? ` (${inspect.keys.parametrized_keys} parametrized keys)` : ""));
  }
  for (const [group, values] of Object.entries(inspect.metadata || {})) {
    const label = { rvc: "RVC metadata", applio: "Applio metadata", lightning: "Lightning metadata",
      training: "Training metadata" }[group] || group;
    add(label, Object.entries(values).map(([name, value]) => `${name} ${formatValue(value)}`).join(", "));
  }
  if (inspect.vocoder) {
    add("Warning", `vocoder ${inspect.vocoder.name} (${inspect.vocoder.evidence}): legacy RVC software cannot `
      + "load it whatever its key names").className = "warning";
  }
  for (const verdict of inspect.verdicts || []) {
    add(`Loads in ${verdict.about}`, `${verdict.answer}: ${verdict.reasons.join("; ")}`)
      .className = verdict.answer === "yes" ? "yes" : "no";
  }
  if (!inspect.kind && inspect.reason) {
    add("Not read", inspect.reason);
  }
  box.append(list);

  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "What pth-legacy-keys inspect says";
  const pre = document.createElement("pre");
  pre.textContent = check.inspect_lines.join("\n");
  details.append(summary, pre);
  box.append(details);
  return box;
}

function formatValue(value) {
  if (typeof value === "string") {
    return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
  }
  return JSON.stringify(value);
}

function formatSize(count) {
  for (const [unit, scale] of [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]]) {
    if (count >= scale) {
      return `${(count / scale).toFixed(1)} ${unit}`;
    }
  }
  return `${count} bytes`;
}

filesInput.addEventListener("change", () => {
  addFiles(Array.from(filesInput.files));
  filesInput.value = ""; // the same file may be chosen again
});

for (const name of ["dragenter", "dragover"]) {
  dropZone.addEventListener(name, (event) => {
    event.preventDefault();
    dropZone.classList.add("dragging");
  });
}
for (const name of ["dragleave", "drop"]) {
  dropZone.addEventListener(name, () => dropZone.classList.remove("dragging"));
}
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  const files = Array.from(event.dataTransfer.files || []);
  if (files.length) {
    addFiles(files);
  }
});
// A file dropped beside the zone must not make the browser open it (and leave the page).
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => {
  event.preventDefault();
  if (!dropZone.contains(event.target)) {
    addFiles(Array.from(event.dataTransfer.files || []));
  }
});

toSelect.addEventListener("change", () => {
  for (const entry of entries.values()) {
    reset(entry);
    send(entry);
  }
});

clearButton.addEventListener("click", () => {
  for (const entry of entries.values()) {
    if (entry.url) {
      URL.revokeObjectURL(entry.url);
    }
  }
  entries.clear();
  results.replaceChildren();
  empty.hidden = false;
  idle();
});
