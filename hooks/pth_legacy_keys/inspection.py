"""`inspect`: what a checkpoint is, whether legacy torch code and legacy RVC software will load it.

Everything here comes from the same reading as `check`: the container, the pickle walked
as opcodes (or the safetensors header) and the inert tree; nothing is unpickled.

The JSON document (`Inspection.to_json`) is strict JSON (RFC 8259), as every document the tool
writes is: a metadata float that is not finite, which JSON has no spelling for, is the string
JavaScript's String() gives it: "NaN", "Infinity" or "-Infinity" (so `"sr": "Infinity"` is the
float inf, or a file's own string "Infinity"; the text output tells them apart: `inf`, `'Infinity'`).
docs/inspect.md describes the output.
"""

import math
import os

from . import rvc
from .byte_source import is_url
from .commands import FIX_A_URL, fix_command
from .engine import examine_safely, lfs_object_of, read_file, status_of
from .pickle_walk import Dict, Tensor
from .rename import FAMILIES, LEGACY, PARAMETRIZED, plan, shown_name
from .report import Outcome, counted, printable, shortener, transfer_line
from .status import Status

METADATA_TEXT_LIMIT = 80
# A metadata list may repeat one long string 64 times through the memo: JSON shows at most this much of each.
METADATA_JSON_LIMIT = 1000

# What each verdict is about: `about` in the JSON.
LEGACY_TORCH = "legacy torch code"  # torch.nn.utils.weight_norm / spectral_norm layers, load_state_dict(strict=False)
LEGACY_RVC = "legacy RVC loaders"  # RVC WebUI, w-okada voice-changer, rvc-python (see rvc.py)

# The kinds of file besides RVC's two (rvc.INFERENCE_MODEL, rvc.TRAINING_CHECKPOINT).
LIGHTNING = "Lightning checkpoint"
TRAINING = "training checkpoint"
STATE_DICT = "state dict"
STATE_DICTS = "dict of state dicts"  # HiFi-GAN's and BigVGAN's g_* files: {"generator": state dict}
OTHER = "other"
# PyTorch Lightning's _CheckpointConnector.dump_checkpoint (src/lightning/pytorch/trainer/connectors/
# checkpoint_connector.py) writes epoch, global_step, pytorch-lightning_version, state_dict and loops,
# and unless weights_only also callbacks, optimizer_states and lr_schedulers: names no other saver uses.
LIGHTNING_VERSION = "pytorch-lightning_version"
LIGHTNING_ONLY = ("optimizer_states", "callbacks", "loops", "lr_schedulers")
LIGHTNING_METADATA = (LIGHTNING_VERSION, "epoch", "global_step")
# A training loop's counters beside its state dicts: coqui-ai Trainer's save_model (trainer/io.py:
# model, optimizer, scaler, step, epoch, date, config), HiFi-GAN's and BigVGAN's do_* files (mpd, msd,
# optim_g, optim_d, steps, epoch), PyTorch's tutorial (model_state_dict, optimizer_state_dict, epoch).
TRAINING_METADATA = ("epoch", "step", "steps", "global_step", "iteration", "learning_rate")
# What the statuses check gives a readable file mean in inspect's status line.
STATUS_TEXT = {
    Status.OK: "nothing to rename",
    Status.NEEDS_FIX: "{} to rename to legacy names",
    Status.CANNOT_CONVERT: "{} cannot be converted",
}


