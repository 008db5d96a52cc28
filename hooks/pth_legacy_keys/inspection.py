"""`inspect`: what a checkpoint is, and whether legacy RVC software will load it.

Everything here comes from the same reading as `check`: the container, the pickle walked
as opcodes (or the safetensors header) and the inert tree; nothing is unpickled.

The JSON document (`Inspection.to_json`) is strict JSON (RFC 8259), as every document the tool
writes is: a metadata float that is not finite, which JSON has no spelling for, is the string
JavaScript's String() gives it: "NaN", "Infinity" or "-Infinity" (so `"sr": "Infinity"` is the
float inf, or a file's own string "Infinity"; the text output tells them apart: `inf`, `'Infinity'`).
"""

import math
import os

from . import rvc
from .byte_source import is_url
from .engine import examine_safely, lfs_object_of, read_file
from .pickle_walk import Dict, Tensor
from .rename import FAMILIES, LEGACY, PARAMETRIZED, plan, shown_name
from .report import Outcome, printable, shortener, transfer_line
from .status import Status

METADATA_TEXT_LIMIT = 80
# A metadata list may repeat one long string 64 times through the memo: JSON shows at most this much of each.
METADATA_JSON_LIMIT = 1000


class Inspection(Outcome):
    """What `inspect` found in one file; its status is ok, skipped, not-checked, refused or error."""

    def __init__(self, path):
        super().__init__(path)
        self.container = {}
        self.container_text = None
        self.pickle = None  # {"protocol", "globals"}; None for safetensors
        self.tensors = {}
        self.keys = {}
        self.kind = None
        self.metadata = {}
        self.vocoder = None  # rvc.Vocoder that legacy software cannot run
        self.legacy_rvc = None  # {"answer": "yes" / "no", "reasons": [...]}

    def to_json(self):
        """The `files` entry of `inspect --output json`: only JSON's own values, a metadata float
        that is not finite spelled "NaN", "Infinity" or "-Infinity" (see the module docstring)."""
        return {
            "path": self.path,
            "status": self.status,
            "reason": self.reason,
            "container": self.container,
            "pickle": self.pickle,
            "tensors": self.tensors,
            "keys": self.keys,
            "kind": self.kind,
            "metadata": json_value(self.metadata),
            "vocoder": None if self.vocoder is None else {
                "name": self.vocoder.name, "evidence": self.vocoder.evidence, "legacy_rvc": False},
            "loads_in_legacy_rvc": self.legacy_rvc,
            "remote": self.transfer,
        }

    def text_lines(self):
        if self.status != Status.OK:
            word = "not checked" if self.status == Status.NOT_CHECKED else self.status
            return [printable(f"{self.path}: {word}: {self.reason}")]
        lines = [printable(self.path)]
        field = lambda name, text: lines.append(printable(f"  {name:<11}{text}"))  # noqa: E731
        field("container", f"{self.container_text}; {_size(self.container['bytes'])}")
        if self.pickle:
            names = self.pickle["globals"]
            field("pickle", f"protocol {self.pickle['protocol']}; {len(names)} globals: {', '.join(names)}")
        field("tensors", _tensors_text(self.tensors))
        field("keys", _keys_text(self.keys))
        field("kind", self.kind)
        for group, names in rvc.METADATA_GROUPS.items():
            shown = [f"{name} {_value_text(self.metadata[name])}" for name in names if name in self.metadata]
            if shown:
                field(group, ", ".join(shown))
        if self.vocoder:
            field("warning", self.vocoder.warning())
        answer = self.legacy_rvc
        field("verdict", f"loads in legacy RVC loaders: {answer['answer']} ({'; '.join(answer['reasons'])})")
        if self.kind == "training checkpoint":
            field("verdict", "training checkpoint, not an inference model: RVC software loads the small "
                             "model file made from it, with 'weight' and 'config'")
        if self.transfer:
            field("remote", transfer_line(self.transfer).strip().removeprefix("read remotely: "))
        return lines


def inspect_file(path, lfs_pointers="error", lfs_objects=None):
    """Inspect the file at `path`; failures become its status and reason.  `lfs_pointers` and
    `lfs_objects` as for engine.scan."""
    inspection = Inspection(os.fspath(path))

    def examine(real_path):
        _inspect(inspection, real_path, lfs_object_of(real_path, lfs_pointers, lfs_objects))

    return examine_safely(inspection, examine, lfs_pointers)


def _inspect(inspection, path, lfs_object):
    # A remote file is read as a check reads it: every record's header would cost a request each.
    remote = is_url(path) or lfs_object is not None
    checkpoint = read_file(inspection, path, for_rewrite=not remote, lfs_object=lfs_object)
    root = checkpoint.root
    inspection.container, inspection.container_text = checkpoint.unit.describe(checkpoint)
    if checkpoint.pickle is not None:
        inspection.pickle = {"protocol": checkpoint.pickle.protocol, "globals": list(checkpoint.pickle.globals)}
    inspection.tensors = _tensor_stats(root)
    inspection.keys = _key_style(root)
    inspection.kind = rvc.kind(root)
    inspection.metadata = {name: _bounded(value) for name, value in rvc.metadata(root).items()}
    inspection.vocoder = rvc.vocoder(root)
    inspection.legacy_rvc = _legacy_rvc_verdict(inspection)


