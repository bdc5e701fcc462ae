"""Rules of the package's shape that review would otherwise have to re-check by hand."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "autoglm_operator"
SOURCES = {path.relative_to(PACKAGE).as_posix(): ast.parse(path.read_text()) for path in PACKAGE.rglob("*.py")}

#: The packages from the bottom up: each may import only from those before it (and itself).
LAYERS = ["api", "placement", "builds", "render", "observation", "kube", "traffic", "canary", "status", "admission",
          "runtime"]
#: Modules at the top: entry points and the reconcile that wires the packages; no package imports them.
TOP_MODULES = {"__init__.py", "cli.py", "handlers.py", "kubectl_plugin.py", "reconciler.py"}


def _unit(module: str) -> str:
    """The package (or top-level module) of a dotted module name under autoglm_operator."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<package>"


def _imports(relative: str, tree: ast.AST) -> set[str]:
    """Every autoglm_operator module (or module.name) ``relative``'s code imports."""
    parts = ["autoglm_operator", *Path(relative).with_suffix("").parts]
    package = parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("autoglm_operator"):
                found |= {target} if node.module else {f"{target}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("autoglm_operator")}
    return found


def test_every_class_in_the_operator_is_under_200_lines():
    sizes = {f"{path}:{node.name}": node.end_lineno - node.lineno + 1
             for path, tree in SOURCES.items() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    assert max(sizes.values()) < 200, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_only_the_conditions_module_sets_a_transition_time():
    """No module but status/conditions.py writes the key (a dict entry or a keyword); reading it is fine."""
    def writes(node):
        return (isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "lastTransitionTime"
                                                   for k in node.keys)) or \
            (isinstance(node, ast.keyword) and node.arg == "lastTransitionTime")
    offenders = [path for path, tree in SOURCES.items() if any(writes(n) for n in ast.walk(tree))]
    assert offenders == ["status/conditions.py"], offenders


def test_few_modules_at_the_top_and_every_folder_a_package_with_no_code_in_its_init():
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top <= TOP_MODULES and len(top) <= 7, sorted(top - TOP_MODULES)
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__" and p.name != "crds"}
    assert packages == set(LAYERS), sorted(packages ^ set(LAYERS))
    code_in_init = [path for path, tree in SOURCES.items() if path.endswith("/__init__.py")
                    and any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in tree.body)]
    assert not code_in_init, code_in_init


def test_packages_import_only_downwards_and_never_the_top_modules():
    offenders = []
    for path, tree in SOURCES.items():
        unit = path.split("/")[0] if "/" in path else None
        if unit is None:
            continue  # a top-level module may import any package
        for target in _imports(path, tree):
            other = _unit(target)
            if other == unit:
                continue
            if other not in LAYERS or LAYERS.index(other) > LAYERS.index(unit):
                offenders.append(f"{path} imports {target}")
    assert not offenders, offenders


def test_no_import_cycles_between_modules():
    modules = {"autoglm_operator." + str(Path(p).with_suffix("")).replace("/", ".").removesuffix(".__init__"): p
               for p in SOURCES}
    graph = {m: {t if t in modules else t.rsplit(".", 1)[0] for t in _imports(p, SOURCES[p])} & modules.keys()
             for m, p in modules.items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        seen[module] = 1
        for nxt in sorted(graph[module]):
            if seen.get(nxt) == 1:
                return path + [module, nxt]
            if nxt not in seen and (cycle := visit(nxt, path + [module])):
                return cycle
        seen[module] = 2
        return None
    for module in sorted(graph):
        if module not in seen:
            cycle = visit(module, [])
            assert cycle is None, " -> ".join(cycle)


def test_no_private_member_is_used_outside_its_module():
    """``x._name`` is only for ``self``/``cls`` (and dunder names): another module's private
    member is an interface that was never designed."""
    offenders = [f"{path}:{node.lineno} .{node.attr}" for path, tree in SOURCES.items() for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                 and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "os"))]  # os._exit
    private_imports = [f"{path}: from {node.module} import {a.name}" for path, tree in SOURCES.items()
                       for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                       for a in node.names if a.name.startswith("_")]
    assert not offenders and not private_imports, offenders + private_imports


def test_time_is_read_from_the_injected_clock_alone():
    """Only api/clock.py reads the machine's clocks; everything else is given a Clock."""
    readers = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("time", "time_ns"),
               ("time", "monotonic_ns"), ("datetime", "now"), ("datetime", "utcnow"), ("date", "today"),
               ("datetime", "today")}
    offenders = []
    for path, tree in SOURCES.items():
        if path == "api/clock.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Name, ast.Attribute)):
                owner = node.value.id if isinstance(node.value, ast.Name) else node.value.attr
                if (owner, node.attr) in readers:
                    offenders.append(f"{path}:{node.lineno} {owner}.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "time" and \
                    any(a.name in ("time", "monotonic", "perf_counter") for a in node.names):
                offenders.append(f"{path}:{node.lineno} from time import ...")
    assert not offenders, offenders
