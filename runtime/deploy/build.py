"""`dlc build MODEL.dl -o DIR`: the model's prediction as a native library with a C API.

The library is the native engine's own step module for the prediction graph (the module
`dlc predict --backend native` runs), with the GEMM routines, written out as objects
(jit.object_code) and linked with the C source runtime/deploy/library.py writes around
them: the same IR compiled by the same LLVM for the same CPU, so the same bits. DIR gets
libNAME.so (libNAME.dylib for macOS), libNAME.a, NAME.h, NAME.pc and a README with the compile line. With --train a
second unit holds the train block's step (`_trainer`, runtime/deploy/training.py), and the
library trains too.
"""

from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import dlc
from dlc.compiler.errors import DlcError, Span
from dlc.compiler.frontend.loader import load
from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.data import data_module
from dlc.runtime.deploy.library import ALIGN, Library, c_name, c_source, embedded_data, header, unbound_symbols, where
from dlc.compiler.native.memory import linearize
from dlc.runtime.deploy.description import interface
from dlc.runtime.deploy.toolchain import CFLAGS, find

_V3 = "+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,+avx,+avx2,+bmi,+bmi2,+f16c,+fma,+lzcnt,+movbe,+xsave"
_V4 = _V3 + ",+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl"
_X86, _ARM = "x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"
# --target: the triple, CPU and features the code is compiled for (None: this machine's)
TARGETS = {
    "host": None,
    "avx2": (_X86, "x86-64-v3", _V3),
    "avx512": (_X86, "x86-64-v4", _V4),
    # every CPU with AVX512_BF16 has AVX512_VNNI (Cooper Lake, Sapphire Rapids, Zen 4): int8's vpdpbusd
    "avx512bf16": (_X86, "x86-64-v4", _V4 + ",+avx512vnni,+avx512bf16"),
    "amx": (_X86, "x86-64-v4", _V4 + ",+avx512vnni,+avx512bf16,+amx-tile,+amx-bf16,+amx-int8"),
    **{level: (_ARM, *cpu) for level, cpu in jit.AARCH64_LEVELS.items()},  # aarch64, -dotprod, -i8mm, -bf16
    "macos-arm64": ("arm64-apple-macosx11.0.0", "apple-m1", jit.AARCH64_BASELINE[1]),
}
# the features a library checks at create (library.c cpu_features: cpuid on x86-64, the
# kernel's HWCAP on AArch64), those of its target among them
CHECKED = (
    "sse3",
    "ssse3",
    "sse4.1",
    "sse4.2",
    "popcnt",
    "cx16",
    "avx",
    "avx2",
    "bmi",
    "bmi2",
    "f16c",
    "fma",
    "lzcnt",
    "movbe",
    "xsave",
    "avxvnni",
    "avx512f",
    "avx512dq",
    "avx512cd",
    "avx512bw",
    "avx512vl",
    "avx512vnni",
    "avx512bf16",
    "amx-tile",
    "amx-bf16",
    "amx-int8",
    "fp-armv8",
    "neon",
    "crc",
    "lse",
    "rdm",
    "fullfp16",
    "dotprod",
    "i8mm",
    "bf16",
)


def _checked(features: list) -> list:
    """The features among `features` (LLVM's "+name") that a library checks at create."""
    return [f for f in CHECKED if f"+{f}" in features]


def _machine_targets() -> list:
    """(name, checked features) of the targets for the machine the code is compiled for
    (jit.target_triple), the most capable first: a CPU that refuses a library names the first
    whose every feature it has as the one to build for."""
    targets = [
        (t, _checked(spec[2].split(","))) for t, spec in TARGETS.items() if spec and spec[0] == jit.target_triple()
    ]
    return sorted(targets, key=lambda t: -len(t[1]))


@dataclass
class Built:
    """What `dlc build` wrote, and with what."""

    name: str
    files: list
    toolchain: str
    target: str
    embedded: bool
    train: bool = False
    transform: bool = False
    int8: int = 0  # its integer products (dlc build --int8)
    level: int = jit.OPT_LEVEL  # LLVM's level of its code: O3, quick or unoptimized (jit.settled_level)
    # what dlc build says of its input besides the build (a float32 build of a quantized checkpoint)
    notes: list = field(default_factory=list)


