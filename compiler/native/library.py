"""The C side of a library `dlc build` writes: its header, its C source and its data.

The kernels are the engine's own step module (driver.py), written out as an object; the
C source around it holds the model's tables (symbols, inputs, outputs, parameters,
buffers as dim polynomials, the step's argument slots, the size constraints and index
checks with their source lines), the run-time part every library shares (library.c:
checkpoint reading (.npz, .safetensors), CPU check, the call) and the public functions, named after the model:

    int NAME_create(NAME **model, const char *checkpoint);       NULL: the embedded weights
    int NAME_create_from_memory(NAME **model, const void *checkpoint, size_t size);
    void NAME_destroy(NAME *model);
    int NAME_set_threads(NAME *model, int threads);
    const char *NAME_error(const NAME *model);
    int NAME_predict(NAME *model, <each input: const T *x, const int64_t x_shape[rank]>,
                     <each output: T *y, int64_t y_capacity, int64_t y_shape[rank]>);
    int NAME_predict_arrays(NAME *model, const void *const inputs[], const int64_t *const shapes[],
                            void *const outputs[], const int64_t capacities[], int64_t *const output_shapes[]);

docs/deploy.md is the user's side of it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlc.compiler.ir.dims import Dim, shape_str
from dlc.compiler.native.memory import intervals
from dlc.compiler.native.program import KernelProgram

C_TYPES = {"f32": "float", "f64": "double", "i32": "int32_t", "i64": "int64_t", "bool": "uint8_t"}
NPY_DESCR = {"f32": "<f4", "f64": "<f8", "i32": "<i4", "i64": "<i8", "bool": "|b1"}
SAFETENSORS_DTYPE = {"f32": "F32", "f64": "F64", "i32": "I32", "i64": "I64", "bool": "BOOL"}
ITEMSIZE = {"f32": 4, "f64": 8, "i32": 4, "i64": 8, "bool": 1}
KINDS = {"temp": "KIND_TEMP", "input": "KIND_INPUT", "param": "KIND_PARAM", "output": "KIND_OUTPUT",
         "const": "KIND_CONST"}
# the status codes, the same in every library
STATUS = [("DLC_OK", "success"), ("DLC_ERROR_ARGUMENT", "a null pointer or a bad argument"),
          ("DLC_ERROR_SHAPE", "an input or output of the wrong shape or size"),
          ("DLC_ERROR_WEIGHTS", "a checkpoint that cannot be read or does not fit the model"),
          ("DLC_ERROR_CPU", "this CPU lacks a feature the library was built for"),
          ("DLC_ERROR_MEMORY", "out of memory"),
          ("DLC_ERROR_INDEX", "an index input out of range (a gather's row)")]
ALIGN = 64


@dataclass
class Tensor:
    """An input or output of the model: its name, dtype and shape (dims)."""
    name: str
    dtype: str
    shape: tuple

    @property
    def type(self) -> str:
        return f"{self.dtype}{shape_str(self.shape)}"


@dataclass
class Library:
    """What the C source is made from. `step`, `fault`: the names of the step function
    and its fault flag in the objects; `weights`: the parameters' arrays to embed (None:
    read from a checkpoint at create); `features`: the CPU features (LLVM's names) the
    code needs, which create checks."""
    name: str
    program: KernelProgram
    arguments: list
    inputs: list
    outputs: list
    constraints: list           # (dim, least, op, "file:line:col", "small" or "large", the need in words)
    faults: list                # (what, count, "file:line:col") by site
    step: str
    fault: str
    target: str
    features: list
    uses_amx: bool = False
    param_shapes: dict = field(default_factory=dict)     # parameter name -> shape
    weights: dict | None = None
    symbols: list = field(default_factory=list)

    def __post_init__(self):
        # the step's sizes array first (program.symbols), then the other symbols of the shapes
        self.symbols = list(self.program.symbols)
        dims = [d for t in self.inputs + self.outputs for d in t.shape] + [c[0] for c in self.constraints]
        for d in dims:
            for s in sorted(d.symbols()) if isinstance(d, Dim) else ():
                if s not in self.symbols:
                    self.symbols.append(s)


def c_name(text: str) -> str:
    """A C identifier for a model's name."""
    name = re.sub(r"\W", "_", text)
    return name if name and not name[0].isdigit() else "m_" + name


def where(span) -> str:
    """file:line:col of the user's line an operation came from."""
    span = span.caller or span if span is not None else None
    return f"{span.file}:{span.line}:{span.col}" if span is not None else "?"


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _Polys:
    """Dim polynomials in one int64 array (library.c poly_value)."""

    def __init__(self, symbols: list):
        self.index = {s: k for k, s in enumerate(symbols)}
        self.values: list = []
        self.at: dict = {}

    def __call__(self, d) -> int:
        key = str(d)
        if key not in self.at:
            self.at[key] = len(self.values)
            terms = d.terms if isinstance(d, Dim) else ({(): d} if d else {})
            self.values.append(len(terms))
            for monomial, coefficient in terms.items():
                self.values += [coefficient, len(monomial)] + [self.index[s] for s in monomial]
        return self.at[key]


def unbound_symbols(lib: Library) -> list:
    """Symbols of the step that no input's dim gives (nor derives, nor a scan's step)."""
    given = {d for t in lib.inputs for d in t.shape if isinstance(d, Dim) and d == Dim.sym(next(iter(d.symbols())))}
    given = {next(iter(d.symbols())) for d in given}
    derived = {s for s in lib.symbols if re.match(r"ceil\((\w+)/(\d+)\)$", s)}
    return [s for s in lib.symbols if s not in given and s not in derived and not s.startswith("$")]


def embedded_layout(lib: Library) -> tuple:
    """(offset of each parameter in the embedded weights, offset of each const buffer in
    the embedded constants, the two blobs as bytes), each array 64-byte aligned."""
    def blob(arrays: list) -> tuple:
        offsets, parts, at = [], [], 0
        for a in arrays:
            data = np.ascontiguousarray(a).tobytes()
            offsets.append(at)
            pad = -len(data) % ALIGN
            parts += [data, bytes(pad)]
            at += len(data) + pad
        return offsets, b"".join(parts) or bytes(ALIGN)
    p = lib.program
    consts = [b for b in p.buffers if b.kind == "const"]
    const_offsets, const_blob = blob([b.data.astype(DTYPES_NP[b.dtype]) for b in consts])
    weights = [lib.weights[name] for name in p.params] if lib.weights is not None else []
    weight_offsets, weight_blob = blob(weights)
    return (weight_offsets, dict(zip((b.id for b in consts), const_offsets)), weight_blob, const_blob)


DTYPES_NP = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}


