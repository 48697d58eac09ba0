"""The rule of each ONNX op type, by family; importing this package registers them all, so
`RULES` here is the complete registry. The rule API (`Node`, `rule`) is
compiler/onnx/rule_api/node.py.

- elementwise.py: the templates of the elementwise ops, and Div, Mod, Cast, Clip, ...
- formulas.py: Erf, Tanh, Sigmoid, Clip and ReduceMean, which recognise the formulas of
  GELU, SiLU, ReLU6 and layer norm around them
- shapes.py: Reshape, Transpose, Concat, Split, Expand, Tile, Pad, ...
- indexing.py: Slice, Gather, Scatter, OneHot, Trilu
- constants.py: Constant, ConstantOfShape, Range, EyeLike, Shape, Size
- reductions.py: the Reduce ops, ArgMax, Softmax, TopK, CumSum, Einsum
- normalization.py: BatchNormalization, LayerNormalization and the others
- layers.py: Gemm, MatMul, Conv, ConvTranspose, the pools, Resize
- recurrent.py: LSTM, GRU, RNN
- control.py: Scan

Patterns written as library calls (dense, conv2d, batchnorm, layernorm, gelu, silu, relu6,
lstm, gru, rnn)
absorb the nodes that follow them (an Add of the bias, an activation).
"""

from dlc.compiler.onnx.rule_api.node import RULES  # noqa: F401  (complete once the families below have run)
from dlc.compiler.onnx.rules import (
    constants,
    control,
    elementwise,
    indexing,
    layers,
    normalization,
    recurrent,
    reductions,
    shapes,
)
from dlc.compiler.onnx.rules import formulas  # noqa: F401,E402  (after the families: it goes before their rules)