def build(
    file: str,
    out: Path,
    model: str | None = None,
    weights: str | None = None,
    target: str = "host",
    embed: bool = False,
    precision: str = "f32",
    toolchain: str = "auto",
    train: bool = False,
    overrides: dict | None = None,
    transform: bool = False,
    int8: bool = False,
) -> Built:
    """`train`: the library trains too (the train block's step, runtime/deploy/training.py),
    with `overrides` of the train block's settings (seed, epochs), as dlc train's flags.
    `transform`: predict (and train_step) multiply each input by the training data's scale
    (runtime/deploy/description.py) themselves. `int8`: its products are those of the
    quantized checkpoint `weights` (docs/quantization.md), compiled in with their weights
    and scales; the float32 parameters it still reads are embedded or read at create."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if overrides and not train:
        flag = f"--{next(iter(overrides))}"
        raise DlcError(f"{flag} is a setting of the train step: it goes with --train", Span.whole(flag))
    if target not in TARGETS:
        raise DlcError(f"--target must be one of {', '.join(TARGETS)}, not '{target}'", Span.whole("--target"))
    if embed and not weights:
        raise DlcError("--embed-weights needs the weights: give --weights CKPT", Span.whole("--embed-weights"))
    if int8 and (train or not weights):
        raise DlcError(
            "--int8 builds the prediction of a quantized checkpoint: give it as --weights Q.npz "
            "(dlc quantize makes one)" + ("; it does not train (no --train)" if train else "")
        )
    embed = embed or int8  # the quantization is compiled in: the float32 parameters with it
    level = jit.settled_level()  # O3, or quick or unoptimized code (DLC_QUICK_CODE)
    # before the compile: a missing toolchain is said at once
    tools = find(toolchain, TARGETS[target][0] if TARGETS[target] else "")
    if TARGETS[target] is not None:
        jit.compile_for(*TARGETS[target])
    features = jit.host_cpu()[1].split(",")
    face = interface(load(file), model)
    eval_model, graph = face.model, face.graph
    if transform and not any(t.scale != 1.0 for t in face.inputs):
        raise DlcError(
            f"--transform: the training data of {eval_model.name} ({face.data or 'no train block data source'})"
            " scales no input: there is no transform to compile in"
        )
    from dlc.compiler.native.lower import lower
    from dlc.compiler.passes.optimize import optimize

    quantization = None
    if int8:
        from dlc.runtime.interop import quantized

        quantization, _ = quantized.load(weights, eval_model, Path(file).read_text())
    # kept packed until a weight is set
    program = lower(optimize(graph), precision, pack_weights="once", int8=quantization)
    _refuse_host_calls(program)
    inputs, outputs = [t for t in face.inputs if t.name in program.inputs], face.outputs
    params = {p.name: p for p in eval_model.params}
    arrays, notes = None, []
    if weights:
        from dlc.runtime.interop.weights import load as load_weights

        arrays, meta = load_weights(weights, eval_model.params)
        if not int8 and "quantization" in meta:
            from dlc.runtime.interop import quantized

            notes.append(quantized.read_in_float32(weights))
    from dlc.compiler.native.codegen.driver import build_module

    built = build_module(program, "dlc_step")
    name = c_name(eval_model.name)
    lib = Library(
        name,
        program,
        built.arguments,
        inputs,
        outputs,
        *_checks(graph, program),
        step=f"{name}__dlc_step",
        target=target,
        features=_checked(features),
        machine_targets=_machine_targets(),
        uses_amx="+amx-tile" in features,
        param_shapes={k: tuple(int(d) for d in params[k].type.shape) for k in program.params},
        weights={k: arrays[k] for k in program.params} if embed else None,
        known=[p for p in params if p not in program.params],
        data=face.data,
        transform=transform,
        int8=int8,
    )
    lib.module = built.module
    units = [lib]
    if train:
        lib.trainer = _trainer(
            lib, file, model, weights if embed else None, overrides, {t.name: t.scale for t in face.inputs}
        )
        units.append(lib.trainer)
    for unit in units:
        missing = unbound_symbols(unit)
        if missing:
            raise DlcError(
                f"no input of {name} gives the size of {', '.join(missing)} by a dim of its own: a "
                "library binds each symbolic dim from an input's shape"
            )
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DlcError(f"cannot make the folder {out}: {e.strerror}") from None
    with tempfile.TemporaryDirectory(prefix="dlc-build-") as tmp:
        objects = _objects(lib.name, units, Path(tmp), level)
        (out / f"{name}.h").write_text(header(lib, dlc.__version__))
        for unit in units:
            objects.insert(0, _c_object(tools, unit, c_source(unit), out, Path(tmp)))
        tools.shared(objects, out / f"lib{name}{tools.suffix}")
        tools.archive(objects, out / f"lib{name}.a")
    (out / f"{name}.pc").write_text(_pkg_config(lib, tools))
    (out / "README.md").write_text(_readme(lib, tools, out))
    files = [out / f for f in (f"lib{name}{tools.suffix}", f"lib{name}.a", f"{name}.h", f"{name}.pc", "README.md")]
    return Built(name, files, tools.name, target, embed, train, transform, len(quantization or ()), level, notes=notes)


def _trainer(lib: Library, file: str, model: str | None, weights: str | None, overrides: dict, scales: dict) -> Library:
    """The train step's unit of a --train library (runtime/deploy/training.py); `weights`: to
    embed; `scales`: the inputs' (multiplied in with --transform, as predict's)."""
    from dlc.compiler.native.codegen.driver import build_module
    from dlc.compiler.native.lower import lower
    from dlc.compiler.passes.optimize import optimize
    from dlc.runtime.deploy.training import train_parts

    graph, precision, training, order, shapes, inputs = train_parts(file, model, overrides)
    program = lower(optimize(graph), precision)
    _refuse_host_calls(program)
    built = build_module(program, "dlc_step", update=training.update)
    arrays = None
    if weights:
        from dlc.compiler.frontend.loader import load
        from dlc.runtime.interop.weights import load as load_weights

        arrays, _ = load_weights(weights, load(file).build(model, training=True).params)
    name = f"{lib.name}__trainer"
    kept = [replace(t, scale=scales.get(t.name, 1.0)) for t in inputs if t.name in program.inputs]
    unit = Library(
        name,
        program,
        built.arguments,
        kept,
        [],
        *_checks(graph, program),
        step=f"{name}__dlc_step",
        target=lib.target,
        features=lib.features,
        machine_targets=lib.machine_targets,
        uses_amx=lib.uses_amx,
        param_shapes=shapes,
        weights=arrays,
        param_order=order,
        training=training,
        data=lib.data,
        transform=lib.transform,
    )
    unit.module, unit.header_name = built.module, lib.name
    return unit


def _checks(graph, program) -> tuple:
    """(the size constraints, the index checks) of a library's step, with their lines."""
    from dlc.runtime.engines.interpreter import size_constraints, size_need

    return (
        [
            (d, least, op, where(span), *size_need(d, least))
            for d, least, op, span in size_constraints(graph)
            if not any(s.startswith("$") for s in d.symbols())
        ],  # with a scan step: nor does the engine check it
        [(what, count, where(span)) for what, count, span in program.faults],
    )


