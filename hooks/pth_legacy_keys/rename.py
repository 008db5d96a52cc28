"""The rename rules: which keys of which state dicts become which names.

A state dict is any dict in the checkpoint with a tensor among its values.  Its keys
are renamed as a whole or not at all: a module that looks parametrized but is not a
plain weight norm makes the whole file "cannot convert", so a file is never left
half in one format and half in the other.
"""

from collections import namedtuple
from functools import cached_property

from .pickle_walk import Bytes, Dict, Tensor, Text

LEGACY, PARAMETRIZED = "legacy", "parametrized"
DIRECTIONS = (LEGACY, PARAMETRIZED)

PARAMETRIZATIONS = "parametrizations."
WEIGHT_NORM, SPECTRAL_NORM = "weight-norm", "spectral-norm"
FAMILIES = (WEIGHT_NORM, SPECTRAL_NORM)
# What each direction converts unless told otherwise. Towards parametrized names, spectral norm
# stays legacy: torch's load hook still reads legacy weight-norm names into a parametrized
# module, but nothing reads legacy spectral-norm names into one, and libraries that use new weight
# norm (coqui-tts, speechbrain) keep old spectral norm in their own working files.
DEFAULT_FAMILIES = {LEGACY: FAMILIES, PARAMETRIZED: (WEIGHT_NORM,)}
WEIGHT_NORM_LEAVES = ("original0", "original1")  # -> _g, _v
WEIGHT_NORM_SUFFIXES = ("_g", "_v")
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
    for where, state_dict in survey.state_dicts:
        keys = _StateDict(state_dict, names)
        if keys.duplicate is not None:
            result.problems.append(Problem(where, keys.duplicate, names.said(
                "the key '{}' appears twice in one dict", keys.duplicate)))
            continue
        for found in _plan_state_dict(keys, to, families):
            if found.reason:
                result.problems.append(Problem(where, found.module, found.reason))
                continue
            result.modules += 1
            result.families[found.family] = result.families.get(found.family, 0) + 1
            for text, new in found.pairs:
                result.renames.append(Rename(where, text.value, new))
                _assign(result, text, new, where, found.module, survey, names)
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


# The rules: one per family and direction (the _RULES table at the end), each a list of checks
# run in order on every module it finds, the first reason found refusing the module.
#
# Every name here comes from `names`: built once however many dicts share a key string.

class _StateDict:
    """What the rules read of one state dict: its string keys by name, in order, and their values."""

    def __init__(self, state_dict, names):
        self.names = names
        self.texts = {}  # name -> its key's Text
        self.values = {}  # name -> value
        self.duplicate = None  # the first name keying two items: such a dict is refused whole
        for key, value in state_dict.items:
            if type(key) is Text:
                name = names.of(key)
                if name in self.texts and self.duplicate is None:
                    self.duplicate = name
                self.texts[name] = key
                self.values[name] = value
        self._metadata = state_dict.metadata

    def value(self, text):
        return self.values[self.names.of(text)]

    @cached_property
    def stacked(self):
        """The names in `_metadata`: "X.parametrizations.weight.1" there is a second parametrization."""
        if self._metadata is None:
            return set()
        return {self.names.of(key) for key, _ in self._metadata.items if type(key) is Text}

    @cached_property
    def parametrized(self):
        """"P.parametrizations.N." for every parametrization state already present."""
        found = set()
        for name in self.values:
            parts = self.names.parametrized(name)
            if parts:
                found.add(self.names.join(parts[0], PARAMETRIZATIONS, parts[1], "."))
        return found


class _Rule(namedtuple("_Rule", "family to sources targets checks unless shapes_reason", defaults=((), ""))):
    """How one family's modules are renamed in one direction.

    family         WEIGHT_NORM or SPECTRAL_NORM
    to             LEGACY or PARAMETRIZED
    sources        the key parts read ("original0", "_g" ...), in the order the shape check takes them
    targets        the parts they become, in the same order
    checks         check(module, keys) -> reason or None, in the order they run
    unless         legacy suffixes that leave a module to another rule, which reports it
    shapes_reason  a spectral norm's bad shapes, "{}" the module
    """

    __slots__ = ()

    @property
    def reads(self):
        """The form the module's keys are in now."""
        return PARAMETRIZED if self.to == LEGACY else LEGACY


