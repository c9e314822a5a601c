"""Integer bounds in JSON schemas reach the grammar (llama-cpp-python's converter ignores
minimum/maximum, so small ranges are written as enums)."""

from __future__ import annotations

from locallab_cpp.engine.llama.grammar import INTEGER_ENUM_LIMIT, bound_integers


def test_small_ranges_become_enums_anywhere_in_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 1, "maximum": 3, "description": "years"},
            "tags": {
                "type": "array",
                "items": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3},
            },
        },
        "anyOf": [{"type": "integer", "minimum": -1, "maximum": 0}],
    }
    out = bound_integers(schema)
    assert out["properties"]["age"] == {"description": "years", "enum": [1, 2, 3]}
    assert out["properties"]["tags"]["items"] == {"enum": [1, 2]}
    assert out["anyOf"] == [{"enum": [-1, 0]}]
    assert schema["properties"]["age"]["maximum"] == 3  # the input is left alone


def test_what_cannot_be_an_enum_stays() -> None:
    wide = {"type": "integer", "minimum": 0, "maximum": INTEGER_ENUM_LIMIT}
    assert bound_integers(wide) == wide
    assert bound_integers({"type": "integer", "minimum": 5}) == {"type": "integer", "minimum": 5}
    assert bound_integers({"type": "number", "maximum": 2}) == {"type": "number", "maximum": 2}
    empty = {"type": "integer", "minimum": 3, "maximum": 1}
    assert bound_integers(empty) == empty
    assert bound_integers({"type": "integer", "enum": [7], "maximum": 1})["enum"] == [7]