def _refuse_host_calls(program):
    """A host call is a Python function inside the step (a data-parallel run's allreduce):
    no library has one."""
    for _, k, _ in linearize(program.kernels):
        if k.class_name == "HostCall":
            op, span = k.origin[0] if k.origin else ("host call", None)
            raise DlcError.at_user_line(
                f"`{op}` calls back into Python (a host call, as a data-parallel run's "
                "allreduce): it cannot go in a library",
                span,
            )


def _objects(name: str, units: list, tmp: Path, level: int) -> list:
    """The step objects at O`level` of the units (Library each, with its step module), the GEMM and thread
    pool objects and the data objects, their symbols named after the unit (two models'
    libraries link into one program, and a --train library's two step modules into one
    library) and hidden (the library exports its C API only)."""
    from dlc.compiler.native.codegen import threadpool
    from dlc.compiler.native.codegen.gemm.buffers import thread_local_buffers
    from dlc.compiler.native.codegen.gemm.library import gemm_module, program_configs, routine_names
    from dlc.runtime.engines.cache import built_object, object_cached

    configs = program_configs()
    # one GEMM and one pool per library, named after it; the step modules call them by those names
    routines = set(routine_names(configs))
    shared = routines | {threadpool.RUN, threadpool.STOP}

    def named(ref):
        for g in [*ref.functions, *ref.global_variables]:
            if g.name in shared:
                g.name = f"{name}__{g.name}"
                g.visibility = "hidden"
        return jit.object_code(ref, level)

    steps = [jit.parse(unit.module) for unit in units]
    # only the GEMM routines the steps call (an int8 model's may call none): a smaller library,
    # and a build that compiles a few routines, not all of them
    called = frozenset(f.name for ref in steps for f in ref.functions if f.is_declaration and f.name in routines)
    # instances on different threads run at once: each thread packs into its own buffers
    gemm = built_object(
        ("library GEMM", name, configs, sorted(called), level),
        lambda: named(jit.parse(thread_local_buffers(str(gemm_module(configs, called))))),
    )
    pool = built_object(("library pool", name, level), lambda: named(jit.parse(threadpool.pool_module())))
    objects = [(gemm, "gemm"), (pool, "pool")]
    for unit, ref in zip(units, steps):
        for g in [*ref.functions, *ref.global_variables]:
            if g.name in shared:
                g.name = f"{name}__{g.name}"
            elif not g.is_declaration and g.linkage.name == "external":
                g.name = f"{unit.name}__{g.name}"
                g.visibility = "hidden"
        # the code from the compile cache when a build made it before
        objects.append((object_cached(ref, level), f"{unit.name}_step"))
    for unit in units:
        ref = jit.parse(data_module(f"{unit.name}_data", embedded_data(unit), ALIGN))
        for g in ref.global_variables:
            g.visibility = "hidden"
        objects.append((jit.object_code(ref, 0), f"{unit.name}_data"))  # the weights: never cached
    paths = []
    for obj, what in objects:
        path = tmp / f"{what}.o"
        path.write_bytes(obj)
        paths.append(path)
    return paths


