"""Run a composite GitHub Action locally, the way the GitHub runner would, for the tests of action.yml.

Only what action.yml needs is simulated: `run:` steps with `shell: bash`, `actions/setup-python`
(replaced by a local interpreter) and a handful of `${{ }}` expressions. Anything else raises, so
that a change to the action this runner would simulate wrongly fails loudly instead of passing.
"""

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from support.github_output import parse_file_command

EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
NAME = r"[A-Za-z_][A-Za-z0-9_-]*"  # GitHub allows '-' in names: inputs.changed-only
STEP_KEYS = {"name", "id", "uses", "with", "run", "shell", "env"}
# What GitHub runs for `shell: bash`: no profile, exit on the first failing command and pipe.
BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]


@dataclass
class ActionRun:
    exit_code: int
    stdout: str
    stderr: str
    outputs: dict
    summary: str
    step_outputs: dict


def runner_lines(text):
    """Lines as the runner reads a step's output (.NET ReadLine: CR, LF and CRLF all end a line),
    which is where it looks for `::command::` workflow commands."""
    return re.split(r"\r\n|\r|\n", text)


def as_string(value):
    """How GitHub turns YAML scalars and event values into strings (`true`, not `True`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def run_action(action_yml, *, inputs, workspace, event_name, base_ref="", sha="", event=None,
               python=sys.executable, tmp, token=""):
    action_yml, workspace, tmp = Path(action_yml).resolve(), Path(workspace).resolve(), Path(tmp)
    action = yaml.safe_load(action_yml.read_text())
    if action["runs"].get("using") != "composite":
        raise NotImplementedError("only composite actions are supported")
    steps = action["runs"]["steps"]
    declared = action.get("inputs") or {}
    if set(inputs) - set(declared):  # GitHub only warns; here it is a typo in a test
        raise ValueError(f"inputs the action does not declare: {sorted(set(inputs) - set(declared))}")
    values = {name: as_string((spec or {}).get("default")) for name, spec in declared.items()}
    values.update({name: as_string(value) for name, value in inputs.items()})
    step_ids = {step["id"] for step in steps if "id" in step}
    step_outputs = {}
    github = {"event": event or {}, "action_path": str(action_yml.parent), "workspace": str(workspace),
              "token": token}

    def lookup(expression):
        parts = expression.split(".")
        if not re.fullmatch(rf"{NAME}(\.{NAME})*", expression):
            raise ValueError(f"unsupported expression: ${{{{ {expression} }}}}")
        if parts[0] == "inputs" and len(parts) == 2 and parts[1] in declared:
            return values[parts[1]]
        if parts[0] == "steps" and len(parts) == 4 and parts[1] in step_ids and parts[2] == "outputs":
            return step_outputs.get(parts[1], {}).get(parts[3], "")  # not run or not set: empty
        if parts[0] == "github" and len(parts) == 2 and parts[1] in ("action_path", "workspace", "token"):
            return github[parts[1]]
        if parts[:2] == ["github", "event"]:
            value = github["event"]
            for part in parts[2:]:
                value = value.get(part) if isinstance(value, dict) else None
            return "" if isinstance(value, (dict, list)) else as_string(value)
        raise ValueError(f"unsupported expression: ${{{{ {expression} }}}}")

    def evaluate(value):
        return EXPRESSION.sub(lambda match: lookup(match.group(1).strip()), as_string(value))

    for name in set(declared) - set(inputs):  # GitHub evaluates an input's default (${{ github.token }})
        values[name] = evaluate(values[name])

    runner_temp = tmp / "runner_temp"
    runner_temp.mkdir(parents=True, exist_ok=True)
    event_path = tmp / "event.json"
    event_path.write_text(json.dumps(event or {}))
    # The host may itself be a GitHub runner: none of its GITHUB_*/RUNNER_* may leak in.
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    base_env.update(GITHUB_ACTION_PATH=str(action_yml.parent), GITHUB_WORKSPACE=str(workspace),
                    GITHUB_EVENT_NAME=event_name, GITHUB_BASE_REF=base_ref, GITHUB_SHA=sha,
                    GITHUB_EVENT_PATH=str(event_path), RUNNER_TEMP=str(runner_temp), RUNNER_OS="Linux",
                    CI="true", GITHUB_ACTIONS="true")

    exit_code, stdout, stderr, summaries = 0, [], [], []
    for index, step in enumerate(steps):
        if set(step) - STEP_KEYS:
            raise NotImplementedError(f"step {index}: unsupported keys {sorted(set(step) - STEP_KEYS)}")
        for value in (step.get("with") or {}).values():
            evaluate(value)  # only so that an unsupported expression raises
        if "uses" in step:
            if not step["uses"].startswith("actions/setup-python@"):
                raise NotImplementedError(f"step {index}: unsupported action {step['uses']}")
            # The local interpreter stands in for the one setup-python would install; it does not
            # touch PATH, as setup-python does not with `update-environment: false`.
            version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                                     capture_output=True, text=True, check=True).stdout.strip()
            outputs = {"python-path": python, "python-version": version}
        else:
            script = step["run"]
            # GitHub substitutes ${{ }} inside scripts before bash sees them: script injection.
            assert "${{" not in script, f"step {index} has an expression in its run: script"
            if step.get("shell") != "bash":
                raise NotImplementedError(f"step {index}: only `shell: bash` is supported")
            files = tmp / "steps" / str(index)
            files.mkdir(parents=True, exist_ok=True)
            (files / "script.sh").write_text(script)
            env = dict(base_env)
            for name in ("output", "summary", "env", "path"):
                (files / name).write_text("")
                env[f"GITHUB_{'STEP_SUMMARY' if name == 'summary' else name.upper()}"] = str(files / name)
            env.update({name: evaluate(value) for name, value in (step.get("env") or {}).items()})
            # Bytes, not text=True: universal newlines would turn a CR into LF and hide what was printed.
            result = subprocess.run(BASH + [str(files / "script.sh")], cwd=workspace, env=env, capture_output=True,
                                    check=False)
            stdout.append(result.stdout.decode("utf-8", "surrogateescape"))
            stderr.append(result.stderr.decode("utf-8", "surrogateescape"))
            summaries.append((files / "summary").read_text())
            outputs = parse_file_command((files / "output").read_text())
            exit_code = result.returncode
        step_outputs[step.get("id", f"__step{index}")] = outputs
        if exit_code != 0:
            break  # like GitHub: the remaining steps do not run
    outputs = {name: evaluate(spec.get("value", "")) for name, spec in (action.get("outputs") or {}).items()}
    return ActionRun(exit_code, "".join(stdout), "".join(stderr), outputs, "".join(summaries), step_outputs)
