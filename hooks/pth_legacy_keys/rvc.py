"""What RVC and Applio files hold, read from the inert tree: which files they are, metadata, vocoder.

Legacy RVC software (RVC WebUI, w-okada voice-changer, rvc-python) builds an NSF HiFi-GAN
generator and loads `cpt["weight"]` into it with `strict=False`.  A model whose generator
is another vocoder (Applio's RefineGAN or MRF HiFi-GAN) has different modules, so it
cannot work there whatever its key names are; renaming keys never changes that.
"""

from .pickle_walk import Dict, Tensor, Text
from .rename import shown_name

INFERENCE_MODEL = "RVC inference model"
TRAINING_CHECKPOINT = "RVC training checkpoint"
# Written by RVC WebUI's savers (version, sr, f0, info, config, weight) and by Applio.
RVC_METADATA = ("version", "sr", "f0", "info")
# Applio's extract_model (rvc/train/process/extract_model.py) adds these to RVC's fields.
APPLIO_METADATA = ("model_name", "author", "creation_date", "epoch", "step", "embedder_model", "vocoder",
                   "speakers_id", "overtrain_info", "dataset_length", "model_hash")
# Applio's own fields: `model_name` beside one of these makes a file Applio's even without RVC's
# `weight` and `config`; `epoch` or `step` alone never does (Lightning, coqui-tts and others write them).
APPLIO_ONLY = ("vocoder", "embedder_model", "model_hash")
# RVC WebUI's and Applio's save_checkpoint (inherited from VITS) write G_*.pth / D_*.pth as
# {"model", "iteration", "optimizer", "learning_rate"}.
TRAINING_METADATA = ("iteration", "learning_rate")
LEGACY_VOCODER = "HiFi-GAN"  # Applio's name for RVC's own NSF HiFi-GAN generator
# Generator submodules with parameters (under `dec.`) that only these vocoders have, as Applio's
# generators/refinegan.py and hifigan_mrf.py name them; RVC's NSF HiFi-GAN has conv_pre, ups,
# resblocks, noise_convs, m_source.l_linear, conv_post and cond.
VOCODER_MODULES = {
    "RefineGAN": ("dec.pre_conv.", "dec.mel_conv.", "dec.downsample_blocks.", "dec.upsample_conv_blocks.",
                  "dec.m_source.merge."),
    "MRF HiFi-GAN": ("dec.mrfs.", "dec.upsamples."),
}


class Vocoder:
    """A vocoder legacy RVC software cannot run, and how we know."""

    def __init__(self, name, evidence):
        self.name = name
        self.evidence = evidence  # "its vocoder field" or "its dec.mrfs.* modules"

    def warning(self):
        return (f"vocoder {self.name} ({self.evidence}): legacy RVC software cannot load it "
                "whatever its key names")


def items(node):
    """{key: value} of a Dict's text keys; {} for anything else."""
    if type(node) is not Dict:
        return {}
    return {key.value: value for key, value in node.items if type(key) is Text}


def plain(node):
    """A metadata value as plain Python: a string, a number, None, or a flat list of those; else None.

    Nested lists are not followed: through the memo, a few bytes of pickle can nest one list in
    itself thousands of times over."""
    if type(node) is Text:
        return node.value
    if node is None or type(node) in (int, float, bool):
        return node
    if type(node) in (list, tuple) and len(node) <= 64:
        values = [item.value if type(item) is Text else item for item in node]
        if all(value is None or type(value) in (str, int, float, bool) for value in values):
            return values
    return None


def state_dict_keys(node):
    return list(items(node)) if is_state_dict(node) else []


def is_state_dict(node):
    """A dict with a tensor among its values, as rename.plan finds state dicts."""
    return type(node) is Dict and any(type(value) is Tensor for _, value in node.items)


def model_weights(root):
    """The state dict an RVC file's generator is loaded from: "weight" (inference) or "model"
    (training checkpoint), or the file itself when it is a bare state dict."""
    top = items(root)
    for name in ("weight", "model"):
        if is_state_dict(top.get(name)):
            return top[name]
    return root if is_state_dict(root) else None


def rvc_kind(root):
    """INFERENCE_MODEL (`weight` state dict beside RVC's `config` list), TRAINING_CHECKPOINT
    (`model` state dict with `iteration` and `learning_rate`), or None."""
    top = items(root)
    if is_state_dict(top.get("weight")) and type(top.get("config")) in (list, tuple):
        return INFERENCE_MODEL
    if is_state_dict(top.get("model")) and {"iteration", "learning_rate"} <= set(top):
        return TRAINING_CHECKPOINT
    return None


def is_rvc_file(root):
    """Whether RVC or Applio wrote the file: one of RVC's two layouts, or Applio's own metadata.
    Only then are RVC's and Applio's metadata named as theirs, and RVC's verdict given."""
    top = items(root)
    return rvc_kind(root) is not None or ("model_name" in top and any(name in top for name in APPLIO_ONLY))


def vocoder(root):
    """The Vocoder legacy RVC cannot run, if the file's vocoder field or module names say so."""
    named = plain(items(root).get("vocoder"))
    if isinstance(named, str) and _spelling(named) != _spelling(LEGACY_VOCODER):
        shown = shown_name(named)  # the file's own text: a megabyte of it must not be a megabyte of output
        return Vocoder(shown, f"its vocoder field says '{shown}'")
    keys = state_dict_keys(model_weights(root))
    for name, prefixes in VOCODER_MODULES.items():
        for key in keys:
            if key.startswith(prefixes):
                return Vocoder(name, f"it has {shown_name('.'.join(key.split('.', 2)[:2]))}.* modules")
    return None


def _spelling(name):
    return "".join(c for c in name.lower() if c.isalnum())


def metadata_groups(root):
    """An RVC or Applio file's metadata as plain values: {"rvc": {...}, "applio": {...},
    "training": {...}}, each group in a stable order, empty groups left out."""
    top = items(root)
    groups = {}
    for group, names in (("rvc", RVC_METADATA), ("applio", APPLIO_METADATA), ("training", TRAINING_METADATA)):
        found = {name: plain(top[name]) for name in names if name in top}
        optimizer = optimizer_kind(top.get("optimizer")) if group == "training" else None
        if optimizer:
            found["optimizer"] = optimizer
        if found:
            groups[group] = found
    return groups


def optimizer_kind(node):
    """"AdamW", "Adam", "SGD" ... from an optimizer state dict's state and param_groups."""
    top = items(node)
    groups = top.get("param_groups")
    if type(groups) is not list or not groups:
        return None
    group = items(groups[0])
    state_keys = set()  # "state" is keyed by parameter index: look at every entry's names
    for _, per_parameter in (top["state"].items if type(top.get("state")) is Dict else []):
        state_keys |= set(items(per_parameter))
    if {"betas", "eps"} <= set(group) or {"exp_avg", "exp_avg_sq"} <= state_keys:
        decoupled = plain(group.get("decoupled_weight_decay"))
        if decoupled is True:
            return "AdamW"
        if decoupled is False:
            return "Adam"
        return "Adam or AdamW"
    if "momentum" in group and "nesterov" in group:
        return "SGD"
    return "unknown"
