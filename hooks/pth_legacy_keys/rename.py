"""The rename rules: which keys of which state dicts become which names.

A state dict is any dict in the checkpoint with a tensor among its values.  Its keys
are renamed as a whole or not at all: a module that looks parametrized but is not a
plain weight norm makes the whole file "cannot convert", so a file is never left
half in one format and half in the other.
"""

from collections import namedtuple

from .pickle_walk import Bytes, Dict, Tensor, Text

LEGACY, PARAMETRIZED = "legacy", "parametrized"
DIRECTIONS = (LEGACY, PARAMETRIZED)

PARAMETRIZATIONS = "parametrizations."
WEIGHT_NORM, SPECTRAL_NORM = "weight-norm", "spectral-norm"
FAMILIES = (WEIGHT_NORM, SPECTRAL_NORM)
WEIGHT_NORM_LEAVES = ("original0", "original1")  # -> _g, _v
SPECTRAL_NORM_LEAVES = ("original", "0._u", "0._v")  # -> _orig, _u, _v
SPECTRAL_NORM_SUFFIXES = ("_orig", "_u", "_v")
# A hostile file can hold keys of megabytes: reasons and paths show at most this much of a name.
SHOWN_NAME_LIMIT = 200
PATH_LIMIT = 200
LABEL_LIMIT = 60


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
        self.param_names = []  # (link to its place, a param_names Text or the list or tuple holding some)
        self.other_uses = set()  # id(Text) used anywhere but as a state-dict key


def shown_name(name, limit=SHOWN_NAME_LIMIT):
    """`name`, or for a name longer than `limit` its start and end around a count of what is left out."""
    if len(name) <= limit:
        return name
    head, tail = limit * 3 // 5, limit // 5
    return f"{name[:head]}...[{len(name) - head - tail:,} characters]...{name[-tail:]}"


def split_parametrized(key):
    """(prefix, param, leaf) of a key "<prefix>parametrizations.<param>.<leaf>", or None.

    The prefix is empty or ends with a dot, the param has no dot, the leaf is not empty; the
    last "parametrizations." that fits wins ("a.parametrizations.w.parametrizations.x.original0"
    has the prefix "a.parametrizations.w.").  Plain searches, each character looked at a bounded
    number of times: the backtracking regex this replaces took minutes on a 1 MB key of
    "parametrizations." segments ending in a newline.  A newline is a character like any other.
    """
    end = len(key)
    while True:
        at = key.rfind(PARAMETRIZATIONS, 0, end)
        if at < 0:
            return None
        end = at  # "parametrizations." cannot overlap itself: the next candidate ends before this one
        if at and key[at - 1] != ".":
            continue
        param_start = at + len(PARAMETRIZATIONS)
        param_end = key.find(".", param_start)  # stops before the previous candidate: it follows a dot
        if param_end > param_start and param_end + 1 < len(key):
            return key[:at], key[param_start:param_end], key[param_end + 1:]


def split_legacy(key, suffix):
    """(prefix, param) of a key "<prefix><param><suffix>" whose last segment is more than the
    suffix ("dec.ups.0.weight_g", "_g" -> ("dec.ups.0.", "weight")), or None."""
    if not key.endswith(suffix):
        return None
    param_start = key.rfind(".") + 1
    param_end = len(key) - len(suffix)
    if param_end <= param_start:
        return None
    return key[:param_start], key[param_start:param_end]


class _Names:
    """Every name the rules read or make, each built once per plan and kept as one object.

    Through the pickle's memo one key string can key tens of thousands of state dicts.  Parsing
    it, building the names derived from it and comparing them once per use made time and memory
    grow with uses times length (a 100 KB key fetched 66,000 times took gigabytes).  Here a key
    is parsed once, a derived name is built once, and equal names are the same object, so a
    dictionary look-up or a comparison between them is an identity check, whatever their length.
    """

    def __init__(self):
        self._same = {}  # value -> the one str object kept for it
        self._of_text = {}  # id(Text) -> its value's object (the tree keeps every Text alive)
        self._made = {}  # (how, inputs...) -> what was made from them

    def same(self, value):
        return self._same.setdefault(value, value)

    def of(self, text):
        """`text.value`, as the one object kept for that value."""
        found = self._of_text.get(id(text))
        if found is None:
            found = self._of_text[id(text)] = self.same(text.value)
        return found

    def join(self, *parts):
        """The name spelled by `parts`, built once."""
        return self._once(("join",) + parts, lambda: self.same("".join(parts)))

    def parametrized(self, name):
        """split_parametrized(name), once per name, its parts kept as single objects."""
        return self._once(("parametrized", name),
                          lambda: _each_same(self, split_parametrized(name)))

    def legacy(self, name, suffix):
        """split_legacy(name, suffix), once per name."""
        return self._once(("legacy", name, suffix), lambda: _each_same(self, split_legacy(name, suffix)))

    def shown(self, name):
        """shown_name(name), once per name."""
        return self._once(("shown", name), lambda: shown_name(name))

    def said(self, template, *named):
        """`template` with the names `named` shown in it, once: a problem repeated in every dict
        that shares a key keeps one copy of its reason."""
        return self._once(("said", template) + named, lambda: template.format(*map(self.shown, named)))

    def shapes_problem(self, g, v, g_name, v_name):
        """_shapes_problem, once per pair of tensors: one pair shared by many dicts is checked once."""
        return self._once(("shapes", id(g), id(v), g_name, v_name),
                          lambda: _shapes_problem(g, v, self.shown(g_name), self.shown(v_name)))

    def is_spectral_norm_state(self, weight, u, v):
        return self._once(("spectral", id(weight), id(u), id(v)), lambda: _is_spectral_norm_state(weight, u, v))

    def _once(self, key, make):
        try:
            return self._made[key]
        except KeyError:
            found = self._made[key] = make()
            return found


