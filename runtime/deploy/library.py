"""The C side of a library `dlc build` writes: its header, its C source and its data.

The kernels are the engine's own step module (compiler/native/codegen/driver.py), written out as an object; the
C source around it holds the model's tables (symbols, inputs, outputs, parameters,
buffers as dim polynomials, the step's argument slots, the size constraints and index
checks with their source lines), the run-time part every library shares (library_crc32.c, library.c:
checkpoint reading (.npz, .safetensors), CPU check, the call) and the public functions, named after the model
(a --train library adds a second unit, the train step's: library_train.c and its tables, and
the train functions of its header, `_train_header`):

    int NAME_create(NAME **model, const char *checkpoint);       NULL: the embedded weights
    int NAME_create_from_memory(NAME **model, const void *checkpoint, size_t size);
    void NAME_destroy(NAME *model);
    int NAME_set_threads(NAME *model, int threads);
    const char *NAME_error(const NAME *model);
    int NAME_predict(NAME *model, <each input: const T *x, const int64_t x_shape[rank]>,
                     <each output: T *y, int64_t y_capacity, int64_t y_shape[rank]>);
    int NAME_predict_arrays(NAME *model, const void *const inputs[], const int64_t *const shapes[],
                            void *const outputs[], const int64_t capacities[], int64_t *const output_shapes[]);
    int NAME_output_shapes(NAME *model, const int64_t *const shapes[], int64_t *const output_shapes[],
                           int64_t counts[]);
    const char *NAME_describe(void);                              the inputs, outputs and data, as JSON

docs/deploy.md is the user's side of it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlc.compiler.ir.dims import Dim, shape_str
from dlc.compiler.ir.graph import ITEMSIZE
from dlc.compiler.native import MOST_THREADS
from dlc.compiler.native.codegen import threadpool
from dlc.compiler.native.memory import intervals
from dlc.compiler.native.program import BUFFER_DTYPES, BUFFER_ITEMSIZE, KernelProgram

C_TYPES = {"f32": "float", "f64": "double", "i32": "int32_t", "i64": "int64_t", "bool": "uint8_t"}
NPY_DESCR = {"f32": "<f4", "f64": "<f8", "i32": "<i4", "i64": "<i8", "bool": "|b1"}
SAFETENSORS_DTYPE = {"f32": "F32", "f64": "F64", "i32": "I32", "i64": "I64", "bool": "BOOL"}
ROLES = {
    "temp": "KIND_TEMP",
    "input": "KIND_INPUT",
    "param": "KIND_PARAM",
    "output": "KIND_OUTPUT",
    "const": "KIND_CONST",
    "packed": "KIND_PACKED",
}
# the status codes, the same in every library
STATUS = [
    ("DLC_OK", "success"),
    ("DLC_ERROR_ARGUMENT", "a null pointer or a bad argument"),
    ("DLC_ERROR_SHAPE", "an input or output of the wrong shape or size"),
    ("DLC_ERROR_WEIGHTS", "a checkpoint that cannot be read or does not fit the model"),
    ("DLC_ERROR_CPU", "this CPU lacks a feature the library was built for"),
    ("DLC_ERROR_MEMORY", "out of memory"),
    ("DLC_ERROR_INDEX", "an index input out of range (a gather's row, a class)"),
]
ALIGN = 64


@dataclass
class ModelIO:
    """An input or output of the model: its name, dtype and shape (dims); for an integer
    input, `limits`: dlc predict's and dlc train's (the values it takes below, the values
    it ignores: runtime/training/inputs.index_limits); for an input, `scale`: what the
    training data's values were multiplied by (runtime/deploy/description.py)."""

    name: str
    dtype: str
    shape: tuple
    limits: tuple = (None, [])
    scale: float = 1.0

    @property
    def type(self) -> str:
        return f"{self.dtype}{shape_str(self.shape)}"


@dataclass
class Library:
    """What the C source is made from. `step`: the name of the step function in the
    objects; `weights`: the parameters' arrays to embed (None:
    read from a checkpoint at create); `features`: the CPU features (LLVM's names) the
    code needs, which create checks."""

    name: str
    program: KernelProgram
    arguments: list
    inputs: list
    outputs: list
    constraints: list  # (dim, least, op, "file:line:col", "small" or "large", the need in words)
    faults: list  # (what, count, "file:line:col") by site
    step: str
    target: str
    features: list
    machine_targets: list = field(default_factory=list)  # (target, its features) for its machine, best first
    uses_amx: bool = False
    param_shapes: dict = field(default_factory=dict)  # parameter name -> shape
    weights: dict | None = None
    symbols: list = field(default_factory=list)
    param_order: list | None = None  # the PARAMS table's names (None: the program's parameters)
    training: "Training | None" = None  # the train step's translation unit of a --train library
    trainer: "Library | None" = None  # a --train library's predict unit: the train step's unit
    module: object = None  # its step module (driver.StepModule.module), which build.py sets
    header_name: str = ""  # the header it includes (default: its own name's)
    known: list = field(default_factory=list)  # the model's parameters a checkpoint holds that this unit does not read
    data: str | None = None  # the train block's data, every argument written (description.py)
    transform: bool = False  # predict multiplies each input by its scale (dlc build --transform)
    int8: bool = False  # its integer products compiled in with every weight (dlc build --int8)

    @property
    def param_names(self) -> list:
        return self.param_order if self.param_order is not None else list(self.program.params)

    def __post_init__(self):
        # the step's sizes array first (program.symbols), then the other symbols of the shapes
        self.symbols = list(self.program.symbols)
        dims = [d for t in self.inputs + self.outputs for d in t.shape] + [c[0] for c in self.constraints]
        for d in dims:
            for s in sorted(d.symbols()) if isinstance(d, Dim) else ():
                if s not in self.symbols:
                    self.symbols.append(s)