def _c_object(tools, unit: Library, source: str, include: Path, tmp: Path) -> Path:
    """The unit's C source compiled (against the header in `include`), from the compile
    cache when a build compiled the same source and header with the same compiler and flags."""
    from dlc.runtime.engines.cache import object_entry

    path, obj = tmp / f"{unit.name}.c", tmp / f"{unit.name}.o"
    header = (include / f"{unit.header_name or unit.name}.h").read_text()

    def compiled() -> bytes:
        path.write_text(source)
        tools.compile(path, obj, include)
        return obj.read_bytes()

    obj.write_bytes(
        object_entry("\n".join(["C object", shlex.join(tools.cc + CFLAGS), header, source]), ".c.o", compiled)
    )
    return obj


def _pkg_config(lib: Library, tools) -> str:
    return (
        f"prefix=${{pcfiledir}}\nlibdir=${{prefix}}\nincludedir=${{prefix}}\n\n"
        f"Name: {lib.name}\nDescription: model {lib.name} compiled by dlc build ({lib.target})\n"
        f"Version: {dlc.__version__}\nLibs: -L${{libdir}} -l{lib.name}\n"
        f"Libs.private: {' '.join(tools.libs)}\nCflags: -I${{includedir}}\n"
    )


def _readme_cross(tools, cc: str) -> str:
    """What the README says of a library for another machine: the compiler of its programs,
    and on Linux how to run them here under qemu."""
    if not tools.cross:
        return ""
    arch = tools.cross.split("-")[0]
    if tools.macos:
        return f"""
The library is for {tools.cross}, not this machine: the lines above cross-compile with zig cc, from
the ziglang package (`pip install ziglang` puts no `zig` on PATH: it runs as `python -m ziglang`,
with the Python it is installed in).
"""
    return f"""
The library is for {arch} Linux, not this machine: the lines above cross-compile with zig cc, from
the ziglang package (`pip install ziglang` puts no `zig` on PATH: it runs as `python -m ziglang`,
with the Python it is installed in). A GCC cross compiler does the same: `{tools.cross}-gcc` in
place of `{cc}` (Debian: apt install gcc-{arch}-linux-gnu).

Run here, under emulation, the program needs qemu-user and the {arch} C library (Debian's
libc6-arm64-cross for aarch64), and qemu is told where that library is, by `-L` or
QEMU_LD_PREFIX (without it: `Could not open '/lib/ld-linux-{arch}.so.1'`):

    qemu-{arch} -L /usr/{tools.cross} ./main
"""


def _readme(lib: Library, tools, out: Path) -> str:
    n, folder = lib.name, shlex.quote(str(out.resolve()))
    weights = (
        "The weights are inside the library: `%s_create(&model, NULL)`." % n
        if lib.weights is not None
        else f"Give `{n}_create` the path of a dlc checkpoint of the model (`dlc train` writes one)."
    )
    trains = (
        f" It trains too (`--train`): `{n}_train_step`, `{n}_get_parameter`, `{n}_set_parameter`, `{n}_save` "
        "(docs/deploy.md, Training from C)."
        if lib.trainer is not None
        else ""
    )
    cc = shlex.join(tools.cc)
    return f"""# {n}: a dlc library

Built by dlc {dlc.__version__} (`dlc build`, target {lib.target}, {tools.name}). The API is in `{n}.h`;
docs/deploy.md of dlc describes it. {weights}{trains}

Compile and link a C program against the shared library (the run-time search path is
this folder's absolute path, so the program finds the library from any working folder;
with `-Wl,-rpath,'$ORIGIN/PATH'`, PATH the library's folder relative to the program's,
the two can move together):

    {cc} -O2 main.c -I{folder} -L{folder} -l{n} -Wl,-rpath,{folder} -o main

or against the static one (which needs libm and libpthread):

    {cc} -O2 main.c -I{folder} {folder}/lib{n}.a {' '.join(tools.libs)} -o main

or with pkg-config: `PKG_CONFIG_PATH={folder} pkg-config --cflags --libs {n}`.
{_readme_cross(tools, cc)}
What the inputs mean (the training data and its scale) is in `{n}.h` and `{n}_describe()`.

At run time the library needs libc, libm and libpthread,
nothing of Python, dlc or LLVM.
"""