def _each_same(names, parts):
    return None if parts is None else tuple(names.same(part) for part in parts)


def plan(root, to=LEGACY, families=FAMILIES):
    """Work out every rename that brings the tree `root` to the `to` format.

    `families` are the parametrizations to convert: weight norm, spectral norm or both.
    """
    survey = _survey(root)
    names = _Names()
    result = Plan()
    by_old = {}
    plan_dict = _plan_to_legacy if to == LEGACY else _plan_to_parametrized
    for where, state_dict in survey.state_dicts:
        for family, module, pairs, reason in plan_dict(state_dict, names):
            if family is not None and family not in families:
                continue
            if reason:
                result.problems.append(Problem(where, module, reason))
                continue
            result.modules += 1
            result.families[family] = result.families.get(family, 0) + 1
            for text, new in pairs:
                result.renames.append(Rename(where, text.value, new))
                _assign(result, text, new, where, module, survey, names)
                by_old[names.of(text)] = new
    paths = _Paths()
    for link, text in _param_name_uses(survey):
        new = by_old.get(names.of(text))
        if new is not None:
            where = paths.spell(link)
            result.param_names.append(Rename(where, text.value, new))
            _assign(result, text, new, where, text.value, survey, names)
    if result.problems:
        result.new_text.clear()
    return result


def _param_name_uses(survey):
    """(link to its place, Text) for every param_names entry, read from the lists that hold them:
    the survey keeps one record per list, not one per entry (a list can fetch one string from the
    memo hundreds of thousands of times)."""
    for link, node in survey.param_names:
        if type(node) is Text:
            yield link, node
            continue
        for i, item in enumerate(node):
            if type(item) is Text:
                yield (link, i), item


def _assign(result, text, new, where, module, survey, names):
    """Record that `text`'s one definition becomes `new`, unless other uses forbid it."""
    if id(text) in survey.other_uses:
        result.problems.append(Problem(where, module, names.said(
            "the string '{}' is also used outside state-dict keys, so renaming it would change a value",
            names.of(text))))
        return
    earlier = result.new_text.get(id(text))
    if earlier is not None and earlier[1] != new:
        result.problems.append(Problem(where, module, names.said("the string '{}' would need two names",
                                                                 names.of(text))))
        return
    result.new_text[id(text)] = (text, new)


def _survey(root):
    """Find every state dict and every use of each string, visiting shared nodes once.

    A node's place is kept as a link to its parent's place and a label (the key's Text, a list
    index ...), and spelled out, shortened, only for the few places a report names: a hostile
    file can make paths exponentially many or long, and one long key the label of every item.
    """
    survey = _Survey()
    paths = _Paths()
    seen = set()
    todo = [(root, None, False)]
    while todo:
        node, where, in_param_names = todo.pop()
        kind = type(node)
        if kind is Text:
            if in_param_names:
                survey.param_names.append((where, node))
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
                survey.state_dicts.append((paths.spell(where), node))
            for key, value in node.items:
                if type(key) is Text:
                    if not is_state_dict:
                        survey.other_uses.add(id(key))
                    children.append((value, (where, key), key.value == "param_names"))
                else:
                    children.append((key, where, False))
                    children.append((value, (where, (key,)), False))
            if node.metadata is not None:
                children.append((node.metadata, (where, "._metadata"), False))
        else:
            if in_param_names:
                survey.param_names.append((where, node))
            # A list's param_names entries are read from the list itself, in plan().
            children.extend((item, (where, i), in_param_names) for i, item in enumerate(node)
                            if not (in_param_names and type(item) is Text))
        todo.extend(reversed(children))
    return survey


