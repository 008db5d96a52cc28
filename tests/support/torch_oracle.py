"""What `torch.load(f, weights_only=False)` would import from a file, found without running it.

`torch.load` hands its `pickle_module` to every route it may take (the zip, the pre-1.6 tar,
the magic-number format; see /work/shared/FORMAT.md section 6).  `torch_route(path)` passes it
a module whose unpickler:

- imports a global only if torch's weights-only unpickler allows it (or a plain checkpoint
  uses it); anything else is RECORDED and refused, so it is never imported;
- records an allowed global used outside its role in a plain checkpoint (backward hooks, a
  tensor state that does more than add plain attributes, tensor metadata other than torch's
  boolean flags, a bare function or class as a value, BUILD on anything but a dict) and
  refuses to run it;
- refuses, without recording, calls that would only exhaust memory (a huge storage).

`torch.jit.load` is patched to record that it was reached, and to raise.  The file is always
opened here and passed as a real file object: it has a fileno, so torch tries the tar route
exactly as for a path, and a `.safetensors` name cannot divert it to the safetensors library.

It is the pure-Python unpickler (`pickle._Unpickler`) underneath, so that REDUCE and BUILD
can be checked before they run.  Only torch is needed, not pytest: fuzz/fuzz_reader.py uses
this module too.
"""

import _compat_pickle
import contextlib
import io
import os
import pickle
import re
import types
import warnings
from collections import OrderedDict

import torch
from torch import _weights_only_unpickler

# A storage or argument bigger than this is refused unrecorded: no test file holds one, and
# a mutated length must not make the oracle allocate gigabytes.
MAX_ALLOCATION = 1 << 28

# The globals a plain state-dict checkpoint uses (FORMAT.md section 3); all are also in
# torch's weights-only allowlist, and test_torch_route checks that they still are.
PLAIN_CHECKPOINT_GLOBALS = {
    "collections.OrderedDict": OrderedDict,
    "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": torch._utils._rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": torch._utils._rebuild_parameter_with_state,
    "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
    "torch.storage.UntypedStorage": torch.storage.UntypedStorage,
    "torch.Tensor": torch.Tensor,
    "torch.nn.parameter.Parameter": torch.nn.parameter.Parameter,
    "_codecs.encode": _weights_only_unpickler.encode,
}

PLAIN_DATA_TYPES = (int, float, complex, bool, str, bytes, bytearray, list, tuple, set, frozenset, dict, type(None))
TENSOR_REBUILDERS = (torch._utils._rebuild_tensor_v2, torch._utils._rebuild_tensor_v3)
TENSOR_TYPES = (torch.Tensor, torch.nn.parameter.Parameter)
# Values that are data, not code: a dtype saved in a config is what torch.save writes for it.
DATA_GLOBAL_TYPES = (torch.dtype, torch.qscheme)


def allowed_globals():
    """dotted name -> object: torch's weights-only allowlist, the user's additions, a plain checkpoint's."""
    allowed = dict(_weights_only_unpickler._get_allowed_globals())
    allowed.update(_weights_only_unpickler._get_user_allowed_globals())
    for dotted, value in PLAIN_CHECKPOINT_GLOBALS.items():
        allowed.setdefault(dotted, value)
    return allowed


class TorchRoute:
    """What torch.load would have done with one file."""

    def __init__(self):
        self.forbidden = []  # (module, name) torch would import that no checkpoint needs
        self.misused = []  # an allowed global used outside its role, spelled out
        self.jit_load = False  # torch.load handed the file to torch.jit.load
        self.error = None  # what torch.load raised (any exception is fine here)
        self.result = None  # what it returned, when it got that far

    @property
    def hostile(self):
        return bool(self.forbidden or self.misused or self.jit_load)

    def describe(self):
        found = [f"imports {module}.{name}" for module, name in self.forbidden]
        found += [f"uses {misuse}" for misuse in self.misused]
        if self.jit_load:
            found.append("reaches torch.jit.load")
        return "; ".join(found) if found else "nothing hostile"

    def __repr__(self):
        return f"TorchRoute({self.describe()}; error={self.error!r})"


class OracleError(pickle.UnpicklingError):
    """Raised in place of anything the oracle will not import or run."""


