"""FLOP counts of a Keras model, analytic from its layer shapes, with TensorFlow's profiler as a check.

Analytic: a multiply-add is 2 FLOP; Dense is 2 * inputs * units per sample and Conv2D is
2 * kh * kw * in_channels * filters per output position. Biases, activations, batch norm, pooling and the
optimizer are left out (a few percent). A training step costs about 3x the forward pass (the backward pass
computes gradients for both inputs and weights), an evaluation step 1x.
"""

from __future__ import annotations

import math

import keras

TRAIN_FACTOR = 3


def forward(model) -> int:
    """Forward FLOP per sample, from the layer shapes."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            positions = math.prod(layer.output.shape[1:3])
            total += 2 * kh * kw * layer.input.shape[-1] * layer.filters * positions
    return total


def per_epoch(model, n_train: int, n_val: int) -> int:
    """FLOP of one epoch: a training step over every training sample, an evaluation of every validation one."""
    f = forward(model)
    return TRAIN_FACTOR * f * n_train + f * n_val


def profiled_forward(model, shape: tuple[int, int]) -> int:
    """Forward FLOP per sample as TensorFlow's (v1) profiler counts them on the frozen inference graph."""
    import tensorflow as tf

    from cicy_search.compat import frozen_graph

    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec([1, *shape], tf.float32))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=frozen_graph(fn), options=options).total_float_ops
