"""The package's imports go one way: no import circle in mesh_t5/, and no module uses another's private names.

Both are read from the source with `ast` (nothing imported), so a lazy import inside a function counts as an edge:
it is still a dependency, just a hidden one. Tests may use private names; the package may not.
"""

from __future__ import annotations

import ast
import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "mesh_t5"


def _modules() -> dict[str, pathlib.Path]:
    """Module name -> file, for every .py file of the package ("mesh_t5.data" for data/__init__.py)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module a `from ... import` names, resolving relative imports against `module`."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _scan(modules: dict[str, pathlib.Path]) -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """(module -> the package modules it imports, [(module, private name of another module it uses)])."""
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private: list[tuple[str, str]] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        bound: dict[str, str] = {}  # local name -> the package module it refers to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        edges[module].add(alias.name)
                        bound[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(module, is_package, node.level, node.module)
                if target.split(".")[0] != "mesh_t5":
                    continue
                for alias in node.names:
                    if f"{target}.{alias.name}" in modules:  # `from mesh_t5 import train`: a module
                        edges[module].add(f"{target}.{alias.name}")
                        bound[alias.asname or alias.name] = f"{target}.{alias.name}"
                    else:
                        edges[module].add(target)
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            private.append((module, f"{target}.{alias.name}"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                private.append((module, f"{bound[node.value.id]}.{node.attr}"))
    edges = {m: {t for t in targets if t in modules and t != m} for m, targets in edges.items()}
    return edges, sorted({(m, name) for m, name in private if name.rsplit(".", 1)[0] != m})


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


MODULES = _modules()
EDGES, PRIVATE = _scan(MODULES)


def test_the_scan_sees_the_package():
    # Guards the two checks below against passing on an empty or misread graph.
    assert len(MODULES) > 50 and "mesh_t5.data.registry" in MODULES
    assert "mesh_t5.layers" in EDGES["mesh_t5.network"]
    assert "mesh_t5.data.registry" in EDGES["mesh_t5.data"]


def test_the_checks_catch_a_circle_and_a_private_use(tmp_path):
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    (tmp_path / "a.py").write_text("from mesh_t5 import b\nfrom mesh_t5.b import _y\nb._x(); b.ok()\n")
    (tmp_path / "b.py").write_text("def _helper():\n    return _x()\n")
    edges, private = _scan({"mesh_t5.a": tmp_path / "a.py", "mesh_t5.b": tmp_path / "b.py"})
    assert edges == {"mesh_t5.a": {"mesh_t5.b"}, "mesh_t5.b": set()}
    assert private == [("mesh_t5.a", "mesh_t5.b._x"), ("mesh_t5.a", "mesh_t5.b._y")]


def test_no_import_circle():
    assert _cycles(EDGES) == []


def test_no_private_name_of_another_module():
    uses = [f"{module} uses {name}" for module, name in PRIVATE]
    assert not uses, "make these public or move them: " + "; ".join(uses)


SUBPACKAGES = (
    "commands",
    "data",
    "demo",
    "tasks",
)  # the map names these whole; the circle test covers inside


def _group(module: str) -> str:
    """The module map's name for a module: "train" for mesh_t5.train, "data" for anything in mesh_t5/data/."""
    parts = module.split(".")[1:]
    if not parts:
        return "mesh_t5"
    return parts[0] if parts[0] in SUBPACKAGES else ".".join(parts)


def _module_map() -> dict[str, int]:
    """{name: layer} from the block between the module-map markers of docs/internals.md."""
    text = (PACKAGE.parent / "docs" / "internals.md").read_text()
    block = text.split("<!-- module map: begin -->")[1].split("<!-- module map: end -->")[0]
    layers: dict[str, int] = {}
    for line in block.splitlines():
        match = re.fullmatch(r"\s*(\d+)\s+([\w.*, ]+)", line)
        for name in match.group(2).split(",") if match else ():
            assert name.strip() not in layers, f"{name.strip()} is listed twice in the module map"
            layers[name.strip().removesuffix("/")] = int(match.group(1))
    return layers


def test_the_module_map_in_docs_is_true():
    # docs/internals.md draws the package as layers: each imports only from layers below it.
    layers = _module_map()
    assert sorted(layers) == sorted({_group(m) for m in MODULES}), "the module map must list every module"
    wrong = [
        f"{a} (layer {layers[_group(a)]}) imports {b} (layer {layers[_group(b)]})"
        for a, targets in EDGES.items()
        for b in targets
        if _group(a) != _group(b) and layers[_group(b)] >= layers[_group(a)]
    ]
    assert not wrong, "docs/internals.md's module map is out of date: " + "; ".join(sorted(wrong))


def test_tests_keep_their_subprocess_programs_in_files():
    # Code in a string escapes ruff and the editor; programs for a fresh process live in tests/scripts/.
    tests = [p for p in (PACKAGE.parent / "tests").glob("*.py") if p.name != pathlib.Path(__file__).name]
    offenders = [p.name for p in tests if '"-c"' in p.read_text()]
    assert offenders == []
