"""The rename rules: which keys of which state dicts become which names.

A state dict is any dict in the checkpoint with a tensor among its values.  Its keys
are renamed as a whole or not at all: a module that looks parametrized but is not a
plain weight norm makes the whole file "cannot convert", so a file is never left
half in one format and half in the other.
"""

import re
from collections import namedtuple

from .pickle_walk import Bytes, Dict, Tensor, Text

LEGACY, PARAMETRIZED = "legacy", "parametrized"
DIRECTIONS = (LEGACY, PARAMETRIZED)

PARAMETRIZED_KEY = re.compile(r"(?P<prefix>(?:.*\.)?)parametrizations\.(?P<param>[^.]+)\.(?P<leaf>.+)")
LEGACY_MAGNITUDE_KEY = re.compile(r"(?P<prefix>(?:.*\.)?)(?P<param>[^.]+)_g")
LEGACY_ORIGINAL_KEY = re.compile(r"(?P<prefix>(?:.*\.)?)(?P<param>[^.]+)_orig")
WEIGHT_NORM, SPECTRAL_NORM = "weight-norm", "spectral-norm"
FAMILIES = (WEIGHT_NORM, SPECTRAL_NORM)
WEIGHT_NORM_LEAVES = ("original0", "original1")  # -> _g, _v
SPECTRAL_NORM_LEAVES = ("original", "0._u", "0._v")  # -> _orig, _u, _v
SPECTRAL_NORM_SUFFIXES = ("_orig", "_u", "_v")


# where: the dict holding the key (or the list holding the name), as a path from the top
Rename = namedtuple("Rename", "where old new")
# module: the parametrized tensor, e.g. "dec.ups.0.weight"
Problem = namedtuple("Problem", "where module reason")


class Plan:
    def __init__(self):
        self.renames = []  # Rename of state-dict keys
        self.param_names = []  # Rename of optimizer param_groups' param_names
        self.modules = 0
        self.families = {}  # family -> modules renamed
        self.problems = []  # Problem
        self.new_text = {}  # id(Text) -> (Text, new value)


class _Survey:
    def __init__(self):
        self.state_dicts = []  # (where, Dict)
        self.param_names = []  # (where, Text)
        self.other_uses = set()  # id(Text) used anywhere but as a state-dict key


def plan(root, to=LEGACY, families=FAMILIES):
    """Work out every rename that brings the tree `root` to the `to` format.

    `families` are the parametrizations to convert: weight norm, spectral norm or both.
    """
    survey = _survey(root)
    result = Plan()
    by_old = {}
    plan_dict = _plan_to_legacy if to == LEGACY else _plan_to_parametrized
    for where, state_dict in survey.state_dicts:
        for family, module, pairs, reason in plan_dict(state_dict):
            if family is not None and family not in families:
                continue
            if reason:
                result.problems.append(Problem(where, module, reason))
                continue
            result.modules += 1
            result.families[family] = result.families.get(family, 0) + 1
            for text, new in pairs:
                result.renames.append(Rename(where, text.value, new))
                _assign(result, text, new, where, module, survey)
                by_old[text.value] = new
    for where, text in survey.param_names:
        new = by_old.get(text.value)
        if new is not None:
            result.param_names.append(Rename(where, text.value, new))
            _assign(result, text, new, where, text.value, survey)
    if result.problems:
        result.new_text.clear()
    return result


def _assign(result, text, new, where, module, survey):
    """Record that `text`'s one definition becomes `new`, unless other uses forbid it."""
    if id(text) in survey.other_uses:
        result.problems.append(Problem(where, module, f"the string '{text.value}' is also used "
                                       "outside state-dict keys, so renaming it would change a value"))
        return
    earlier = result.new_text.get(id(text))
    if earlier is not None and earlier[1] != new:
        result.problems.append(Problem(where, module, f"the string '{text.value}' would need two names"))
        return
    result.new_text[id(text)] = (text, new)


