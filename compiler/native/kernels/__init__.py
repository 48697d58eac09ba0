"""The kinds of kernel a kernel program is made of, one module each: its class (the
fields lowering fills in) and its rules — its text, the buffers it touches, how its
function is built (compiler/native/program.py's `Kernel` says what each rule does).
A kind's loop nests are LLVM code, in compiler/native/loops.py or the GEMM library,
imported by its `emit` alone: lowering imports the kinds without loading LLVM."""
from dlc.compiler.native.kernels.accumulate import AccumulateKernel
from dlc.compiler.native.kernels.attention import AttentionKernel
from dlc.compiler.native.kernels.conv import ConvKernel
from dlc.compiler.native.kernels.gemm import GemmKernel, PackKernel
from dlc.compiler.native.kernels.host_call import HostCallKernel
from dlc.compiler.native.kernels.map import FusedMapKernel, MapKernel
from dlc.compiler.native.kernels.maxpool_grad import MaxPoolGradKernel
from dlc.compiler.native.kernels.reduce import ReduceKernel
from dlc.compiler.native.kernels.scan import ScanKernel
from dlc.compiler.native.kernels.scatter_add import ScatterAddKernel
from dlc.compiler.native.kernels.small_gemm import SmallGemmKernel
