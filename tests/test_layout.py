"""The package's shape, read from its source: wings by job, one dependency direction, no import
cycles (imports inside functions and under TYPE_CHECKING count), small modules, ``__all__`` everywhere."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segrt"
# what each wing may import besides the basics at the package root (errors, fsutil, manifest, ...)
ALLOWED = {
    "basics": set(),
    "imaging": set(),
    "runtime": {"imaging"},
    "model": {"imaging"},
    "verify": {"runtime", "imaging", "model"},
    "predict": {"runtime", "imaging"},
    "bench": {"runtime", "imaging"},
    "scale": {"predict", "runtime", "imaging"},
    "serve": {"predict", "runtime", "imaging"},
    "quantize": {"verify", "runtime", "imaging", "bench"},
    "export": {"verify", "quantize", "bench", "model", "runtime", "imaging"},
    "training": {"model", "imaging"},
    "cli": {"export", "quantize", "verify", "predict", "bench", "scale", "serve", "training", "runtime", "imaging"},
}
MAX_ROOT_MODULES, MAX_MODULE_LINES, MAX_FUNCTION_LINES = 8, 320, 60


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The segrt modules ``name`` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def defined_names(tree) -> set[str]:
    """What a module defines at its top level: functions, classes, assigned names (tuples too)."""
    out = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
    for n in tree.body:
        if isinstance(n, (ast.Assign, ast.AnnAssign)):
            for target in n.targets if isinstance(n, ast.Assign) else [n.target]:
                out |= {x.id for x in ast.walk(target) if isinstance(x, ast.Name)}
    return out


def wing(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else "basics"


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def cycle() -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, stack + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(GRAPH):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_cycles():
    assert cycle() is None, " -> ".join(cycle())


def test_wings_import_only_downward():
    wrong = [f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps
             if wing(a) != wing(b) and wing(b) != "basics" and wing(b) not in ALLOWED[wing(a)]]
    wrong += [f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps if wing(a) == "basics" and wing(b) != "basics"]
    assert not wrong, wrong


def test_every_wing_is_known():
    assert {wing(name) for name in GRAPH} <= set(ALLOWED) | {"default_model"}


def test_serving_never_imports_torch_at_module_level():
    """runtime, predict, imaging and bench import torch only inside functions (the torch backend)."""
    for name, path in modules().items():
        if wing(name) in ("runtime", "predict", "imaging", "bench", "serve"):
            top = [n for n in ast.parse(path.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
            names = {a.name.split(".")[0] for n in top for a in n.names} | {(n.module or "").split(".")[0]
                                                                            for n in top if isinstance(n, ast.ImportFrom)}
            assert "torch" not in names, name


def test_small_root_small_modules_short_functions():
    root = [p for p in PACKAGE.glob("*.py")]
    assert len(root) <= MAX_ROOT_MODULES, sorted(p.name for p in root)
    long_modules = {n: len(p.read_text().splitlines()) for n, p in modules().items()
                    if len(p.read_text().splitlines()) > MAX_MODULE_LINES}
    assert not long_modules, long_modules
    long_functions = [f"{n}.{f.name}: {f.end_lineno - f.lineno + 1}" for n, p in modules().items()
                      for f in ast.walk(ast.parse(p.read_text()))
                      if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long_functions, long_functions


@pytest.mark.parametrize("name", sorted(n for n, p in modules().items() if p.name != "__main__.py"))
def test_module_declares_all(name):
    """Every module says what it offers: names it defines (no re-exports), none private."""
    tree = ast.parse(modules()[name].read_text())
    declared = [n for n in tree.body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)]
    assert declared, f"{name} has no __all__"
    names = ast.literal_eval(declared[0].value)
    assert not [n for n in names if n.startswith("_")], names
    if name != "segrt":  # the package's entry points are loaded lazily
        defined = defined_names(tree)
        assert set(names) <= defined, f"not defined here (a re-export?): {set(names) - defined}"


def test_entry_points_load_lazily_without_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\nimport segrt\n"
            "assert 'segrt.runtime.session' not in sys.modules\n"
            "from segrt.runtime.session import Session\nfrom segrt.quantize import run_quantize\n"
            "assert segrt.Session is Session and segrt.run_quantize is run_quantize\n"
            "assert callable(segrt.run_predict) and callable(segrt.run_parity) and segrt.Manifest\n"
            "assert set(segrt.__all__) <= set(dir(segrt))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert res.returncode == 0, res.stderr


def test_every_package_is_in_the_wheel():
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, found - listed


def test_every_segrt_import_names_something_that_exists():
    """In the package, the tests, benchmarks and examples: ``from segrt.M import N`` finds N where M
    defines it (a moved name breaks here, not when a benchmark runs)."""
    known, wrong = modules(), []
    defined = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        defined[name] = defined_names(tree) | {a.asname or a.name for n in tree.body
                                               if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    root = PACKAGE.parent
    for path in [*PACKAGE.rglob("*.py"), *(root / "tests").rglob("*.py"), *(root / "benchmarks").glob("*.py"),
                 *(root / "examples").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "segrt":
                if node.module not in known:
                    wrong.append(f"{path.name}: no module {node.module}")
                    continue
                for a in node.names:
                    if a.name not in defined[node.module] and f"{node.module}.{a.name}" not in known \
                            and not (node.module == "segrt" and a.name in ("__version__",)):
                        wrong.append(f"{path.relative_to(root)}: {node.module} has no {a.name}")
    assert not wrong, wrong


if __name__ == "__main__":  # python tests/test_layout.py: the wings and what each imports
    deps: dict[str, set] = {}
    for a, targets in GRAPH.items():
        deps.setdefault(wing(a), set()).update(wing(b) for b in targets if wing(b) != wing(a))
    for w, d in sorted(deps.items(), key=lambda kv: len(kv[1])):
        print(f"{w:9} -> {', '.join(sorted(d)) or '-'}")
    print("cycle:", " -> ".join(cycle() or []) or "none")