def _survey(root):
    """Find every state dict and every use of each string, visiting shared nodes once.

    A node's place is kept as a link to its parent's, and spelled out as a path only for
    the few places a report names: a hostile file can make paths exponentially many or long.
    """
    survey = _Survey()
    seen = set()
    todo = [(root, None, False)]
    while todo:
        node, where, in_param_names = todo.pop()
        kind = type(node)
        if kind is Text:
            if in_param_names:
                survey.param_names.append((_path(where), node))
            else:
                survey.other_uses.add(id(node))
            continue
        if kind is Bytes:
            survey.other_uses.add(id(node.text))
            continue
        if kind not in (Dict, list, tuple) or (id(node), in_param_names) in seen:
            continue
        seen.add((id(node), in_param_names))
        children = []
        if kind is Dict:
            is_state_dict = any(type(value) is Tensor for _, value in node.items)
            if is_state_dict:
                survey.state_dicts.append((_path(where), node))
            for key, value in node.items:
                if type(key) is Text:
                    if not is_state_dict:
                        survey.other_uses.add(id(key))
                    children.append((value, (where, "." + key.value), key.value == "param_names"))
                else:
                    children.append((key, where, False))
                    label = f"[{key!r}]" if type(key) in (int, bool) else f"[{type(key).__name__}]"
                    children.append((value, (where, label), False))
            if node.metadata is not None:
                children.append((node.metadata, (where, "._metadata"), False))
        else:
            children.extend((item, (where, f"[{i}]"), in_param_names) for i, item in enumerate(node))
        todo.extend(reversed(children))
    return survey


def _path(where):
    """"model.optimizer[0]" from the chain of (parent, label) links."""
    labels = []
    while where is not None:
        where, label = where
        labels.append(label)
    path = "".join(reversed(labels))
    return path[1:] if path.startswith(".") else path


def _keys(state_dict):
    return [key for key, _ in state_dict.items if type(key) is Text]


def _shapes_problem(g, v, g_name, v_name):
    if type(g) is not Tensor or type(v) is not Tensor:
        return f"{g_name} or {v_name} is not a tensor"
    if not is_weight_norm_magnitude(g.shape, v.shape):
        return (f"{g_name} of shape {tuple(g.shape)} is not a weight-norm magnitude of {v_name} "
                f"of shape {tuple(v.shape)} (a custom parametrization?)")
    return None


def is_weight_norm_magnitude(g, v):
    """g is v's size at one dimension and 1 elsewhere, or a scalar (weight_norm(dim=None))."""
    if len(g) == 0:
        return True
    if len(g) != len(v):
        return False
    return any(g[d] == v[d] and all(g[i] == 1 for i in range(len(g)) if i != d) for d in range(len(v)))


def _duplicates_problem(state_dict):
    seen = set()
    for text in _keys(state_dict):
        if text.value in seen:
            return [(None, text.value, [], f"the key '{text.value}' appears twice in one dict")]
        seen.add(text.value)
    return None


def _plan_to_legacy(state_dict):
    """(family, module, [(Text, new name)], reason or None) for each weight- or spectral-norm module."""
    duplicates = _duplicates_problem(state_dict)
    if duplicates:
        return duplicates
    values = {key.value: value for key, value in state_dict.items if type(key) is Text}
    groups = {}
    for text in _keys(state_dict):
        match = PARAMETRIZED_KEY.fullmatch(text.value)
        if match:
            groups.setdefault((match["prefix"], match["param"]), {})[match["leaf"]] = text
    stacked = set()
    if state_dict.metadata is not None:
        stacked = {key.value for key, _ in state_dict.metadata.items if type(key) is Text}
    found = []
    for (prefix, param), leaves in groups.items():
        if set(leaves) == set(SPECTRAL_NORM_LEAVES):
            found.append(_spectral_norm_to_legacy(prefix, param, leaves, values, stacked))
            continue
        if not any(leaf in leaves for leaf in WEIGHT_NORM_LEAVES):
            continue  # orthogonal, a custom one-tensor parametrization ...: no legacy names exist
        module = prefix + param
        base = f"{prefix}parametrizations.{param}."
        targets = (module + "_g", module + "_v")
        others = sorted(set(leaves) - set(WEIGHT_NORM_LEAVES))
        missing = [leaf for leaf in WEIGHT_NORM_LEAVES if leaf not in leaves]
        if missing:
            reason = f"{base}{missing[0]} is missing"
        elif others:
            reason = f"it also has {base}{others[0]}, so it is not a plain weight norm"
        elif base + "1" in stacked:
            reason = "a second parametrization is stacked on its weight norm"
        else:
            reason = _shapes_problem(values[base + "original0"], values[base + "original1"],
                                     "original0", "original1")
        if not reason:
            taken = [name for name in (module,) + targets if name in values]
            if taken:
                reason = f"the legacy name {taken[0]} is already a key"
        pairs = [] if reason else [(leaves["original0"], targets[0]), (leaves["original1"], targets[1])]
        found.append((WEIGHT_NORM, module, pairs, reason))
    return found


