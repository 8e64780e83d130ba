"""The import rule, read from the source: the core (every module of `clapcurate` outside the study,
the synthetic world, the browser and the command line) never imports those applications, so the
library can be used, and tested, without them."""

import ast
from pathlib import Path

import clapcurate

PACKAGE = Path(clapcurate.__file__).parent
APPLICATIONS = ("clapcurate.study", "clapcurate.data.synth", "clapcurate.browse", "clapcurate.headless",
                "clapcurate.cli")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) of every import in `path`, relative imports resolved; `from a import b`
    names both `a` and `a.b` (b may be a submodule)."""
    name = module_name(path, package)
    parent = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parent.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            out.append((node.lineno, module))
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return out


def is_application(module: str) -> bool:
    return any(module == app or module.startswith(app + ".") for app in APPLICATIONS)


def violations(package: Path) -> list[str]:
    """`module:line imports application` for every import of an application by a core module."""
    core = [path for path in sorted(package.rglob("*.py")) if not is_application(module_name(path, package))]
    return [f"{module_name(path, package)}:{line} imports {module}" for path in core
            for line, module in imported_modules(path, package) if is_application(module)]


def test_the_core_never_imports_the_study_the_world_the_browser_or_the_cli():
    assert violations(PACKAGE) == []


def test_the_rule_finds_absolute_relative_and_submodule_imports_of_an_application(tmp_path):
    package = tmp_path / "clapcurate"
    for name in ("__init__.py", "curate/__init__.py", "data/__init__.py", "data/synth/__init__.py",
                 "study/__init__.py", "browse.py", "cli.py", "browser_utils.py"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("")
    (package / "curate" / "stage.py").write_text(
        "from ..study import pipeline\nfrom .. import browse, browser_utils\nimport clapcurate.cli\n"
        "from ..data import synth\nfrom . import methods\n\n\ndef f():\n    from clapcurate.data.synth.world import w\n")
    (package / "data" / "synth" / "world.py").write_text("from ...study import report\n")  # an application itself
    (package / "__init__.py").write_text("from .study import run_study\n")
    assert violations(package) == [
        "clapcurate:1 imports clapcurate.study", "clapcurate:1 imports clapcurate.study.run_study",
        "clapcurate.curate.stage:1 imports clapcurate.study", "clapcurate.curate.stage:1 imports clapcurate.study.pipeline",
        "clapcurate.curate.stage:2 imports clapcurate.browse", "clapcurate.curate.stage:3 imports clapcurate.cli",
        "clapcurate.curate.stage:4 imports clapcurate.data.synth",
        "clapcurate.curate.stage:9 imports clapcurate.data.synth.world",
        "clapcurate.curate.stage:9 imports clapcurate.data.synth.world.w"]
