"""The documentation site: a strict build, every public name documented and in the API reference,
the guide's examples run, and the README's links into docs/ resolve.

The public names are those of the ``__all__`` of natrl, of each of its packages (natrl.rl,
natrl.rl.policies, natrl.curvature, …) and of each top-level module (natrl.params,
natrl.callbacks, …), found by walking the package tree, so a new package or module is covered
without editing this file.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import natrl

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _require(module: str) -> Any:
    """Import a docs package; skip without it locally, fail in CI (where the dev extra installs it)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{module} is missing: pip install -e '.[docs]'")


def public_modules() -> list[ModuleType]:
    """natrl, its packages and its top-level modules (names without a leading underscore)."""
    names = ["natrl"]
    for info in pkgutil.walk_packages(natrl.__path__, "natrl."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        if info.ispkg or info.name.count(".") == 1:
            names.append(info.name)
    return [importlib.import_module(name) for name in names]


def public_names() -> list[tuple[str, str, object]]:
    """(module name, name, object) for every name of every public module's ``__all__``."""
    rows = []
    for module in public_modules():
        assert hasattr(module, "__all__"), f"{module.__name__} has no __all__"
        rows += [(module.__name__, name, getattr(module, name)) for name in module.__all__]
    return rows


@pytest.fixture(scope="module")
def griffe_natrl() -> Any:
    """natrl as griffe, mkdocstrings' loader, sees it (statically, as the API reference renders it)."""
    griffe = _require("griffe")
    return griffe.load("natrl", search_paths=[str(ROOT)], resolve_aliases=True, resolve_external=False)


def canonical_path(module: str, name: str, obj: object, griffe_natrl: Any) -> str:
    """Where ``module.name`` is defined: the path mkdocstrings registers for it wherever it is rendered."""
    if inspect.ismodule(obj):
        return obj.__name__
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    found = griffe_natrl[f"{module}.{name}".removeprefix("natrl.")] if module != "natrl" else griffe_natrl[name]
    return found.final_target.path if found.is_alias else found.path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built with ``mkdocs build --strict`` (warnings are errors) into a temporary folder."""
    _require("mkdocs")
    _require("mkdocstrings_handlers.python")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "\n".join(warnings)
    return out


def read_inventory(path: Path) -> dict[str, str]:
    """Object name -> role from a Sphinx inventory (version 2: four header lines, then zlib)."""
    data = path.read_bytes()
    header_end = 0
    for _ in range(4):
        header_end = data.index(b"\n", header_end) + 1
    entries = {}
    for line in zlib.decompress(data[header_end:]).decode().splitlines():
        name, role, *_ = line.split(" ")
        entries[name] = role
    return entries


def test_strict_build_writes_every_page(site: Path) -> None:
    assert (site / "index.html").is_file()
    for page in ("getting-started", "guide/agents", "api/curvature", "results/rl", "experiments/sharpness"):
        assert (site / page / "index.html").is_file(), page
    assert (site / "img" / "exp_sharpness.png").is_file()


def test_public_modules_found() -> None:
    found = {module.__name__ for module in public_modules()}
    expected = {"natrl", "natrl.rl", "natrl.rl.policies", "natrl.curvature", "natrl.linalg", "natrl.linesearch"}
    expected |= {"natrl.optim", "natrl.bench", "natrl.cli", "natrl.runs", "natrl.params", "natrl.callbacks"}
    assert expected <= found


def test_every_public_name_has_a_docstring(griffe_natrl: Any) -> None:
    missing = []
    for module, name, obj in public_names():
        path = canonical_path(module, name, obj, griffe_natrl)
        documented = griffe_natrl[path.removeprefix("natrl.")] if path != "natrl" else griffe_natrl
        docstring = documented.docstring.value.strip() if documented.docstring is not None else ""
        if not docstring:
            missing.append(f"{module}.{name} (defined as {path})")
    assert not missing, "public names without a docstring:\n" + "\n".join(missing)


def test_every_public_name_is_in_the_api_reference(site: Path, griffe_natrl: Any) -> None:
    inventory = read_inventory(site / "objects.inv")
    missing = []
    for module, name, obj in public_names():
        path = canonical_path(module, name, obj, griffe_natrl)
        if path not in inventory:
            missing.append(f"{module}.{name} (defined as {path})")
    assert not missing, "public names missing from docs/api/ (add a ::: directive):\n" + "\n".join(missing)


def test_api_reference_links_resolve(site: Path) -> None:
    """Cross-references are rendered as links; the Sphinx roles of the docstrings are gone."""
    html = (site / "api" / "curvature" / "index.html").read_text()
    assert 'href="#natrl.curvature.kl_hvp"' in html  # fisher_vp's :func:`kl_hvp`
    for page in (site / "api").rglob("*.html"):
        text = page.read_text()
        assert not re.search(r":(func|class|meth|mod|attr|data|exc):(`|<code>)", text), page


# --------------------------------------------------------------------------- executed examples

PYCON_BLOCK = re.compile(r"^```pycon\n(.*?)^```", re.DOTALL | re.MULTILINE)
EXAMPLE_PAGES = [*sorted(p for p in DOCS.rglob("*.md") if "bench" not in p.parts), ROOT / "README.md"]
PAGES_WITH_EXAMPLES = [p for p in EXAMPLE_PAGES if PYCON_BLOCK.search(p.read_text(encoding="utf-8"))]


def test_guide_has_executed_examples() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAGES_WITH_EXAMPLES}
    assert {"docs/getting-started.md", "docs/guide/agents.md", "docs/guide/curvature.md"} <= names


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_examples_run(page: Path) -> None:
    """Each ```pycon block of the page runs as a doctest, in order, in one namespace per page."""
    text = page.read_text(encoding="utf-8")
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    globs: dict[str, Any] = {"__name__": "__docs__"}
    with torch.random.fork_rng():  # examples that seed torch leave the session's generator alone
        for match in PYCON_BLOCK.finditer(text):
            lineno = text.count("\n", 0, match.start(1))
            test = parser.get_doctest(match.group(1), globs, page.name, str(page), lineno)
            runner.run(test, out=report.append, clear_globs=False)
            globs = test.globs  # a DocTest runs in a copy of the namespace it is given
    assert runner.failures == 0, "".join(report)
    assert runner.tries > 0


# --------------------------------------------------------------------------- the docstring extension


@pytest.fixture(scope="module")
def sphinx_roles() -> ModuleType:
    _require("griffe")
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        return importlib.import_module("sphinx_roles")
    finally:
        sys.path.remove(str(DOCS / "_ext"))


def test_roles_become_references(sphinx_roles: ModuleType, griffe_natrl: Any) -> None:
    fisher_vp = griffe_natrl["curvature.operators.fisher_vp"]
    curvature = griffe_natrl["curvature"]
    # relative to the module, then absolute; a function re-exported over its own module
    assert sphinx_roles.rewrite(fisher_vp, ":func:`kl_hvp`") == "[`kl_hvp`][natrl.curvature.operators.kl_hvp]"
    assert sphinx_roles.rewrite(curvature, ":func:`lanczos`") == "[`lanczos`][natrl.curvature.spectrum.lanczos]"
    optim = griffe_natrl["optim"]
    assert sphinx_roles.rewrite(optim, ":func:`minimize`") == "[`minimize`][natrl.optim.minimize.minimize]"
    shown = sphinx_roles.rewrite(curvature, ":meth:`~natrl.rl.OnPolicyAgent.save`")
    assert shown == "[`save`][natrl.rl.agent.OnPolicyAgent.save]"


def test_unknown_roles_stay_unresolved_and_fail_the_build(sphinx_roles: ModuleType, griffe_natrl: Any) -> None:
    """A misspelt name is left as a reference to itself, which autorefs reports (strict: an error)."""
    curvature = griffe_natrl["curvature"]
    assert sphinx_roles.rewrite(curvature, ":func:`lanczoz`") == "[`lanczoz`][lanczoz]"


def test_external_roles_and_implementation_modules_are_code(sphinx_roles: ModuleType, griffe_natrl: Any) -> None:
    runs = griffe_natrl["runs"]
    assert sphinx_roles.rewrite(runs, ":func:`torch.func.functional_call`") == "`torch.func.functional_call`"
    assert sphinx_roles.rewrite(runs, ":mod:`~natrl.runs.args`") == "`args`"
    assert sphinx_roles.rewrite(runs, ":mod:`natrl.curvature`") == "[`natrl.curvature`][natrl.curvature]"
    assert sphinx_roles.rewrite(runs, "writes::\n\n    x") == "writes:\n\n    x"
    assert sphinx_roles.rewrite(runs, "Example:\n    >>> 1") == "Examples:\n    >>> 1"


# --------------------------------------------------------------------------- README


def test_readme_links_into_docs_resolve() -> None:
    """Relative links of the README (as GitHub renders them) point at files of the repository."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?:docs|agents|scripts|tests)/[^)#\s]*)", readme)
    assert any(link.startswith("docs/") and link.endswith(".md") for link in links)
    broken = [link for link in links if not (ROOT / link).exists()]
    assert not broken, broken


def test_readme_is_a_short_page_with_one_results_table() -> None:
    """A newcomer's page: at most 160 lines and one table, a sweep that names its command and commit and reports
    IQMs with 95% intervals; every other result lives in docs/results/."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines; move material to docs/"
    separators = [i for i, line in enumerate(lines) if re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", line)]
    assert len(separators) == 1, f"README.md has {len(separators)} tables; keep one, link the others"
    header = separators[0] - 1
    start = header - 1
    while start > 0 and not lines[start].strip():
        start -= 1
    while start > 0 and lines[start - 1].strip():
        start -= 1  # the paragraph that introduces the table
    intro = " ".join(lines[start:header])
    assert re.search(r"`natrl bench [^`]*--seeds", intro), "the headline table's sweep command"
    assert re.search(r"commit `[0-9a-f]{7,40}`", intro), "the commit that produced the headline table"
    assert "IQM" in intro and "95%" in intro


def test_readme_headline_table_is_the_summary_of_the_sweep_it_cites() -> None:
    """The README's table is the summary.md of the results file named in its marker, regenerated now
    (``python scripts/readme_summary.py`` rewrites it)."""
    from natrl.bench.results import read_results
    from natrl.bench.summary import rewrite_summaries, summary_markdown

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- summary: (\S+) -->\n(.*?)<!-- /summary -->", readme, re.DOTALL)
    assert len(blocks) == 1, "README.md quotes its headline table between <!-- summary: ... --> and <!-- /summary -->"
    source, body = blocks[0]
    assert source.startswith("docs/bench/") and source.endswith("-results.json"), source
    metadata, rows = read_results(ROOT / source)
    assert body.strip("\n") == summary_markdown(rows, metadata).strip("\n")
    assert rewrite_summaries(readme, ROOT) == readme, "run python scripts/readme_summary.py"


PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


@pytest.mark.parametrize(
    "page",
    [p for p in EXAMPLE_PAGES if PYTHON_BLOCK.search(p.read_text(encoding="utf-8"))],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_python_blocks_import_names_that_exist(page: Path) -> None:
    """The ```python blocks (shown, not run) parse, and every name they import from natrl exists."""
    missing = []
    for match in PYTHON_BLOCK.finditer(page.read_text(encoding="utf-8")):
        tree = ast.parse(match.group(1))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "natrl":
                module = importlib.import_module(node.module)
                missing += [f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "natrl":
                        importlib.import_module(alias.name)
    assert not missing, missing


def test_readme_keeps_the_ci_test_command() -> None:
    command = (
        'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 -e ".[dev,mujoco]" && pytest'
        " && ruff check . && ruff format --check . && mypy"
    )
    assert command + "\n" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert (ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip("\n").splitlines()[-1] == command
