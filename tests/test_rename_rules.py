"""The rename rules on hand-built trees: no torch, no pickle, only what `plan` reads.

A tree here is what pickle_walk hands the rules: Dict (items in pickle order, an optional
`_metadata` Dict), lists, tuples, Text (one object per pickled string: memo fetches share it),
Bytes and Tensor placeholders with a shape.  Every case states the renames, the problems and
their reasons word for word, in the order `plan` gives them.
"""

import pytest
from pth_legacy_keys.pickle_walk import Bytes, Dict, Tensor, Text
from pth_legacy_keys.rename import FAMILIES, LEGACY, PARAMETRIZED, plan

WN, SN = "weight-norm", "spectral-norm"
P = "a.parametrizations.weight."  # the parametrized stem of module "a.weight"


def text(value):
    return Text(value, 0, len(value.encode()))


def node(value):
    """A tuple of ints is a tensor of that shape, a str a new Text; anything else as it is."""
    if type(value) is tuple and all(type(size) is int for size in value):
        return Tensor(None, value)
    if type(value) is str:
        return text(value)
    return value


def dict_of(entries, metadata=None):
    """A Dict of (key, value) entries; a key is a str (a new Text) or a Text (shared)."""
    result = Dict(ordered=True)
    result.items = [(key if type(key) is Text else text(key), node(value)) for key, value in entries]
    if metadata is not None:
        result.metadata = dict_of([(name, dict_of([("version", 1)])) for name in metadata])
    return result


def shared(*names):
    """One Text per name, to use as the same pickled string in several places."""
    return {name: text(name) for name in names}


def renames(result):
    return [(r.where, r.old, r.new) for r in result.renames]


def problems(result):
    return [(p.where, p.module, p.reason) for p in result.problems]


def rewrites(result):
    """What fix would write: each defining string's new value, keyed by the Text itself."""
    return {id(found): (found.value, new) for found, new in result.new_text.values()}