@dataclass
class Training:
    """What the train step's unit of a --train library adds (library_train.c): the
    optimizer's update program (update.lower_update), whose buffers follow the step's in the
    pointer table; the flat arrays' layout (the parameters in `Library.param_order`, the
    first `trained` of them trained); the optimizer's state slots and per-step scalars (fed
    in `scalar_names` order by `functions`, C source of schedule_lr and step_scalars); the
    parameter group of the trained elements as (offset, count, group) runs; the seed of the
    random key; the checkpoint metadata's JSON without its closing brace; the train block's
    steps per epoch and total steps, the schedule's units until set_schedule changes them;
    the optimizer's name (a checkpoint of another optimizer's run gives no state)."""

    update: KernelProgram
    trained: int
    slots: list
    scalar_names: list
    groups: list
    seed: int
    meta: str
    functions: str
    schedule: tuple
    optimizer: str  # its name, as checkpoints record it


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
    consts = [b for b in p.buffers if b.role == "const"]
    const_offsets, const_blob = blob([b.data.astype(BUFFER_DTYPES[b.dtype]) for b in consts])
    weights = [lib.weights[name] for name in lib.param_names] if lib.weights is not None else []
    weight_offsets, weight_blob = blob(weights)
    return (weight_offsets, dict(zip((b.id for b in consts), const_offsets)), weight_blob, const_blob)


def embedded_data(lib: Library) -> dict:
    """The symbols of the embedded weights and constants (DLC_WEIGHTS, DLC_CONSTS of the C
    source) and their bytes, for the library's data module (compiler/native/codegen/data.py)."""
    _, _, weight_blob, const_blob = embedded_layout(lib)
    return {f"{lib.name}__weights": weight_blob, f"{lib.name}__consts": const_blob}


