"""A griffe extension that turns the Sphinx roles of natrl's docstrings into mkdocs cross-references.

natrl's docstrings are Google style with reST inline markup: ``:func:`lanczos```,
``:class:`~natrl.rl.OnPolicyAgent```, ``:meth:`Density.trace_of``` and literal blocks introduced by
``::``. mkdocstrings renders Markdown and leaves roles as text, so this extension rewrites each
docstring once the package is loaded:

* a role whose target is a natrl object becomes the Markdown reference ``[`name`][full.path]``;
  a relative name is looked up the way a reader would: in the documented object, then in each
  enclosing class and module, then from the package root. The reference points at the object's
  canonical path, which mkdocstrings registers wherever the object is rendered, so a target that
  the API reference does not render, or that does not exist, is an unresolved reference and
  ``mkdocs build --strict`` fails on it. A member without a docstring (a NamedTuple field or an
  instance attribute described in its class's ``Attributes:`` section) is not rendered on its
  own, so the reference points at its class;
* a module that is neither a package nor a top-level module of the package (an implementation
  module such as ``natrl.runs.args``) has no page: a reference to it stays inline code, as does a
  role naming another library (torch, scipy, numpy, ...);
* a paragraph ending in ``::`` ends in ``:`` (the indented block after it is already a Markdown
  code block);
* an ``Example:`` section of ``>>>`` lines is read as griffe's ``Examples:`` section, which shows
  them as an interactive session rather than as nested quotes.

Configured in mkdocs.yml under ``plugins.mkdocstrings.handlers.python.options.extensions``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(func|class|meth|mod|attr|data|exc|obj|const):`(~?)([\w.]+?)(?:\(\))?`")
EXTERNAL = (
    "torch",
    "scipy",
    "numpy",
    "gymnasium",
    "stable_baselines3",
    "sb3_contrib",
    "ray",
    "matplotlib",
    "warnings",
    "importlib",
)
LITERAL_BLOCK = re.compile(r"(\S)\s*::$", re.MULTILINE)
EXAMPLE_SECTION = re.compile(r"^(\s*)Example:(\s*\n\s*>>>)", re.MULTILINE)


def _member(scope: griffe.Object | griffe.Alias, parts: list[str]) -> griffe.Object | griffe.Alias | None:
    """The object ``scope.parts[0].parts[1]...``, following aliases inside the package; None if absent."""
    obj: Any = scope
    for part in parts:
        try:
            if obj.is_alias:
                obj = obj.final_target
            obj = obj.members.get(part)
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
        if obj is None:
            return None
    return obj


def _canonical(obj: griffe.Object | griffe.Alias) -> str:
    try:
        return obj.final_target.path if obj.is_alias else obj.path
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return obj.path


def _find(obj: griffe.Object, name: str) -> griffe.Object | griffe.Alias | None:
    """The object ``name`` refers to in ``obj``'s docstring: looked up in ``obj``, its parents, the root."""
    parts = name.split(".")
    scope: griffe.Object | None = obj if (obj.is_class or obj.is_module) else obj.parent
    while scope is not None:
        found = _member(scope, parts)
        if found is not None:
            return found
        scope = scope.parent
    root = obj.package
    if parts[0] == root.name:
        return root if len(parts) == 1 else _member(root, parts[1:])
    return None


def _is_public_module(module: griffe.Object | griffe.Alias) -> bool:
    """A package, or a module directly under the root package (``natrl.params``): these have API pages."""
    return module.is_package or module.is_init_module or module.path.count(".") <= 1


def resolve(obj: griffe.Object, name: str, role: str) -> str | None:
    """Where a role in ``obj``'s docstring points: a canonical path, ``""`` for inline code, None if unknown."""
    found = _find(obj, name)
    if found is None:
        return None
    last = name.rsplit(".", 1)[-1]
    if role != "mod" and found.is_module and last in found.members:
        # a function re-exported over its own module (natrl.optim.minimize): static analysis sees the
        # module, Python the function
        found = found.members[last]
    if found.is_module:
        return _canonical(found) if _is_public_module(found) else ""
    target: Any = found
    try:
        if target.is_alias:
            target = target.final_target
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return found.path
    while target.docstring is None and target.parent is not None and target.parent.is_class:
        target = target.parent  # an undocumented member: its class documents it
    return target.path


def rewrite(obj: griffe.Object, text: str) -> str:
    """``text`` (a docstring of ``obj``) with roles as Markdown references and ``::`` as ``:``."""

    def replace(match: re.Match[str]) -> str:
        role, short, name = match.group(1), match.group(2) == "~", match.group(3)
        shown = name.rsplit(".", 1)[-1] if short else name
        if name.split(".")[0] in EXTERNAL:
            return f"`{shown}`"
        target = resolve(obj, name, role)
        if target == "":
            return f"`{shown}`"
        # unresolved names stay references: autorefs reports them and the strict build fails
        return f"[`{shown}`][{target or name}]"

    text = EXAMPLE_SECTION.sub(r"\1Examples:\2", text)
    return LITERAL_BLOCK.sub(r"\1:", ROLE.sub(replace, text))


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring of a loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj, obj.docstring.value)
            stack.extend(member for member in obj.members.values() if not member.is_alias)

    # griffe 1.x names the hook on_package_loaded; rewriting twice changes nothing
    on_package_loaded = on_package
