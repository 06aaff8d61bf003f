"""A small stand-in for the GitHub Actions runner: it executes a composite action's steps the way
the runner does — each step's env with its ``${{ }}`` expressions evaluated, the script run by
``bash --noprofile --norc -eo pipefail``, a fresh ``GITHUB_OUTPUT`` file per step, one shared
``GITHUB_STEP_SUMMARY``, and the action's outputs evaluated at the end.

Only the expressions the project's action uses are supported: ``inputs.*``, ``github.*`` and
``steps.<id>.outputs.*``. Anything else fails the test loudly."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass
class StepResult:
    id: str | None
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]


@dataclass
class ActionRun:
    steps: list[StepResult] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s.returncode == 0 for s in self.steps)

    @property
    def log(self) -> str:
        return "\n".join(s.stdout + s.stderr for s in self.steps)


def parse_outputs(text: str) -> dict[str, str]:
    """Both forms the runner accepts: ``name=value`` and ``name<<DELIM`` ... ``DELIM``."""
    outputs: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            outputs[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        if "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
        i += 1
    return outputs


def run_action(
    action_dir: Path,
    *,
    inputs: dict[str, str],
    env: dict[str, str],
    workspace: Path,
    temp: Path,
) -> ActionRun:
    action = yaml.safe_load((action_dir / "action.yml").read_text())
    declared = action.get("inputs", {})
    values = {name: str(spec.get("default", "")) for name, spec in declared.items()}
    unknown = set(inputs) - set(declared)
    assert not unknown, f"inputs the action does not declare: {unknown}"
    values.update(inputs)
    context: dict[str, Any] = {
        "inputs": values,
        "github": {"action_path": str(action_dir), "workspace": str(workspace)},
        "steps": {},
    }
    result = ActionRun()
    summary = temp / "step_summary.md"
    summary.touch()
    for number, step in enumerate(action["runs"]["steps"]):
        assert step.get("shell") == "bash", "every step of this action runs in bash"
        assert "${{" not in step["run"], "no expression may appear inside a run: script"
        output_file = temp / f"output-{number}"
        output_file.write_text("")
        step_env = {k: _evaluate(str(v), context) for k, v in (step.get("env") or {}).items()}
        script = temp / f"step-{number}.sh"
        script.write_text(step["run"])
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            env={**env, **step_env, "GITHUB_OUTPUT": str(output_file), "GITHUB_STEP_SUMMARY": str(summary),
                 "RUNNER_TEMP": str(temp), "GITHUB_WORKSPACE": str(workspace), "GITHUB_ACTION_PATH": str(action_dir)},
            cwd=workspace, capture_output=True, text=True, check=False,
        )  # fmt: skip
        outputs = parse_outputs(output_file.read_text())
        result.steps.append(
            StepResult(step.get("id"), done.returncode, done.stdout, done.stderr, outputs)
        )
        if step.get("id"):
            context["steps"][step["id"]] = {"outputs": outputs}
        if done.returncode != 0:
            break
    if result.ok:
        for name, spec in (action.get("outputs") or {}).items():
            result.outputs[name] = _evaluate(str(spec["value"]), context)
    return result


def _evaluate(text: str, context: dict[str, Any]) -> str:
    def replace(match: re.Match[str]) -> str:
        path = match.group(1).split(".")
        value: Any = context
        for part in path:
            assert isinstance(value, dict), f"unsupported expression {match.group(1)!r}"
            value = value.get(part, "")
        return str(value)

    return _EXPRESSION.sub(replace, text)
