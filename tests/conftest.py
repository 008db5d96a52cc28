import sys
from pathlib import Path

import pytest
from support.cli_run import DATA, copy_of


@pytest.fixture
def fixture_copy(tmp_path):
    """Copy a committed torch-made checkpoint from tests/data into tmp_path, optionally renamed."""
    return lambda name, new_name=None: copy_of(tmp_path, DATA / name, new_name)


@pytest.fixture
def rvc_file(tmp_path):
    """An RVC inference model as Applio saves it (parametrized weight norm), made by torch.save."""
    torch = pytest.importorskip("torch", reason="torch==2.13.0 is needed to make and load real checkpoints")
    from support import rvc_model

    path = tmp_path / "voice.pth"
    torch.save(rvc_model.rvc_inference_file(rvc_model.build(parametrized=True)), path)
    return path


@pytest.fixture(scope="session")
def full_size_rvc_model(tmp_path_factory):
    """A 55 MB RVC v2 40k inference model with Applio's 457 keys (208 parametrized), as
    bench/bench.py makes it."""
    torch = pytest.importorskip("torch", reason="torch==2.13.0 is needed to make real checkpoints")
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench", Path(__file__).parents[1] / "bench" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    weights = {key: torch.zeros(shape, dtype=torch.float16) for key, shape in bench.rvc_v2_40k_shapes()}
    path = tmp_path_factory.mktemp("rvc") / "voice.pth"
    torch.save({"weight": weights, "config": bench.RVC_V2_40K_CONFIG, "info": "200epoch", "sr": "40k",
                "f0": 1, "version": "v2"}, path)
    return path


# A real Git LFS server (giftless + moto's S3 on loopback) for the tests that push and read LFS objects
from support.lfs_server import lfs_server, lfs_server_with_token, lfs_servers  # noqa: F401
from support.repositories import action_path, hook_repository  # noqa: F401
from support.runners import runner_homes  # noqa: F401


# In Pyodide (Python in WebAssembly: the web page's Python) there are no processes, threads or
# sockets. The torch-free suite runs there too (test_pyodide.py); a test that needs what the
# platform lacks is skipped for that reason, as importorskip skips one whose module is missing,
# and every other test must pass.
PLATFORM_LACKS = ("does not support processes", "can't start new thread", "cannot start new thread",
                  "not supported on this platform", "Function not implemented", "Operation not supported")
POSIX_ONLY_MODULES = {"grp", "pwd", "resource", "fcntl", "termios"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if sys.platform != "emscripten" or call.excinfo is None or report.passed or report.skipped:
        return
    exception = call.excinfo.value
    if (isinstance(exception, ModuleNotFoundError) and exception.name in POSIX_ONLY_MODULES) or (
            isinstance(exception, (OSError, RuntimeError, NotImplementedError))
            and any(lacking in str(exception) for lacking in PLATFORM_LACKS)):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0,
                           f"Skipped: Pyodide lacks it: {exception}")
