"""coursekit.docs.inline_schema: a nested model's schema with no reference left in it."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from coursekit.docs import inline_schema


class Inner(BaseModel):
    name: str


class Outer(BaseModel):
    first: Inner
    rest: list[Inner] = []
    maybe: Inner | None = None


class Node(BaseModel):
    children: list[Node] = []


def test_nested_models_are_written_in_place() -> None:
    schema = inline_schema(Outer)
    text = json.dumps(schema)
    assert "$defs" not in text and "$ref" not in text
    assert schema["properties"]["first"]["properties"]["name"]["type"] == "string"
    assert schema["properties"]["rest"]["items"]["title"] == "Inner"
    assert Outer.model_json_schema()["$defs"], "the plain schema does use $defs"


def test_a_model_that_contains_itself_is_refused() -> None:
    with pytest.raises(ValueError, match="Node"):
        inline_schema(Node)