def c_source(lib: Library) -> str:
    """The C source of the library: tables, library_crc32.c and library.c, the public functions."""
    p, n = lib.program, lib.name
    polys = _Polys(lib.symbols)
    weight_offsets, const_offsets, _, _ = embedded_layout(lib)
    names = lib.param_names
    param_index = {p.params[name]: k for k, name in enumerate(names) if name in p.params}
    out = [
        f"/* generated by dlc build: the library of model {n} (docs/deploy.md) */",
        f'#include "{lib.header_name or n}.h"',
        f"#define DLC_INSTANCE {n}",
        f"#define DLC_N_SYMBOLS {len(lib.symbols)}",
        f"#define DLC_N_STEP_SYMBOLS {len(p.symbols)}",
        f"#define DLC_N_INPUTS {len(lib.inputs)}",
        f"#define DLC_N_OUTPUTS {len(lib.outputs)}",
        f"#define DLC_N_PARAMS {len(names)}",
        f"#define DLC_N_BUFFERS {len(p.buffers)}",
        f"#define DLC_N_FAULTS {len(p.faults)}",
        f"#define DLC_N_ARGUMENTS {len(lib.arguments)}",
        f"#define DLC_WEIGHTS_READY {-1 if p.weights_ready is None else p.weights_ready}",
        f"#define DLC_N_CONSTRAINTS {len(lib.constraints)}",
        f"#define DLC_EMBEDDED {int(lib.weights is not None)}",
        f"#define DLC_USES_AMX {int(lib.uses_amx)}",
        f"#define DLC_INT8 {int(lib.int8)}",
        f"#define DLC_TARGET {_c_string(lib.target)}",
        f"#define DLC_TRANSFORM {int(lib.transform)}",
        f"#define DLC_STEP {lib.step}",
        f"#define DLC_WEIGHTS {n}__weights",
        f"#define DLC_CONSTS {n}__consts",
        "#include <stdint.h>",
        f"extern void {lib.step}(void **arguments, const int64_t *sizes, int64_t threads);",
        f"extern const unsigned char {n}__weights[], {n}__consts[];",
    ]
    rows = []
    for s in lib.symbols:
        m = re.match(r"ceil\((\w+)/(\d+)\)$", s)
        rows.append(
            f"{{{_c_string(s)}, {lib.symbols.index(m[1]) if m else -1}, {int(m[2]) if m else 1}, "
            f"{int(s.startswith('$'))}}}"
        )
    body = []
    body.append(f"static const dlc_symbol SYMBOLS[] = {{{', '.join(rows) or '{0}'}}};")
    for k, t in enumerate(lib.inputs):
        dims = []
        for d in t.shape:
            single = isinstance(d, Dim) and len(d.symbols()) == 1 and d == Dim.sym(next(iter(d.symbols())))
            dims.append(f"{{{lib.symbols.index(next(iter(d.symbols()))) if single else -1}, {polys(d)}}}")
        body.append(f"static const dlc_dim INPUT{k}[] = {{{', '.join(dims) or '{0}'}}};")
    body.append(
        "static const dlc_input INPUTS[] = {"
        + ", ".join(
            f"{{{_c_string(t.name)}, {_c_string(t.type)}, {ITEMSIZE[t.dtype]}, {len(t.shape)}, INPUT{k}, "
            f"{p.inputs[t.name]}}}"
            for k, t in enumerate(lib.inputs)
        )
        + (" {0}" if not lib.inputs else "")
        + "};"
    )
    for k, t in enumerate(lib.outputs):
        body.append(f"static const int64_t OUTPUT{k}[] = {{{', '.join(str(polys(d)) for d in t.shape) or '0'}}};")
    body.append(
        "static const dlc_output OUTPUTS[] = {"
        + ", ".join(
            f"{{{_c_string(t.name)}, {ITEMSIZE[t.dtype]}, {len(t.shape)}, OUTPUT{k}, {p.outputs['output:' + t.name]}}}"
            for k, t in enumerate(lib.outputs)
        )
        + (" {0}" if not lib.outputs else "")
        + "};"
    )
    params = []
    for k, name in enumerate(names):
        bid = p.params.get(name, -1)
        b = p.buffers[bid] if bid >= 0 else None
        dtype = b.dtype if b is not None else "f32"
        shape = lib.param_shapes[name]
        body.append(f"static const int64_t SHAPE{k}[] = {{{', '.join(map(str, shape)) or '0'}}};")
        params.append(
            f"{{{_c_string(name)}, {_c_string(NPY_DESCR[dtype])}, {_c_string(SAFETENSORS_DTYPE[dtype])}, "
            f"{ITEMSIZE[dtype]}, {len(shape)}, "
            f"SHAPE{k}, {int(np.prod(shape, dtype=np.int64))}, "
            f"{weight_offsets[k] if weight_offsets else 0}, {bid}}}"
        )
    body.append(f"static const dlc_param PARAMS[] = {{{', '.join(params) or '{0}'}}};")
    body.append(f"static const char *const KNOWN[] = {{{''.join(_c_string(k) + ', ' for k in lib.known)}NULL}};")
    for k, x in enumerate(lib.inputs):
        body.append(f"static const int64_t IGNORED{k}[] = {{{', '.join(map(str, x.limits[1])) or '0'}}};")
    body.append(
        "static const dlc_limit LIMITS[] = {"
        + ", ".join(
            f"{{{-1 if x.limits[0] is None else x.limits[0]}, {len(x.limits[1])}, IGNORED{k}}}"
            for k, x in enumerate(lib.inputs)
        )
        + (" {0}" if not lib.inputs else "")
        + "};"
    )
    body.append(f"static const double SCALES[] = {{{', '.join(float(x.scale).hex() for x in lib.inputs) or '0'}}};")
    buffers = []
    for b in p.buffers:
        data = param_index.get(b.id, 0) if b.role == "param" else const_offsets.get(b.id, 0)
        buffers.append(f"{{{ROLES[b.role]}, {BUFFER_ITEMSIZE[b.dtype]}, {polys(b.size)}, {data}}}")
    body.append(f"static const dlc_buffer BUFFERS[] = {{{', '.join(buffers) or '{0}'}}};")
    live = intervals(p)  # the temporaries' kernel intervals, as the engine's arena takes them
    body.append(
        "static const int64_t LIVE[][2] = {"
        + ", ".join(f"{{{live[b.id][0]}, {live[b.id][1]}}}" if b.id in live else "{-1, -1}" for b in p.buffers)
        + "};"
    )
    body.append(
        "static const dlc_constraint CONSTRAINTS[] = {"
        + ", ".join(
            f"{{{polys(d)}, {least}, {_c_string(at)}, {_c_string(op)}, {_c_string(need)}, {_c_string(word)}}}"
            for d, least, op, at, word, need in lib.constraints
        )
        + (" {0}" if not lib.constraints else "")
        + "};"
    )
    body.append(
        "static const dlc_fault_site FAULTS[] = {"
        + ", ".join(f"{{{_c_string(at)}, {_c_string(what)}, {polys(count)}}}" for what, count, at in lib.faults)
        + (" {0}" if not lib.faults else "")
        + "};"
    )
    body.append(f"static const int64_t ARGUMENTS[] = {{{', '.join(map(str, lib.arguments)) or '0'}}};")
    features = ", ".join(_c_string(f) for f in lib.features)
    body.append(f"static const char *const CPU_FEATURES[] = {{{features + ', ' if features else ''}NULL}};")
    body.append(
        "static const dlc_target MACHINE_TARGETS[] = {"
        + "".join(
            f"{{{_c_string(t)}, (const char *const[]){{{''.join(_c_string(f) + ', ' for f in needs)}NULL}}}}, "
            for t, needs in lib.machine_targets
        )
        + "{0}};"
    )
    # POLYS is filled as the tables above ask for polynomials: it goes before them
    tables = [f"static const int64_t POLYS[] = {{{', '.join(map(str, polys.values)) or '0'}}};"] + body
    crc = Path(__file__).with_name("library_crc32.c").read_text()
    types, functions = Path(__file__).with_name("library.c").read_text().split(TABLES)
    types = crc + types
    if lib.training is None:
        out.append("#define DLC_N_UPDATE_BUFFERS 0")
        out.append(f"void {n}__{threadpool.STOP}(void);")
        out.append(f"#define DLC_POOL_STOP {n}__{threadpool.STOP}")
        if lib.trainer is not None:
            out.append(f"#define DLC_TRAINER_DESTROY {lib.trainer.name}_destroy")
            out.append(f"void {lib.trainer.name}_destroy(void *trainer);")
        return "\n".join(out + [types] + tables + [functions, api(lib)]) + "\n"
    out += _training_defines(lib)
    tables += _training_tables(lib) + [lib.training.functions]
    train = Path(__file__).with_name("library_train.c").read_text()
    return "\n".join(out + [types] + tables + [functions, train, trainer_api(lib)]) + "\n"


