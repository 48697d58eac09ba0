"""Finite-difference gradient checks (float64, relative error < 1e-6) of every layer,
activation, attention form and loss of the standard library, without PyTorch."""

import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.runtime.training import gradcheck as gc

# name -> model body, over the inputs x: f32[B, T, 6] and img: f32[B, 2, 6, 6]
CASES = {
    "dense": "y = dense(x, 5, tanh)",
    "dense_no_bias": "y = dense(x, 5, bias = false)",
    "conv2d": "y = conv2d(img, 3, 3, padding = \"same\", act = tanh)",
    "conv2d_stride": "y = conv2d(img, 4, 2, stride = 2, padding = 1)",
    "conv1d": "y = conv1d(swapaxes(x, 1, 2), 4, 3, padding = 1, act = tanh)",
    "maxpool2d": "y = maxpool2d(conv2d(img, 2, 1), 2)",
    "avgpool2d": "y = avgpool2d(conv2d(img, 2, 1), 2, 1, 1)",
    "global_avg_pool": "y = global_avg_pool(conv2d(img, 3, 1))",
    "flatten": "y = dense(flatten(img), 3)",
    "dropout": "y = dropout(dense(x, 4), 0.3)",
    "batchnorm": "y = mean(batchnorm(conv2d(img, 3, 1))^3, (1, 2, 3)) + batchnorm(dense(x[:, 0], 4))[:, 0]",
    "layernorm": "y = layernorm(dense(x, 4)) * dense(x, 4)",
    "embedding": "input ids: i32[B, T]\n y = embedding(ids, 7, 3) * dense(x, 3)",
    "residual_block": "y = residual_block(conv2d(img, 3, 1), 4, 2) + mean(residual_block(img, 2))",
    "residual": "y = residual(dense(x, 6), tanh)",
    "rnn": "y = rnn(x, 4)",
    "rnn_reverse_state": "hs, h = rnn(x, 4, reverse = true, return_state = true)\n y = hs + expand_dims(h, 1)",
    "lstm": "y = lstm(x, 4)",
    "lstm_state": "hs, h, c = lstm(x, 3, return_state = true)\n y = lstm(x, 3, state = (h, c)) + expand_dims(c, 1)",
    "gru": "y = gru(x, 4, reverse = true)",
    "gru_reset_before": "y = gru(x, 4, reset_after = false)",
    "bidirectional": "y = bidirectional(x, gru, 3)",
    "stacked": "y = stacked(x, lstm, 3, 2, rate = 0.2)",
    "additive_attention": "c, w = additive_attention(x[:, 0], x, 5)\n y = dense(c, 2) * sum(w)",
    "multiplicative_attention": "c, w = multiplicative_attention(x[:, 0], x, \"general\")\n y = dense(c, 2)",
    "luong_attention": "c, w = luong_attention(dense(x, 4), x, \"general\")\n y = c",
    "scaled_dot_product": "q = dense(x, 4)\n y = scaled_dot_product_attention(q, q, dense(x, 3), causal_mask(T))",
    "multi_head_attention": "y = multi_head_attention(x, dense(x, 4), 2, causal_mask(T))",
    "self_attention": "y = self_attention(x, 3)",
    "sinusoidal_encoding": "y = dense(x, 4) * sinusoidal_encoding(T, 4)",
    "positional_embedding": "y = positional_embedding(dense(x, 4), 8)",
    "feed_forward": "y = feed_forward(x, 8)",
    "encoder_block_pre": "y = transformer_encoder_block(x, 2, 8, rate = 0.0)",
    "encoder_block_post": "y = transformer_encoder_block(x, 2, 8, rate = 0.0, pre_norm = false)",
    "decoder_block": "y = transformer_decoder_block(x, dense(x, 6), 3, 8, rate = 0.0, mask = causal_mask(T))",
    "transformer_encoder": "y = transformer_encoder(x, 2, 2, 8, rate = 0.0)",
    "transformer_decoder": "y = transformer_decoder(x, x, 1, 2, 8, rate = 0.0)",
}

ACTIVATIONS = [
    "identity",
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "gelu_exact",
    "swish",
    "silu",
    "softplus",
    "hard_sigmoid",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
]

LOSSES = {
    "mse": "loss mse(dense(x, 2), t)",
    "mae": "loss mae(dense(x, 2), t)",
    "huber": "loss huber(dense(x, 2), t * 3, 0.5)",
    "binary_cross_entropy": "loss binary_cross_entropy(dense(x, 2, sigmoid), sigmoid(t))",
    "binary_cross_entropy_with_logits": "loss binary_cross_entropy_with_logits(dense(x, 2), sigmoid(t))",
    "categorical_cross_entropy": "loss categorical_cross_entropy(dense(x, 2), softmax(t))",
    "sparse_cross_entropy": "loss sparse_cross_entropy(dense(x, 5), labels)",
    "perceptron_loss": "loss perceptron_loss(dense(x, 2), t)",
    "hinge": "loss hinge(dense(x, 2), t)",
    "l1": "loss mean(dense(x, 2)) + l1(params)",
    "l2": "loss mean(dense(x, 2)) + l2(params)",
}


def check(body: str, loss: str = "loss mean(y * y) + mean(y)"):
    src = f"""
model m {{
    input x: f32[B, T, 6]
    input img: f32[B, 2, 6, 6]
    input t: f32[B, T, 2]
    input labels: i32[B, T]
    {body}
    {loss}
}}"""
    model = load_text(src, "case.dl").build(training=True)
    params = gc.init_params(model, seed=1)
    feeds = gc.sample_inputs(model, {"B": 3, "T": 4}, seed=2)
    results = gc.gradcheck(model, feeds, params, per_param=6, seed=3)
    assert results, "no trainable parameters"
    bad = [r for r in results if not r.ok]
    assert not bad, bad


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer(name):
    check(CASES[name])


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation(name):
    check(f"y = {name}(dense(x, 5))")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss(name):
    check("", LOSSES[name])
