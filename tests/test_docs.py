"""Every code block in README.md and docs/ is exercised; the generated and listed references are current.

The rule, by the fence's language tag:
- ```yaml: every document parses. A manifest (apiVersion + kind) validates against our CRD schemas or Kubernetes'
  own (kubernetes-validate, strict, 1.28); BurstProfiles and ResourcePolicies also compile with
  `burstflow policies validate`, CronWorkflows with `burstflow cron preview`; a Kustomization's resources exist.
  A fragment (no apiVersion/kind) must be one FRAGMENTS knows, and is checked inside the object it belongs to.
- ```sh / ```bash / ```console (in a transcript, commands follow `$ ` and the lines below one are its output): every command is split
  on `&&`, `|`, `;`, `&`, with comments, redirections and here-documents taken out (a here-document's body is
  checked as yaml, json or python by its content). Then by program:
  `burstflow` argv parses with the real parser (`burstflow.cli.build_parser()`); `mutate`, `policies validate`,
  `cron preview` and `certs generate --out DIR` also run (offline, DIR moved to a temporary directory) when every
  file they name exists, and must exit 0; output shown under `$ ` must match (a `...` line stands for any lines,
  `...` in a line for any text), and a `# stderr: TEXT` comment line must appear in the command's stderr.
  `kubectl ... -k DIR` and `kubectl kustomize DIR` render DIR with `kubectl kustomize`; `make TARGET` names a
  Makefile target; `helm --set KEY=V` names a key of the chart's values.yaml; `python -m MODULE` imports,
  `python -` / `python -c` code compiles, `python FILE` exists. Every argument of any command that looks like a
  path in this repository (its first segment exists here, or it starts with ../shared) must exist; outputs of
  `burstflow certs generate` (`.../generated/...`) are exempt.
- ```json parses; ```python compiles; ```promql names only metrics of docs/reference/metrics.md.
- ```text (output, diagrams, log lines) is skipped. A block without a language tag fails: tag it.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib.util
import io
import json
import re
import shlex
import sys
from pathlib import Path

import jsonpatch
import pytest
import yaml

from burstflow.cli import build_parser, main as burstflow_main
from tests.conftest import ROOT, SHARED
from tests.test_manifests import crd_schemas, kustomize_build, validate_object, workdir  # noqa: F401 (fixture)

sys.path.insert(0, str(ROOT / "docs" / "tools"))
import crd_reference  # noqa: E402
import settings_reference  # noqa: E402

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+)(?P<lang>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
                   re.M | re.S)
COMMAND_LANGS = {"sh", "bash", "console"}
SKIPPED_LANGS = {"text"}
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Placeholders a reader replaces (`<run dir>`, `<cron>`): one opaque word for the tokenizer.
PLACEHOLDER = re.compile(r"<[a-z][a-z -]*>")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
SEPARATORS = {"&&", "||", "|", ";", "&"}
REDIRECTS = {">", ">>", "<", "2>", "2>>", "&>", ">&", "2>&1"}


@dataclasses.dataclass
class Block:
    path: Path
    line: int
    lang: str
    body: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    out = []
    for path in DOCS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            indent = len(match["indent"])
            body = "\n".join(line[indent:] for line in match["body"].splitlines())
            out.append(Block(path, text.count("\n", 0, match.start()) + 1, match["lang"].strip(), body))
    return out


ALL_BLOCKS = blocks()


def of(*langs: str) -> list:
    return [pytest.param(b, id=b.id) for b in ALL_BLOCKS if b.lang in langs]


# --- shared objects ---------------------------------------------------------------------------------------------

_CACHE: dict = {}


def our_crds() -> dict[tuple[str, str], dict]:
    if "crds" not in _CACHE:
        objects = [doc for path in sorted((ROOT / "manifests/base/crds").glob("*.yaml"))
                   for doc in yaml.load_all(path.read_text(), Loader=LOADER) if doc]
        _CACHE["crds"] = crd_schemas(objects)
    return _CACHE["crds"]


def rendered(workdir: Path, directory: str) -> list[dict]:  # noqa: F811 (the fixture's value)
    """`kubectl kustomize` of a documented directory, in the copy of manifests/ whose self-signed overlay has its
    certificates generated (tests/test_manifests.py), once per run."""
    key = ("kustomize", directory)
    if key not in _CACHE:
        relative = Path(directory.rstrip("/")).relative_to("manifests")
        _CACHE[key] = kustomize_build(workdir / relative)
    return _CACHE[key]


def run_burstflow(argv: list[str]) -> tuple[int, str, str]:
    """`burstflow ARGV` in this process (fast), from the repository root: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(ROOT):
        try:
            code = burstflow_main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