def pickle_module_for(route):
    """A pickle module for torch.load that records into `route` instead of importing or running."""
    allowed = allowed_globals()

    class Unpickler(pickle._Unpickler):
        dispatch = dict(pickle._Unpickler.dispatch)

        def __init__(self, file, **kwargs):
            super().__init__(file, **kwargs)
            self._names = {}  # id(object) -> dotted name, for every global this unpickler handed out
            self._persistent_load = pickle._Unpickler.persistent_load.__get__(self)  # refuses any id

        def find_class(self, module, name):
            dotted_module, dotted_name = module, name
            if self.proto < 3 and self.fix_imports:  # what pickle.Unpickler does for protocol 2
                if (module, name) in _compat_pickle.NAME_MAPPING:
                    dotted_module, dotted_name = _compat_pickle.NAME_MAPPING[(module, name)]
                elif module in _compat_pickle.IMPORT_MAPPING:
                    dotted_module = _compat_pickle.IMPORT_MAPPING[module]
            dotted = f"{dotted_module}.{dotted_name}"
            if dotted not in allowed:
                route.forbidden.append((module, name))
                raise OracleError(f"oracle: torch would import {dotted}")
            value = allowed[dotted]
            self._names[id(value)] = dotted
            return value

        # torch sets this on every unpickler it makes; wrap it so a huge storage is refused.
        @property
        def persistent_load(self):
            return self._persistent_load

        @persistent_load.setter
        def persistent_load(self, function):
            def guarded(saved_id):
                if (isinstance(saved_id, tuple) and len(saved_id) > 4 and isinstance(saved_id[4], int)
                        and saved_id[4] * 16 > MAX_ALLOCATION):
                    raise OracleError("oracle: storage too large to allocate")
                return function(saved_id)

            self._persistent_load = guarded

        def _check_call(self, function, args):
            name = self._names.get(id(function))
            if name is None:
                if callable(function):
                    route.misused.append(f"a call of a {type(function).__name__}, not of an imported global")
                raise OracleError("oracle: calls something that is not a global")
            misuse = call_misuse(function, args)
            if misuse:
                route.misused.append(f"{name} {misuse}")
                raise OracleError(f"oracle: {name} {misuse}")
            if not is_one_of(function, PLAIN_CHECKPOINT_GLOBALS.values()) and too_big(args):
                raise OracleError("oracle: argument too large to allocate")

        def load_reduce(self):
            args = self.stack.pop()
            function = self.stack[-1]
            self._check_call(function, args)
            self.stack[-1] = function(*args)

        def load_newobj(self):
            args = self.stack.pop()
            cls = self.stack[-1]
            self._check_call(cls, args)
            self.stack[-1] = cls.__new__(cls, *args)

        def load_newobj_ex(self):
            kwargs = self.stack.pop()
            args = self.stack.pop()
            cls = self.stack[-1]
            self._check_call(cls, tuple(args) + tuple(kwargs.values()))
            self.stack[-1] = cls.__new__(cls, *args, **kwargs)

        def _instantiate(self, klass, args):  # INST and OBJ
            self._check_call(klass, tuple(args))
            return super()._instantiate(klass, args)

        def load_build(self):
            state, target = self.stack[-1], self.stack[-2]
            # torch.save writes BUILD only for an OrderedDict's attributes (_metadata).  On plain
            # data (an int, a list, a plain dict; not an OrderedDict) BUILD runs nothing: pickle
            # itself fails or does nothing.
            if type(target) in PLAIN_DATA_TYPES:
                return super().load_build()
            if not isinstance(target, dict) or not isinstance(state, dict):
                what = self._names.get(id(target), type(target).__name__)
                route.misused.append(f"BUILD on {what}")
                raise OracleError("oracle: BUILD outside a dict's attributes")
            super().load_build()

        # Where pickle.py and _pickle.c (what pickle.load and pickle.Unpickler are in CPython, and
        # so what torch runs) differ, follow _pickle.c: its readline fails on a line without "\n",
        # GLOBAL wants each line at least one character long, INST looks for its MARK before it
        # reads the names, and text numbers are C strings (they end at a NUL; see c_number).
        def _c_line(self):
            line = self.readline()
            if len(line) < 2 or not line.endswith(b"\n"):
                raise pickle.UnpicklingError("pickle data was truncated")
            return line[:-1]

        def load_global(self):
            module, name = self._c_line(), self._c_line()
            self.append(self.find_class(module.decode("utf-8"), name.decode("utf-8")))

        def load_inst(self):
            if not self.metastack:
                raise pickle.UnpicklingError("could not find MARK")
            module, name = self._c_line(), self._c_line()
            klass = self.find_class(module.decode("ascii"), name.decode("ascii"))
            self._instantiate(klass, self.pop_mark())

        def load_int(self):
            self.append(c_number(self._c_line(), "int"))

        def load_long(self):
            self.append(c_number(self._c_line(), "long"))

        def load_float(self):
            self.append(c_number(self._c_line(), "float"))

        def load_get(self):
            self.append(self.memo[c_number(self._c_line(), "decimal")])

        def load_put(self):
            line = self._c_line()
            if not self.stack:
                raise pickle.UnpicklingError("unpickling stack underflow")
            index = c_number(line, "decimal")
            if index < 0:
                raise ValueError("negative PUT argument")
            self.memo[index] = self.stack[-1]

        dispatch[pickle.GLOBAL[0]] = load_global
        dispatch[pickle.INST[0]] = load_inst
        dispatch[pickle.INT[0]] = load_int
        dispatch[pickle.LONG[0]] = load_long
        dispatch[pickle.FLOAT[0]] = load_float
        dispatch[pickle.GET[0]] = load_get
        dispatch[pickle.PUT[0]] = load_put
        dispatch[pickle.REDUCE[0]] = load_reduce
        dispatch[pickle.NEWOBJ[0]] = load_newobj
        dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
        dispatch[pickle.BUILD[0]] = load_build

        def load(self):
            result = super().load()
            for bare in bare_globals(result, self._names):
                route.misused.append(f"{bare} as a bare value")
            return result

    def load(file, **kwargs):
        return Unpickler(file, **kwargs).load()

    def loads(data, **kwargs):
        return load(io.BytesIO(data), **kwargs)

    # torch.load reads __name__ (_check_dill_version), Unpickler and load; the rest is for
    # anything that treats it as a pickle module.
    return types.SimpleNamespace(
        __name__="torch_oracle_pickle", Unpickler=Unpickler, load=load, loads=loads,
        Pickler=pickle.Pickler, dump=pickle.dump, dumps=pickle.dumps,
        UnpicklingError=pickle.UnpicklingError, HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL,
        DEFAULT_PROTOCOL=pickle.DEFAULT_PROTOCOL,
    )