def _training_defines(lib: Library) -> list:
    t, p = lib.training, lib.program
    rng = p.inputs.get("rng", -1)
    return [
        f"#define DLC_N_UPDATE_BUFFERS {len(t.update.buffers)}",
        f"#define DLC_N_TRAINED_PARAMS {t.trained}",
        f"#define DLC_N_FLAT {sum(_count(lib.param_shapes[n]) for n in lib.param_names)}",
        f"#define DLC_N_TRAINED {sum(_count(lib.param_shapes[n]) for n in lib.param_names[: t.trained])}",
        f"#define DLC_N_SLOTS {len(t.slots)}",
        f"#define DLC_N_SCALARS {len(t.scalar_names)}",
        f"#define DLC_N_GROUPS {len(t.groups)}",
        f"#define DLC_N_VALUES {len(train_values(lib))}",
        f"#define DLC_N_STATS {len(_stats(lib))}",
        f"#define DLC_N_GRADS {len(_grads(lib))}",
        f"#define DLC_PARAMETER_MAX_RANK {parameter_max_rank(lib)}",
        f"#define DLC_RNG_BUFFER {rng}",
        f"#define DLC_SEED {t.seed}",
        f"#define DLC_PER_EPOCH {t.schedule[0]}",
        f"#define DLC_TOTAL {t.schedule[1]}",
        f"#define DLC_OPTIMIZER {_c_string(t.optimizer)}",
        f"#define DLC_META {_c_string(t.meta)}",
        "#define DLC_TRAINING_STATE float *flat, *grads, *state[DLC_N_SLOTS + 1]; int32_t *group, key[2]; "
        "double scalars[DLC_N_SCALARS + 1]; void *update[DLC_N_UPDATE_BUFFERS + 1]; "
        "int64_t steps, per_epoch, total; int32_t seed;",
    ]


def parameter_max_rank(lib: Library) -> int:
    """The largest rank of a parameter (at least 1): set_parameter reads no more dims."""
    return max([len(lib.param_shapes[name]) for name in lib.param_names] + [1])


