"""GrowingModel (compiler/frontend/loader.py): a model built a few statements at a time, as
the ONNX importer types what ONNX's shape inference cannot, gives the types a build of the
whole model gives."""

import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import GrowingModel, load_text

STATEMENTS = [
    "input x: f32[B, 3, 8, 8]",
    "input ids: i32[B, T]",
    "param w: f32[4, 3, 3, 3]",
    "state seen: f32[4]",
    "c = conv2d(x, 4, 3, padding = 1)",
    "h = relu(c + reshape(seen, 1, 4, 1, 1))",
    "flat = reshape(h, -1, 4 * 8 * 8)",
    "k = convolution(x, w, 1, 1)",
    "e = embedding(ids, 10, 6)",
    "hs = lstm(e, 5)",
    "n = 2 * 3",
    "last = hs[:, -1] |> dense(7)",
    "y = concat([flat, last], axis = 1)",
]


def whole_model_types() -> dict:
    model = load_text("model m {\n" + "\n".join(STATEMENTS) + "\n}\n").build(None, training=False)
    types = {name: t for name, t, _ in model.bindings}
    types.update({i.name: i.type for i in model.inputs})
    types.update({p.name: p.type for p in model.params if "." not in p.name})
    return types


def named(statement: str) -> str:
    words = statement.split()
    return words[1].rstrip(":") if words[0] in ("input", "param", "state") else words[0]


@pytest.mark.parametrize("chunk", [1, 3, len(STATEMENTS)])
def test_statements_added_in_chunks_get_the_whole_models_types(chunk):
    growing = GrowingModel("m", "<m.dl>")
    whole = whole_model_types()
    for start in range(0, len(STATEMENTS), chunk):
        assert all(growing.type_of(named(s)) is None for s in STATEMENTS[start:])  # not added yet
        growing.add(STATEMENTS[start : start + chunk])
        for s in STATEMENTS[: start + chunk]:
            assert growing.type_of(named(s)) == whole.get(named(s)), s
    assert growing.type_of("n") is None and "n" not in whole  # a static number is not a tensor
    assert {named(s) for s in STATEMENTS if growing.type_of(named(s)) is not None} == set(whole)


def test_a_statement_that_does_not_build_is_an_error_at_its_line():
    growing = GrowingModel("m", "<m.dl>")
    growing.add(["input x: f32[B, 3]"])
    with pytest.raises(DlcError, match="'nowhere'") as e:
        growing.add(["y = x + 1", "z = nowhere * 2"])
    assert e.value.span.line == 3
