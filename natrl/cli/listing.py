"""``natrl list``: the algorithms with their presets, or one algorithm's hyperparameters."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

from natrl.cli.checks import agent_class
from natrl.cli.common import ENV_LIST_HINT, display_path


def _field_docs(config_cls: type) -> dict[str, str]:
    """Field name → its line in the ``Attributes:`` sections of the config class and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        text = klass.__doc__ or ""
        in_attrs, current = False, None
        for line in text.splitlines():
            stripped = line.strip()
            if stripped == "Attributes:":
                in_attrs, current = True, None
                continue
            if not in_attrs:
                continue
            m = re.match(r"^(\w+):\s*(.*)$", stripped)
            indent = len(line) - len(line.lstrip())
            if m and indent <= 8:
                current = m.group(1)
                docs[current] = m.group(2)
            elif stripped and current is not None:
                docs[current] += " " + stripped
            elif not stripped:
                current = None
    return docs


def _short_doc(klass: type) -> str:
    line = (klass.__doc__ or "").strip().splitlines()[0] if klass.__doc__ else ""
    return re.sub(r"\s*\(see [^)]*\)", "", line)


def cmd_list(args: argparse.Namespace) -> int:
    """``natrl list``: algorithms with presets, or ``--params ALGO``."""
    from natrl.presets import agents_dir, list_presets, load_preset
    from natrl.rl import AGENTS

    folder = agents_dir(args.agents_dir)  # a folder that is not there is an error, also with --params
    if args.params:
        cls = agent_class(args.params)
        docs = _field_docs(cls.config_cls)
        print(f"{cls.config_cls.__name__}: natrl train {cls.algo} ENV --set KEY=VALUE")
        for f in dataclasses.fields(cls.config_cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            value = "none" if default is None else json.dumps(list(default) if isinstance(default, tuple) else default)
            print(f"  {f.name:<28} {value:<12} {docs.get(f.name, '')}")
        return 0
    print("algorithms (natrl train ALGO ENV):")
    for name, cls in AGENTS.items():
        print(f"  {name:<6} {_short_doc(cls)}")
        envs = list_presets(name, args.agents_dir)
        if not envs:
            print("         no presets; trains with the built-in defaults")
            continue
        print(f"         presets ({display_path(folder / (name + '.toml')) if folder else name + '.toml'}):")
        for env_id in envs:
            p = load_preset(name, env_id, cls.config_cls, directory=args.agents_dir)
            expect = f"expected return {p.expected_return:g}" if p.expected_return is not None else ""
            print(f"           {env_id:<24} {p.total_steps:>11,} steps  {expect}")
    print()
    print("other envs train with the [default] table; hyperparameters: natrl list --params ALGO")
    print(f"list all registered env ids: {ENV_LIST_HINT}")
    return 0