class _Paths:
    """Spells a place ("model.optimizer[0]") from its chain of (parent, label) links, shortened to
    PATH_LIMIT characters.  A parent's spelling is kept, so a place costs its own label only."""

    def __init__(self):
        self._parents = {}  # id(link) -> (link, spelling): holding the link keeps its id its own

    def spell(self, where):
        if where is None:
            return ""
        parent, label = where
        return _shortened(self._parent(parent) + _label(label, first=parent is None))

    def _parent(self, link):
        if link is None:
            return ""
        found = self._parents.get(id(link))
        if found is None:
            found = self._parents[id(link)] = (link, self.spell(link))
        return found[1]


def _label(label, first):
    """A link's label as the path shows it: ".key" (no dot at the top), "[3]", "[<type>]"."""
    kind = type(label)
    if kind is Text:
        name = shown_name(label.value, LABEL_LIMIT)
        return name if first else "." + name
    if kind is int:
        return f"[{label}]"  # a list index
    if kind is tuple:  # a key that is not a string
        key = label[0]
        return f"[{key!r}]" if type(key) in (int, bool) else f"[{type(key).__name__}]"
    return label[1:] if first and label.startswith(".") else label


def _shortened(path):
    if len(path) <= PATH_LIMIT:
        return path
    head, tail = PATH_LIMIT // 2, PATH_LIMIT // 2 - 5
    return f"{path[:head]}.....{path[-tail:]}"


def _keys(state_dict):
    return [key for key, _ in state_dict.items if type(key) is Text]


def _shapes_problem(g, v, g_name, v_name):
    if type(g) is not Tensor or type(v) is not Tensor:
        return f"{g_name} or {v_name} is not a tensor"
    if not is_weight_norm_magnitude(g.shape, v.shape):
        return (f"{g_name} of shape {_shape_text(g.shape)} is not a weight-norm magnitude of {v_name} "
                f"of shape {_shape_text(v.shape)} (a custom parametrization?)")
    return None


def _shape_text(shape):
    """(3, 1); a hostile shape of thousands of dimensions only by its start and its length."""
    if len(shape) <= 16:
        return str(tuple(shape))
    return f"({', '.join(map(str, shape[:8]))}, ... {len(shape)} dimensions)"


def is_weight_norm_magnitude(g, v):
    """g is v's size at one dimension and 1 elsewhere, or a scalar (weight_norm(dim=None))."""
    if len(g) == 0:
        return True
    if len(g) != len(v):
        return False
    # One pass: trying every dimension in turn is quadratic in a hostile shape's length.
    not_one = [d for d, size in enumerate(g) if size != 1]
    if len(not_one) > 1:
        return False
    if not_one:
        return g[not_one[0]] == v[not_one[0]]
    return 1 in v


def _duplicates_problem(state_dict, names):
    seen = set()
    for text in _keys(state_dict):
        name = names.of(text)
        if name in seen:
            return [(None, name, [], names.said("the key '{}' appears twice in one dict", name))]
        seen.add(name)
    return None


def _plan_to_legacy(state_dict, names):
    """(family, module, [(Text, new name)], reason or None) for each weight- or spectral-norm module.

    Every name here comes from `names`: built once however many dicts share a key string."""
    duplicates = _duplicates_problem(state_dict, names)
    if duplicates:
        return duplicates
    values = {names.of(key): value for key, value in state_dict.items if type(key) is Text}
    groups = {}
    for text in _keys(state_dict):
        parts = names.parametrized(names.of(text))
        if parts:
            prefix, param, leaf = parts
            groups.setdefault((prefix, param), {})[leaf] = text
    stacked = set()
    if state_dict.metadata is not None:
        stacked = {names.of(key) for key, _ in state_dict.metadata.items if type(key) is Text}
    found = []
    for (prefix, param), leaves in groups.items():
        if set(leaves) == set(SPECTRAL_NORM_LEAVES):
            found.append(_spectral_norm_to_legacy(prefix, param, leaves, values, stacked, names))
            continue
        if not any(leaf in leaves for leaf in WEIGHT_NORM_LEAVES):
            continue  # orthogonal, a custom one-tensor parametrization ...: no legacy names exist
        module = names.join(prefix, param)
        base = names.join(prefix, PARAMETRIZATIONS, param, ".")
        targets = (names.join(module, "_g"), names.join(module, "_v"))
        others = [leaf for leaf in leaves if leaf not in WEIGHT_NORM_LEAVES]
        missing = [leaf for leaf in WEIGHT_NORM_LEAVES if leaf not in leaves]
        if missing:
            reason = names.said("{}{} is missing", base, missing[0])
        elif others:
            reason = names.said("it also has {}, so it is not a plain weight norm", names.join(base, others[0]))
        elif names.join(base, "1") in stacked:
            reason = "a second parametrization is stacked on its weight norm"
        else:
            reason = names.shapes_problem(values[names.join(base, "original0")],
                                          values[names.join(base, "original1")], "original0", "original1")
        if not reason:
            taken = [name for name in (module,) + targets if name in values]
            if taken:
                reason = names.said("the legacy name {} is already a key", taken[0])
        pairs = [] if reason else [(leaves["original0"], targets[0]), (leaves["original1"], targets[1])]
        found.append((WEIGHT_NORM, module, pairs, reason))
    return found