class Inspection(Outcome):
    """What `inspect` found in one file.  A file it read has the status `check` (to legacy
    names) gives it: ok, needs-fix or cannot-convert; else skipped, not-checked, refused or error."""

    def __init__(self, path):
        super().__init__(path)
        self.container = {}
        self.container_text = None
        self.pickle = None  # {"protocol", "globals"}; None for safetensors
        self.tensors = {}
        self.keys = {}
        self.kind = None
        self.metadata = {}  # {group: {name: value}}: "rvc", "applio", "lightning" or "training"
        self.vocoder = None  # rvc.Vocoder that legacy software cannot run
        self.legacy_torch = None  # {"about": LEGACY_TORCH, "answer": "yes" / "no", "reasons": [...]}
        self.legacy_rvc = None  # the same about LEGACY_RVC, for RVC and Applio files only

    @property
    def exit_code(self):
        """inspect only describes: keys to rename or a module that cannot be converted are what it
        found, not a failure (`check` is the command that fails on them); 2 for a file it could not
        read, a Git LFS pointer or a refused file, as for every command."""
        return 0 if self.status in (Status.NEEDS_FIX, Status.CANNOT_CONVERT) else self.status.exit_code

    @property
    def read(self):
        """Whether the file was read: its status is one `check` gives a file it read."""
        return self.status in STATUS_TEXT

    def verdicts(self):
        return [verdict for verdict in (self.legacy_torch, self.legacy_rvc) if verdict is not None]

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
            "verdicts": self.verdicts(),
            "remote": self.transfer,
        }

    def text_lines(self):
        if not self.read:
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
        for group, values in self.metadata.items():
            field(group, ", ".join(f"{name} {_value_text(value)}" for name, value in values.items()))
        if self.vocoder:
            field("warning", self.vocoder.warning())
        field("status", f"{self.status} ({self._status_detail()}, as `check` reports it)")
        for verdict in self.verdicts():
            field("verdict", f"loads in {verdict['about']}: {verdict['answer']} ({'; '.join(verdict['reasons'])})")
        if self.transfer:
            field("remote", transfer_line(self.transfer).strip().removeprefix("read remotely: "))
        return lines

    def _status_detail(self):
        if self.status == Status.CANNOT_CONVERT:
            return STATUS_TEXT[self.status].format(counted(len(self.keys["cannot_convert"]), "module"))
        return STATUS_TEXT[self.status].format(counted(self.keys["parametrized_keys"], "key"))


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
    to_legacy = plan(root, LEGACY)
    inspection.status = status_of(to_legacy)
    inspection.keys = _key_style(root, to_legacy)
    inspection.kind = kind(root)
    rvc_file = rvc.is_rvc_file(root)
    inspection.metadata = {group: {name: _bounded(value) for name, value in values.items()}
                           for group, values in metadata_groups(root, inspection.kind, rvc_file).items()}
    inspection.vocoder = rvc.vocoder(root)
    inspection.legacy_torch = _legacy_torch_verdict(inspection.keys, inspection.path)
    if rvc_file:
        inspection.legacy_rvc = _legacy_rvc_verdict(inspection)


def kind(root):
    """What wrote the file, as far as its top level shows: one of RVC's two kinds, LIGHTNING,
    TRAINING, STATE_DICT, STATE_DICTS or OTHER."""
    found = rvc.rvc_kind(root)
    if found:
        return found
    top = rvc.items(root)
    if rvc.is_state_dict(root):
        return STATE_DICT
    if _is_lightning(top):
        return LIGHTNING
    holds_state_dicts = any(rvc.is_state_dict(value) for value in top.values())
    if holds_state_dicts and (any(name in top for name in TRAINING_METADATA) or _optimizer(top.values())):
        return TRAINING
    return STATE_DICTS if holds_state_dicts else OTHER


def _is_lightning(top):
    """A Lightning checkpoint: `state_dict`, and Lightning's version, or its counters beside a
    name only Lightning writes (a checkpoint a script built in Lightning's shape)."""
    if not rvc.is_state_dict(top.get("state_dict")):
        return False
    counters = "epoch" in top or "global_step" in top
    return LIGHTNING_VERSION in top or (counters and any(name in top for name in LIGHTNING_ONLY))