# _Module and _Found are read field by field hundreds of times a file: classes with __slots__,
# whose attribute reads Python 3.11 specializes, where it does not for a namedtuple's fields.
class _Module:
    """A module one rule applies to, as found in one state dict: its _Rule; module, "P.N", the
    parametrized tensor ("dec.ups.0.weight"); base, "P.parametrizations.N."; sources, the parts of
    its keys present (rule.sources, and others) -> key Text, in key order; targets, the names its
    rule.sources keys would get, in the same order."""

    __slots__ = ("rule", "module", "base", "sources", "targets")

    def __init__(self, rule, module, base, sources, targets):
        self.rule, self.module, self.base, self.sources, self.targets = rule, module, base, sources, targets


class _Found:
    """What a rule decided about one module: its family and module; pairs, (key Text, new name),
    empty when there is a reason; reason, a str or None."""

    __slots__ = ("family", "module", "pairs", "reason")

    def __init__(self, family, module, pairs, reason):
        self.family, self.module, self.pairs, self.reason = family, module, pairs, reason


def _stem(m, form):
    """What the module's keys in `form` start with: "P.N" (legacy) or "P.parametrizations.N."."""
    return m.module if form == LEGACY else m.base


def _module(rule, names, prefix, param, sources):
    module, base = names.join(prefix, param), names.join(prefix, PARAMETRIZATIONS, param, ".")
    stem = module if rule.to == LEGACY else base
    return _Module(rule, module, base, sources, tuple(names.join(stem, target) for target in rule.targets))


def _plan_state_dict(keys, to, families):
    """A _Found for every module of `families` that a rule to `to` applies to, in order."""
    for m in _modules(keys, to, families):
        rule = m.rule
        for check in rule.checks:
            reason = check(m, keys)
            if reason:
                yield _Found(rule.family, m.module, (), reason)
                break
        else:
            yield _Found(rule.family, m.module, tuple(zip((m.sources[part] for part in rule.sources), m.targets)),
                         None)


def _modules(keys, to, families):
    """To legacy, in the order of each module's first key; to parametrized, family by family."""
    if to == LEGACY:
        return _parametrized_modules(keys, families)
    return (m for family in FAMILIES if family in families
            for m in _legacy_modules(keys, _RULES[family, PARAMETRIZED]))


def _parametrized_modules(keys, families):
    """Each "P.parametrizations.N." with keys: a spectral norm when its leaves are exactly that
    family's, else a weight norm when one of that family's leaves is there (its checks refuse any
    other mix).  Others (orthogonal, a custom one-tensor parametrization ...) have no legacy names."""
    names = keys.names
    groups = {}
    for name, text in keys.texts.items():
        parts = names.parametrized(name)
        if parts:
            prefix, param, leaf = parts
            groups.setdefault((prefix, param), {})[leaf] = text
    for (prefix, param), leaves in groups.items():
        if set(leaves) == set(SPECTRAL_NORM_LEAVES):
            family = SPECTRAL_NORM
        elif any(leaf in leaves for leaf in WEIGHT_NORM_LEAVES):
            family = WEIGHT_NORM
        else:
            continue
        if family in families:
            yield _module(_RULES[family, LEGACY], names, prefix, param, leaves)


def _legacy_modules(keys, rule):
    """Each "P.N" with every key "P.N<suffix>" of the rule's sources and none of its `unless`,
    in the order of its key for the first source."""
    names = keys.names
    for name in keys.texts:
        parts = names.legacy(name, rule.sources[0])
        if not parts:
            continue
        prefix, param = parts
        module = names.join(prefix, param)
        wanted = [names.join(module, suffix) for suffix in rule.sources]
        if all(key in keys.values for key in wanted) and not any(
                names.join(module, suffix) in keys.values for suffix in rule.unless):
            yield _module(rule, names, prefix, param,
                          {suffix: keys.texts[key] for suffix, key in zip(rule.sources, wanted)})


# The checks: each takes a _Module and the _StateDict it is in, and gives a reason or None.

