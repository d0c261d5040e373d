"""Self-attention over the present entries of a configuration matrix, with row and column embeddings.

Every present entry q_ij is a token: an embedding of its value (one-hot, 0..MAX_ENTRY), plus an embedding of its
row (the row's degrees: its sum and how many equations it meets) and of its column (likewise). Tokens attend to
each other (padding masked out) in ``layers`` Transformer blocks; a masked mean over the tokens feeds one output
per target. Row and column embeddings are computed from the matrix, not from positions, so permuting rows or
columns permutes the tokens and leaves the prediction unchanged.
"""

from __future__ import annotations

import keras
from keras import ops

from cicy_search.plugins import Param, Params, builder, present_mask

MAX_ENTRY = 7


@keras.saving.register_keras_serializable(package="matrix_attention")
class EntryTokens(keras.layers.Layer):
    """(B, R, C[, channels]) -> tokens (B, R*C, features) and their mask (B, R*C): value one-hot, row and column degrees."""

    def call(self, x):
        mask = present_mask(x)  # (B, R, C, 1)
        entries = x if len(x.shape) == 3 else x[..., 0]
        value = ops.one_hot(ops.cast(ops.minimum(entries, MAX_ENTRY), "int32"), MAX_ENTRY + 1)
        value = ops.cast(value, x.dtype)
        row_sum = ops.sum(entries, axis=2, keepdims=True) + 0 * entries  # broadcast along the row
        row_deg = ops.sum(ops.cast(entries > 0, x.dtype), axis=2, keepdims=True) + 0 * entries
        col_sum = ops.sum(entries, axis=1, keepdims=True) + 0 * entries
        col_deg = ops.sum(ops.cast(entries > 0, x.dtype), axis=1, keepdims=True) + 0 * entries
        parts = [value, ops.stack([row_sum / 10, row_deg / 10, col_sum / 10, col_deg / 10], axis=-1)]
        if len(x.shape) == 4:
            parts.append(x[..., 1:])  # feature channels (data.features), if any
        tokens = ops.concatenate(parts, axis=-1) * mask
        n = x.shape[1] * x.shape[2]
        return ops.reshape(tokens, (-1, n, tokens.shape[-1])), ops.reshape(mask, (-1, n))


@keras.saving.register_keras_serializable(package="matrix_attention")
class MaskedMean(keras.layers.Layer):
    """The mean of the present tokens: (B, T, F), (B, T) -> (B, F)."""

    def call(self, tokens, mask):
        m = ops.expand_dims(mask, -1)
        return ops.sum(tokens * m, axis=1) / ops.maximum(ops.sum(m, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="matrix_attention")
class PairMask(keras.layers.Layer):
    """Token mask (B, T) -> attention mask (B, T, T): present tokens attend to present tokens."""

    def call(self, mask):
        return ops.cast(ops.expand_dims(mask, 2) * ops.expand_dims(mask, 1), "bool")


PARAMS = Params(
    width=Param.int(32, low=4, high=256, help="token features"),
    heads=Param.int(2, low=1, high=8, help="attention heads per block"),
    layers=Param.int(1, low=1, high=4, help="Transformer blocks"),
    dropout=Param.float(0.0, low=0.0, high=0.5, help="dropout in each block"),
)


@builder(params=PARAMS)
def build(config, inputs, targets):
    """Entry tokens -> ``layers`` x (multi-head self-attention + feed-forward, residual, layer norm) -> masked mean -> outputs."""
    p = config["model"]["params"]
    x_in = keras.Input(shape=inputs.shape, name="matrix")
    tokens, mask = EntryTokens(name="tokens")(x_in)
    h = keras.layers.Dense(p["width"], name="embed")(tokens)
    pairs = PairMask(name="pairs")(mask)
    for k in range(p["layers"]):
        a = keras.layers.MultiHeadAttention(p["heads"], max(1, p["width"] // p["heads"]), dropout=p["dropout"], name=f"attention{k}")(
            h, h, attention_mask=pairs
        )
        h = keras.layers.LayerNormalization(name=f"norm{k}a")(h + a)
        f = keras.layers.Dense(2 * p["width"], activation="relu", name=f"ff{k}a")(h)
        f = keras.layers.Dense(p["width"], name=f"ff{k}b")(f)
        h = keras.layers.LayerNormalization(name=f"norm{k}b")(h + f)
    pooled = MaskedMean(name="pool")(h, mask)
    outputs = {}
    for t in targets:
        if t.kind == "classification":
            outputs[t.name] = keras.layers.Dense(t.units, activation="softmax", name=t.name)(pooled)
        else:  # a value, its bias starting mid-range
            mid = keras.initializers.Constant((t.low + t.high) / 2)
            outputs[t.name] = keras.layers.Dense(1, bias_initializer=mid, name=t.name)(pooled)
    return keras.Model(x_in, outputs if len(targets) > 1 else outputs[targets[0].name], name="matrix_attention")
