"""The layout's rules, read from every module's imports (ast, nothing imported): no import cycles in cong/, cong/
importing neither components/ nor pipelines/, no lower folder importing a stage, and components calling their
stage's `step`."""

import ast
from pathlib import Path

import pytest

from cong.vocabulary import STAGES

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The modules a file imports, lazy imports included; `from pkg import name` counts as pkg.name when that is a
    module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return found


def graph(folder: str = "cong") -> dict[str, set[str]]:
    files = {module_name(p): p for p in (ROOT / folder).rglob("*.py")}
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk over the modules of `edges` (edges to other modules ignored)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node] & edges.keys()):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_the_rules_catch_what_they_forbid():
    """The checks themselves, on a constructed graph: a cycle is found, a chain is not."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"os"}}) == []


def test_no_import_cycles_in_cong():
    assert cycles(graph()) == []


def test_cong_imports_neither_components_nor_pipelines():
    upward = {
        m: sorted(i for i in deps if i.split(".")[0] in ("components", "pipelines")) for m, deps in graph().items()
    }
    assert {m: deps for m, deps in upward.items() if deps} == {}


def test_no_lower_folder_imports_a_stage():
    lower = {m: sorted(i for i in deps if i.startswith("cong.stages")) for m, deps in graph().items()}
    assert {m: deps for m, deps in lower.items() if deps and not m.startswith("cong.stages")} == {}


@pytest.mark.parametrize("component", sorted(p.parent.name for p in (ROOT / "components").glob("*/component.py")))
def test_each_component_calls_its_stage_step(component):
    """A component's body imports from cong.stages only (one step per stage file), never a lower layer."""
    used = imports_of(ROOT / "components" / component / "component.py", set(graph()))
    cong_modules = {m for m in used if m.startswith("cong")}
    assert cong_modules and all(m.startswith("cong.stages") for m in cong_modules), cong_modules
    assert {m.split(".")[2] for m in cong_modules if m.count(".") >= 2} <= {
        *STAGES,
        "step",
        "not_selected",
        "group_done",
        "trainjob",
    }