def _tensor_stats(root):
    """Count every tensor once, and every storage's bytes once (views share them)."""
    tensors, storages = _tensors(root)
    dtypes, devices = {}, {}
    for tensor in tensors:
        dtype = tensor.dtype or "untyped"
        dtypes[dtype] = dtypes.get(dtype, 0) + 1
    for storage in storages:
        if storage.location is not None:
            devices[storage.location] = devices.get(storage.location, 0) + 1
    return {
        "count": len(tensors),
        "bytes": sum(storage.numel * storage.element_size for storage in storages),
        "dtypes": dict(sorted(dtypes.items(), key=lambda item: (-item[1], item[0]))),
        "devices": devices,  # storages per device they were saved from; safetensors records none
    }


def _tensors(root):
    tensors, storages, seen = [], {}, set()
    todo = [root]
    while todo:
        node = todo.pop()
        kind = type(node)
        if kind is Tensor:
            if id(node) not in seen:
                seen.add(id(node))
                tensors.append(node)
                storages.setdefault(node.storage.key, node.storage)  # views of one storage share its key
            continue
        if kind not in (Dict, list, tuple) or id(node) in seen:
            continue
        seen.add(id(node))
        if kind is Dict:
            for key, value in node.items:
                todo += (key, value)
            if node.metadata is not None:
                todo.append(node.metadata)
        else:
            todo.extend(node)
    return tensors, list(storages.values())


def _key_style(root):
    to_legacy, to_parametrized = plan(root, LEGACY), plan(root, PARAMETRIZED)
    shown = shortener()
    families = {
        family: {"parametrized": to_legacy.families.get(family, 0), "legacy": to_parametrized.families.get(family, 0)}
        for family in FAMILIES
    }
    parametrized = sum(counts["parametrized"] for counts in families.values()) + len(to_legacy.problems)
    legacy = sum(counts["legacy"] for counts in families.values())
    style = {(True, False): "parametrized", (False, True): "legacy", (True, True): "mixed"}.get(
        (parametrized > 0, legacy > 0), "none")
    return {
        "style": style,
        "parametrized_keys": len(to_legacy.renames),
        "families": families,
        "cannot_convert": [{"module": shown(p.module), "reason": p.reason} for p in to_legacy.problems],
    }


def _legacy_rvc_verdict(inspection):
    """Whether RVC WebUI-style loaders get a working model: their generator, `weight`, legacy names."""
    reasons = []
    if inspection.vocoder:
        reasons.append(inspection.vocoder.warning())
    if inspection.kind == "training checkpoint":
        reasons.append("a training checkpoint, not an inference model")
    elif inspection.kind != "RVC inference model":
        reasons.append("not an RVC inference model: it has no 'weight' state dict beside a 'config' list")
    keys = inspection.keys
    if keys["parametrized_keys"]:
        # Only where a fix is all it takes should the verdict say to run it.
        fix = "" if keys["cannot_convert"] or inspection.vocoder else "; run `pth-legacy-keys fix`"
        reasons.append(f"{keys['parametrized_keys']} parametrized keys{fix}")
    if keys["cannot_convert"]:
        first = keys["cannot_convert"][0]
        reasons.append(f"{len(keys['cannot_convert'])} modules cannot be converted, e.g. {first['module']}: "
                       f"{first['reason']}")
    if reasons:
        return {"answer": "no", "reasons": reasons}
    weight_norm = keys["families"]["weight-norm"]["legacy"]
    return {"answer": "yes", "reasons": [f"legacy names in all {weight_norm} weight-norm modules, and RVC's "
                                         "HiFi-GAN vocoder (no sign of another)"]}


def _tensors_text(tensors):
    dtypes = ", ".join(f"{dtype} x{count}" for dtype, count in tensors["dtypes"].items())
    devices = ", ".join(tensors["devices"])
    where = f"saved from {devices}" if devices else "devices not recorded"
    return f"{tensors['count']}, {_size(tensors['bytes'])}: {dtypes or 'none'}; {where}"


def _keys_text(keys):
    parts = []
    for family, counts in keys["families"].items():
        for style in ("parametrized", "legacy"):
            if counts[style]:
                modules = "module" if counts[style] == 1 else "modules"
                which = f"{style} " if keys["style"] == "mixed" else ""
                parts.append(f"{counts[style]} {which}{family} {modules}")
    text = keys["style"] + (": " + ", ".join(parts) if parts else " (no weight-norm or spectral-norm modules)")
    if keys["parametrized_keys"]:
        text += f" ({keys['parametrized_keys']} parametrized keys)"
    if keys["cannot_convert"]:
        text += f"; {len(keys['cannot_convert'])} cannot be converted"
    return text


def _bounded(value):
    """A metadata value with each string cut to METADATA_JSON_LIMIT characters."""
    if isinstance(value, str):
        return shown_name(value, METADATA_JSON_LIMIT)
    if isinstance(value, list):
        return [_bounded(item) for item in value]
    return value


def json_value(value):
    """`value` (a number, string, None, or lists, tuples and dicts of them) with each float that
    is not finite replaced by the string JavaScript's String() spells it with: strict JSON has no
    NaN or Infinity, and report._write_document refuses to write one."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return {key: json_value(item) for key, item in value.items()}
    return value


def _value_text(value):
    if isinstance(value, str):
        shown = value if len(value) <= METADATA_TEXT_LIMIT else value[:METADATA_TEXT_LIMIT] + "..."
        return repr(shown)
    return str(value)


def _size(count):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