# --- manifests --------------------------------------------------------------------------------------------------

def check_burstflow_object(obj: dict, tmp_path: Path) -> None:
    """Our kinds: the CRD's schema, then the compilers (`policies validate`, `cron preview`)."""
    import jsonschema

    key = (obj["apiVersion"], obj["kind"])
    assert key in our_crds(), f"{key} is not one of our CRDs"
    if ("validator", key) not in _CACHE:  # the CronWorkflow schema is megabytes: build its validator once
        _CACHE[("validator", key)] = jsonschema.Draft7Validator(our_crds()[key])
    errors = sorted(_CACHE[("validator", key)].iter_errors(obj), key=str)
    assert not errors, f"{obj['kind']}: {errors[0].message} at {list(errors[0].path)}"
    folder = tmp_path / f"objects-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    (folder / "object.yaml").write_text(yaml.safe_dump(obj))
    if obj["kind"] == "CronWorkflow":
        argv = ["cron", "preview", str(folder / "object.yaml"), "--from", "2026-01-05T09:58:00Z", "--count", "1"]
    else:
        argv = ["policies", "validate", str(folder)]
    code, out, err = run_burstflow(argv)
    assert code == 0, f"burstflow {' '.join(argv)} exited {code}:\n{out}{err}"


def check_manifest(obj: dict, tmp_path: Path, workdir: Path) -> None:  # noqa: F811
    group = obj["apiVersion"].split("/")[0]
    if group == "burstflow.io":
        check_burstflow_object(obj, tmp_path)
    elif group == "kustomize.config.k8s.io":
        for resource in obj.get("resources") or ():  # written for a directory beside manifests/
            assert (ROOT / "example" / resource).resolve().exists(), f"Kustomization resource {resource} not found"
        for patch in obj.get("patches") or ():
            assert patch.get("target") and patch.get("patch"), f"patch without a target or body: {patch}"
    else:
        obj.setdefault("metadata", {})
        validate_object(obj, version="1.28", crds={})


def _pod(metadata: dict | None = None, spec: dict | None = None) -> dict:
    spec = dict(spec or {})
    spec.setdefault("containers", [{"name": "main", "image": "alpine:3.20"}])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "docs", **(metadata or {})}, "spec": spec}


