"""`dlc graph --format html`: one self-contained page to explore a model's graphs.

The page holds the forward graph and the train-step graph, each node in the box of the
call that made it (boxes.py), laid out by layout.py; the program's source; and the
native kernels each node went into, with their LLVM IR and the fusion's boundaries
(kernels.py). page.js only draws: no
network, no library. The data travel gzipped in the page (the LLVM IR of a ResNet's train
step alone is 2 MB of text) and the browser unpacks them (DecompressionStream).
"""
