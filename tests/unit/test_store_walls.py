"""The store's walls: only ``pipeline/store`` talks to Redis, and every key it writes is built in ``keys``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = [ROOT / "pipeline", ROOT / "tasks"]
STORE = ROOT / "pipeline" / "store"


def _modules() -> list[Path]:
    return [path for base in PRODUCT for path in sorted(base.rglob("*.py")) if STORE not in path.parents]


def test_no_product_module_outside_the_store_touches_the_raw_redis_client() -> None:
    # given every product module outside the store package
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            # when one reads ``<something>.r``, the store's raw client
            if isinstance(node, ast.Attribute) and node.attr == "r" and isinstance(node.ctx, ast.Load):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    # then there is none
    assert offenders == []


def test_no_product_module_outside_the_store_builds_a_key_by_hand() -> None:
    # given the prefix every key starts with
    pattern = re.compile(r"""["']hubsync:[a-z{*]|\{P\}:""")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _modules()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    # then no module outside the store spells a key (celeryconfig names redbeat's own keys)
    assert offenders == []


def test_every_lua_script_of_the_store_is_loaded_by_a_room() -> None:
    # given the store's scripts and its modules' text
    scripts = {path.stem for path in (STORE / "lua").glob("*.lua")}
    text = "\n".join(path.read_text(encoding="utf-8") for path in STORE.glob("*.py"))
    # then each is named by some room (a script nobody loads is dead code)
    unused = sorted(name for name in scripts if f'"{name}"' not in text)
    assert unused == []
