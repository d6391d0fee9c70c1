"""The house rules on imports (DESIGN.md): imports flow one way, workers → webapp → trainer; `webapp` never imports
`workers` nor torch (it sends tasks by name through webapp/jobs/queue.py, the only web module that touches Celery);
`trainer` knows nothing of Django, Celery or Redis; and no module of ours is part of an import circle.

The graph is read from the source (ast), every `import` counted wherever it stands, inside a function too: a lazy
import is still a dependency. Folders of scripts (benchmarks/, scripts/) import their neighbours by bare name.
"""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("webapp", "workers", "trainer", "loraworks_cli")
SCRIPT_FOLDERS = ("benchmarks", "scripts")
TORCH_STACK = ("torch", "transformers", "peft", "bitsandbytes", "safetensors", "datasets", "trl", "accelerate")


def our_modules() -> dict[str, Path]:
    """{dotted module name: file} for every Python file of our packages and script folders."""
    modules = {}
    for folder in PACKAGES + SCRIPT_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Every absolute module name `module` imports (`from a import b` gives both `a` and `a.b`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """{module: the modules of ours it imports}."""
    modules = our_modules()

    def ours(name: str, importer: str) -> str | None:
        folder = importer.split(".")[0]
        if folder in SCRIPT_FOLDERS and f"{folder}.{name}" in modules:  # a script's neighbour, imported by bare name
            return f"{folder}.{name}"
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {module: {target for name in imported_names(module, path)
                     if (target := ours(name, module)) and target != module}
            for module, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def imports_of(prefix: str, targets: tuple[str, ...]) -> list[str]:
    """'module -> name' for every import by a module under `prefix` of a name under one of `targets`."""
    return sorted(f"{module} -> {name}" for module, path in our_modules().items()
                  if module == prefix or module.startswith(prefix + ".")
                  for name in imported_names(module, path) if name.split(".")[0] in targets)


def test_the_graph_sees_lazy_relative_and_bare_name_imports(tmp_path):
    # The reader itself, on imports of each shape it must not miss.
    graph = import_graph()
    assert "webapp.jobs.state_names" in graph["webapp.jobs.models"]  # `from webapp.jobs import state_names`
    assert "webapp.jobs.models" in graph["webapp.jobs.states"]  # imported inside move()
    assert "benchmarks.lora_bench" in graph["benchmarks.engine_vs_peft_e2e"]  # `from lora_bench import ...`
    assert "benchmarks.engine_vs_peft_e2e" in graph["benchmarks.engine_vs_peft"]  # imported inside main()
    source = tmp_path / "pkg" / "mod.py"
    source.parent.mkdir()
    source.write_text("from . import sibling\nfrom .other import name\ndef f():\n    import torch.nn\n")
    assert imported_names("pkg.mod", source) == {"pkg", "pkg.sibling", "pkg.other", "pkg.other.name", "torch.nn"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_of_ours_is_in_an_import_circle():
    assert cycles(import_graph()) == []


def test_webapp_never_imports_workers_and_trainer_imports_neither_nor_django_celery_or_redis():
    assert imports_of("webapp", ("workers",)) == []
    assert imports_of("trainer", ("webapp", "workers", "django", "celery", "kombu", "redis")) == []


def test_only_the_queue_module_of_the_web_app_touches_celery():
    assert [line for line in imports_of("webapp", ("celery", "kombu"))
            if not line.startswith("webapp.jobs.queue -> ")] == []


def test_webapp_never_imports_the_torch_stack_itself():
    assert imports_of("webapp", TORCH_STACK) == []


def test_importing_every_web_module_loads_no_torch_and_no_worker_code():
    # The trainer modules webapp uses must be torch-free too: import all of webapp, as the web process could, and
    # look at what got loaded.
    script = (
        "import django, importlib, json, pkgutil, sys\n"
        "django.setup()\n"
        "import webapp\n"
        "names = [m.name for m in pkgutil.walk_packages(webapp.__path__, 'webapp.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(json.dumps({'imported': len(names), 'loaded': sorted(sys.modules)}))\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, DJANGO_SETTINGS_MODULE="webapp.settings"))
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.splitlines()[-1])
    assert report["imported"] > 100  # it really walked the app
    assert [name for name in report["loaded"] if name.split(".")[0] in TORCH_STACK + ("workers",)] == []
    assert "webapp.jobs.queue" in report["loaded"] and "celery" in report["loaded"]
