"""Check and fix PyTorch checkpoints' weight-norm keys without torch and without unpickling."""

__version__ = "0.2.0"

from .engine import fix, scan  # noqa: E402
from .report import FileReport  # noqa: E402

__all__ = ["FileReport", "fix", "scan", "__version__"]
