"""Gradient buckets: the allreduce of a data-parallel step overlapped with its backward pass.

The trained parameters' gradients (the outputs `grad:NAME`) are ordered by the kernel after
which each is final (the last to read or write it), and grouped in that order into buckets
of at least `size` bytes (the last bucket takes what is left). After each bucket's last
kernel a host call `gradient_bucket` hands the bucket to the host, which starts a
nonblocking allreduce of it while the step computes the rest of the backward pass (as
PyTorch's DistributedDataParallel and Horovod's tensor fusion do); after the program's last
kernel, `gradients_reduced` waits for them all, and the optimizer's update, which the
driver runs after the program, reads the averaged gradients (runtime/engines/distributed.py).
The engine lays the gradients out in bucket order, so that each bucket is one contiguous
range of its flat gradient array, which the host finds from the bucket's first buffer."""

from __future__ import annotations

from dlc.compiler.native.kernels.host_call import HostCallKernel
from dlc.compiler.native.program import KernelProgram

BUCKET = "gradient_bucket"  # host function: a bucket is final (its first gradient's buffer)
REDUCED = "gradients_reduced"  # host function: wait until every bucket is reduced


def gradient_buckets(prog: KernelProgram, size: int, trained: list) -> list:
    """Insert the host calls of buckets of at least `size` bytes of the gradients of the
    `trained` parameters into `prog`; returns the buckets, each a list of parameter names,
    in the order the step finishes them."""
    grads = {name: prog.outputs[f"grad:{name}"] for name in trained}
    if not grads:
        return []
    last = {}  # buffer -> the last top-level kernel that reads or writes it
    for i, k in enumerate(prog.kernels):
        for bid in _touched(k):
            last[bid] = i
    order = sorted(grads, key=lambda name: last.get(grads[name], -1))
    buckets, filled = [[]], 0
    for name in order:
        if filled >= size:
            buckets.append([])
            filled = 0
        buckets[-1].append(name)
        filled += 4 * int(prog.buffers[grads[name]].size)
    calls = []  # (after which kernel, the call)
    for bucket in buckets:
        bids = [grads[name] for name in bucket]
        after = max(last.get(bid, -1) for bid in bids)
        calls.append((after, HostCallKernel(prog.host(BUCKET).id, bids[0], tuple(bids[1:]))))
    everything = [grads[name] for name in order]
    calls.append((len(prog.kernels) - 1, HostCallKernel(prog.host(REDUCED).id, everything[0], tuple(everything[1:]))))
    for after, call in reversed(calls):  # from the back, so that the positions still hold
        prog.kernels.insert(after + 1, call)
    return buckets


def _touched(k) -> set:
    """The buffers a kernel, and the kernels it runs, read or write."""
    reads, writes = k.accesses()
    return set(reads) | set(writes) | set().union(*map(_touched, k.nested()))
