"""The composite GitHub Action (action.yml), run locally by tests/support/action_runner.py.

Each test builds a model repository as actions/checkout leaves it for a pull request (the
merge commit checked out, `origin/main` fetched), then runs the action's steps as GitHub would:
the tool is pip-installed from the action's folder into a venv in RUNNER_TEMP, then run with
`--output github`. The annotations, job summary and step outputs are checked as the runner would
read them.
"""

import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from support.cli_run import LEGACY, PARAMETRIZED

yaml = pytest.importorskip("yaml", reason="pyyaml comes with the test extra: pip install -e '.[test]'")
from support.action_runner import run_action, runner_lines  # noqa: E402 (needs yaml)
from support import LFS_POINTER, git, parse_file_command  # noqa: E402
from support.repositories import Link, ModelRepository  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"
# A workflow command starts a line, after leading whitespace (the runner trims it).
COMMAND = re.compile(r"^\s*::([A-Za-z-]+)(?: ([^:]*))?::(.*)$")


def unescape_property(text):
    for escaped, char in (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
        text = text.replace(escaped, char)
    return text


def commands(stdout):
    """The workflow commands the runner would see: (command, {property: value}, message)."""
    found = []
    for line in runner_lines(stdout):
        match = COMMAND.match(line)
        if match:
            name, props, message = match.groups()
            properties = dict(p.split("=", 1) for p in props.split(",")) if props else {}
            found.append((name, {k: unescape_property(v) for k, v in properties.items()}, message))
    return found


def errors_about(stdout, path):
    return [message for name, props, message in commands(stdout) if name == "error" and props.get("file") == path]


@pytest.fixture(scope="session")
def rvc_parametrized():
    """An RVC inference file as Applio saves it (torch>=2.1 parametrized weight norm), as bytes."""
    pytest.importorskip("torch", reason="torch==2.13.0 makes the RVC models and loads the results")
    from support import rvc_model
    import torch

    buffer = io.BytesIO()
    torch.save(rvc_model.rvc_inference_file(rvc_model.build(parametrized=True)), buffer)
    return buffer.getvalue()


@pytest.fixture
def model_repo(tmp_path, request):
    def make(pr_files=None):
        if pr_files is None:  # only the default pull request needs torch (an RVC model)
            pr_files = {"models/new.pth": request.getfixturevalue("rvc_parametrized")}
        return ModelRepository(tmp_path / "model-repo", pr_files)
    return make


@pytest.fixture
def run(tmp_path, action_path):
    """Run the action on a model repository for a pull request into main (or another event)."""
    def run_it(repo, event_name="pull_request", event=None, **inputs):
        pull_request = event_name.startswith("pull_request")
        if event is None and pull_request:
            event = {"number": 1, "pull_request": {"base": {"ref": "main", "sha": repo.base}}}
        return run_action(action_path / "action.yml", inputs=inputs, workspace=repo.path, event_name=event_name,
                          base_ref="main" if pull_request else "", sha=repo.sha, event=event,
                          tmp=tmp_path / "runner")
    return run_it


def test_check_changed_only_examines_the_pull_request_files_and_fails(model_repo, run):
    repo = model_repo()
    before = repo.snapshot()
    result = run(repo, mode="check", **{"changed-only": "true"})
    assert result.exit_code != 0, result.stdout + result.stderr
    assert result.outputs["checked"] == "1"
    assert result.outputs["offending"] == "1"
    assert result.outputs["offending-files"] == "models/new.pth"
    assert result.outputs["modified"] == "false"
    assert any(line.startswith("::error file=models/new.pth,title=") for line in runner_lines(result.stdout))
    assert "48 parametrized weight-norm keys" in errors_about(result.stdout, "models/new.pth")[0]
    assert not errors_about(result.stdout, "models/already.pth")

    summary = result.summary.splitlines()
    assert "| File | Status | Keys | Example key |" in summary
    row = next(line for line in summary if line.startswith("| `models/new.pth` |"))
    assert "needs-fix" in row and "| 48 |" in row and "parametrizations.weight.original0" in row
    assert "pth-legacy-keys fix -- models/new.pth" in summary

    report = json.loads(Path(result.outputs["report"]).read_text())
    assert [f["path"] for f in report["files"]] == ["models/new.pth"]
    assert report["files"][0]["status"] == "needs-fix"
    assert repo.snapshot() == before and repo.status() == ""


def test_pull_request_adding_a_legacy_model_is_green(model_repo, run):
    repo = model_repo({"models/new.pth": LEGACY.read_bytes()})
    result = run(repo, mode="check", **{"changed-only": "true"})
    assert result.exit_code == 0, result.stdout + result.stderr
    assert (result.outputs["checked"], result.outputs["offending"]) == ("1", "0")
    assert not [c for c in commands(result.stdout) if c[0] == "error"]
    assert "| `models/new.pth` | ok |" in result.summary


def test_check_all_tracked_checkpoints(model_repo, run):
    repo = model_repo()
    result = run(repo, mode="check")
    assert result.exit_code == 1, result.stdout + result.stderr
    assert result.outputs["checked"] == "3"
    assert result.outputs["offending"] == "2"
    assert sorted(result.outputs["offending-files"].split("\n")) == ["models/already.pth", "models/new.pth"]
    assert errors_about(result.stdout, "models/already.pth") and errors_about(result.stdout, "models/new.pth")
    assert not errors_about(result.stdout, "models/old.pth")


def test_safetensors_and_an_incompatible_vocoder_are_examined_by_default(model_repo, run):
    """Default paths take *.safetensors too; a RefineGAN model gets a warning beside its error."""
    pytest.importorskip("torch", reason="torch==2.13.0 makes the models")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from support import rvc_model
    import torch

    weights = rvc_model.rvc_inference_file(rvc_model.build(parametrized=True))
    safetensors_bytes = safetensors_torch.save(weights["weight"], metadata={"format": "pt"})
    buffer = io.BytesIO()
    torch.save({**weights, "vocoder": "RefineGAN"}, buffer)
    repo = model_repo({"models/voice.safetensors": safetensors_bytes, "models/refinegan.pth": buffer.getvalue()})
    result = run(repo, mode="check", **{"changed-only": "true"})
    assert result.exit_code == 1, result.stdout + result.stderr
    assert result.outputs["checked"] == "2"
    assert "48 parametrized weight-norm keys" in errors_about(result.stdout, "models/voice.safetensors")[0]
    warnings = [message for name, props, message in commands(result.stdout)
                if name == "warning" and props.get("file") == "models/refinegan.pth"]
    assert warnings == ["vocoder RefineGAN (its vocoder field says 'RefineGAN'): legacy RVC software cannot "
                        "load it whatever its key names"]
    row = next(line for line in result.summary.splitlines() if line.startswith("| `models/refinegan.pth` |"))
    assert "warning: `vocoder RefineGAN" in row


def test_fix_changed_only_rewrites_the_new_model_for_legacy_loaders(model_repo, run):
    torch = pytest.importorskip("torch")
    from support import rvc_model

    repo = model_repo()
    already = (repo.path / "models/already.pth").read_bytes()
    result = run(repo, mode="fix", **{"changed-only": "true"})
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.outputs["modified"] == "true"
    assert result.outputs["checked"] == "1" and result.outputs["offending"] == "0"
    model = rvc_model.inference_model(parametrized=False)
    weights = torch.load(repo.path / "models/new.pth", weights_only=True)["weight"]
    model.load_state_dict(weights, strict=True)
    assert (repo.path / "models/already.pth").read_bytes() == already
    assert repo.status() == " M models/new.pth\n"  # rewritten in the workspace, never committed
    assert git("rev-parse", "HEAD", cwd=repo.path).stdout.strip() == repo.sha


HOSTILE_NAMES = ["models/evil%0A::error::forged.pth", "models/evil\n::error::forged.pth",
                 "models/evil\r::error::forged.pth", "models/comma,title=x::forged.pth"]


def test_hostile_file_names_cannot_forge_workflow_commands(model_repo, run):
    repo = model_repo({name: PARAMETRIZED.read_bytes() for name in HOSTILE_NAMES})
    result = run(repo, mode="check", **{"changed-only": "true"})
    assert result.exit_code == 1, result.stdout + result.stderr
    lines = runner_lines(result.stdout)
    assert not [line for line in lines if line.lstrip().startswith("::error::forged")]
    assert any(line.startswith("::error file=models/evil%250A%3A%3Aerror%3A%3Aforged.pth,") for line in lines)
    # every command the runner sees is an annotation about one of the real files
    annotated = [props.get("file") for _, props, _ in commands(result.stdout)]
    assert annotated and set(annotated) <= set(HOSTILE_NAMES)
    assert len(annotated) == len(set(annotated))
    assert len(result.outputs["offending-files"].split("\n")) == int(result.outputs["offending"])


def test_file_name_with_a_newline_is_examined_not_skipped(model_repo, run):
    """Otherwise a pull request hides a parametrized model by putting a newline in its name."""
    repo = model_repo({name: PARAMETRIZED.read_bytes() for name in HOSTILE_NAMES})
    result = run(repo, mode="check", **{"changed-only": "true"})
    annotated = [props.get("file") for _, props, _ in commands(result.stdout)]
    assert sorted(annotated) == sorted(HOSTILE_NAMES)
    assert result.outputs["checked"] == "4" and result.outputs["offending"] == "4"


def test_lfs_pointer_fails_with_a_hint(model_repo, run):
    repo = model_repo({"models/new.pth": LFS_POINTER.encode()})
    result = run(repo, mode="check", **{"changed-only": "true"})
    assert result.exit_code != 0, result.stdout + result.stderr
    messages = errors_about(result.stdout, "models/new.pth")
    assert messages and "lfs: true" in messages[0]
    assert result.outputs["offending-files"] == "models/new.pth"


def test_annotations_are_capped_and_the_summary_lists_every_file(model_repo, run):
    names = [f"models/copy{i:02}.pth" for i in range(12)]
    repo = model_repo({name: PARAMETRIZED.read_bytes() for name in names})
    result = run(repo, mode="check", **{"changed-only": "true"})
    assert result.exit_code == 1, result.stdout + result.stderr
    errors = [line for line in runner_lines(result.stdout) if line.startswith("::error")]
    assert len(errors) == 10
    assert all("file=" in line for line in errors[:9])
    assert "3 more" in errors[-1] and "file=" not in errors[-1]
    for name in names:
        assert any(line.startswith(f"| `{name}` |") for line in result.summary.splitlines())
    assert result.outputs["offending"] == "12"


@pytest.mark.parametrize("before, checked", [("base", "1"), ("0" * 40, "3")])
def test_push_changed_only_uses_the_event_before(model_repo, run, before, checked):
    repo = model_repo()
    event = {"before": repo.base if before == "base" else before, "after": repo.sha}
    result = run(repo, event_name="push", event=event, mode="check", **{"changed-only": "true"})
    assert result.exit_code == 1, result.stdout + result.stderr
    assert result.outputs["checked"] == checked


def test_paths_input_selects_files_folders_and_globs(model_repo, run):
    repo = model_repo()
    result = run(repo, mode="check", paths="models/old.pth\nmodels/a*.pth\n")
    assert result.exit_code == 1, result.stdout + result.stderr
    assert result.outputs["checked"] == "2"
    assert result.outputs["offending-files"] == "models/already.pth"


def test_changed_only_without_the_base_branch_fails_rather_than_passing(model_repo, run):
    """actions/checkout without fetch-depth: 0 has no origin/main: nothing must pass unexamined."""
    repo = model_repo()
    git("update-ref", "-d", "refs/remotes/origin/main", cwd=repo.path)
    result = run(repo, mode="check", **{"changed-only": "true"})
    assert result.exit_code == 2
    assert "origin/main" in result.stdout + result.stderr


def test_reverse_direction_annotation_gives_the_reverse_fix_command(model_repo, run):
    repo = model_repo()
    result = run(repo, mode="check", to="parametrized", paths="models/old.pth")
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "pth-legacy-keys fix --to parametrized -- models/old.pth" in result.summary
    [message] = errors_about(result.stdout, "models/old.pth")
    assert "pth-legacy-keys fix --to parametrized -- models/old.pth" in message


def test_action_yml_is_safe_to_run():
    action = yaml.safe_load(ACTION.read_text())
    steps = action["runs"]["steps"]
    assert action["runs"]["using"] == "composite"
    for step in steps:
        if "run" in step:
            assert "${{" not in step["run"], f"{step.get('name')}: an expression in run: is script injection"
            assert step.get("shell") == "bash", f"{step.get('name')}: a composite run step needs shell: bash"
        else:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", step["uses"]), step["uses"]


def test_invalid_mode_fails_and_changes_nothing(model_repo, run):
    repo = model_repo()
    before = repo.snapshot()
    result = run(repo, mode="delete")
    assert result.exit_code != 0
    assert any(name == "error" and "mode" in message for name, _, message in commands(result.stdout))
    assert repo.snapshot() == before and repo.status() == ""


# -- the runner itself ---------------------------------------------------------------------------


def test_runner_parses_both_output_forms():
    text = "a=1\nlist<<EOF_1\nx=1\ny<<z\nEOF_1\nb=c=d\n"
    assert parse_file_command(text) == {"a": "1", "list": "x=1\ny<<z", "b": "c=d"}
    with pytest.raises(ValueError, match="delimiter"):
        parse_file_command("list<<EOF\nx\n")


@pytest.mark.parametrize("step, error", [
    ({"shell": "bash", "run": "echo hi", "env": {"X": "${{ secrets.TOKEN }}"}}, ValueError),
    ({"shell": "bash", "run": "echo ${{ inputs.greeting }}"}, AssertionError),
    ({"shell": "sh", "run": "echo hi"}, NotImplementedError),
    ({"uses": "actions/checkout@" + "0" * 40}, NotImplementedError),
])
def test_runner_refuses_what_it_cannot_simulate(tmp_path, step, error):
    action = tmp_path / "action.yml"
    action.write_text(yaml.safe_dump({"name": "t", "runs": {"using": "composite", "steps": [step]}}))
    with pytest.raises(error):
        run_action(action, inputs={}, workspace=tmp_path, event_name="push", tmp=tmp_path / "runner")


def test_runner_passes_inputs_and_step_outputs_and_stops_at_a_failure(tmp_path):
    action = tmp_path / "action.yml"
    action.write_text(yaml.safe_dump({
        "name": "t",
        "inputs": {"greeting": {"default": "hello"}, "flag": {"default": False}},
        "outputs": {"said": {"value": "${{ steps.one.outputs.said }}!"}},
        "runs": {"using": "composite", "steps": [
            {"id": "one", "shell": "bash", "env": {"G": "${{ inputs.greeting }} ${{ inputs.flag }}"},
             "run": 'printf "said<<END\\n%s\\nEND\\n" "$G" >> "$GITHUB_OUTPUT"; echo "# $G" >> "$GITHUB_STEP_SUMMARY"'},
            {"id": "two", "shell": "bash", "run": "echo two; false; echo unreachable"},
            {"id": "three", "shell": "bash", "run": "echo three"},
        ]},
    }))
    result = run_action(action, inputs={"greeting": "hi"}, workspace=tmp_path, event_name="push",
                        tmp=tmp_path / "runner")
    assert result.outputs == {"said": "hi false!"}
    assert result.summary == "# hi false\n"
    assert result.exit_code == 1 and result.stdout == "two\n"
    assert "three" not in result.step_outputs


# Quoted as git quotes paths. The old output wrote the first, with a newline, as the second's name.
LINE_NAMES = {"models/a\nb.pth": '"models/a\\nb.pth"', "models/a\\nb.pth": '"models/a\\\\nb.pth"',
              'models/"a\\nb".pth': '"models/\\"a\\\\nb\\".pth"', "models/bad\udcff.pth": '"models/bad\\377.pth"',
              "models/plain.pth": "models/plain.pth"}


def test_offending_files_outputs_name_each_file_exactly_once(model_repo, run):
    """offending-files: one line per file, quoted when it must be; offending-files-json: for fromJSON()."""
    repo = model_repo({name: PARAMETRIZED.read_bytes() for name in LINE_NAMES})
    result = run(repo, mode="check", **{"changed-only": "true"})
    assert result.exit_code == 1, result.stdout + result.stderr
    assert result.outputs["checked"] == result.outputs["offending"] == str(len(LINE_NAMES))
    assert sorted(result.outputs["offending-files"].split("\n")) == sorted(LINE_NAMES.values())
    assert sorted(json.loads(result.outputs["offending-files-json"])) == sorted(LINE_NAMES)


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
@pytest.mark.parametrize("paths", ["", "models/shared", "models/**/*.pth"])
def test_fix_mode_does_not_write_through_a_pull_requests_links_out_of_the_workspace(model_repo, run, tmp_path,
                                                                                   paths):
    """A pull request adds a link to a checkpoint elsewhere on the runner (a cache, another
    checkout) and a linked folder: fix must not rewrite them, and must say why."""
    cache = tmp_path / "runner-cache"
    cache.mkdir()
    shutil.copyfile(PARAMETRIZED, cache / "cached.pth")
    before = (cache / "cached.pth").read_bytes()
    repo = model_repo({"models/linked.pth": Link(str(cache / "cached.pth")), "models/shared": Link(str(cache))})
    result = run(repo, mode="fix", paths=paths, **{"changed-only": "true"})
    assert result.exit_code == 2, result.stdout + result.stderr
    assert (cache / "cached.pth").read_bytes() == before
    assert os.listdir(cache) == ["cached.pth"]
    assert result.outputs["modified"] == "false"
    refused = [props["file"] for name, props, message in commands(result.stdout)
               if name == "error" and "leads out of" in message]
    # A pattern does not enter a linked folder (patterns.py); a folder named in `paths` is walked.
    expected = {"": ["models/linked.pth"], "models/shared": [os.path.join("models", "shared", "cached.pth")],
                "models/**/*.pth": ["models/linked.pth"]}[paths]
    assert sorted(refused) == sorted(expected)
    assert repo.status() == ""


HIJACKERS = {
    # `python -m venv` / `python -m pip` run in the workspace would import these first.
    "venv/__init__.py": b"", "venv/__main__.py": b"import sys; open('HIJACKED', 'w').close(); sys.exit(0)\n",
    "pip/__init__.py": b"", "pip/__main__.py": b"import sys; open('HIJACKED', 'w').close(); sys.exit(0)\n",
    # a spawned worker process would import this first
    "multiprocessing/__init__.py": b"open('HIJACKED', 'w').close()\n",
}


def test_a_pull_requests_python_files_never_run_in_the_action(model_repo, run, tmp_path):
    pr_files = {**HIJACKERS, **{f"models/new{i}.pth": PARAMETRIZED.read_bytes() for i in range(9)}}
    repo = model_repo(pr_files)
    result = run(repo, mode="check", **{"changed-only": "true"})
    assert result.exit_code == 1, result.stdout + result.stderr
    assert result.outputs["offending"] == "9"
    assert not list(tmp_path.rglob("HIJACKED"))


def test_pull_request_target_with_the_base_checked_out_fails_rather_than_passing(model_repo, action_path):
    """actions/checkout checks out the base branch for pull_request_target unless told otherwise."""
    repo = model_repo()
    git("checkout", "-q", "--detach", repo.base, cwd=repo.path)
    result = run_action(action_path / "action.yml", inputs={"mode": "check"}, workspace=repo.path,
                        event_name="pull_request_target",
                        base_ref="main", sha=repo.base, tmp=repo.path.parent / "runner",
                        event={"pull_request": {"base": {"ref": "main", "sha": repo.base}}})
    assert result.exit_code == 2
    assert "pull_request_target: the workspace holds the base branch, not the pull request" in result.stdout
    git("checkout", "-q", "--detach", repo.sha, cwd=repo.path)  # the head checked out: examined
    result = run_action(action_path / "action.yml", inputs={"mode": "check", "changed-only": "true"},
                        workspace=repo.path,
                        event_name="pull_request_target", base_ref="main", sha=repo.base,
                        tmp=repo.path.parent / "runner2", event={"pull_request": {"base": {"ref": "main"}}})
    assert result.exit_code == 1 and result.outputs["offending-files"] == "models/new.pth"


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
@pytest.mark.parametrize("paths", ["models", "models/**/*.pth", "models/**"])
def test_a_linked_folder_under_the_paths_is_checked_through(model_repo, run, paths):
    """Loaders read models/voices/new_voice.pth through the link: so does the check."""
    repo = model_repo({"store/new_voice.pth": PARAMETRIZED.read_bytes(), "models/voices": Link("../store")})
    result = run(repo, mode="check", paths=paths, **{"changed-only": "true"})
    assert result.exit_code == 1, result.stdout + result.stderr
    assert result.outputs["offending-files"] == "models/voices/new_voice.pth"