# strtol(s, &end, 0) as _pickle.c's INT uses it, and the C float syntax of PyOS_string_to_double.
C_STRTOL = re.compile(rb"[ \t\n\x0b\x0c\r]*[+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
C_DOUBLE = re.compile(rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)", re.IGNORECASE)


def c_number(line, kind):
    """A text number's value as _pickle.c reads `line` (without its newline): as a C string, up
    to its first NUL.  INT tries strtol (an empty string is 0) and else PyLong_FromString; LONG
    drops a final "L" first; FLOAT must be wholly a C double; GET and PUT read base 10."""
    if kind == "long" and line.endswith(b"L"):
        line = line[:-1]
    text = line.split(b"\0", 1)[0]
    if kind == "int":
        if not text:
            return 0 if len(line) != 2 else False  # strtol of "": 0 (a 3-byte line "\0?\n" is a bool)
        if C_STRTOL.fullmatch(text):
            digits = text.strip()
            sign = -1 if digits[:1] == b"-" else 1
            digits = digits.lstrip(b"+-")
            base = 16 if digits[:2].lower() == b"0x" else 8 if digits[:1] == b"0" and len(digits) > 1 else 10
            value = sign * int(digits[2:] if base == 16 else digits, base)
            return bool(value) if len(line) == 2 and value in (0, 1) else value
    if kind == "float":
        if not C_DOUBLE.fullmatch(text):
            raise ValueError("could not convert string to float")
        return float(text)
    return int(text.decode("ascii"), 10 if kind == "decimal" else 0)


def call_misuse(function, args):
    """How a call of an allowed global goes beyond what torch.save writes; None if it does not."""
    if not isinstance(args, tuple):
        return None  # pickle itself refuses it
    if is_one_of(function, TENSOR_REBUILDERS):
        # (storage, offset, size, stride, requires_grad, backward_hooks[, dtype (v3)][, metadata])
        metadata_at = 7 if function is torch._utils._rebuild_tensor_v3 else 6
        if len(args) > 5 and not is_empty(args[5]):
            return "with backward hooks"
        if len(args) > metadata_at and not is_tensor_flags(args[metadata_at]):
            return "with tensor metadata other than torch's boolean flags"
    elif function is torch._utils._rebuild_parameter:  # (data, requires_grad, backward_hooks)
        if len(args) > 2 and not is_empty(args[2]):
            return "with backward hooks"
    elif function is torch._utils._rebuild_parameter_with_state:  # (..., backward_hooks, state)
        if len(args) > 2 and not is_empty(args[2]):
            return "with backward hooks"
        if len(args) > 3:
            return state_misuse(args[3])
    elif function is torch._tensor._rebuild_from_type_v2:  # (rebuild function, type, args, state)
        if len(args) > 0 and not is_one_of(args[0], TENSOR_REBUILDERS):
            return "around something other than a tensor rebuild"
        if len(args) > 1 and not is_one_of(args[1], TENSOR_TYPES):
            return "with a type other than Tensor or Parameter"
        if len(args) > 3:
            return state_misuse(args[3])
    return None


def state_misuse(state):
    """Why restoring `state` does more than give a tensor plain Python attributes; None if not.

    torch.save writes a tensor's or parameter's __dict__ (or (__dict__, slots)), and torch.load
    puts it back with setattr: fine for `tensor.note = "x"`, not for a private or dunder name
    (`_backward_hooks`), a name the tensor already has (`data`, `requires_grad`, `size`), or a
    value that is anything but plain data.
    """
    if is_empty(state):
        return None
    parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
    for part in parts:
        if part is None:
            continue
        if type(part) is not dict:
            return "with a state that is not a dict"
        for key, value in part.items():
            if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
                return f"with a state setting {key!r}"
            if hasattr(torch.Tensor, key):
                return f"with a state replacing the tensor's own {key!r}"
            if not is_plain_data(value):
                return f"with a state holding a {type(value).__name__}"
    return None


def is_plain_data(value):
    todo, seen = [value], set()
    while todo:
        item = todo.pop()
        if item is None or type(item) in (bool, int, float, complex, str, bytes, torch.Tensor):
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        if type(item) in (list, tuple):
            todo.extend(item)
        elif type(item) is dict:
            todo.extend(item.keys())
            todo.extend(item.values())
        else:
            return False
    return True


def is_tensor_flags(value):
    """None or what torch._utils.get_tensor_metadata writes: {"conj": True}, {"neg": True}."""
    return value is None or (type(value) is dict and all(
        isinstance(key, str) and type(flag) is bool for key, flag in value.items()))


def is_one_of(value, candidates):
    """`value in candidates` by identity: `==` on a tensor from a hostile pickle is no answer."""
    return any(value is candidate for candidate in candidates)


def is_empty(value):
    """None or an empty container: what torch.save writes for no hooks, no state, no metadata."""
    return value is None or (isinstance(value, (dict, list, tuple)) and len(value) == 0)


def too_big(args):
    if not isinstance(args, tuple):
        return False
    numbers = [a for a in args if isinstance(a, int)]
    numbers += [b for a in args if isinstance(a, (tuple, list)) for b in a if isinstance(b, int)]
    return any(abs(n) > MAX_ALLOCATION for n in numbers)


def bare_globals(root, names):
    """Dotted names of the functions, classes and storage types that sit in `root` as values."""
    found, seen, todo = [], set(), [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, DATA_GLOBAL_TYPES):
            continue
        if isinstance(node, torch.serialization.StorageType):  # torch's stand-in for torch.<X>Storage
            found.append(f"a storage type ({node.dtype})")
        elif isinstance(node, (type, types.FunctionType, types.BuiltinFunctionType)):
            found.append(names.get(id(node), repr(node)))
        elif isinstance(node, dict):
            todo.extend(node.keys())
            todo.extend(node.values())
            todo.extend(getattr(node, "__dict__", {}).values())  # an OrderedDict's _metadata
        elif isinstance(node, (list, tuple, set, frozenset)):
            todo.extend(node)
        elif isinstance(node, torch.Tensor):
            todo.extend(getattr(node, "__dict__", {}).values())
    return found


@contextlib.contextmanager
def jit_load_recorded(route):
    original = torch.jit.load

    def reached(*args, **kwargs):
        route.jit_load = True
        raise OracleError("oracle: torch.jit.load reached")

    torch.jit.load = reached
    try:
        yield
    finally:
        torch.jit.load = original


@contextlib.contextmanager
def no_forced_weights_only():
    """These variables would make torch.load refuse our pickle_module: the route must be the plain one."""
    saved = {name: os.environ.pop(name) for name in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD",
                                                     "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def torch_route(path):
    """Load `path` the way `torch.load(path, weights_only=False)` would; report what it imported.

    Twice, when the first finds nothing: with the checking pickle.py unpickler above, then with
    _pickle.c's own (what torch really runs), whose find_class records and refuses the same way.
    The second sees what only C reading from a file does (a FRAME refilled from after its end).
    """
    route = TorchRoute()
    for module in (pickle_module_for(route), c_pickle_module_for(route)):
        with open(path, "rb") as f, jit_load_recorded(route), no_forced_weights_only(), warnings.catch_warnings(), \
                memory_capped():
            warnings.simplefilter("ignore")
            try:
                route.result = torch.load(f, map_location="cpu", weights_only=False, pickle_module=module)
                route.error = None
            except Exception as exc:  # noqa: BLE001 (a file torch cannot load is fine; what it reached is the point)
                route.error = exc
        if route.hostile:
            break
    return route


@contextlib.contextmanager
def memory_capped(headroom=1 << 30):
    """Let torch.load allocate at most `headroom` more bytes: _pickle.c grows its memo to twice a
    LONG_BINPUT index and fills it, so a 4-byte index asks for gigabytes (a MemoryError here)."""
    try:
        import resource

        with open("/proc/self/status") as status:
            in_use = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmData:"))
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        capped = in_use + headroom if hard == resource.RLIM_INFINITY else min(hard, in_use + headroom)
        resource.setrlimit(resource.RLIMIT_DATA, (capped, hard))
    except (ImportError, OSError, StopIteration, ValueError):
        yield  # no /proc or no RLIMIT_DATA: unguarded
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def c_pickle_module_for(route):
    """A pickle module whose unpickler is _pickle.c's, importing only allowed globals."""
    allowed = allowed_globals()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            # _pickle.c maps Python 2 names first for protocols < 3; its protocol is not visible
            # from here, and mapping always only ever turns one name into another we refuse or allow.
            dotted = f"{module}.{name}"
            if (module, name) in _compat_pickle.NAME_MAPPING:
                dotted = ".".join(_compat_pickle.NAME_MAPPING[(module, name)])
            elif module in _compat_pickle.IMPORT_MAPPING:
                dotted = f"{_compat_pickle.IMPORT_MAPPING[module]}.{name}"
            if dotted not in allowed:
                route.forbidden.append((module, name))
                raise OracleError(f"oracle: torch would import {dotted}")
            return allowed[dotted]

    def load(file, **kwargs):
        return Unpickler(file, **kwargs).load()

    return types.SimpleNamespace(
        __name__="torch_oracle_c_pickle", Unpickler=Unpickler, load=load,
        loads=lambda data, **kwargs: load(io.BytesIO(data), **kwargs), Pickler=pickle.Pickler, dump=pickle.dump,
        dumps=pickle.dumps, UnpicklingError=pickle.UnpicklingError, HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL,
        DEFAULT_PROTOCOL=pickle.DEFAULT_PROTOCOL,
    )


def assert_torch_runs_nothing(path):
    route = torch_route(path)
    assert not route.hostile, f"{path}: torch.load(weights_only=False) {route.describe()} ({route.error!r})"
    return route
