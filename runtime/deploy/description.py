"""What a built library says about its inputs beyond their types: the data the model was
trained on (its train block's `data`, every argument of the source written out, defaults
too), the ids an integer input takes, and that data's transform, the scale a source multiplies its `x` column by
(`digits(scale = 1/16)`: the pixels 0-16 times 0.0625). The header and NAME_describe
give it (docs/deploy.md, "What the inputs mean"); `dlc build --transform` compiles the
scale into predict.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.frontend.settings import Call, to_text
from dlc.runtime.deploy.library import ModelIO


@dataclass
class Interface:
    """A model's prediction as a library takes and gives it: the model built for
    prediction, its prediction graph, every input and output of the graph (ModelIO, with
    each input's ids and scale) and the training data's text (training_data)."""

    model: object
    graph: object
    inputs: list
    outputs: list
    data: str | None


def interface(program, model_name: str | None) -> Interface:
    """The Interface of model `model_name` (None: the last) of a loaded .dl file."""
    from dlc.runtime.engines.reference import predict_graph

    model = program.build(model_name, training=False)
    model.require_outputs("to build a library")
    data, scales = training_data(program, model)
    graph = predict_graph(model)
    outputs = [
        ModelIO(k[7:], o.type.dtype, tuple(o.type.shape)) for k, o in graph.outputs.items() if k.startswith("output:")
    ]
    inputs = []
    for n in graph.nodes_with("input"):
        name, typ = graph.attrs(n)["name"], graph.types(n)[0]
        scale = scales.get(name, 1.0) if typ.dtype in ("f32", "f64") else 1.0  # ids are not scaled
        inputs.append(ModelIO(name, typ.dtype, tuple(typ.shape), input_limits(model, name, typ.dtype), scale))
    return Interface(model, graph, inputs, outputs, data)


def training_data(program, model) -> tuple:
    """(the train block's data as the .dl file would write it with every argument, or None
    without a train block or with arrays given from Python; {input name: the scale its
    values were multiplied by}). A source's `x` column binds to the input named `x`, else
    to the first input (runtime/training/inputs.input_arrays)."""
    from dlc.runtime.data.registry import SOURCES
    from dlc.runtime.training.config import make_config

    if model.name not in program.trains:
        return None, {}
    data = make_config(program, model.name, {}, require_data=False).data
    if not isinstance(data, (Call, str)):
        return None, {}
    if not isinstance(data, Call) or data.name not in SOURCES:
        return to_text(data), {}
    args = dict(data.bind(SOURCES[data.name].params))
    scale = args.get("scale")
    features = [i.name for i in model.inputs if not i.is_target]
    x = "x" if "x" in features else features[0] if features else None
    scales = {x: float(scale)} if isinstance(scale, (int, float)) and not isinstance(scale, bool) and x else {}
    return to_text(Call(data.name, [], args)), scales


def input_limits(model, name: str, dtype: str) -> tuple:
    """An input's limits as dlc predict and dlc train check its data (fit_input): for an
    integer input, the values it takes below (None: any) and the values it ignores."""
    from dlc.runtime.training.inputs import index_limits

    return index_limits(model, name) if dtype in ("i32", "i64") else (None, [])