def _spectral_norm_to_legacy(prefix, param, leaves, values, stacked):
    module = prefix + param
    base = f"{prefix}parametrizations.{param}."
    targets = tuple(module + suffix for suffix in SPECTRAL_NORM_SUFFIXES)
    reason = None
    if base + "1" in stacked:
        reason = "a second parametrization is stacked on its spectral norm"
    elif not _is_spectral_norm_state(*(values[base + leaf] for leaf in SPECTRAL_NORM_LEAVES)):
        reason = "its original, _u and _v do not have a spectral norm's shapes"
    else:
        taken = [name for name in (module,) + targets if name in values]
        if taken:
            reason = f"the legacy name {taken[0]} is already a key"
    pairs = [] if reason else [(leaves[leaf], target) for leaf, target in zip(SPECTRAL_NORM_LEAVES, targets)]
    return SPECTRAL_NORM, module, pairs, reason


def _is_spectral_norm_state(weight, u, v):
    """u and v are the singular vectors of the weight seen as a (len(u), len(v)) matrix."""
    if not all(type(t) is Tensor for t in (weight, u, v)) or len(u.shape) != 1 or len(v.shape) != 1:
        return False
    numel = 1
    for size in weight.shape:
        numel *= size
    return u.shape[0] * v.shape[0] == numel and u.shape[0] in weight.shape


def _plan_to_parametrized(state_dict):
    duplicates = _duplicates_problem(state_dict)
    if duplicates:
        return duplicates
    values = {key.value: value for key, value in state_dict.items if type(key) is Text}
    texts = {text.value: text for text in _keys(state_dict)}
    parametrized = set()  # "P.parametrizations.N." for every parametrization state already present
    for name in values:
        match = PARAMETRIZED_KEY.fullmatch(name)
        if match:
            parametrized.add(f"{match['prefix']}parametrizations.{match['param']}.")
    found = []
    for text in _keys(state_dict):
        match = LEGACY_MAGNITUDE_KEY.fullmatch(text.value)
        if not match or match["prefix"] + match["param"] + "_v" not in values:
            continue
        prefix, param = match["prefix"], match["param"]
        module = prefix + param
        base = f"{prefix}parametrizations.{param}."
        spectral = [name for name in (module + "_orig", module + "_u") if name in values]
        if spectral:
            reason = f"{spectral[0]} is present: {module}_v belongs to a legacy spectral norm"
        else:
            reason = _shapes_problem(values[module + "_g"], values[module + "_v"], module + "_g",
                                     module + "_v")
        if not reason:
            if module in values:
                reason = f"{module} is already a key"
            elif base in parametrized:
                reason = f"{base}* is already in the state dict"
        pairs = [] if reason else [(text, base + "original0"), (texts[module + "_v"], base + "original1")]
        found.append((WEIGHT_NORM, module, pairs, reason))
    for text in _keys(state_dict):
        match = LEGACY_ORIGINAL_KEY.fullmatch(text.value)
        if not match:
            continue
        module = match["prefix"] + match["param"]
        names = [module + suffix for suffix in SPECTRAL_NORM_SUFFIXES]
        if not all(name in values for name in names) or module + "_g" in values:
            continue  # not a spectral norm; or, with _g, already reported as ambiguous above
        base = f"{match['prefix']}parametrizations.{match['param']}."
        reason = None
        if not _is_spectral_norm_state(*(values[name] for name in names)):
            reason = f"{module}_orig, _u and _v do not have a spectral norm's shapes"
        elif module in values:
            reason = f"{module} is already a key"
        elif base in parametrized:
            reason = f"{base}* is already in the state dict"
        pairs = [] if reason else [(texts[name], base + leaf) for name, leaf in zip(names, SPECTRAL_NORM_LEAVES)]
        found.append((SPECTRAL_NORM, module, pairs, reason))
    return found