def data_module(lib: Library, weight_blob: bytes, const_blob: bytes):
    """An LLVM module holding the embedded weights and constants (read only, 64-byte aligned)."""
    from llvmlite import ir
    module = ir.Module(f"{lib.name}_data")
    for symbol, data in ((f"{lib.name}__weights", weight_blob), (f"{lib.name}__consts", const_blob)):
        g = ir.GlobalVariable(module, ir.ArrayType(ir.IntType(8), len(data)), symbol)
        g.initializer = ir.Constant(g.value_type, bytearray(data))
        g.global_constant = True
        g.align = ALIGN
    return module


def c_source(lib: Library) -> str:
    """The C source of the library: tables, library.c, the public functions."""
    p, n = lib.program, lib.name
    polys = _Polys(lib.symbols)
    weight_offsets, const_offsets, _, _ = embedded_layout(lib)
    param_index = {bid: k for k, bid in enumerate(p.params.values())}
    out = [f"/* generated by dlc build: the library of model {n} (docs/deploy.md) */",
           f'#include "{n}.h"', f"#define DLC_INSTANCE {n}",
           f"#define DLC_N_SYMBOLS {len(lib.symbols)}", f"#define DLC_N_STEP_SYMBOLS {len(p.symbols)}",
           f"#define DLC_N_INPUTS {len(lib.inputs)}", f"#define DLC_N_OUTPUTS {len(lib.outputs)}",
           f"#define DLC_N_PARAMS {len(p.params)}", f"#define DLC_N_BUFFERS {len(p.buffers)}",
           f"#define DLC_N_FAULTS {len(p.faults)}", f"#define DLC_N_ARGUMENTS {len(lib.arguments)}",
           f"#define DLC_N_CONSTRAINTS {len(lib.constraints)}",
           f"#define DLC_EMBEDDED {int(lib.weights is not None)}", f"#define DLC_USES_AMX {int(lib.uses_amx)}",
           f"#define DLC_TARGET {_c_string(lib.target)}",
           f"#define DLC_STEP {lib.step}", f"#define DLC_FAULT {lib.fault}",
           f"#define DLC_WEIGHTS {n}__weights", f"#define DLC_CONSTS {n}__consts",
           "#include <stdint.h>",
           f"extern void {lib.step}(void **arguments, const int64_t *sizes, int64_t threads);",
           f"extern volatile int64_t {lib.fault};",
           f"extern const unsigned char {n}__weights[], {n}__consts[];"]
    rows = []
    for s in lib.symbols:
        m = re.match(r"ceil\((\w+)/(\d+)\)$", s)
        rows.append(f"{{{_c_string(s)}, {lib.symbols.index(m[1]) if m else -1}, {int(m[2]) if m else 1}, "
                    f"{int(s.startswith('$'))}}}")
    body = []
    body.append(f"static const dlc_symbol SYMBOLS[] = {{{', '.join(rows) or '{0}'}}};")
    for k, t in enumerate(lib.inputs):
        dims = []
        for d in t.shape:
            single = isinstance(d, Dim) and len(d.symbols()) == 1 and d == Dim.sym(next(iter(d.symbols())))
            dims.append(f"{{{lib.symbols.index(next(iter(d.symbols()))) if single else -1}, {polys(d)}}}")
        body.append(f"static const dlc_dim INPUT{k}[] = {{{', '.join(dims) or '{0}'}}};")
    body.append("static const dlc_input INPUTS[] = {" + ", ".join(
        f"{{{_c_string(t.name)}, {_c_string(t.type)}, {ITEMSIZE[t.dtype]}, {len(t.shape)}, INPUT{k}, "
        f"{p.inputs[t.name]}}}" for k, t in enumerate(lib.inputs)) + (" {0}" if not lib.inputs else "") + "};")
    for k, t in enumerate(lib.outputs):
        body.append(f"static const int64_t OUTPUT{k}[] = {{{', '.join(str(polys(d)) for d in t.shape) or '0'}}};")
    body.append("static const dlc_output OUTPUTS[] = {" + ", ".join(
        f"{{{_c_string(t.name)}, {ITEMSIZE[t.dtype]}, {len(t.shape)}, OUTPUT{k}, {p.outputs['output:' + t.name]}}}"
        for k, t in enumerate(lib.outputs)) + (" {0}" if not lib.outputs else "") + "};")
    params = []
    for k, (name, bid) in enumerate(p.params.items()):
        b = p.buffers[bid]
        shape = lib.param_shapes[name]
        body.append(f"static const int64_t SHAPE{k}[] = {{{', '.join(map(str, shape)) or '0'}}};")
        params.append(f"{{{_c_string(name)}, {_c_string(NPY_DESCR[b.dtype])}, {_c_string(SAFETENSORS_DTYPE[b.dtype])}, "
                      f"{ITEMSIZE[b.dtype]}, {len(shape)}, "
                      f"SHAPE{k}, {int(np.prod(shape, dtype=np.int64))}, "
                      f"{weight_offsets[k] if weight_offsets else 0}, {bid}}}")
    body.append(f"static const dlc_param PARAMS[] = {{{', '.join(params) or '{0}'}}};")
    buffers = []
    for b in p.buffers:
        data = param_index.get(b.id, 0) if b.kind == "param" else const_offsets.get(b.id, 0)
        buffers.append(f"{{{KINDS[b.kind]}, {ITEMSIZE[b.dtype]}, {polys(b.size)}, {data}}}")
    body.append(f"static const dlc_buffer BUFFERS[] = {{{', '.join(buffers) or '{0}'}}};")
    live = intervals(p)      # the temporaries' kernel intervals, as the engine's arena takes them
    body.append("static const int64_t LIVE[][2] = {" + ", ".join(
        f"{{{live[b.id][0]}, {live[b.id][1]}}}" if b.id in live else "{-1, -1}" for b in p.buffers) + "};")
    body.append("static const dlc_constraint CONSTRAINTS[] = {" + ", ".join(
        f"{{{polys(d)}, {least}, {_c_string(at)}, {_c_string(op)}, {_c_string(need)}, {_c_string(word)}}}"
        for d, least, op, at, word, need in lib.constraints) + (" {0}" if not lib.constraints else "") + "};")
    body.append("static const dlc_fault_site FAULTS[] = {" + ", ".join(
        f"{{{_c_string(at)}, {_c_string(what)}, {polys(count)}}}" for what, count, at in lib.faults)
        + (" {0}" if not lib.faults else "") + "};")
    body.append(f"static const int64_t ARGUMENTS[] = {{{', '.join(map(str, lib.arguments)) or '0'}}};")
    features = ", ".join(_c_string(f) for f in lib.features)
    body.append(f"static const char *const CPU_FEATURES[] = {{{features + ', ' if features else ''}NULL}};")
    # POLYS is filled as the tables above ask for polynomials: it goes before them
    tables = [f"static const int64_t POLYS[] = {{{', '.join(map(str, polys.values)) or '0'}}};"] + body
    types, functions = Path(__file__).with_name("library.c").read_text().split(TABLES)
    return "\n".join(out + [types] + tables + [functions, api(lib)]) + "\n"


