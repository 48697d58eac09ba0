"""The same bits on any machine (docs/native.md): a few native Adam steps of an example
give bit-identical parameters on 1, 2, 3 and 7 threads and under DLC_TARGET=avx2 and the
host's own target (AVX-512 where the machine has it). Each configuration runs in its own
process, since the target is chosen once per process."""

import pytest

from helpers.same_bits import EXAMPLES, assert_bit_identical

# every kind of summation: reductions (softmax, layernorm, losses), GEMMs, the direct
# convolution's weight gradient, the small GEMM, scans
QUICK = ["char_transformer", "char_lstm", "lenet5", "digits_cnn"]


def test_quick_examples_train_to_the_same_bits_on_any_thread_count_and_target(tmp_path):
    assert_bit_identical(QUICK, tmp_path)


@pytest.mark.slow
def test_every_example_trains_to_the_same_bits_on_any_thread_count_and_target(tmp_path):
    assert_bit_identical(sorted(p.stem for p in EXAMPLES.glob("*.dl")), tmp_path)
