"""An ONNX backend on dlc (onnx.backend.base): a model is imported as a .dl program
(compiler/onnx/importer.py) and run on dlc's reference engine or its native engine.

    rep = DlcBackend.prepare(model, engine="native")
    outputs = rep.run([x])

Graph inputs that the program needs as constants (a Reshape's shape, an LSTM's weights)
are bound from the values `run` is given: the model is imported once per set of those
values. The others are fed to the engine as they are.

This module needs the onnx package (the `onnx` extra): importing it without onnx is a
DlcError that says what to install.
"""

from __future__ import annotations

import copy

import numpy as np

from dlc.compiler.errors import DlcError, optional_package
from dlc.compiler.native.lower import NotLowerable
from dlc.compiler.onnx.importer import Unsupported, import_model, static_inputs
from dlc.runtime.engines.backends import make_engine

optional_package("onnx", "onnx", "the ONNX backend")
from onnx import TensorProto, numpy_helper  # noqa: E402  (after the check)
from onnx.backend.base import Backend, BackendRep, namedtupledict  # noqa: E402

ENGINES = ("reference", "native")


class ImportedProgram:
    """One imported model, built for evaluation; each engine it runs on is made once, from
    the same import and build."""

    def __init__(self, model, static: dict):
        from dlc.compiler.frontend.loader import load_text
        from dlc.runtime.interop.checkpoint import conform

        self.imported = import_model(model, static=static, source=f"{model.graph.name or 'model'}.onnx")
        self.built = load_text(self.imported.text, f"<{self.imported.name}.dl>").build(None, training=False)
        self.params = conform(f"<{self.imported.name}.npz>", self.imported.weights, self.built.params)
        self.types = {i.name: i.type for i in self.built.inputs}
        self.engines: dict = {}

    def engine(self, name: str):
        """The program on engine `name` ("reference" or "native"): what the native engine
        cannot compile is Unsupported."""
        if name not in self.engines:
            try:
                self.engines[name] = make_engine(name, self.built, self.built)
            except NotLowerable as e:
                raise Unsupported(
                    f"the native engine cannot compile {self.imported.name}: {e.message}", "native"
                ) from None
        return self.engines[name]

    def run(self, feeds: dict, engine: str) -> list:
        """The model's outputs on `engine`, in order, for inputs by ONNX name."""
        from dlc.compiler.ir.graph import DTYPES

        arrays = {
            dl: np.asarray(feeds[name], DTYPES[self.types[dl].dtype]) for name, dl in self.imported.inputs.items()
        }
        out = self.engine(engine).predict(self.params, arrays)
        return [_declared(np.asarray(out[dl]), self.imported.dtypes[dl]) for dl in self.imported.outputs.values()]


def _declared(a: np.ndarray, dtype) -> np.ndarray:
    """The reference engine computes f64 values in f32: a float output comes back in the float
    type the model declares (any other difference of dtype stays, for the caller to see)."""
    return a.astype(dtype) if a.dtype.kind == "f" and np.dtype(dtype).kind == "f" else a


def fed_inputs(model) -> list:
    """The names of the graph inputs a run is given, in order: those without an initializer."""
    known = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in known]


class DlcBackendRep(BackendRep):
    """A prepared model (onnx.backend.base.BackendRep's interface): `run(inputs)` gives its outputs."""

    def __init__(self, model, engine: str = "reference"):
        if engine not in ENGINES:
            raise DlcError(f"unknown engine '{engine}' ({', '.join(ENGINES)})")
        self.model, self.engine = model, engine
        self.input_names = fed_inputs(model)
        self.output_names = [o.name for o in model.graph.output]
        self.static = static_inputs(model)
        self.programs: dict = {}
        if not self.static:  # import now, so that what dlc cannot import fails in prepare
            self.program({}).engine(engine)

    def program(self, static: dict) -> ImportedProgram:
        key = tuple((k, v.dtype.str, v.shape, v.tobytes()) for k, v in sorted(static.items()))
        if key not in self.programs:
            self.programs[key] = ImportedProgram(self.model, static)
        return self.programs[key]

    def on(self, engine: str) -> DlcBackendRep:
        """This model on another engine, from the same imports and builds (those made
        already and those to come): run on both engines, a model is imported once."""
        other = copy.copy(self)
        other.engine = engine
        if not self.static:
            other.program({}).engine(engine)
        return other

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            inputs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(inputs) != len(self.input_names):
                raise DlcError(
                    f"the model has {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                    f"{len(inputs)} were given"
                )
            feeds = dict(zip(self.input_names, inputs))
        feeds = {k: numpy_helper.to_array(v) if isinstance(v, TensorProto) else v for k, v in feeds.items()}
        static = {k: np.asarray(feeds.pop(k)) for k in self.static}
        outputs = self.program(static).run(feeds, self.engine)
        return namedtupledict("Outputs", self.output_names)(*outputs)


class DlcBackend(Backend):
    """onnx.backend.base.Backend on dlc; `engine` (a keyword of prepare, run_model and
    run_node) is "reference" (the numpy interpreter, the default) or "native"."""

    @classmethod
    def prepare(cls, model, device: str = "CPU", engine: str = "reference", **kwargs) -> DlcBackendRep:
        if not cls.supports_device(device):
            raise DlcError(f"dlc runs on the CPU, not on {device}")
        return DlcBackendRep(model, engine)

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        """One node as a model of its own: its inputs typed by the arrays given."""
        from onnx import ValueInfoProto, helper, shape_inference

        inputs = [np.asarray(a) for a in inputs]
        typed = [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for name, a in zip(node.input, inputs)
        ]
        opset = kwargs.pop("opset_version", None)
        model = helper.make_model(
            helper.make_graph([node], "node", typed, [ValueInfoProto(name=o) for o in node.output if o]),
            **({"opset_imports": [helper.make_opsetid("", opset)]} if opset else {}),
        )
        return cls.run_model(shape_inference.infer_shapes(model), inputs, device, **kwargs)  # types the outputs

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.split(":")[0].upper() == "CPU"

    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        return cls.supports_device(device)