def _missing_part(m, keys):
    """One of the rule's keys is not there."""
    for part in m.rule.sources:
        if part not in m.sources:
            return keys.names.said("{}{} is missing", _stem(m, m.rule.reads), part)
    return None


def _extra_part(m, keys):
    """The module has a key the family does not have."""
    for part in m.sources:
        if part not in m.rule.sources:
            return keys.names.said("it also has {}, so it is not a plain " + _NOUNS[m.rule.family],
                                   keys.names.join(_stem(m, m.rule.reads), part))
    return None


def _stacked(m, keys):
    """A second parametrization on the same tensor shows only in `_metadata`."""
    if keys.names.join(m.base, "1") in keys.stacked:
        return "a second parametrization is stacked on its " + _NOUNS[m.rule.family]
    return None


def _spectral_norm_keys(m, keys):
    """Legacy _g and _v beside _orig or _u: that _v is also a legacy spectral norm's."""
    names = keys.names
    for suffix in ("_orig", "_u"):
        present = names.join(m.module, suffix)
        if present in keys.values:
            return names.said("{} is present: {} belongs to a legacy spectral norm", present,
                              names.join(m.module, "_v"))
    return None


def _weight_norm_shapes(m, keys):
    """g must be a weight-norm magnitude of v: else it is a custom two-tensor parametrization."""
    g, v = m.sources[m.rule.sources[0]], m.sources[m.rule.sources[1]]
    # The reason names them by leaf in the parametrized form, by key in the legacy form.
    labels = m.rule.sources if m.rule.reads == PARAMETRIZED else (keys.names.of(g), keys.names.of(v))
    return keys.names.shapes_problem(keys.value(g), keys.value(v), *labels)


def _spectral_norm_shapes(m, keys):
    """u and v must be the singular vectors of the weight (original)."""
    weight, u, v = (keys.value(m.sources[part]) for part in m.rule.sources)
    if keys.names.is_spectral_norm_state(weight, u, v):
        return None
    return keys.names.said(m.rule.shapes_reason, m.module)


def _target_taken(m, keys):
    """A name the module would take is in use: its own (as a plain tensor) or one of its targets
    (a legacy key; in the parametrized form, any key under its "P.parametrizations.N.")."""
    names = keys.names
    if m.rule.to == LEGACY:
        for name in (m.module,) + m.targets:
            if name in keys.values:
                return names.said("the legacy name {} is already a key", name)
        return None
    if m.module in keys.values:
        return names.said("{} is already a key", m.module)
    if m.base in keys.parametrized:
        return names.said("{}* is already in the state dict", m.base)
    return None


_NOUNS = {WEIGHT_NORM: "weight norm", SPECTRAL_NORM: "spectral norm"}

# families x directions: what each rule reads, what it writes, and the checks that can refuse it.
_RULES = {
    (WEIGHT_NORM, LEGACY): _Rule(
        WEIGHT_NORM, LEGACY, WEIGHT_NORM_LEAVES, WEIGHT_NORM_SUFFIXES,
        (_missing_part, _extra_part, _stacked, _weight_norm_shapes, _target_taken)),
    (SPECTRAL_NORM, LEGACY): _Rule(
        SPECTRAL_NORM, LEGACY, SPECTRAL_NORM_LEAVES, SPECTRAL_NORM_SUFFIXES,
        (_stacked, _spectral_norm_shapes, _target_taken),
        shapes_reason="its original, _u and _v do not have a spectral norm's shapes"),
    (WEIGHT_NORM, PARAMETRIZED): _Rule(
        WEIGHT_NORM, PARAMETRIZED, WEIGHT_NORM_SUFFIXES, WEIGHT_NORM_LEAVES,
        (_spectral_norm_keys, _weight_norm_shapes, _target_taken)),
    (SPECTRAL_NORM, PARAMETRIZED): _Rule(
        SPECTRAL_NORM, PARAMETRIZED, SPECTRAL_NORM_SUFFIXES, SPECTRAL_NORM_LEAVES,
        (_spectral_norm_shapes, _target_taken),
        unless=("_g",),  # with _g and _v it is the weight-norm rule's, which reports _orig and _u
        shapes_reason="{}_orig, _u and _v do not have a spectral norm's shapes"),
}