# One state dict "model" per case: (id, direction, its entries, its _metadata names,
# the renames, the problems as (module, reason)).
CASES = [
    # weight norm to legacy: any dim, any parameter, any prefix
    ("wn-legacy-dim0", LEGACY,
     [(P + "original0", (3, 1, 1)), (P + "original1", (3, 4, 5))], None,
     [(P + "original0", "a.weight_g"), (P + "original1", "a.weight_v")], []),
    ("wn-legacy-dim1-conv-transpose", LEGACY,
     [(P + "original0", (1, 4, 1)), (P + "original1", (3, 4, 5))], None,
     [(P + "original0", "a.weight_g"), (P + "original1", "a.weight_v")], []),
    ("wn-legacy-dim-none-scalar", LEGACY,
     [(P + "original0", ()), (P + "original1", (3, 4))], None,
     [(P + "original0", "a.weight_g"), (P + "original1", "a.weight_v")], []),
    ("wn-legacy-any-parameter", LEGACY,
     [("rnn.parametrizations.weight_hh_l0.original0", (8, 1)),
      ("rnn.parametrizations.weight_hh_l0.original1", (8, 2))], None,
     [("rnn.parametrizations.weight_hh_l0.original0", "rnn.weight_hh_l0_g"),
      ("rnn.parametrizations.weight_hh_l0.original1", "rnn.weight_hh_l0_v")], []),
    ("wn-legacy-top-level-module", LEGACY,
     [("parametrizations.weight.original0", (3, 1)), ("parametrizations.weight.original1", (3, 2))], None,
     [("parametrizations.weight.original0", "weight_g"), ("parametrizations.weight.original1", "weight_v")], []),
    ("wn-legacy-last-parametrizations-segment-wins", LEGACY,
     [("x.parametrizations.w.parametrizations.weight.original0", (3, 1)),
      ("x.parametrizations.w.parametrizations.weight.original1", (3, 2))], None,
     [("x.parametrizations.w.parametrizations.weight.original0", "x.parametrizations.w.weight_g"),
      ("x.parametrizations.w.parametrizations.weight.original1", "x.parametrizations.w.weight_v")], []),
    ("wn-legacy-unrelated-metadata", LEGACY,
     [(P + "original0", (3, 1)), (P + "original1", (3, 2))],
     ["", "a", "a.parametrizations", "a.parametrizations.weight", "a.parametrizations.weight.0"],
     [(P + "original0", "a.weight_g"), (P + "original1", "a.weight_v")], []),
    # weight norm to legacy: refused
    ("wn-legacy-original1-missing", LEGACY,
     [(P + "original0", (3, 1))], None,
     [], [("a.weight", P + "original1 is missing")]),
    ("wn-legacy-original0-missing", LEGACY,
     [(P + "original1", (3, 2))], None,
     [], [("a.weight", P + "original0 is missing")]),
    ("wn-legacy-custom-two-tensor-parametrization", LEGACY,
     [(P + "original0", (3, 4, 1)), (P + "original1", (3, 4, 5))], None,
     [], [("a.weight", ("original0 of shape (3, 4, 1) is not a weight-norm magnitude of original1 "
                        "of shape (3, 4, 5) (a custom parametrization?)"))]),
    ("wn-legacy-magnitude-of-another-size", LEGACY,
     [(P + "original0", (4, 1)), (P + "original1", (3, 2))], None,
     [], [("a.weight", ("original0 of shape (4, 1) is not a weight-norm magnitude of original1 "
                        "of shape (3, 2) (a custom parametrization?)"))]),
    ("wn-legacy-not-a-tensor", LEGACY,
     [(P + "original0", 1.5), (P + "original1", (3, 2)), ("b", (1,))], None,
     [], [("a.weight", "original0 or original1 is not a tensor")]),
    ("wn-legacy-custom-parametrization-with-state", LEGACY,
     [(P + "original0", (3, 1)), (P + "original1", (3, 2)), (P + "0.scale", (1,))], None,
     [], [("a.weight", "it also has " + P + "0.scale, so it is not a plain weight norm")]),
    ("wn-legacy-mixed-with-spectral-norm-leaves", LEGACY,
     [(P + "original", (6, 4)), (P + "0._u", (6,)), (P + "0._v", (4,)), (P + "original0", (6, 1))], None,
     [], [("a.weight", P + "original1 is missing")]),
    ("wn-legacy-stacked", LEGACY,
     [(P + "original0", (3, 1)), (P + "original1", (3, 2))],
     ["a", "a.parametrizations.weight.0", "a.parametrizations.weight.1"],
     [], [("a.weight", "a second parametrization is stacked on its weight norm")]),
    ("wn-legacy-both-names-present-g", LEGACY,
     [(P + "original0", (3, 1)), (P + "original1", (3, 2)), ("a.weight_g", (3, 1))], None,
     [], [("a.weight", "the legacy name a.weight_g is already a key")]),
    ("wn-legacy-both-names-present-v", LEGACY,
     [("a.weight_v", (3, 2)), (P + "original0", (3, 1)), (P + "original1", (3, 2))], None,
     [], [("a.weight", "the legacy name a.weight_v is already a key")]),
    ("wn-legacy-module-name-is-a-key", LEGACY,
     [(P + "original0", (3, 1)), (P + "original1", (3, 2)), ("a.weight", (3, 2))], None,
     [], [("a.weight", "the legacy name a.weight is already a key")]),
    # other parametrizations have no legacy names: left alone
    ("orthogonal-untouched", LEGACY,
     [(P + "original", (3, 3)), (P + "0.base", (3, 3))], None, [], []),
    ("custom-one-tensor-untouched", LEGACY,
     [(P + "original", (3, 3))], None, [], []),
    ("spectral-norm-leaves-plus-base-untouched", LEGACY,
     [(P + "original", (3, 3)), (P + "0._u", (3,)), (P + "0._v", (3,)), (P + "0.base", (3, 3))], None, [], []),
    # spectral norm to legacy
    ("sn-legacy-linear", LEGACY,
     [(P + "original", (6, 4)), (P + "0._u", (6,)), (P + "0._v", (4,))], None,
     [(P + "original", "a.weight_orig"), (P + "0._u", "a.weight_u"), (P + "0._v", "a.weight_v")], []),
    ("sn-legacy-conv", LEGACY,
     [(P + "0._v", (6,)), (P + "original", (6, 2, 3)), (P + "0._u", (6,))], None,
     [(P + "original", "a.weight_orig"), (P + "0._u", "a.weight_u"), (P + "0._v", "a.weight_v")], []),
    ("sn-legacy-u-not-a-dimension-of-the-weight", LEGACY,
     [(P + "original", (6, 2)), (P + "0._u", (4,)), (P + "0._v", (3,))], None,
     [], [("a.weight", "its original, _u and _v do not have a spectral norm's shapes")]),
    ("sn-legacy-u-not-a-vector", LEGACY,
     [(P + "original", (6, 4)), (P + "0._u", (6, 1)), (P + "0._v", (4,))], None,
     [], [("a.weight", "its original, _u and _v do not have a spectral norm's shapes")]),
    ("sn-legacy-v-of-another-size", LEGACY,
     [(P + "original", (6, 4)), (P + "0._u", (6,)), (P + "0._v", (5,))], None,
     [], [("a.weight", "its original, _u and _v do not have a spectral norm's shapes")]),
    ("sn-legacy-stacked", LEGACY,
     [(P + "original", (6, 4)), (P + "0._u", (6,)), (P + "0._v", (4,))],
     ["a.parametrizations.weight.1"],
     [], [("a.weight", "a second parametrization is stacked on its spectral norm")]),
    ("sn-legacy-both-names-present", LEGACY,
     [(P + "original", (6, 4)), (P + "0._u", (6,)), (P + "0._v", (4,)), ("a.weight_u", (6,))], None,
     [], [("a.weight", "the legacy name a.weight_u is already a key")]),
    # weight norm to parametrized
    ("wn-parametrized", PARAMETRIZED,
     [("a.weight_g", (3, 1, 1)), ("a.weight_v", (3, 4, 5)), ("a.bias", (3,))], None,
     [("a.weight_g", P + "original0"), ("a.weight_v", P + "original1")], []),
    ("wn-parametrized-dim1-and-scalar", PARAMETRIZED,
     [("a.weight_v", (3, 4)), ("a.weight_g", (1, 4)), ("b.w_g", ()), ("b.w_v", (2, 2))], None,
     [("a.weight_g", P + "original0"), ("a.weight_v", P + "original1"),
      ("b.w_g", "b.parametrizations.w.original0"), ("b.w_v", "b.parametrizations.w.original1")], []),
    ("wn-parametrized-g-alone-untouched", PARAMETRIZED,
     [("a.weight_g", (3, 1))], None, [], []),
    ("wn-parametrized-custom-shapes", PARAMETRIZED,
     [("a.weight_g", (3, 2)), ("a.weight_v", (3, 2))], None,
     [], [("a.weight", ("a.weight_g of shape (3, 2) is not a weight-norm magnitude of a.weight_v "
                        "of shape (3, 2) (a custom parametrization?)"))]),
    ("wn-parametrized-not-a-tensor", PARAMETRIZED,
     [("a.weight_g", (3, 1)), ("a.weight_v", "text")], None,
     [], [("a.weight", "a.weight_g or a.weight_v is not a tensor")]),
    ("wn-parametrized-legacy-spectral-norm-beside", PARAMETRIZED,
     [("a.weight_g", (6, 1)), ("a.weight_v", (4,)), ("a.weight_orig", (6, 4)), ("a.weight_u", (6,))], None,
     [], [("a.weight", "a.weight_orig is present: a.weight_v belongs to a legacy spectral norm")]),
    ("wn-parametrized-u-beside", PARAMETRIZED,
     [("a.weight_g", (3, 1)), ("a.weight_v", (3, 2)), ("a.weight_u", (3,))], None,
     [], [("a.weight", "a.weight_u is present: a.weight_v belongs to a legacy spectral norm")]),
    ("wn-parametrized-both-names-present", PARAMETRIZED,
     [("a.weight_g", (3, 1)), ("a.weight_v", (3, 2)), (P + "original0", (3, 1))], None,
     [], [("a.weight", P + "* is already in the state dict")]),
    ("wn-parametrized-other-parametrization-there", PARAMETRIZED,
     [("a.weight_g", (3, 1)), ("a.weight_v", (3, 2)), (P + "0.base", (3, 3))], None,
     [], [("a.weight", P + "* is already in the state dict")]),
    ("wn-parametrized-module-name-is-a-key", PARAMETRIZED,
     [("a.weight_g", (3, 1)), ("a.weight_v", (3, 2)), ("a.weight", (3, 2))], None,
     [], [("a.weight", "a.weight is already a key")]),
    # spectral norm to parametrized
    ("sn-parametrized", PARAMETRIZED,
     [("a.weight_orig", (6, 4)), ("a.weight_u", (6,)), ("a.weight_v", (4,))], None,
     [("a.weight_orig", P + "original"), ("a.weight_u", P + "0._u"), ("a.weight_v", P + "0._v")], []),
    ("sn-parametrized-incomplete-untouched", PARAMETRIZED,
     [("a.weight_orig", (6, 4)), ("a.weight_u", (6,))], None, [], []),
    ("sn-parametrized-u-not-a-dimension-of-the-weight", PARAMETRIZED,
     [("a.weight_orig", (6, 2)), ("a.weight_u", (4,)), ("a.weight_v", (3,))], None,
     [], [("a.weight", "a.weight_orig, _u and _v do not have a spectral norm's shapes")]),
    ("sn-parametrized-u-not-a-vector", PARAMETRIZED,
     [("a.weight_orig", (6, 4)), ("a.weight_u", (1, 6)), ("a.weight_v", (4,))], None,
     [], [("a.weight", "a.weight_orig, _u and _v do not have a spectral norm's shapes")]),
    ("sn-parametrized-both-names-present", PARAMETRIZED,
     [("a.weight_orig", (6, 4)), ("a.weight_u", (6,)), ("a.weight_v", (4,)), (P + "0._u", (6,))], None,
     [], [("a.weight", P + "* is already in the state dict")]),
    ("sn-parametrized-module-name-is-a-key", PARAMETRIZED,
     [("a.weight", (6, 4)), ("a.weight_orig", (6, 4)), ("a.weight_u", (6,)), ("a.weight_v", (4,))], None,
     [], [("a.weight", "a.weight is already a key")]),
]


