"""Small programs the tests of the command line, checkpoints, data and progress share, and the
model file a test writes."""

XOR = """
model xor {
    input  x: f32[B, 2]
    target y: f32[B, 1]
    h = dense(x, 4, tanh)
    p = dense(h, 1, sigmoid)
    loss   binary_cross_entropy(p, y)
    metric accuracy = binary_accuracy(p, y)
    output prob = p
}
"""


# an encoder-decoder: a source and the decoder's input and target
ENC_DEC = """
model m {
    input  src: i32[B, S]
    input  dec_in: i32[B, T]
    target dec_out: i32[B, T]
    enc, h = rnn(embedding(src, 4, 5), 8, return_state = true)
    dec = rnn(embedding(dec_in, 4, 5), 8, state = (h,))
    logits = dense(dec, 4)
    loss   sparse_cross_entropy(logits, dec_out)
    output probs = softmax(logits)
}
"""

CLASSIFIER = """
model clf {
    input  x: f32[B, 2]
    target y: i32[B]
    logits = dense(dense(x, 16, tanh), 3)
    loss   sparse_cross_entropy(logits, y)
    metric accuracy = accuracy(logits, y)
}
"""


def write(
    tmp_path, text, train="train xor { data = xor() batch = 4 epochs = 2 optimizer = sgd(lr = 0.5) }", name="m.dl"
):
    path = tmp_path / name
    path.write_text(text + train + "\n")
    return str(path)