def _spectral_norm_to_legacy(prefix, param, leaves, values, stacked, names):
    module = names.join(prefix, param)
    base = names.join(prefix, PARAMETRIZATIONS, param, ".")
    targets = tuple(names.join(module, suffix) for suffix in SPECTRAL_NORM_SUFFIXES)
    reason = None
    if names.join(base, "1") in stacked:
        reason = "a second parametrization is stacked on its spectral norm"
    elif not names.is_spectral_norm_state(*(values[names.join(base, leaf)] for leaf in SPECTRAL_NORM_LEAVES)):
        reason = "its original, _u and _v do not have a spectral norm's shapes"
    else:
        taken = [name for name in (module,) + targets if name in values]
        if taken:
            reason = names.said("the legacy name {} is already a key", taken[0])
    pairs = [] if reason else [(leaves[leaf], target) for leaf, target in zip(SPECTRAL_NORM_LEAVES, targets)]
    return SPECTRAL_NORM, module, pairs, reason


def _is_spectral_norm_state(weight, u, v):
    """u and v are the singular vectors of the weight seen as a (len(u), len(v)) matrix."""
    if not all(type(t) is Tensor for t in (weight, u, v)) or len(u.shape) != 1 or len(v.shape) != 1:
        return False
    matrix = u.shape[0] * v.shape[0]
    if 0 in weight.shape:
        numel = 0
    else:
        numel = 1
        for size in weight.shape:
            numel *= size
            if numel > matrix:
                return False  # sizes only grow it: stop before a hostile shape makes a huge integer
    return matrix == numel and u.shape[0] in weight.shape


def _legacy_modules(state_dict, names, suffix):
    """(key Text, its name, module "P.N", base "P.parametrizations.N.") for each key "P.N<suffix>"."""
    for text in _keys(state_dict):
        name = names.of(text)
        parts = names.legacy(name, suffix)
        if parts:
            prefix, param = parts
            yield text, name, names.join(prefix, param), names.join(prefix, PARAMETRIZATIONS, param, ".")


def _target_taken(module, base, values, parametrized, names):
    """Why the parametrized names for `module` cannot be used, or None when they are free."""
    if module in values:
        return names.said("{} is already a key", module)
    if base in parametrized:
        return names.said("{}* is already in the state dict", base)
    return None


def _plan_to_parametrized(state_dict, names):
    duplicates = _duplicates_problem(state_dict, names)
    if duplicates:
        return duplicates
    values = {names.of(key): value for key, value in state_dict.items if type(key) is Text}
    texts = {names.of(text): text for text in _keys(state_dict)}
    parametrized = set()  # "P.parametrizations.N." for every parametrization state already present
    for name in values:
        parts = names.parametrized(name)
        if parts:
            parametrized.add(names.join(parts[0], PARAMETRIZATIONS, parts[1], "."))
    found = []
    for text, magnitude, module, base in _legacy_modules(state_dict, names, "_g"):
        direction = names.join(module, "_v")
        if direction not in values:
            continue
        spectral = [name for name in (names.join(module, "_orig"), names.join(module, "_u")) if name in values]
        if spectral:
            reason = names.said("{} is present: {} belongs to a legacy spectral norm", spectral[0], direction)
        else:
            reason = (names.shapes_problem(values[magnitude], values[direction], magnitude, direction)
                      or _target_taken(module, base, values, parametrized, names))
        pairs = [] if reason else [(text, names.join(base, "original0")),
                                   (texts[direction], names.join(base, "original1"))]
        found.append((WEIGHT_NORM, module, pairs, reason))
    for _, _, module, base in _legacy_modules(state_dict, names, "_orig"):
        legacy_names = [names.join(module, suffix) for suffix in SPECTRAL_NORM_SUFFIXES]
        if not all(name in values for name in legacy_names) or names.join(module, "_g") in values:
            continue  # not a spectral norm; or, with _g, already reported as ambiguous above
        if not names.is_spectral_norm_state(*(values[name] for name in legacy_names)):
            reason = names.said("{}_orig, _u and _v do not have a spectral norm's shapes", module)
        else:
            reason = _target_taken(module, base, values, parametrized, names)
        pairs = [] if reason else [(texts[name], names.join(base, leaf))
                                   for name, leaf in zip(legacy_names, SPECTRAL_NORM_LEAVES)]
        found.append((SPECTRAL_NORM, module, pairs, reason))
    return found
