"""Stubs and solutions expose the same public interface, so they cannot drift."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel

from autograder.catalog import Step
from tests.helpers import STEPS, require_shipped_stubs, step_ids


def load(folder: Path, module: str, tag: str) -> ModuleType:
    """Import folder/module.py under a unique name, with its folder importable."""
    spec = importlib.util.spec_from_file_location(f"{tag}_{module}", folder / f"{module}.py")
    assert spec and spec.loader
    loaded = importlib.util.module_from_spec(spec)
    # Its imports must find this folder's modules, not another step's of the same name
    # (steps 02 to 05 each have a `schemas`) left in sys.modules by an earlier load.
    for sibling in folder.glob("*.py"):
        sys.modules.pop(sibling.stem, None)
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(loaded)
    finally:
        sys.path.remove(str(folder))
    return loaded


def routes(app: Any) -> set[tuple[str, str]]:
    return {
        (route.path, method)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }


def public_names(module: ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }


def models(module: ModuleType) -> dict[str, list[str]]:
    return {
        name: list(value.model_fields)
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == module.__name__
    }


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_same_routes_and_names(step: Step) -> None:
    require_shipped_stubs(step)
    for module in step.modules:
        if module.startswith("test_"):
            continue  # a learner's own test suite (step 12) names its tests as it likes
        stub = load(step.exercise_dir, module, f"stub{step.id}")
        solution = load(step.solution_dir, module, f"solution{step.id}")
        assert public_names(stub) == public_names(solution), (
            f"{module}.py: the stub and the solution define different public names"
        )
        app_module, _, attribute = step.app.partition(":")
        if module == app_module:
            assert routes(getattr(stub, attribute)) == routes(getattr(solution, attribute))


@pytest.mark.parametrize(
    "step",
    [s for s in STEPS if s.models_given],
    ids=step_ids(tuple(s for s in STEPS if s.models_given)),
)
def test_same_model_fields_where_the_models_are_given(step: Step) -> None:
    require_shipped_stubs(step)
    for module in step.modules:
        stub = load(step.exercise_dir, module, f"stub{step.id}")
        solution = load(step.solution_dir, module, f"solution{step.id}")
        assert models(stub) == models(solution)