def _older_clusters_patch(fragment: dict, tmp_path: Path, workdir: Path) -> None:  # noqa: F811
    """A kustomize `patches:` list of JSON patches: each applies to the rendered object it targets, which stays
    valid."""
    objects = rendered(workdir, "manifests/overlays/cert-manager")
    for patch in fragment["patches"]:
        target = patch["target"]
        matches = [o for o in objects if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
        assert len(matches) == 1, f"patch target {target} matches {len(matches)} rendered objects"
        result = jsonpatch.apply_patch(matches[0], yaml.safe_load(patch["patch"]))
        validate_object(result, version="1.28", crds={})


def _cron_lines(block_text: str, tmp_path: Path) -> None:
    """Alternative `when:` / `stopStrategy:` lines: each one compiles in an otherwise valid CronWorkflow."""
    for line in block_text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec = {"schedules": ["0 * * * *"], "workflowSpec": {"entrypoint": "main", "templates": [
            {"name": "main", "container": {"image": "alpine:3.20"}}]}, **yaml.safe_load(line)}
        check_burstflow_object({"apiVersion": "burstflow.io/v1alpha1", "kind": "CronWorkflow",
                                "metadata": {"name": "docs", "namespace": "default"}, "spec": spec}, tmp_path)


# A YAML block without apiVersion/kind, by its keys: how to check it inside the object it belongs to.
FRAGMENTS = {
    frozenset({"provider"}): lambda f, block, tmp, wd: check_burstflow_object(
        {"apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile", "metadata": {"name": "docs"}, "spec": f}, tmp),
    frozenset({"env"}): lambda f, block, tmp, wd: validate_object(
        _pod(spec={"containers": [{"name": "main", "image": "alpine:3.20", "env": f["env"]}]}),
        version="1.28", crds={}),
    frozenset({"metadata", "spec"}): lambda f, block, tmp, wd: validate_object(
        _pod(f["metadata"], f["spec"]), version="1.28", crds={}),
    frozenset({"patches"}): lambda f, block, tmp, wd: _older_clusters_patch(f, tmp, wd),
    frozenset({"when"}): lambda f, block, tmp, wd: _cron_lines(block, tmp),
    frozenset({"when", "stopStrategy"}): lambda f, block, tmp, wd: _cron_lines(block, tmp),
}


def check_yaml(text: str, tmp_path: Path, workdir: Path) -> None:  # noqa: F811
    documents = [doc for doc in yaml.load_all(text, Loader=LOADER) if doc is not None]
    assert documents, "empty YAML block"
    for doc in documents:
        assert isinstance(doc, dict), f"a YAML document that is not a mapping: {doc!r}"
        if "apiVersion" in doc and "kind" in doc:
            check_manifest(doc, tmp_path, workdir)
            continue
        check = FRAGMENTS.get(frozenset(doc))
        assert check, f"YAML fragment with keys {sorted(doc)}: add a rule to FRAGMENTS or tag the block text"
        check(doc, text, tmp_path, workdir)


@pytest.mark.parametrize("block", of("yaml"))
def test_yaml_block(block: Block, tmp_path: Path, workdir: Path):  # noqa: F811
    check_yaml(block.body, tmp_path, workdir)


# --- commands ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Command:
    argv: list[str]
    output: list[str] = dataclasses.field(default_factory=list)  # shown under a `$ ` command
    stderr: list[str] = dataclasses.field(default_factory=list)  # `# stderr: TEXT` comment lines
    shown: bool = False  # a console `$ ` command: its output is shown (possibly empty)


def _split_line(line: str) -> list[list[str]]:
    lexer = shlex.shlex(PLACEHOLDER.sub("PLACEHOLDER", line), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current, skip_next = [], [], False
    for token in lexer:
        if skip_next:
            skip_next = False
            continue
        if token in SEPARATORS:
            commands.append(current)
            current = []
        elif token in REDIRECTS or re.fullmatch(r"\d?>+|\d?>&\d?", token):
            skip_next = token not in ("2>&1",) and not token.endswith("&1")
        else:
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


def parse_commands(block: Block) -> tuple[list[Command], list[tuple[str, str]]]:
    """The block's simple commands, and its here-documents as (target word, body)."""
    lines = block.body.splitlines()
    commands: list[Command] = []
    heredocs: list[tuple[str, str]] = []
    console = block.lang == "console" or any(line.startswith("$ ") for line in lines)  # a transcript
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if console:
            if not line.startswith("$ "):
                if commands:
                    commands[-1].output.append(line)
                continue
            line = line[2:]
        stripped = line.strip()
        if stripped.startswith("# stderr:"):
            commands[-1].stderr.append(stripped[len("# stderr:"):].strip())
            continue
        while line.rstrip().endswith("\\") and i < len(lines):
            line = line.rstrip()[:-1] + " " + (lines[i][2:] if console and lines[i].startswith("$ ") else lines[i])
            i += 1
        here = HEREDOC.search(line)
        if here:
            body = []
            while i < len(lines) and lines[i].strip() != here[2]:
                body.append(lines[i])
                i += 1
            i += 1
            line = line[:here.start()] + line[here.end():]
            heredocs.append((line, "\n".join(body)))
        for argv in _split_line(line):
            commands.append(Command(argv, shown=console))
    return commands, heredocs


def repo_paths(argv: list[str]) -> list[Path]:
    """Arguments that name a path in this repository (or in ../shared)."""
    out = []
    for token in argv:
        token = token.split("=", 1)[1] if token.startswith("--") and "=" in token else token
        if "/" not in token or token.startswith(("/", "~", "$", "-", "http", "PLACEHOLDER", "@")) \
                or "PLACEHOLDER" in token or "generated" in token or "*" in token:
            continue
        if token.startswith("../shared/"):
            out.append(SHARED / token[len("../shared/"):])
        elif (ROOT / token.split("/")[0]).exists() and token.split("/")[0] not in (".", ""):
            out.append(ROOT / token)
    return out


def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M))


def _helm_values() -> dict:
    if "helm" not in _CACHE:
        _CACHE["helm"] = yaml.safe_load((ROOT / "manifests/helm/burstflow/values.yaml").read_text())
    return _CACHE["helm"]


def _check_helm_key(key: str) -> None:
    node = _helm_values()
    for part in re.split(r"(?<!\\)\.", key):
        if isinstance(node, dict) and not node:  # a free-form map (labels, annotations): any key
            return
        assert isinstance(node, dict) and part in node, f"helm --set {key}: {part!r} is not in values.yaml"
        node = node[part]


