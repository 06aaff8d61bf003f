"""A runner for the trusted pipeline's YAML that follows Azure DevOps' rules, so tests execute the
pipeline as written rather than its scripts one by one:

- compile time: ``${{ parameters.X }}`` in strings, ``${{ if }}``/``${{ else }}`` keys in
  mappings and lists, with the expression functions the pipeline uses; parameter ``values``;
- run time: ``$(Name)`` macros expanded once in scripts and ``env:`` values (undefined macros stay
  as written, as Azure DevOps leaves them); secret variables reach a step only through ``env:``;
  job variables ``$[ dependencies.<job>.outputs['<step>.<name>'] ]``;
- logging commands in step output (``##vso[...]`` anywhere in a line) are honoured, unless the
  step has ``target: {commands: restricted}``, where only ``task.logissue``, ``task.setprogress``
  and ``task.complete`` are, and ``task.setvariable`` only for the ``settableVariables`` it lists;
- every job has its own workspace, temp folder and variables; artifacts move between jobs only
  through ``publish``/``download``; ``dependsOn`` and ``condition`` decide what runs.

It implements what this project's pipeline uses; anything else is an error, not a guess.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_MACRO = re.compile(r"\$\(([A-Za-z0-9_.]+)\)")
_COMMAND = re.compile(r"##vso\[(\S+)([^\]]*)\](.*)")
_RESTRICTED_ALLOWED = {"task.logissue", "task.setprogress", "task.complete"}


# --- expressions ----------------------------------------------------------------------------------


class _Parser:
    """Azure DevOps expressions: literals, ``parameters.X``, ``dependencies.J.outputs['s.n']``,
    ``succeeded()`` and the functions below."""

    _TOKEN = re.compile(
        r"\s*(?:('(?:[^']|'')*')|([A-Za-z_][A-Za-z0-9_.]*)|(\[)|(\])|(\()|(\))|(,))"
    )

    def __init__(self, text: str, context: Mapping[str, Any]) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            match = self._TOKEN.match(text, pos)
            if match is None:
                raise ValueError(f"cannot parse expression {text!r} at {pos}")
            kinds = ("str", "name", "[", "]", "(", ")", ",")
            kind = next(k for k, g in zip(kinds, match.groups(), strict=True) if g is not None)
            self.tokens.append((kind, match.group(match.lastindex or 0)))
            pos = match.end()
        self.pos = 0
        self.context = context

    def parse(self) -> Any:
        value = self._value()
        if self.pos != len(self.tokens):
            raise ValueError(f"trailing tokens in expression: {self.tokens[self.pos :]}")
        return value

    def _next(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _value(self) -> Any:
        kind, text = self._next()
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind != "name":
            raise ValueError(f"unexpected {text!r}")
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "(":
            self.pos += 1
            args: list[Any] = []
            while self.tokens[self.pos][0] != ")":
                args.append(self._value())
                if self.tokens[self.pos][0] == ",":
                    self.pos += 1
            self.pos += 1
            return _call(text, args, self.context)
        value: Any = _lookup(self.context, text.split("."))
        while self.pos < len(self.tokens) and self.tokens[self.pos][0] == "[":
            self.pos += 1
            key = self._value()
            if self._next()[0] != "]":
                raise ValueError("expected ]")
            value = (value or {}).get(key, "")
        return value


def _lookup(context: Mapping[str, Any], path: list[str]) -> Any:
    value: Any = context
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            raise ValueError(f"unknown name {'.'.join(path)}")
        value = value[part]
    return value


def _call(name: str, args: list[Any], context: Mapping[str, Any]) -> Any:
    text = [str(a) for a in args]
    if name == "contains":
        return text[1].lower() in text[0].lower()
    if name == "format":
        return re.sub(r"\{(\d+)\}", lambda m: text[int(m.group(1)) + 1], text[0])
    if name == "in":
        return text[0].lower() in (t.lower() for t in text[1:])
    if name == "eq":
        return text[0].lower() == text[1].lower()
    if name == "ne":
        return text[0].lower() != text[1].lower()
    if name == "and":
        return all(args)
    if name == "or":
        return any(args)
    if name == "not":
        return not args[0]
    if name == "succeeded":
        return bool(context.get("__succeeded__", True))
    raise ValueError(f"expression function {name}() is not supported by this runner")


def evaluate(text: str, context: Mapping[str, Any]) -> Any:
    return _Parser(text, context).parse()


# --- compile time -----------------------------------------------------------------------------------


def _compile(node: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(node, str):
        whole = _EXPR.fullmatch(node.strip())
        if whole:
            value = evaluate(whole.group(1), context)
            return value if not isinstance(value, bool) else str(value)
        return _EXPR.sub(lambda m: str(evaluate(m.group(1), context)), node)
    if isinstance(node, list):
        out: list[Any] = []
        chosen: bool | None = None
        for item in node:
            if isinstance(item, dict) and len(item) == 1:
                key = next(iter(item))
                branch = _branch(key, context, chosen)
                if branch is not None:
                    chosen = branch
                    if branch:
                        out.extend(_compile(item[key], context))
                    continue
            chosen = None
            out.append(_compile(item, context))
        return out
    if isinstance(node, dict):
        result: dict[str, Any] = {}
        chosen = None
        for key, value in node.items():
            branch = _branch(key, context, chosen)
            if branch is not None:
                chosen = branch
                if branch:
                    result.update(_compile(value, context))
                continue
            chosen = None
            result[_compile(key, context)] = _compile(value, context)
        return result
    return node


def _branch(key: Any, context: Mapping[str, Any], previous: bool | None) -> bool | None:
    """For ``${{ if c }}``/``${{ elseif c }}``/``${{ else }}`` keys: whether to take it."""
    if not isinstance(key, str):
        return None
    match = _EXPR.fullmatch(key.strip())
    if match is None:
        return None
    expr = match.group(1)
    if expr.startswith("if "):
        return bool(evaluate(expr[3:], context))
    if expr == "else":
        if previous is None:
            raise ValueError("${{ else }} without ${{ if }}")
        return not previous
    if expr.startswith("elseif "):
        if previous is None:
            raise ValueError("${{ elseif }} without ${{ if }}")
        return not previous and bool(evaluate(expr[7:], context))
    raise ValueError(f"unsupported template directive {key!r}")


def compile_pipeline(path: Path, parameters: Mapping[str, str]) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    values: dict[str, str] = {}
    for declared in document.get("parameters", []):
        name = declared["name"]
        if name in parameters:
            value = parameters[name]
        elif "default" in declared:
            value = declared["default"]
        else:
            raise ValueError(f"A value for the '{name}' parameter must be provided.")
        if "values" in declared and value not in declared["values"]:
            raise ValueError(f"'{value}' is not an allowed value for parameter '{name}'")
        values[name] = str(value)
    unknown = set(parameters) - set(values)
    if unknown:
        raise ValueError(f"Unexpected parameter(s): {', '.join(sorted(unknown))}")
    compiled = _compile(
        {k: v for k, v in document.items() if k != "parameters"}, {"parameters": values}
    )
    assert isinstance(compiled, dict)
    return compiled


# --- run time ------------------------------------------------------------------------------------


@dataclass
class Command:
    job: str
    step: str
    name: str
    properties: dict[str, str]
    data: str
    honoured: bool


@dataclass
class JobResult:
    name: str
    result: str  # Succeeded, Failed, Skipped
    outputs: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    compiled: dict[str, Any]
    jobs: dict[str, JobResult]
    commands: list[Command]

    @property
    def log(self) -> str:
        return "\n".join(line for job in self.jobs.values() for line in job.log)

    def honoured(self, name: str) -> list[Command]:
        return [c for c in self.commands if c.name == name and c.honoured]


@dataclass
class AdoRunner:
    """Runs one pipeline as an agent would: as this process's user, one job after another."""

    pipeline: Path
    self_repo: Path
    work: Path
    base_env: dict[str, str]
    variables: dict[str, str] = field(default_factory=dict)  # queue-time, plain
    secrets: dict[str, str] = field(default_factory=dict)  # queue-time, secret
    groups: dict[str, dict[str, str]] = field(default_factory=dict)  # variable groups, secret
    skip_scripts: tuple[str, ...] = ()  # endings of scripts already done here (the set-up)
    copy_checkout: bool = False  # check out a copy of self_repo's files (else a link to it)
    _masked: set[str] = field(default_factory=set)  # values a step registered as secret

    def run(self, parameters: Mapping[str, str]) -> RunResult:
        compiled = compile_pipeline(self.pipeline, parameters)
        pipeline_vars = {k: str(v) for k, v in (compiled.get("variables") or {}).items()}
        artifacts = self.work / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        jobs: dict[str, JobResult] = {}
        commands: list[Command] = []
        for job in compiled["jobs"]:
            name = job["job"]
            depends = job.get("dependsOn", [])
            depends = [depends] if isinstance(depends, str) else list(depends)
            context = {
                "dependencies": {
                    d: {"outputs": jobs[d].outputs, "result": jobs[d].result} for d in depends
                },
                "__succeeded__": all(jobs[d].result == "Succeeded" for d in depends),
            }
            condition = job.get("condition", "succeeded()")
            if not evaluate(condition, context):
                jobs[name] = JobResult(name, "Skipped")
                continue
            jobs[name] = self._job(job, pipeline_vars, context, artifacts, commands)
        return RunResult(compiled=compiled, jobs=jobs, commands=commands)

    def _job(
        self,
        job: dict[str, Any],
        pipeline_vars: Mapping[str, str],
        context: Mapping[str, Any],
        artifacts: Path,
        commands: list[Command],
    ) -> JobResult:
        name = job["job"]
        root = self.work / "agent" / name
        if root.exists():
            shutil.rmtree(root)
        workspace, temp = root / "w", root / "t"
        for folder in (workspace / "s", workspace / "a", temp):
            folder.mkdir(parents=True)
        plain: dict[str, str] = {
            **pipeline_vars,
            **self.variables,
            "Pipeline.Workspace": str(workspace),
            "Build.SourcesDirectory": str(workspace / "s"),
            "Build.ArtifactStagingDirectory": str(workspace / "a"),
            "Agent.TempDirectory": str(temp),
            "Build.BuildId": "4242",
        }
        secret: dict[str, str] = dict(self.secrets)
        for entry in _job_variables(job.get("variables")):
            if "group" in entry:
                secret.update(self.groups[entry["group"]])
                continue
            value = str(entry["value"])
            runtime = re.fullmatch(r"\$\[\s*(.*?)\s*\]", value.strip())
            plain[entry["name"]] = str(evaluate(runtime.group(1), context)) if runtime else value
        result = JobResult(name, "Succeeded")
        for number, step in enumerate(job.get("steps", [])):
            step_name = step.get("name") or f"step{number}"
            ok = self._step(step, step_name, plain, secret, workspace, artifacts, result, commands)
            if not ok:
                result.result = "Failed"
                break
        return result

    def _step(
        self,
        step: dict[str, Any],
        step_name: str,
        plain: dict[str, str],
        secret: dict[str, str],
        workspace: Path,
        artifacts: Path,
        result: JobResult,
        commands: list[Command],
    ) -> bool:
        def expand(text: str) -> str:
            values = {k.lower(): v for k, v in {**plain, **secret}.items()}
            return _MACRO.sub(lambda m: values.get(m.group(1).lower(), m.group(0)), text)

        if "checkout" in step:
            if step["checkout"] == "self":
                target = workspace / step.get("path", "s")
                if target.exists() or target.is_symlink():
                    shutil.rmtree(target) if not target.is_symlink() else target.unlink()
                if self.copy_checkout:
                    copy_as_checkout(self.self_repo, target)
                else:
                    target.symlink_to(self.self_repo)
            return True
        if "publish" in step:
            source = Path(expand(step["publish"]))
            shutil.copytree(source, artifacts / step["artifact"], symlinks=True)
            return True
        if "download" in step:
            shutil.copytree(
                artifacts / step["artifact"], workspace / step["artifact"], symlinks=True
            )
            return True
        if "script" not in step:
            raise ValueError(f"this runner does not support the step {step}")
        script = expand(step["script"])
        if script.strip().endswith(self.skip_scripts) and self.skip_scripts:
            result.log.append(f"[{result.name}/{step_name}] (done on this machine already)")
            return True
        env = dict(self.base_env)
        env.update({k.upper().replace(".", "_"): v for k, v in plain.items()})
        env.update({str(k): expand(str(v)) for k, v in (step.get("env") or {}).items()})
        env.update(
            TF_BUILD="True", BUILD_BUILDID="4242", AGENT_TEMPDIRECTORY=plain["Agent.TempDirectory"]
        )
        file = Path(plain["Agent.TempDirectory"]) / f"{step_name}.sh"
        file.write_text(script)
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", str(file)],
            env=env,
            cwd=plain["Build.SourcesDirectory"],
            capture_output=True,
            text=True,
            check=False,
        )
        target = step.get("target") or {}
        restricted = isinstance(target, dict) and target.get("commands") == "restricted"
        settable = target.get("settableVariables") if isinstance(target, dict) else None
        for line in (done.stdout + done.stderr).splitlines():
            found = _COMMAND.search(line)
            if found is not None and found.group(1) == "task.setsecret" and found.group(3):
                self._masked.add(found.group(3))  # Azure DevOps masks it from here on
            for value in self._masked:
                line = line.replace(value, "***")
            result.log.append(line)
            if found is None:
                continue
            command, props, data = found.group(1), _properties(found.group(2)), found.group(3)
            allowed = not restricted or command in _RESTRICTED_ALLOWED
            if restricted and command == "task.setvariable":
                allowed = isinstance(settable, list) and props.get("variable") in settable
            commands.append(Command(result.name, step_name, command, props, data, allowed))
            if allowed and command == "task.setvariable":
                variable = props.get("variable", "")
                if props.get("isoutput", "").lower() == "true":
                    result.outputs[f"{step_name}.{variable}"] = data
                else:
                    plain[variable] = data
        return done.returncode == 0


def copy_as_checkout(repo: Path, target: Path) -> None:
    """The repository's files as a checkout has them: tracked ones, and new ones not ignored
    (so that a test sees the working tree), with their modes."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = repo / name
        if not source.is_file():
            continue  # deleted in the working tree
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)


def _job_variables(variables: Any) -> list[dict[str, Any]]:
    if variables is None:
        return []
    if isinstance(variables, dict):
        return [{"name": k, "value": v} for k, v in variables.items()]
    return list(variables)


def _properties(text: str) -> dict[str, str]:
    out = {}
    for part in text.strip().split(";"):
        key, _, value = part.partition("=")
        if key.strip():
            out[key.strip().lower()] = value.strip()
    return out
