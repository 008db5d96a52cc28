"""`fix --verify`: load the original and the rewritten file with torch and compare every tensor bit for bit.

This is the one place torch is used, and only on request (`pip install 'pth-legacy-keys[verify]'`).
It loads with `weights_only=True`, and only files our own reading has already accepted: the
original after the opcode walk found nothing but a plain checkpoint's globals, the rewrite
after it read back as intended.  Nothing here runs before that.
"""

from .errors import CheckpointError, FixAbandoned

# Into the environment the tool runs in, released or from a clone. PyPI's torch for Linux and
# Windows bundles CUDA (several GB); the CPU wheels' local version (+cpu) sorts above it, so pip
# takes the CPU build from PyTorch's index, which is all --verify needs.
INSTALL_HINT = "pip install torch safetensors --extra-index-url https://download.pytorch.org/whl/cpu"


def torch_missing():
    """Why --verify cannot run here, or None when it can."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        return f"--verify needs torch ({exc}); install it with: {INSTALL_HINT}"
    return None


def compare(original_path, written_path, unit, renames):
    """Raise CheckpointError unless the written file holds the original's values under `renames`
    ({old key: new key}): the same structure, the same non-tensor values, every tensor with the
    same dtype, shape and bytes.  `unit` is the files' format unit (or the report's word for
    it: "zip", "legacy", "safetensors"), which knows how torch loads them.  Returns how many
    tensors were compared."""
    if isinstance(unit, str):
        from .torch_route import FORMATS

        unit = FORMATS[unit]
    original = _load(original_path, unit, "the original")
    written = _load(written_path, unit, "the rewritten file")
    compared = []
    _compare(_renamed(original, renames), written, "", compared)
    return len(compared)


def torch_load(path, mmap):
    """torch.load(weights_only=True) on the CPU, as --verify loads a torch.save file."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _load(path, unit, what):
    try:
        return unit.load_with_torch(path)
    except CheckpointError:
        raise
    except Exception as exc:  # whatever torch raises: the file is not what we meant to write
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FixAbandoned(f"--verify: torch cannot load {what} ({first_line[:200]})") from None


def _renamed(node, renames, in_param_names=False):
    """The original tree renamed by the rename rules' own scope: the keys of state dicts (dicts
    holding a tensor) and the strings of optimizer param_names lists."""
    import torch

    if isinstance(node, str):
        return renames.get(node, node) if in_param_names else node
    if isinstance(node, dict):
        is_state_dict = any(isinstance(value, torch.Tensor) for value in node.values())
        items = [(renames.get(key, key) if is_state_dict and isinstance(key, str) else key,
                  _renamed(value, renames, key == "param_names")) for key, value in node.items()]
        try:
            copy = type(node)(items)
        except TypeError:
            copy = dict(items)
        if hasattr(node, "_metadata"):
            copy._metadata = node._metadata
        return copy
    if isinstance(node, list):
        return [_renamed(item, renames, in_param_names) for item in node]
    if isinstance(node, tuple):
        return tuple(_renamed(item, renames, in_param_names) for item in node)
    return node


def _compare(expected, actual, where, compared):
    import torch

    if isinstance(expected, torch.Tensor) or isinstance(actual, torch.Tensor):
        if not (isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor)
                and _bit_equal(expected, actual)):
            _differs(where, "its tensor differs from the original's")
        compared.append(where)
    elif isinstance(expected, dict):
        if not isinstance(actual, dict) or list(expected) != list(actual):
            _differs(where, "its keys differ from the original's under the rename")
        for key in expected:
            _compare(expected[key], actual[key], f"{where}.{key}" if where else str(key), compared)
        _compare(getattr(expected, "_metadata", None), getattr(actual, "_metadata", None),
                 f"{where}._metadata" if where else "_metadata", compared)
    elif isinstance(expected, (list, tuple)):
        if type(actual) is not type(expected) or len(actual) != len(expected):
            _differs(where, "its length or type differs from the original's")
        for i, (a, b) in enumerate(zip(expected, actual)):
            _compare(a, b, f"{where}[{i}]", compared)
    elif not (type(expected) is type(actual) and (expected == actual or expected != expected and actual != actual)):
        _differs(where, "its value differs from the original's")


def _bit_equal(a, b):
    import torch

    if a.dtype != b.dtype or a.shape != b.shape or type(a) is not type(b):
        return False
    a, b = a.detach().reshape(-1).contiguous(), b.detach().reshape(-1).contiguous()
    try:
        return torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    except RuntimeError:  # a dtype that cannot be viewed as bytes (quantized): compare values
        return torch.equal(a, b)


def _differs(where, what):
    raise FixAbandoned(f"--verify: '{where or '<top>'}': {what}")