def _output_matches(expected: list[str], actual: list[str]) -> bool:
    """`...` alone stands for any lines; `...` inside a line for any text."""
    def line_re(line: str) -> re.Pattern:
        return re.compile(".*".join(re.escape(part) for part in line.rstrip().split("...")) + r"\Z")

    def match(e: int, a: int) -> bool:
        if e == len(expected):
            return a == len(actual)
        if expected[e].strip() == "...":
            return any(match(e + 1, k) for k in range(a, len(actual) + 1))
        return a < len(actual) and bool(line_re(expected[e]).match(actual[a].rstrip())) and match(e + 1, a + 1)

    return match(0, 0)


RUNNABLE = {("mutate",), ("policies", "validate"), ("cron", "preview"), ("certs", "generate")}


def check_burstflow(command: Command, argv: list[str], files: dict[str, Path], tmp_path: Path) -> None:
    argv = [str(files.get(a, a)) for a in argv]
    label = "burstflow " + " ".join(argv)
    parser = build_parser()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{label}: the CLI refuses these arguments: {err.getvalue().strip()}")
    verb = tuple(a for a in argv[:2] if not a.startswith("-"))
    if verb[:1] == ("mutate",):
        verb = ("mutate",)
    if verb not in RUNNABLE or "-" in argv[1:]:
        return
    if verb == ("certs", "generate"):
        if "--out" not in argv:  # the default writes into manifests/overlays/self-signed/generated/
            return
        argv[argv.index("--out") + 1] = str(tmp_path / "certs")
    named = [Path(a) if Path(a).is_absolute() else ROOT / a for a in argv[1:]
             if not a.startswith("-") and ("/" in a or a.endswith((".yaml", ".json")))]
    if not all(p.exists() for p in named):
        return  # names files the reader has (pod.yaml, my-cron.yaml): parsed, not run
    code, out, errors = run_burstflow(argv)
    assert code == 0, f"{label} exited {code}:\n{out}{errors}"
    if command.shown and command.output:
        assert _output_matches(command.output, (out + errors).rstrip("\n").splitlines()), \
            f"{label}: the output shown differs from what it prints:\n{out}{errors}"
    for line in command.stderr:
        assert line in errors.splitlines(), f"{label}: stderr lacks {line!r}:\n{errors}"


def check_command(command: Command, files: dict[str, Path], tmp_path: Path, workdir: Path) -> None:  # noqa: F811
    argv = list(command.argv)
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):  # VAR=value before the program
        argv.pop(0)
    if not argv:
        return
    for path in repo_paths(argv):
        assert path.exists(), f"{' '.join(command.argv)}: {path} does not exist"
    program = Path(argv[0]).name
    if program == "burstflow":
        check_burstflow(command, argv[1:], files, tmp_path)
    elif program.startswith("python"):
        if argv[1:2] == ["-m"]:
            module = argv[2]
            if module == "burstflow":
                check_burstflow(command, argv[3:], files, tmp_path)
            else:
                assert importlib.util.find_spec(module), f"python -m {module}: no such module"
        elif argv[1:2] == ["-c"]:
            compile(argv[2], "<python -c>", "exec")
        elif argv[1:2] != ["-"]:
            assert (ROOT / argv[1]).exists(), f"python {argv[1]}: no such file"
    elif program == "make":
        for target in argv[1:]:
            assert target in _make_targets(), f"make {target}: no such Makefile target"
    elif program == "kubectl":
        for flag, value in zip(argv, argv[1:]):
            if flag in ("-k", "--kustomize", "kustomize") and value.startswith("manifests/"):
                rendered(workdir, value)
    elif program == "helm":
        for flag, value in zip(argv, argv[1:]):
            if flag in ("--set", "--set-string"):
                _check_helm_key(value.split("=", 1)[0])


def check_heredoc(target: str, body: str) -> Path | None:
    """A here-document's body by its content; returns nothing (the file it writes is handled by the caller)."""
    if target.split()[0].startswith(("python", ".venv/bin/python")):
        compile(body, "<here-document>", "exec")
    elif body.lstrip().startswith("{"):
        json.loads(body)
    return None


