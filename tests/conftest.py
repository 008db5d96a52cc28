import pytest
from helpers import DATA, copy_of


@pytest.fixture
def fixture_copy(tmp_path):
    """Copy a committed torch-made checkpoint from tests/data into tmp_path, optionally renamed."""
    return lambda name, new_name=None: copy_of(tmp_path, DATA / name, new_name)


@pytest.fixture
def rvc_file(tmp_path):
    """An RVC inference model as Applio saves it (parametrized weight norm), made by torch.save."""
    torch = pytest.importorskip("torch", reason="torch==2.13.0 is needed to make and load real checkpoints")
    import rvc_model

    path = tmp_path / "voice.pth"
    torch.save(rvc_model.rvc_inference_file(rvc_model.build(parametrized=True)), path)
    return path