def _count(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def train_values(lib: Library) -> list:
    """The loss and metrics a train step gives: (name, buffer)."""
    return [(name, bid) for name, bid in lib.program.outputs.items() if not name.startswith(("update:", "grad:"))]


def _stats(lib: Library) -> list:
    """(parameter number, buffer) of each batch statistic the step updates."""
    return [
        (lib.param_names.index(name[7:]), bid)
        for name, bid in lib.program.outputs.items()
        if name.startswith("update:")
    ]


def _grads(lib: Library) -> list:
    """(parameter number, buffer) of each trained parameter's gradient, which the step writes
    into the flat gradient array. The train step graph has a gradient of every trainable
    parameter, a frozen one's too: that one stays in the arena (the gradient array holds
    the trained parameters alone; as the engine's)."""
    numbers = [
        (lib.param_names.index(name[5:]), bid) for name, bid in lib.program.outputs.items() if name.startswith("grad:")
    ]
    return [(k, bid) for k, bid in numbers if k < lib.training.trained]


# the update's buffers by role (library_train.c)
UPDATE_ROLES = (
    "UPDATE_UNUSED",
    "UPDATE_PARAM",
    "UPDATE_GRAD",
    "UPDATE_SLOT",
    "UPDATE_GROUP",
    "UPDATE_SCALAR",
    "UPDATE_CONST",
    "UPDATE_TEMP",
)


def _training_tables(lib: Library) -> list:
    from dlc.compiler.ir.update import GROUP
    from dlc.compiler.native.update import touched

    t = lib.training
    at, offsets = 0, []
    for name in lib.param_names:
        offsets.append(at)
        at += _count(lib.param_shapes[name])
    body = [
        "#include <math.h>",
        f"enum {{ {', '.join(UPDATE_ROLES)} }};",
        "typedef struct { int role, index; int64_t bytes; const void *data; } dlc_update;",
        "typedef struct { int64_t at, count; int32_t group; } dlc_group;",
        "typedef struct { const char *name; int buffer; } dlc_value;",
        "typedef struct { int param, buffer; } dlc_param_buffer;",
        f"static const int64_t FLAT_AT[] = {{{', '.join(map(str, offsets)) or '0'}}};",
        f"static const char *const SLOTS[] = {{{', '.join(map(_c_string, t.slots)) or '0'}}};",
    ]
    used, rows = touched(t.update), []
    for b in t.update.buffers:
        if b.id not in used:
            rows.append("{UPDATE_UNUSED, 0, 0, 0}")
        elif b.role == "input" and b.name in ("param", "grad", GROUP):
            rows.append(
                f"{{{({'param': 'UPDATE_PARAM', 'grad': 'UPDATE_GRAD', GROUP: 'UPDATE_GROUP'})[b.name]}, 0, 0, 0}}"
            )
        elif b.role == "input" and b.name in t.slots:
            rows.append(f"{{UPDATE_SLOT, {t.slots.index(b.name)}, 0, 0}}")
        elif b.role == "input":
            rows.append(f"{{UPDATE_SCALAR, {t.scalar_names.index(b.name)}, 0, 0}}")
        elif b.role == "const":
            data = np.ascontiguousarray(b.data.astype(BUFFER_DTYPES[b.dtype])).tobytes()
            body.append(
                f"static const unsigned char UCONST{b.id}[] __attribute__((aligned({ALIGN}))) = "
                f"{{{', '.join(map(str, data)) or '0'}}};"
            )
            rows.append(f"{{UPDATE_CONST, 0, 0, UCONST{b.id}}}")
        else:  # what the update computes on the way: the gradient's norm
            rows.append(f"{{UPDATE_TEMP, 0, {max(1, int(b.size)) * BUFFER_ITEMSIZE[b.dtype]}, 0}}")
    body.append(f"static const dlc_update UPDATE[] = {{{', '.join(rows)}}};")
    body.append(
        "static const dlc_group GROUPS[] = {"
        + ", ".join(f"{{{a}, {c}, {g}}}" for a, c, g in t.groups)
        + (" {0}" if not t.groups else "")
        + "};"
    )
    body.append(
        "static const dlc_value VALUES[] = {"
        + ", ".join(f"{{{_c_string(n)}, {bid}}}" for n, bid in train_values(lib))
        + (" {0}" if not train_values(lib) else "")
        + "};"
    )
    for table, rows in (("STATS", _stats(lib)), ("GRADS", _grads(lib))):
        body.append(
            f"static const dlc_param_buffer {table}[] = {{"
            + ", ".join(f"{{{k}, {bid}}}" for k, bid in rows)
            + (" {0}" if not rows else "")
            + "};"
        )
    return body


TABLES = "/* ---- the model's tables (library.py) go here ---- */\n"


def _predict_params(lib: Library) -> list:
    args = []
    for t in lib.inputs:
        args.append(
            f"const {C_TYPES[t.dtype]} *{_arg(t.name)}, const int64_t {_arg(t.name)}_shape[{max(1, len(t.shape))}]"
        )
    for t in lib.outputs:
        args.append(
            f"{C_TYPES[t.dtype]} *{_arg(t.name)}, int64_t {_arg(t.name)}_capacity, "
            f"int64_t {_arg(t.name)}_shape[{max(1, len(t.shape))}]"
        )
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
    create = "instance(model, checkpoint, NULL, 0)", "instance(model, NULL, checkpoint, size)"
    if lib.trainer is not None:
        create = "attach(model, checkpoint, NULL, 0)", "attach(model, NULL, checkpoint, size)"
    return (
        (train_forwarding(lib) if lib.trainer is not None else "")
        + f"""
{v} int {n}_create({n} **model, const char *checkpoint) {{ return {create[0]}; }}
{v} int {n}_create_from_memory({n} **model, const void *checkpoint, size_t size) {{
    return checkpoint ? {create[1]} : refused(model, "create_from_memory: the checkpoint is a null pointer");
}}
{v} void {n}_destroy({n} *model) {{ release(model); }}
{v} int {n}_set_threads({n} *model, int threads) {{
    if (!model) return DLC_ERROR_ARGUMENT;
    if (model->status) return model->status;        /* a failed create's message stays */
    if (threads < 1 || threads > {MOST_THREADS})
        return fail(model, DLC_ERROR_ARGUMENT, "set_threads: %d threads; give 1 to {MOST_THREADS}", threads);
    model->threads = threads;
    model->message[0] = 0;
    {f"{lib.trainer.name}_set_threads(model->trainer, threads);" if lib.trainer is not None else ""}
    return DLC_OK;
}}
{v} const char *{n}_error(const {n} *model) {{ return model ? model->message : "no model instance (a null pointer)"; }}
{v} int {n}_predict_arrays({n} *model, const void *const inputs[], const int64_t *const shapes[],
        void *const outputs[], const int64_t capacities[], int64_t *const output_shapes[]) {{
    return predict(model, inputs, shapes, outputs, capacities, output_shapes);
}}
{v} int {n}_output_shapes({n} *model, const int64_t *const shapes[], int64_t *const output_shapes[],
        int64_t counts[]) {{
    return outputs_for(model, shapes, output_shapes, counts);
}}
{v} const char *{n}_describe(void) {{ return {_c_string(description(lib))}; }}
{v} int {n}_predict({n} *model, {", ".join(_predict_params(lib))}) {{
    const void *inputs[] = {{{ins}}};
    const int64_t *shapes[] = {{{shapes}}};
    void *outputs[] = {{{outs}}};
    const int64_t capacities[] = {{{caps}}};
    int64_t *output_shapes[] = {{{oshapes}}};
    return predict(model, inputs, shapes, outputs, capacities, output_shapes);
}}
"""
    )


def _train_params(lib: Library) -> list:
    """train_step's parameters: each input of the train step (the model's inputs and
    targets), then where the loss and metrics go."""
    return [
        f"const {C_TYPES[t.dtype]} *{_arg(t.name)}, const int64_t {_arg(t.name)}_shape[{max(1, len(t.shape))}]"
        for t in lib.inputs
    ] + ["double *values", "int64_t values_capacity"]


# the train step unit's functions, hidden, which the predict unit's public ones call:
# (name, return type, parameters after the instance, the call's arguments)
TRAINER_FUNCTIONS = [
    (
        "set_schedule",
        "int",
        "int64_t steps_per_epoch, int64_t total_steps",
        "set_schedule(t, steps_per_epoch, total_steps)",
    ),
    (
        "get_parameter",
        "int",
        "const char *name, float *data, int64_t capacity, int64_t *shape, int *rank",
        "get_parameter(t, name, data, capacity, shape, rank)",
    ),
    (
        "set_parameter",
        "int",
        "const char *name, const float *data, const int64_t *shape, int rank",
        "set_parameter(t, name, data, shape, rank)",
    ),
    ("save", "int", "const char *path", "save(t, path)"),
]


def trainer_api(lib: Library) -> str:
    """The train step unit's functions (hidden: only the predict unit calls them)."""
    n, h = lib.name, '__attribute__((visibility("hidden")))'
    ins = ", ".join(f"{_arg(t.name)}" for t in lib.inputs) or "0"
    shapes = ", ".join(f"{_arg(t.name)}_shape" for t in lib.inputs) or "0"
    out = [
        f"""
{h} int {n}_create(void **trainer, const char *checkpoint, const void *bytes, size_t size) {{
    struct {n} *t;
    int status = instance(&t, checkpoint, bytes, size);
    *trainer = t;
    return status ? status : (t->status = start_training(t, checkpoint, bytes, size));
}}
{h} void {n}_destroy(void *trainer) {{ release(trainer); }}
{h} const char *{n}_error(void *trainer) {{ return ((struct {n} *)trainer)->message; }}
{h} void {n}_set_threads(void *trainer, int threads) {{ ((struct {n} *)trainer)->threads = threads; }}
{h} void *{n}_parameter(void *trainer, const char *name) {{
    int i = param_named(name);
    return i < 0 ? NULL : ((struct {n} *)trainer)->params[i];
}}
{h} int {n}_train_step(void *trainer, {", ".join(_train_params(lib))}) {{
    const void *inputs[] = {{{ins}}};
    const int64_t *shapes[] = {{{shapes}}};
    return train_step(trainer, inputs, shapes, values, values_capacity);
}}"""
    ]
    for name, ret, params, call in TRAINER_FUNCTIONS:
        out.append(f"{h} {ret} {n}_{name}(void *trainer, {params}) {{ struct {n} *t = trainer; return {call}; }}")
    return "\n".join(out) + "\n"


def _names(params: str) -> str:
    return ", ".join(re.findall(r"(\w+)(?:\[[^]]*\])?(?:,|$)", params))


def train_forwarding(lib: Library) -> str:
    """A --train library's public train functions, in the predict unit, on its instance's
    trainer; and `attach`, the create that makes both instances (their parameters shared)."""
    n, t, v = lib.name, lib.trainer.name, '__attribute__((visibility("default")))'
    train = lib.trainer
    decls = [
        f"int {t}_create(void **trainer, const char *checkpoint, const void *bytes, size_t size);",
        f"const char *{t}_error(void *trainer);",
        f"void {t}_set_threads(void *trainer, int threads);",
        f"void *{t}_parameter(void *trainer, const char *name);",
        f"int {t}_train_step(void *trainer, {', '.join(_train_params(train))});",
    ]
    decls += [f"{ret} {t}_{name}(void *trainer, {params});" for name, ret, params, _ in TRAINER_FUNCTIONS]
    calls = [("train_step", ", ".join(_train_params(train)))] + [
        (name, params) for name, _, params, _ in TRAINER_FUNCTIONS
    ]
    functions = []
    for name, params in calls:
        functions.append(f"""{v} int {n}_{name}({n} *model, {params}) {{
    if (!model) return DLC_ERROR_ARGUMENT;
    if (model->status) return model->status;
    int status = {t}_{name}(model->trainer, {_names(params)});
    weights_changed(model);     /* the weights are shared: any call may have changed them */
    if (status) fail(model, status, "%s", {t}_error(model->trainer));
    else model->message[0] = 0;
    return status;
}}""")
    return (
        "\n".join(decls)
        + f"""
/* both instances; the prediction's parameters are the train step's (one copy, which training updates) */
static int attach({n} **model, const char *checkpoint, const void *bytes, size_t size) {{
    int status = instance(model, checkpoint, bytes, size);
    if (status) return status;
    struct {n} *m = *model;
    status = {t}_create(&m->trainer, checkpoint, bytes, size);
    if (status) {{
        fail(m, status, "%s", m->trainer ? {t}_error(m->trainer) : "out of memory for the train step");
        return m->status = status;
    }}
    for (int i = 0; i < DLC_N_PARAMS; i++) {{
        void *shared = {t}_parameter(m->trainer, PARAMS[i].name);
        if (!shared) return m->status = fail(m, DLC_ERROR_WEIGHTS, "parameter %s is not the train step's", PARAMS[i].name);
        m->params[i] = shared;
    }}
    weights_changed(m);
    free(m->weights);
    m->weights = NULL;
    m->laid = 0;
    return DLC_OK;
}}
"""
        + "\n".join(functions)
        + "\n"
    )


def _train_header(lib: Library) -> str:
    """The train functions of a --train library's header (docs/deploy.md)."""
    if lib.trainer is None:
        return ""
    n, t = lib.name, lib.trainer
    values = train_values(t)
    names = "\n".join(
        f"#define {n.upper()}_VALUE_{c_name(name.replace('metric:', '')).upper()} {k}"
        for k, (name, _) in enumerate(values)
    )
    inputs = ", ".join(f"{x.name}: {x.type}" for x in t.inputs)
    params = "\n".join(f" *   {name}: f32{list(t.param_shapes[name])}" for name in t.param_names)
    rank = parameter_max_rank(t)
    return f"""
/* ---- training (dlc build --train) ----
 * parameters (every one f32; the first {t.training.trained} trained):
{params} */
#define {n.upper()}_TRAIN_VALUES {len(values)}      /* what train_step writes to values: */
{names}
#define {n.upper()}_PARAMETER_MAX_RANK {rank}
/* The learning-rate schedule's units: the steps of an epoch and of the whole run (the
 * schedule of the train block; every train_step needs them). */
int {n}_set_schedule({n} *model, int64_t steps_per_epoch, int64_t total_steps);
/* One step of the train block's optimizer on a batch ({inputs}): forward, backward, the
 * update at the schedule's learning rate; the loss and metrics go to values (NULL: not
 * wanted). The instance counts its steps; step k's random key is (seed, k), as dlc train's. */
int {n}_train_step({n} *model, {("," + chr(10) + "        ").join(_train_params(t))});
/* A parameter's values (capacity: how many floats data holds); its shape and rank go where
 * shape ({n.upper()}_PARAMETER_MAX_RANK dims) and rank point, unless NULL. */
int {n}_get_parameter({n} *model, const char *name, float *data, int64_t capacity, int64_t *shape, int *rank);
/* Set a parameter; its shape must be the model's. */
int {n}_set_parameter({n} *model, const char *name, const float *data, const int64_t *shape, int rank);
/* Write a checkpoint `dlc eval` and `dlc predict` read (the .npz of dlc train: parameters,
 * optimizer state, metadata). */
int {n}_save({n} *model, const char *path);
"""


def header(lib: Library, version: str) -> str:
    """NAME.h: the model's C API."""
    n, guard = lib.name, lib.name.upper() + "_H"
    status = "\n".join(
        f"    {code} = {k},{' ' * (20 - len(code))}/* {what} */" for k, (code, what) in enumerate(STATUS)
    )
    inputs = "\n".join(f" *   {t.name}: {t.type}" for t in lib.inputs)
    outputs = "\n".join(f" *   {t.name}: {t.type}" for t in lib.outputs)
    constants = "\n".join(header_constants(lib))
    if lib.int8:  # its scales were calibrated for the weights compiled in: create takes no checkpoint
        embedded = "its weights and int8 scales are inside: give NULL (it takes no checkpoint)"
    elif lib.weights is not None:
        embedded = "its weights are inside: give NULL (or a checkpoint's path to use that instead)"
    else:
        embedded = "give the path of a dlc checkpoint (.npz) or .safetensors file of the model"
    return f"""/* {n}.h: the C API of model {n}, built by dlc {version} (`dlc build`) for the
 * {lib.target} target. docs/deploy.md says what it guarantees.
 *
 * inputs (symbolic dims are bound by the shapes given at each call):
{inputs}
 * outputs:
{outputs}
 * {data_comment(lib)}
 *
 * Every function returns a status code; after a failure, {n}_error(model) says what was
 * wrong. An instance is used by one thread at a time; instances are independent and run
 * at once on their threads, each call on {n}_set_threads threads. */
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
{constants}

/* A model instance in *model. checkpoint: {embedded}. On failure *model is an instance
 * that holds the message ({n}_error) and fails every call: destroy it. */
int {n}_create({n} **model, const char *checkpoint);
/* The same from a checkpoint's bytes in memory (copied: the caller keeps them). */
int {n}_create_from_memory({n} **model, const void *checkpoint, size_t size);
void {n}_destroy({n} *model);
/* Threads of each later call: 1 to {MOST_THREADS} (default 1; docs/deploy.md says when more pay). */
int {n}_set_threads({n} *model, int threads);
/* What the last failed call of this instance said; "" after a success. */
const char *{n}_error(const {n} *model);
/* Outputs for inputs: each input is its data and its shape; each output its buffer, how
 * many elements that holds, and where its shape is written. */
int {n}_predict({n} *model, {("," + chr(10) + "        ").join(_predict_params(lib))});
/* The same with arrays, in the order above. */
int {n}_predict_arrays({n} *model, const void *const inputs[], const int64_t *const shapes[],
                       void *const outputs[], const int64_t capacities[], int64_t *const output_shapes[]);
/* The shape each output would have for inputs of these shapes (arrays in the order above),
 * and its element count in counts (unless NULL): nothing is run. */
int {n}_output_shapes({n} *model, const int64_t *const shapes[], int64_t *const output_shapes[], int64_t counts[]);
/* The inputs, outputs and training data described above, as one JSON object (static text). */
const char *{n}_describe(void);
{_train_header(lib)}
#ifdef __cplusplus
}}
#endif
#endif
"""


def header_constants(lib: Library) -> list:
    """The header's lines of constants of every input and output (_io_constants), and
    whether predict scales the inputs itself: docs/deploy.md shows them."""
    return (
        [line for t in lib.inputs for line in _io_constants(lib, t, "INPUT")]
        + [line for t in lib.outputs for line in _io_constants(lib, t, "OUTPUT")]
        + [
            f"#define {lib.name.upper()}_TRANSFORM {int(lib.transform)}   /* 1: predict multiplies each input by "
            "its _SCALE itself (--transform) */"
        ]
    )


def _io_constants(lib: Library, t: ModelIO, kind: str) -> list:
    """An input's or output's constants in the header: its rank, its dims (-1 for a dim
    bound at each call), each fixed dim alone; an input's scale (float) or its ids' bound
    (integer, when the model limits them)."""
    prefix = f"{lib.name.upper()}_{kind}_{c_name(t.name).upper()}"
    fixed = [isinstance(d, int) for d in t.shape]
    symbolic = ", ".join(f"dim {k}: {d}" for k, d in enumerate(t.shape) if not fixed[k])
    lines = [
        f"#define {prefix}_RANK {len(t.shape)}",
        f"#define {prefix}_DIMS {{{', '.join(str(d) if f else '-1' for d, f in zip(t.shape, fixed))}}}"
        + (f"   /* -1: given at each call ({symbolic}) */" if symbolic else ""),
    ]
    lines += [f"#define {prefix}_DIM_{k} {d}" for k, d in enumerate(t.shape) if fixed[k]]
    if kind == "INPUT" and t.dtype in ("f32", "f64"):
        lines.append(
            f"#define {prefix}_SCALE {float(t.scale)!r}   /* the training data's {t.name}: its values times this */"
        )
    if kind == "INPUT" and t.limits[0] is not None:
        lines.append(
            f"#define {prefix}_IDS {t.limits[0]}   /* its values: 0 to {t.limits[0] - 1}"
            + (f", or {', '.join(map(str, t.limits[1]))} (ignored)" if t.limits[1] else "")
            + " */"
        )
    return lines


def data_comment(lib: Library) -> str:
    """The header's words on the training data and its transform."""
    if lib.data is None:
        return "trained on: not said (the model's file has no train block with a data source)"
    scaled = [t for t in lib.inputs if t.scale != 1.0]
    what = "; ".join(f"its {t.name} is the source's values times {float(t.scale)!r}" for t in scaled)
    feed = (
        "predict multiplies by that itself (built with --transform): give the source's values"
        if lib.transform
        else "give predict the values so scaled (or build with --transform)"
    )
    return f"trained on: {lib.data}" + (f"\n *   {what}: {feed}" if scaled else " (no scale)")


def description(lib: Library) -> str:
    """NAME_describe's JSON: the inputs and outputs (name, dtype, shape: a number or the dim's
    text), each input's scale and ids, the training data and whether predict applies the
    scale itself."""

    def io(t: ModelIO, kind: str) -> dict:
        d = {"name": t.name, "dtype": t.dtype, "shape": [d if isinstance(d, int) else str(d) for d in t.shape]}
        if kind == "input":
            d["scale"] = float(t.scale)
            d["ids"] = None if t.limits[0] is None else {"below": t.limits[0], "ignored": list(t.limits[1])}
        return d

    return json.dumps(
        {
            "model": lib.name,
            "target": lib.target,
            "weights": "embedded" if lib.weights is not None else "checkpoint",
            "trains": lib.trainer is not None,
            "data": lib.data,
            "transform": lib.transform,
            "inputs": [io(t, "input") for t in lib.inputs],
            "outputs": [io(t, "output") for t in lib.outputs],
        }
    )
