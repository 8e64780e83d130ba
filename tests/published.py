"""The published model code of LAION-CLAP and MS CLAP, loaded from the installed PyPI packages
(`laion-clap`, `msclap`, installed without their dependencies) as reference implementations.

Their package imports fail beside our torch (torchvision, torchaudio, h5py, webdataset, wget),
so the model modules are loaded by file into private packages, with the few names they import
from those libraries stubbed while loading; preprocessing functions are taken from their modules'
source by name (`published_function`), without importing the rest of those modules.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        pytest.skip(f"the reference package {name} is not installed (pip install --no-deps laion-clap msclap)")
    return Path(spec.origin).parent


@contextlib.contextmanager
def _stubbed_modules(stubs: dict[str, types.ModuleType]):
    """Put `stubs` into sys.modules while loading, then remove them again (other code must not see them)."""
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _stub(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def _load_package(alias: str, directory: Path, modules: list[str]) -> types.ModuleType:
    """Load `modules` (file stems, dependencies first) of `directory` as the package `alias`."""
    if alias in sys.modules:
        return sys.modules[alias]
    package = types.ModuleType(alias)
    package.__path__ = [str(directory)]
    sys.modules[alias] = package
    for stem in modules:
        spec = importlib.util.spec_from_file_location(f"{alias}.{stem}", directory / f"{stem}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        setattr(package, stem, module)
    return package


def laion_clap_modules() -> types.ModuleType:
    """`laion_clap/clap_module` (htsat, pann_model, model, ...) as the package `_published_laion_clap`."""
    directory = package_dir("laion_clap") / "clap_module"
    from transformers import BartModel, BertModel, RobertaModel  # noqa: F401  (imported before the stubs exist)

    stubs = {
        "torchvision": _stub("torchvision"),
        "torchvision.ops": _stub("torchvision.ops"),
        "torchvision.ops.misc": _stub("torchvision.ops.misc", FrozenBatchNorm2d=None),
        "h5py": _stub("h5py"),
    }
    with _stubbed_modules(stubs):
        return _load_package("_published_laion_clap", directory,
                             ["utils", "feature_fusion", "timm_model", "htsat", "pann_model", "model"])


def msclap_modules() -> types.ModuleType:
    """`msclap/models` (config, htsat, audio, clap, ...) as the package `_published_msclap`."""
    directory = package_dir("msclap") / "models"
    return _load_package("_published_msclap", directory, ["config", "pytorch_utils", "htsat", "audio", "clap"])


def published_function(path: Path, name: str, namespace: dict):
    """The top-level function `name` of the source file `path`, executed alone in `namespace`
    (the module's own imports are not run: `namespace` provides what the function uses)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            code = compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec")
            scope = dict(namespace)
            exec(code, scope)
            return scope[name]
    raise LookupError(f"{path} defines no function {name}")