@pytest.mark.parametrize("block", of(*COMMAND_LANGS))
def test_command_block(block: Block, tmp_path: Path, workdir: Path):  # noqa: F811
    commands, heredocs = parse_commands(block)
    assert commands, "a command block without commands: tag it text"
    files: dict[str, Path] = {}  # files the block writes with `cat > FILE <<EOF`, written under tmp_path instead
    for target, body in heredocs:
        check_heredoc(target, body)
        written = re.search(r">\s*(\S+)", target)
        if written:
            name = written[1]
            files[name] = tmp_path / Path(name).name
            files[name].write_text(body + "\n")
            if name.endswith((".yaml", ".yml")):
                check_yaml(body, tmp_path, workdir)
    for command in commands:
        check_command(command, files, tmp_path, workdir)


# --- other blocks -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", of("json"))
def test_json_block(block: Block):
    json.loads(block.body)


@pytest.mark.parametrize("block", of("python"))
def test_python_block(block: Block):
    compile(block.body, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def documented_metrics() -> set[str]:
    return set(re.findall(r"`(burstflow_\w+)`", (ROOT / "docs/reference/metrics.md").read_text()))


@pytest.mark.parametrize("block", of("promql"))
def test_promql_block_names_documented_metrics(block: Block):
    names = {re.sub(r"_(bucket|count|sum)$", "", n) for n in re.findall(r"\bburstflow_\w+", block.body)}
    assert names and names <= documented_metrics(), f"not in docs/reference/metrics.md: {names - documented_metrics()}"


def test_every_block_is_tagged():
    known = COMMAND_LANGS | SKIPPED_LANGS | {"yaml", "json", "python", "promql"}
    untagged = [b.id + (f" ({b.lang})" if b.lang else "") for b in ALL_BLOCKS if b.lang not in known]
    assert not untagged, f"code blocks without a known language tag (tag output and diagrams `text`): {untagged}"


# --- the front door, links --------------------------------------------------------------------------------------

def test_readme_is_a_front_door_whose_first_screen_gives_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move the details into docs/"
    first_screen = "\n".join(lines[:15])
    assert "```sh\nmake demo" in first_screen and "\nmake test" in first_screen


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than - and _ dropped, spaces to -."""
    out, fence = set(), False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#{1,6} ", line):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return out


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(path: Path):
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", path.read_text()))
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links that resolve to nothing: {broken}"


# --- generated and listed references ----------------------------------------------------------------------------

def test_crd_reference_is_current():
    committed = crd_reference.OUTPUT.read_text() if crd_reference.OUTPUT.exists() else ""
    assert crd_reference.render() == committed, (
        f"docs/reference/crds.md is not what the CRDs give: run `{crd_reference.COMMAND}` and commit the result")


CODE_DIRS = ("webhook", "cron", "burstflow")


def _code_files() -> list[Path]:
    # burstflow/webhook and burstflow/cron point at the root folders: read each file once.
    return sorted({p.resolve() for d in CODE_DIRS for p in (ROOT / d).rglob("*.py")})


def test_every_metric_registered_in_code_is_in_the_metrics_reference():
    registered = set()
    for path in _code_files():
        for kind, name in re.findall(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(burstflow_\w+)\"", path.read_text()):
            # prometheus-client exposes a counter with `_total` whether or not the name has it.
            registered.add(name if kind != "Counter" or name.endswith("_total") else name + "_total")
    assert len(registered) >= 20, f"found only {sorted(registered)}: has the way metrics are registered changed?"
    missing = registered - documented_metrics()
    assert not missing, f"metrics registered in the code but not in docs/reference/metrics.md: {sorted(missing)}"


def settings_variables() -> set[str]:
    """Every `BURSTFLOW_*` variable the services read: literal names in the code, and for each field of the
    settings dataclasses its variable (`BURSTFLOW_<SERVICE>_<FIELD>`, built, never spelled out) and aliases."""
    names = set()
    for path in _code_files():
        names |= set(re.findall(r"\bBURSTFLOW_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    for cls in settings_reference.SERVICES.values():
        for field in dataclasses.fields(cls):
            names |= {cls.variable(field.name), *field.metadata.get("aliases", ())}
    return names


def test_every_burstflow_variable_is_in_the_settings_reference():
    documented = set(re.findall(r"\bBURSTFLOW_[A-Z0-9_]*[A-Z0-9]\b", (ROOT / "docs/reference/settings.md").read_text()))
    missing = settings_variables() - documented
    assert not missing, f"variables the code reads but docs/reference/settings.md does not list: {sorted(missing)}"


def test_settings_tables_are_current():
    committed = settings_reference.OUTPUT.read_text()
    assert settings_reference.render(committed) == committed, (
        f"the settings tables of docs/reference/settings.md differ from the settings in the code: run "
        f"`{settings_reference.COMMAND}` and commit the result")
