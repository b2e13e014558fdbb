"""The public API: everything in `obs.__all__` resolves, is documented and typed."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import obs


def test_all_has_no_duplicates() -> None:
    assert len(obs.__all__) == len(set(obs.__all__))


def test_every_exported_name_resolves() -> None:
    missing = [name for name in obs.__all__ if getattr(obs, name, None) is None]
    assert missing == []


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        obs.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("obs.no_such_name resolved")


def test_library_imports_neither_streamlit_nor_plotly_nor_pandas_eagerly() -> None:
    code = (
        "import sys, obs, obs.llm.client, obs.llm.llama.server, obs.alerting.manager, obs.trace.tracer\n"
        "print(sorted(m for m in ('streamlit', 'plotly', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _public_modules() -> list[str]:
    names = ["obs"]
    for info in pkgutil.walk_packages(obs.__path__, "obs."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def _public_callables() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            value = getattr(module, name)
            if (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == module_name:
                found.append((f"{module_name}.{name}", value))
                if inspect.isclass(value):
                    for attr, member in vars(value).items():
                        if attr.startswith("_") or not inspect.isfunction(member):
                            continue
                        found.append((f"{module_name}.{name}.{attr}", member))
    return found


def test_every_module_has_a_docstring() -> None:
    undocumented = [m for m in _public_modules() if not (importlib.import_module(m).__doc__ or "").strip()]
    assert undocumented == []


def test_every_public_function_and_class_has_a_docstring() -> None:
    undocumented = [name for name, value in _public_callables() if not (value.__doc__ or "").strip()]
    assert undocumented == []


def test_every_public_function_is_fully_type_hinted() -> None:
    untyped = []
    for name, value in _public_callables():
        if not inspect.isfunction(value):
            continue
        signature = inspect.signature(value)
        params = [
            p for p in signature.parameters.values()
            if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty
        ]
        no_return = signature.return_annotation is inspect.Signature.empty
        if params or (no_return and value.__name__ != "__init__"):
            untyped.append(name)
    assert untyped == []