@pytest.mark.parametrize("to, entries, metadata, expected_renames, expected_problems",
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_rule(to, entries, metadata, expected_renames, expected_problems):
    model = dict_of(entries, metadata)
    result = plan(dict_of([("model", model), ("epoch", 3)]), to)
    assert problems(result) == [("model", module, reason) for module, reason in expected_problems]
    assert renames(result) == [("model", old, new) for old, new in expected_renames]
    assert result.param_names == []
    keys = {key.value: key for key, _ in model.items}
    if expected_problems:
        assert result.new_text == {}  # a file is renamed whole or not at all
    else:
        assert rewrites(result) == {id(keys[old]): (old, new) for old, new in expected_renames}
    modules = 0 if expected_problems else len({new.split("parametrizations.")[0] if to == PARAMETRIZED
                                               else new.rsplit("_", 1)[0] for _, new in expected_renames})
    assert result.modules == modules


@pytest.mark.parametrize("to, entries", [(case[1], case[2]) for case in CASES], ids=[case[0] for case in CASES])
def test_no_family_means_nothing_to_do(to, entries):
    result = plan(dict_of([("model", dict_of(entries))]), to, families=())
    assert (result.renames, result.problems, result.modules, result.new_text) == ([], [], 0, {})


def test_families_counted_and_filtered():
    entries = [(P + "original", (6, 4)), (P + "0._u", (6,)), (P + "0._v", (4,)),
               ("b.parametrizations.weight.original0", (3, 1)), ("b.parametrizations.weight.original1", (3, 2)),
               ("c.parametrizations.weight.original0", (5, 1)), ("c.parametrizations.weight.original1", (5, 2))]
    both = plan(dict_of(entries), LEGACY)
    assert (both.modules, both.families) == (3, {SN: 1, WN: 2})
    only_wn = plan(dict_of(entries), LEGACY, families=(WN,))
    assert (only_wn.modules, only_wn.families) == (2, {WN: 2})
    assert [r.new for r in only_wn.renames] == ["b.weight_g", "b.weight_v", "c.weight_g", "c.weight_v"]
    only_sn = plan(dict_of(entries), LEGACY, families=(SN,))
    assert (only_sn.modules, only_sn.families) == (1, {SN: 1})
    assert [r.new for r in only_sn.renames] == ["a.weight_orig", "a.weight_u", "a.weight_v"]


def test_a_refused_family_left_out_is_not_reported():
    entries = [(P + "original", (6, 4)), (P + "0._u", (6,)), (P + "0._v", (9,)),  # bad spectral norm
               ("b.parametrizations.weight.original0", (3, 1)), ("b.parametrizations.weight.original1", (3, 2))]
    result = plan(dict_of(entries), LEGACY, families=(WN,))
    assert (result.problems, result.modules) == ([], 1)
    assert len(result.new_text) == 2


def test_weight_norm_beside_a_legacy_spectral_norm_is_one_problem_whatever_the_families():
    entries = [("a.weight_orig", (6, 4)), ("a.weight_u", (6,)), ("a.weight_v", (4,)), ("a.weight_g", (6, 1))]
    assert problems(plan(dict_of(entries), PARAMETRIZED)) == [
        ("", "a.weight", "a.weight_orig is present: a.weight_v belongs to a legacy spectral norm")]
    # The spectral-norm rule leaves a module with _g to the weight-norm rule, even when it is off.
    alone = plan(dict_of(entries), PARAMETRIZED, families=(SN,))
    assert (alone.renames, alone.problems) == ([], [])


def test_to_legacy_goes_by_each_modules_first_key():
    entries = [("z.parametrizations.weight.original0", (3, 1)), (P + "original", (6, 4)),
               (P + "0._u", (6,)), ("z.parametrizations.weight.original1", (3, 2)), (P + "0._v", (4,)),
               ("m.parametrizations.weight.original1", (1, 2)), ("m.parametrizations.weight.original0", (1, 1))]
    result = plan(dict_of(entries), LEGACY)
    assert [(r.old, r.new) for r in result.renames] == [
        ("z.parametrizations.weight.original0", "z.weight_g"), ("z.parametrizations.weight.original1", "z.weight_v"),
        (P + "original", "a.weight_orig"), (P + "0._u", "a.weight_u"), (P + "0._v", "a.weight_v"),
        ("m.parametrizations.weight.original0", "m.weight_g"), ("m.parametrizations.weight.original1", "m.weight_v"),
    ]
    assert list(result.families) == [WN, SN]


def test_to_parametrized_gives_weight_norms_first_then_spectral_norms():
    entries = [("s.weight_orig", (6, 4)), ("s.weight_u", (6,)), ("s.weight_v", (4,)),
               ("z.weight_v", (3, 2)), ("z.weight_g", (3, 1)), ("m.weight_g", (1, 1)), ("m.weight_v", (1, 2))]
    result = plan(dict_of(entries), PARAMETRIZED)
    assert [r.old for r in result.renames] == ["z.weight_g", "z.weight_v", "m.weight_g", "m.weight_v",
                                               "s.weight_orig", "s.weight_u", "s.weight_v"]
    assert list(result.families) == [WN, SN]


def test_problems_keep_their_order_and_every_one_is_reported():
    entries = [("b.parametrizations.weight.original0", (3, 1)),  # missing original1
               (P + "original", (6, 2)), (P + "0._u", (4,)), (P + "0._v", (3,)),  # 4 is not a dim
               ("c.parametrizations.weight.original0", (3, 1)), ("c.parametrizations.weight.original1", (3, 2))]
    result = plan(dict_of([("ema", dict_of(entries)), ("model", dict_of(entries[:1]))]), LEGACY)
    assert problems(result) == [
        ("ema", "b.weight", "b.parametrizations.weight.original1 is missing"),
        ("ema", "a.weight", "its original, _u and _v do not have a spectral norm's shapes"),
        ("model", "b.weight", "b.parametrizations.weight.original1 is missing"),
    ]
    assert [r.old for r in result.renames] == ["c.parametrizations.weight.original0",
                                               "c.parametrizations.weight.original1"]
    assert (result.modules, result.new_text) == (1, {})


@pytest.mark.parametrize("to, key", [(LEGACY, P + "original0"), (PARAMETRIZED, "a.weight_g"), (LEGACY, "b")])
def test_a_key_twice_in_one_dict_refuses_that_dict_whatever_the_families(to, key):
    entries = ([(P + "original0", (3, 1)), (P + "original1", (3, 2))] if to == LEGACY
               else [("a.weight_g", (3, 1)), ("a.weight_v", (3, 2))])
    twice = dict_of(entries + [("b", (1,)), (key, (3, 1)), ("b", (1,))])
    fine = dict_of(entries)
    for families in (FAMILIES, ()):
        result = plan(dict_of([("bad", twice), ("good", fine)]), to, families)
        assert problems(result) == [("bad", key, f"the key '{key}' appears twice in one dict")]
        assert [r.where for r in result.renames] == (["good", "good"] if families else [])
        assert result.new_text == {}


def test_a_long_duplicated_key_is_shown_shortened():
    key = "k" * 5000
    result = plan(dict_of([(key, (1,)), (key, (1,))]), LEGACY)
    (problem,) = result.problems
    assert problem.module == key
    assert problem.reason.startswith("the key 'kkk") and "[4,840 characters]" in problem.reason
    assert len(problem.reason) < 300


# A key string is one Text however many places fetch it from the memo: renaming it renames
# every use.  Only state-dict keys (and optimizer param_names) may be renamed.
def value_elsewhere(key):
    return dict_of([("note", key)])


def bytes_elsewhere(key):
    return dict_of([("raw", Bytes(key))])


def key_of_a_plain_dict(key):
    return dict_of([("config", dict_of([(key, 1)]))])


def in_a_list(key):
    return dict_of([("names", [1, key])])


@pytest.mark.parametrize("elsewhere", [value_elsewhere, bytes_elsewhere, key_of_a_plain_dict, in_a_list])
@pytest.mark.parametrize("to", [LEGACY, PARAMETRIZED])
def test_a_key_string_also_used_as_a_value_is_not_renamed(to, elsewhere):
    names = ([P + "original0", P + "original1"] if to == LEGACY else ["a.weight_g", "a.weight_v"])
    keys = shared(*names)
    model = dict_of([(keys[names[0]], (3, 1)), (keys[names[1]], (3, 2))])
    root = dict_of([("model", model), ("extra", elsewhere(keys[names[1]]))])
    result = plan(root, to)
    reason = f"the string '{names[1]}' is also used outside state-dict keys, so renaming it would change a value"
    assert problems(result) == [("model", "a.weight", reason)]
    assert result.new_text == {}  # neither the key nor the value changes


def test_an_equal_string_that_is_another_object_does_not_block():
    model = dict_of([(P + "original0", (3, 1)), (P + "original1", (3, 2))])
    root = dict_of([("model", model), ("note", text(P + "original1")), ("raw", Bytes(text(P + "original0")))])
    result = plan(root, LEGACY)
    assert result.problems == []
    assert sorted(value for value, _ in rewrites(result).values()) == [P + "original0", P + "original1"]
    assert all(found is key for (key, _), found in zip(model.items, (t for t, _ in result.new_text.values())))


def test_a_key_shared_by_two_state_dicts_is_rewritten_once():
    keys = shared(P + "original0", P + "original1")
    model = dict_of([(keys[P + "original0"], (3, 1)), (keys[P + "original1"], (3, 2))])
    ema = dict_of([(keys[P + "original0"], (3, 1)), (keys[P + "original1"], (3, 2)), ("step", (1,))])
    result = plan(dict_of([("model", model), ("ema", ema)]), LEGACY)
    assert result.problems == []
    assert renames(result) == [("model", P + "original0", "a.weight_g"), ("model", P + "original1", "a.weight_v"),
                               ("ema", P + "original0", "a.weight_g"), ("ema", P + "original1", "a.weight_v")]
    assert (result.modules, result.families) == (2, {WN: 2})
    assert rewrites(result) == {id(keys[P + "original0"]): (P + "original0", "a.weight_g"),
                                id(keys[P + "original1"]): (P + "original1", "a.weight_v")}


def test_a_state_dict_fetched_twice_is_planned_once():
    model = dict_of([(P + "original0", (3, 1)), (P + "original1", (3, 2))])
    result = plan(dict_of([("model", model), ("again", model)]), LEGACY)
    assert renames(result) == [("model", P + "original0", "a.weight_g"), ("model", P + "original1", "a.weight_v")]


def test_a_string_that_would_need_two_names_is_refused():
    keys = shared("w_g", "w_v")
    weight_norm = dict_of([(keys["w_g"], (3, 1)), (keys["w_v"], (3, 2))])
    spectral_norm = dict_of([("w_orig", (6, 4)), ("w_u", (6,)), (keys["w_v"], (4,))])
    result = plan(dict_of([("a", weight_norm), ("b", spectral_norm)]), PARAMETRIZED)
    assert problems(result) == [("b", "w", "the string 'w_v' would need two names")]
    assert result.new_text == {}


def optimizer_checkpoint(keys, param_names):
    model = dict_of([("a.bias", (3,)), (keys[0], (3, 1)), (keys[1], (3, 2))])
    group = dict_of([("lr", 0.1), ("params", [0, 1, 2]), ("param_names", param_names)])
    optimizer = dict_of([("state", dict_of([])), ("param_groups", [group])])
    return dict_of([("model", model), ("optimizer", optimizer)])


@pytest.mark.parametrize("to, names, new", [
    (LEGACY, [P + "original0", P + "original1"], ["a.weight_g", "a.weight_v"]),
    (PARAMETRIZED, ["a.weight_g", "a.weight_v"], [P + "original0", P + "original1"]),
])
def test_param_names_follow_the_keys(to, names, new):
    keys = [text(name) for name in names]
    # One entry is the key's own Text (the memo), one an equal string pickled again.
    own, again = keys[0], text(names[1])
    root = optimizer_checkpoint(keys, [text("a.bias"), own, again, text("other.weight")])
    result = plan(root, to)
    assert result.problems == []
    place = "optimizer.param_groups[0].param_names"
    assert [(r.where, r.old, r.new) for r in result.param_names] == [
        (place + "[1]", names[0], new[0]), (place + "[2]", names[1], new[1])]
    assert rewrites(result) == {id(keys[0]): (names[0], new[0]), id(keys[1]): (names[1], new[1]),
                                id(again): (names[1], new[1])}


def test_param_names_as_one_string_and_in_a_tuple():
    keys = [text(P + "original0"), text(P + "original1")]
    root = optimizer_checkpoint(keys, (text(P + "original1"),))
    root.items.append((text("param_names"), text(P + "original0")))
    result = plan(root, LEGACY)
    assert [(r.where, r.old, r.new) for r in result.param_names] == [
        ("optimizer.param_groups[0].param_names[0]", P + "original1", "a.weight_v"),
        ("param_names", P + "original0", "a.weight_g")]
    assert len(result.new_text) == 4


def test_param_names_of_a_refused_module_are_left():
    keys = [text(P + "original0"), text(P + "original1")]
    root = optimizer_checkpoint(keys, [keys[0], keys[1]])
    root.items[0][1].items.append((text("a.weight_g"), Tensor(None, (3, 1))))  # the legacy name is taken
    result = plan(root, LEGACY)
    assert problems(result) == [("model", "a.weight", "the legacy name a.weight_g is already a key")]
    assert (result.param_names, result.new_text) == ([], {})


def test_a_key_in_param_names_is_not_a_use_elsewhere():
    keys = [text("a.weight_g"), text("a.weight_v")]
    result = plan(optimizer_checkpoint(keys, [keys[1], keys[0]]), PARAMETRIZED)
    assert result.problems == []
    assert [r.new for r in result.param_names] == [P + "original1", P + "original0"]
    assert len(result.new_text) == 2  # the shared Texts, each once


# -- work grows with the state dict, not with its square --------------------------------------------


class CountedName(str):
    """A key whose comparisons run Python code, so that a profiler counts them: list.count or a
    scan of every key per key shows up as a square number of calls, where a dict or set lookup
    costs one hash and, at most, one comparison."""

    def __eq__(self, other):
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def calls_to_plan(entries, to):
    """How many Python and C function calls `plan` makes for one state dict of `entries`: a count
    of work that does not depend on the machine or its load."""
    import sys

    tree = dict_of([("model", dict_of([(Text(CountedName(key), 0, len(key)), value) for key, value in entries]))])
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        plan(tree, to, FAMILIES)
    finally:
        sys.setprofile(None)
    return count


@pytest.mark.parametrize("to, make_entries", [
    # a repeated key, last: found with keys.count(k) for each key, this was quadratic (fuzz finding 4)
    (LEGACY, lambda n: [(f"k{i}", (2,)) for i in range(n)] + [(f"k{n - 1}", (2,))]),
    # legacy pairs to parametrize: each pair once checked every key of the dict (fuzz finding 5)
    (PARAMETRIZED, lambda n: [(f"m{i}.weight_{leaf}", (2, 1, 1) if leaf == "g" else (2, 3, 3))
                              for i in range(n // 2) for leaf in "gv"]),
    (LEGACY, lambda n: [(f"m{i}.parametrizations.weight.original{k}", (2, 1, 1) if k == 0 else (2, 3, 3))
                        for i in range(n // 2) for k in (0, 1)]),
])
def test_planning_work_grows_linearly_with_the_keys(to, make_entries):
    small, large = calls_to_plan(make_entries(500), to), calls_to_plan(make_entries(2000), to)
    assert large < 4.5 * small, (small, large)  # four times the keys: four times the calls, not sixteen


# -- mutation-testing gaps (mutmut over rename.py) ---------------------------------------------

from pth_legacy_keys.rename import is_weight_norm_magnitude, shown_name, split_legacy, split_parametrized  # noqa: E402


def test_split_parametrized_edges():
    # a candidate not after a dot is skipped for an earlier one (not the end of the search)
    assert split_parametrized("m.parametrizations.w.xparametrizations.y") == ("m.", "w", "xparametrizations.y")
    assert split_parametrized("xparametrizations.w.original0") is None
    assert split_parametrized("parametrizations..original0") is None  # an empty param
    assert split_parametrized("a.parametrizations.w.") is None  # an empty leaf
    assert split_parametrized("a.parametrizations.w") is None
    assert split_parametrized("a.parametrizations.w.x") == ("a.", "w", "x")


def test_split_legacy_edges():
    assert split_legacy("dec.ups.0.weight_g", "_g") == ("dec.ups.0.", "weight")
    assert split_legacy("a._g", "_g") is None
    assert split_legacy("_g", "_g") is None


def test_shown_name_keeps_a_name_of_exactly_the_limit():
    assert shown_name("a" * 200) == "a" * 200
    assert shown_name("a" * 201) == "a" * 120 + "...[41 characters]..." + "a" * 40


def test_is_weight_norm_magnitude_edges():
    assert is_weight_norm_magnitude((3, 1), (3,)) is False
    assert is_weight_norm_magnitude((3, 1), (3, 3, 1)) is False
    assert is_weight_norm_magnitude((1, 1), (1, 5)) is True
    assert is_weight_norm_magnitude((1, 1), (2, 3)) is False


def test_a_long_shape_is_shown_by_its_start_and_length():
    g, v = (2,) * 17, (3,) * 17
    result = plan(dict_of([("m", dict_of([(P + "original0", g), (P + "original1", v)]))]), LEGACY)
    assert problems(result) == [("m", "a.weight", (
        "original0 of shape (2, 2, 2, 2, 2, 2, 2, 2, ... 17 dimensions) is not a weight-norm magnitude of "
        "original1 of shape (3, 3, 3, 3, 3, 3, 3, 3, ... 17 dimensions) (a custom parametrization?)"))]
    result = plan(dict_of([("m", dict_of([(P + "original0", (2,) * 16), (P + "original1", (3,) * 16)]))]), LEGACY)
    assert str((2,) * 16) in problems(result)[0][2]


@pytest.mark.parametrize("weight, u, v, ok", [
    ((4, 1), (4,), (1,), True), ((0, 3), (0,), (3,), True), ((4, 5), (4,), (3,), False), ((4, 3), (4,), (3,), True),
])
def test_spectral_norm_shapes_edges(weight, u, v, ok):
    entries = [(P + "original", weight), (P + "0._u", u), (P + "0._v", v)]
    result = plan(dict_of([("m", dict_of(entries))]), LEGACY)
    assert (result.problems == []) is ok and (len(result.renames) == 3) is ok


def test_shape_checks_are_remembered_per_pair_of_tensors():
    good_v, bad_g = Tensor(None, (3, 2)), Tensor(None, (4, 1))
    # two modules share original1 (the memo); only b's original0 is wrong
    sd = dict_of([("a.parametrizations.weight.original0", (3, 1)), ("a.parametrizations.weight.original1", good_v),
                  ("b.parametrizations.weight.original0", bad_g), ("b.parametrizations.weight.original1", good_v)])
    assert [p.module for p in plan(dict_of([("m", sd)]), LEGACY).problems] == ["b.weight"]
    shared_g = Tensor(None, (3, 1))
    sd = dict_of([("a.parametrizations.weight.original0", shared_g), ("a.parametrizations.weight.original1", (3, 2)),
                  ("b.parametrizations.weight.original0", shared_g), ("b.parametrizations.weight.original1", (4, 2))])
    assert [p.module for p in plan(dict_of([("m", sd)]), LEGACY).problems] == ["b.weight"]
    for bad in ("weight", "u", "v"):
        parts = {"weight": Tensor(None, (6, 4)), "u": Tensor(None, (6,)), "v": Tensor(None, (4,))}
        other = dict(parts, **{bad: Tensor(None, (5, 5) if bad == "weight" else (5,))})
        sd = dict_of([("a.parametrizations.weight.original", parts["weight"]), ("a.parametrizations.weight.0._u", parts["u"]),
                      ("a.parametrizations.weight.0._v", parts["v"]),
                      ("b.parametrizations.weight.original", other["weight"]), ("b.parametrizations.weight.0._u", other["u"]),
                      ("b.parametrizations.weight.0._v", other["v"])])
        assert [p.module for p in plan(dict_of([("m", sd)]), LEGACY).problems] == ["b.weight"], bad


def test_a_parametrization_of_no_family_does_not_end_the_search():
    sd = dict_of([("o.parametrizations.weight.original", (3, 3)), (P + "original0", (3, 1)), (P + "original1", (3, 2))])
    assert [r.new for r in plan(dict_of([("m", sd)]), LEGACY).renames] == ["a.weight_g", "a.weight_v"]


def test_to_parametrized_goes_by_each_modules_first_source_key():
    sd = dict_of([("b.weight_g", (3, 1)), ("a.weight_v", (3, 2)), ("a.weight_g", (3, 1)), ("b.weight_v", (3, 2))])
    assert [r.old for r in plan(dict_of([("m", sd)]), PARAMETRIZED).renames] == [
        "b.weight_g", "b.weight_v", "a.weight_g", "a.weight_v"]


def weight_norm_dict():
    return dict_of([(P + "original0", (3, 1)), (P + "original1", (3, 2))])


@pytest.mark.parametrize("before", [text("x"), Bytes(text("x")), 1.5])
def test_a_string_or_bytes_before_a_state_dict_does_not_end_the_survey(before):
    result = plan([before, weight_norm_dict()], LEGACY)
    assert [(r.where, r.new) for r in result.renames] == [("[1]", "a.weight_g"), ("[1]", "a.weight_v")]


def test_a_top_level_list_is_not_param_names():
    result = plan([weight_norm_dict(), text(P + "original0")], LEGACY)
    assert (len(result.renames), result.param_names) == (2, [])


def test_places_under_keys_that_are_not_strings():
    root = Dict()
    inner = Dict()
    inner.items = [(3, weight_norm_dict()), (True, weight_norm_dict()), (1.5, weight_norm_dict()),
                   ((text("t"),), weight_norm_dict())]
    root.items = [(text("k" * 100), inner)]
    wheres = [r.where for r in plan(root, LEGACY).renames][::2]
    k = "k" * 36 + "...[52 characters]..." + "k" * 12
    assert wheres == [k + "[3]", k + "[True]", k + "[float]", k + "[tuple]"]


def test_a_key_that_is_not_a_string_is_a_use_of_what_it_holds():
    sd = weight_norm_dict()
    key = sd.items[0][0]
    root = Dict()
    root.items = [(text("m"), sd), ((key,), 1)]
    result = plan(root, LEGACY)
    assert problems(result) == [("m", "a.weight", "the string '" + P + "original0' is also used outside state-dict "
                                 "keys, so renaming it would change a value")]
    root.items = [(text("m"), sd), (1, [text(P + "original0")])]  # a list under a non-string key: no param_names
    assert (len(plan(root, LEGACY).renames), plan(root, LEGACY).param_names) == (2, [])


def test_metadata_is_surveyed_and_named_in_places():
    sd = weight_norm_dict()
    top = Dict(ordered=True)
    top.metadata = dict_of([("m", sd)])
    assert [r.where for r in plan(top, LEGACY).renames] == ["_metadata.m"] * 2
    assert [r.where for r in plan(dict_of([("model", top)]), LEGACY).renames] == ["model._metadata.m"] * 2
    # metadata keys are uses of their strings
    sd = weight_norm_dict()
    holder = Dict(ordered=True)
    holder.items = [(text("x"), 1)]
    holder.metadata = Dict()
    holder.metadata.items = [(sd.items[0][0], 1)]
    result = plan(dict_of([("m", sd), ("h", holder)]), LEGACY)
    assert [p.module for p in result.problems] == ["a.weight"]
    # a state dict that is also some dict's metadata is planned once
    sd = weight_norm_dict()
    holder = Dict(ordered=True)
    holder.metadata = sd
    assert len(plan(dict_of([("h", holder), ("m", sd)]), LEGACY).renames) == 2


def test_long_places_are_shortened_to_the_path_limit():
    def place(*keys):
        root = weight_norm_dict()
        for key in reversed(keys):
            root = dict_of([(key, root)])
        return plan(root, LEGACY).renames[0].where
    exact = place("a" * 60, "b" * 60, "c" * 60, "d" * 17)  # 200 characters
    assert exact == ".".join(["a" * 60, "b" * 60, "c" * 60, "d" * 17])
    long = ".".join(["a" * 60, "b" * 60, "c" * 60, "d" * 18])
    assert place("a" * 60, "b" * 60, "c" * 60, "d" * 18) == long[:100] + "....." + long[-95:]


def test_a_param_names_string_used_elsewhere_is_a_problem_at_its_place():
    keys = [text(P + "original0"), text(P + "original1")]
    entry = text(P + "original0")
    root = optimizer_checkpoint(keys, [entry])
    root.items.append((text("note"), entry))
    result = plan(root, LEGACY)
    assert problems(result) == [("optimizer.param_groups[0].param_names[0]", P + "original0",
                                 "the string '" + P + "original0' is also used outside state-dict keys, "
                                 "so renaming it would change a value")]


def test_every_param_names_string_is_followed():
    keys = [text(P + "original0"), text(P + "original1")]
    root = optimizer_checkpoint(keys, [])
    root.items.append((text("param_names"), text(P + "original0")))
    root.items.append((text("x"), dict_of([("param_names", P + "original1")])))
    assert [r.new for r in plan(root, LEGACY).param_names] == ["a.weight_g", "a.weight_v"]