def metadata_groups(root, file_kind, rvc_file):
    """{group: {name: plain value}}, each field under the tool that wrote it: an `epoch` is Applio's
    only in an RVC or Applio file, Lightning's in a Lightning checkpoint, else a training loop's."""
    if rvc_file:
        return rvc.metadata_groups(root)
    top = rvc.items(root)
    if file_kind == LIGHTNING:
        group, names, optimizers = "lightning", LIGHTNING_METADATA, top.get("optimizer_states")
        optimizers = optimizers if type(optimizers) in (list, tuple) else ()
    elif file_kind == TRAINING:
        group, names, optimizers = "training", TRAINING_METADATA, top.values()
    else:
        return {}
    found = {name: rvc.plain(top[name]) for name in names if name in top}
    optimizer = _optimizer(optimizers)
    if optimizer:
        found["optimizer"] = optimizer
    return {group: found} if found else {}


def _optimizer(values):
    """The kind of the first optimizer state dict among `values` ("AdamW" ...), or None."""
    for value in values:
        found = rvc.optimizer_kind(value)
        if found:
            return found
    return None


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


def _key_style(root, to_legacy):
    to_parametrized = plan(root, PARAMETRIZED)
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


def _legacy_torch_verdict(keys, path):
    """Whether code that builds its layers with torch.nn.utils.weight_norm and spectral_norm
    (weight_g / weight_v, weight_orig / weight_u / weight_v) and loads with strict=False gets
    every weight: such a load skips a name it does not know without a word."""
    reasons = _key_reasons(keys, path, ", which a strict=False load skips without an error")
    if reasons:
        return _verdict(LEGACY_TORCH, "no", reasons)
    return _verdict(LEGACY_TORCH, "yes", [_legacy_names_reason(keys)])


def _legacy_rvc_verdict(inspection):
    """Whether RVC WebUI-style loaders get a working model: their generator, `weight`, legacy names."""
    reasons = []
    if inspection.vocoder:
        reasons.append(inspection.vocoder.warning())
    if inspection.kind == rvc.TRAINING_CHECKPOINT:
        reasons.append("a training checkpoint, not an inference model: RVC software loads the small "
                       "model file made from it, with 'weight' and 'config'")
    elif inspection.kind != rvc.INFERENCE_MODEL:
        reasons.append("not an RVC inference model: it has no 'weight' state dict beside a 'config' list")
    # Only where a fix is all it takes should the verdict say to run it.
    reasons += _key_reasons(inspection.keys, None if reasons else inspection.path, "")
    if reasons:
        return _verdict(LEGACY_RVC, "no", reasons)
    return _verdict(LEGACY_RVC, "yes", [_legacy_names_reason(inspection.keys),
                                        "RVC's HiFi-GAN vocoder (no sign of another)"])


def _verdict(about, answer, reasons):
    return {"about": about, "answer": answer, "reasons": reasons}


def _key_reasons(keys, path, why):
    """Why the key names keep legacy code from loading the file, `why` said after the count of
    parametrized keys; the fix command for `path` when renaming is all it takes (None: it is not)."""
    reasons = []
    if keys["parametrized_keys"]:
        reason = f"{counted(keys['parametrized_keys'], 'parametrized key')}{why}"
        fix = "" if keys["cannot_convert"] or path is None else f"; {_fix_command(path)}"
        reasons.append(reason + fix)
    if keys["cannot_convert"]:
        first = keys["cannot_convert"][0]
        reasons.append(f"{counted(len(keys['cannot_convert']), 'module')} cannot be converted, "
                       f"e.g. {first['module']}: {first['reason']}")
    return reasons


def _fix_command(path):
    if is_url(path):
        return FIX_A_URL
    return f"run `{fix_command(LEGACY, [path])}`"  # as check's hint spells it: `--`, the name quoted


def _legacy_names_reason(keys):
    counts = [(counts["legacy"], family) for family, counts in keys["families"].items() if counts["legacy"]]
    if not counts:
        return "no weight-norm or spectral-norm modules, so nothing in it depends on these names"
    total = sum(count for count, _ in counts)
    modules = " and ".join(f"{count} {family}" for count, family in counts)
    return f"legacy names in {'its' if total == 1 else 'all'} {modules} module{'' if total == 1 else 's'}"


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