TABLES = "/* ---- the model's tables (library.py) go here ---- */\n"


def _predict_params(lib: Library) -> list:
    args = []
    for t in lib.inputs:
        args.append(f"const {C_TYPES[t.dtype]} *{_arg(t.name)}, const int64_t {_arg(t.name)}_shape[{max(1, len(t.shape))}]")
    for t in lib.outputs:
        args.append(f"{C_TYPES[t.dtype]} *{_arg(t.name)}, int64_t {_arg(t.name)}_capacity, "
                    f"int64_t {_arg(t.name)}_shape[{max(1, len(t.shape))}]")
    return args


def _arg(name: str) -> str:
    return c_name(name)


def api(lib: Library) -> str:
    """The public functions (visible from the library; the rest is hidden)."""
    n = lib.name
    v = '__attribute__((visibility("default")))'
    ins = ", ".join(f"{_arg(t.name)}" for t in lib.inputs) or "0"
    shapes = ", ".join(f"{_arg(t.name)}_shape" for t in lib.inputs) or "0"
    outs = ", ".join(f"{_arg(t.name)}" for t in lib.outputs) or "0"
    caps = ", ".join(f"{_arg(t.name)}_capacity" for t in lib.outputs) or "0"
    oshapes = ", ".join(f"{_arg(t.name)}_shape" for t in lib.outputs) or "0"
    return f"""
{v} int {n}_create({n} **model, const char *checkpoint) {{ return instance(model, checkpoint, NULL, 0); }}
{v} int {n}_create_from_memory({n} **model, const void *checkpoint, size_t size) {{
    if (!checkpoint) {{ if (model) *model = NULL; return DLC_ERROR_ARGUMENT; }}
    return instance(model, NULL, checkpoint, size);
}}
{v} void {n}_destroy({n} *model) {{ release(model); }}
{v} int {n}_set_threads({n} *model, int threads) {{
    if (!model) return DLC_ERROR_ARGUMENT;
    if (threads < 1) return fail(model, DLC_ERROR_ARGUMENT, "set_threads: %d threads; give at least 1", threads);
    model->threads = threads;
    return DLC_OK;
}}
{v} const char *{n}_error(const {n} *model) {{ return model ? model->message : "no model instance (a null pointer)"; }}
{v} int {n}_predict_arrays({n} *model, const void *const inputs[], const int64_t *const shapes[],
        void *const outputs[], const int64_t capacities[], int64_t *const output_shapes[]) {{
    return predict(model, inputs, shapes, outputs, capacities, output_shapes);
}}
{v} int {n}_predict({n} *model, {", ".join(_predict_params(lib))}) {{
    const void *inputs[] = {{{ins}}};
    const int64_t *shapes[] = {{{shapes}}};
    void *outputs[] = {{{outs}}};
    const int64_t capacities[] = {{{caps}}};
    int64_t *output_shapes[] = {{{oshapes}}};
    return predict(model, inputs, shapes, outputs, capacities, output_shapes);
}}
"""


def header(lib: Library, version: str) -> str:
    """NAME.h: the model's C API."""
    n, guard = lib.name, lib.name.upper() + "_H"
    status = "\n".join(f"    {code} = {k},{' ' * (20 - len(code))}/* {what} */" for k, (code, what) in enumerate(STATUS))
    inputs = "\n".join(f" *   {t.name}: {t.type}" for t in lib.inputs)
    outputs = "\n".join(f" *   {t.name}: {t.type}" for t in lib.outputs)
    ranks = "\n".join([f"#define {n.upper()}_INPUT_{c_name(t.name).upper()}_RANK {len(t.shape)}" for t in lib.inputs]
                      + [f"#define {n.upper()}_OUTPUT_{c_name(t.name).upper()}_RANK {len(t.shape)}"
                         for t in lib.outputs])
    embedded = ("its weights are inside: give NULL (or a checkpoint's path to use that instead)"
                if lib.weights is not None else "give the path of a dlc checkpoint (.npz) of the model")
    return f"""/* {n}.h: the C API of model {n}, built by dlc {version} (`dlc build`) for the
 * {lib.target} target. docs/deploy.md says what it guarantees.
 *
 * inputs (symbolic dims are bound by the shapes given at each call):
{inputs}
 * outputs:
{outputs}
 *
 * Every function returns a status code; after a failure, {n}_error(model) says what was
 * wrong. An instance is used by one thread at a time; instances are independent (the
 * library serializes their native steps, each of which uses {n}_set_threads threads). */
#ifndef {guard}
#define {guard}
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {{
#endif

#ifndef DLC_STATUS_DEFINED
#define DLC_STATUS_DEFINED
enum {{
{status}
}};
#endif

typedef struct {n} {n};
#define {n.upper()}_INPUTS {len(lib.inputs)}
#define {n.upper()}_OUTPUTS {len(lib.outputs)}
{ranks}

/* A model instance in *model. checkpoint: {embedded}. On failure *model is an instance
 * that holds the message ({n}_error) and fails every call: destroy it. */
int {n}_create({n} **model, const char *checkpoint);
/* The same from a checkpoint's bytes in memory. */
int {n}_create_from_memory({n} **model, const void *checkpoint, size_t size);
void {n}_destroy({n} *model);
/* Threads of each predict (default 1; docs/deploy.md says when more pay). */
int {n}_set_threads({n} *model, int threads);
/* What the last failed call of this instance said; "" after a success. */
const char *{n}_error(const {n} *model);
/* Outputs for inputs: each input is its data and its shape; each output its buffer, how
 * many elements that holds, and where its shape is written. */
int {n}_predict({n} *model, {(","  + chr(10) + "        ").join(_predict_params(lib))});
/* The same with arrays, in the order above. */
int {n}_predict_arrays({n} *model, const void *const inputs[], const int64_t *const shapes[],
                       void *const outputs[], const int64_t capacities[], int64_t *const output_shapes[]);

#ifdef __cplusplus
}}
#endif
#endif
"""
