"""Model builders: each is a function from the resolved run config to an untrained model.

Builders know nothing of searching: a study, keras-tuner and a YAML run file all hand them the same
mapping (see ``config.py``). Classification heads get their class range from the data (``Target``),
never from a typed-in number of classes. The built-in families (``FAMILIES``) follow the contract a plugin
follows (``plugins``): ``build(config, inputs, targets)``; ``family`` finds either.
"""

from __future__ import annotations

import keras
import numpy as np

from . import plugins
from .plugins import Family, InputSpec, Target, TargetSpec  # noqa: F401  (Target: where callers import it)


def _layers_values(value, count: int) -> list[int]:
    return list(value) if isinstance(value, list) else [value] * count


def _regularizer(m: dict):
    return keras.regularizers.L1L2(l1=m["l1"], l2=m["l2"]) if (m["l1"] or m["l2"]) else None


def _heads(x, m: dict, targets: list[Target], inputs):
    outputs = {}
    for t in targets:
        if m["head"] == "classification" and m.get("rows_offset") and t.name == "h11":
            logits = keras.layers.Dense(t.n_classes, name=f"{t.name}_offset")(x)
            outputs[t.name] = RowsOffset(t.low, name=t.name)([logits, inputs])
        elif m["head"] == "classification":
            outputs[t.name] = keras.layers.Dense(t.n_classes, activation="softmax", name=t.name)(x)
        else:
            # ReLU output (the literature's), its bias starting mid-range: with a zero bias the unit can start
            # dead (negative on every input, zero gradient), which happened for one seed in three.
            mid = keras.initializers.Constant((t.low + t.high) / 2)
            outputs[t.name] = keras.layers.Dense(1, activation="relu", bias_initializer=mid, name=t.name)(x)
    return outputs[targets[0].name] if len(targets) == 1 else outputs


@keras.saving.register_keras_serializable(package="cicy_search")
class RowsOffset(keras.layers.Layer):
    """h11 probabilities from scores of h11 minus the matrix's number of rows (``model.rows_offset``).

    Every CICY has h11 >= its number of projective factors (its non-zero rows; equal on the favourable ones,
    62% of the original list). Score k of the input logits is read as h11 = rows + k: it becomes the
    probability of class ``rows + k - low`` of the output, a softmax over the scores that land inside the class
    range. The row count is read from the matrix in the layer, so the model still takes the matrix alone, and
    it does not change under row or column permutations.
    """

    def __init__(self, low: int, **kwargs):
        super().__init__(**kwargs)
        self.low = low

    def call(self, inputs):
        from keras import ops

        logits, x = inputs
        entries = x if len(x.shape) == 3 else x[..., 0]
        rows = ops.sum(ops.cast(ops.sum(entries, axis=2) > 0, "int32"), axis=1)  # (B,)
        n = logits.shape[-1]
        target = ops.arange(n, dtype="int32")[None, :] + (rows - self.low)[:, None]  # (B, K): the class of score k
        inside = (target >= 0) & (target < n)
        logits = ops.where(inside, logits, ops.full_like(logits, -1e9))
        probs = ops.softmax(logits, axis=-1) * ops.cast(inside, logits.dtype)
        # Class c collects score k = c - (rows - low): one one-hot (K x C) placement per matrix.
        place = ops.one_hot(ops.where(inside, target, n), n + 1, dtype=logits.dtype)[..., :n]
        return ops.einsum("bk,bkc->bc", probs, place)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "low": self.low}


def _block_end(x, m: dict):
    if m["batch_norm"]:
        x = keras.layers.BatchNormalization()(x)
    return x


def _as_image(inputs, shape):
    """(rows, cols) matrices become one-channel images; inputs with feature channels already are images."""
    return keras.layers.Reshape((*shape, 1))(inputs) if len(shape) == 2 else inputs


def build_dense(m: dict, shape: tuple[int, int], targets: list[Target]):
    """Flatten -> depth x Dense(width) [-> BatchNorm] [-> Dropout] -> head(s)."""
    inputs = keras.Input(shape=shape, name="matrix")
    x = keras.layers.Flatten()(inputs)
    for width in _layers_values(m["width"], m["depth"]):
        x = keras.layers.Dense(width, activation=m["activation"], kernel_regularizer=_regularizer(m))(x)
        x = _block_end(x, m)
        if m["dropout"]:
            x = keras.layers.Dropout(m["dropout"])(x)
    return keras.Model(inputs, _heads(x, m, targets, inputs), name="dense")


def build_cnn(m: dict, shape: tuple[int, int], targets: list[Target]):
    """depth x [Conv2D [-> BatchNorm] [-> pooling]] -> Flatten -> dense_depth x Dense -> head(s)."""
    inputs = keras.Input(shape=shape, name="matrix")
    x = _as_image(inputs, shape)
    pool = {"max": keras.layers.MaxPooling2D, "avg": keras.layers.AveragePooling2D}.get(m["pool"])
    for filters in _layers_values(m["filters"], m["depth"]):
        x = keras.layers.Conv2D(
            filters,
            tuple(m["kernel_size"]),
            strides=tuple(m["strides"]),
            padding=m["padding"],
            activation=m["activation"],
            kernel_regularizer=_regularizer(m),
        )(x)
        x = _block_end(x, m)
        if pool is not None:
            x = pool(tuple(m["pool_size"]), padding="same")(x)
    x = keras.layers.Flatten()(x)
    for _ in range(m["dense_depth"]):
        x = keras.layers.Dense(m["dense_width"], activation=m["activation"], kernel_regularizer=_regularizer(m))(x)
    if m["dropout"]:
        x = keras.layers.Dropout(m["dropout"])(x)
    return keras.Model(inputs, _heads(x, m, targets, inputs), name="cnn")


def module_kernels(m: dict) -> list[list[list[int]]]:
    """The kernel shapes of each inception module (one set repeated, or one set per module)."""
    k = m["kernels"]
    return k if isinstance(k[0][0], list) else [k] * m["modules"]


def build_inception(m: dict, shape: tuple[int, int], targets: list[Target]):
    """Erbin & Finotello (arXiv 2007.13379): modules of parallel convolutions over rows and columns.

    Each module (``block: concat_norm``, the default): Conv2D(filters, k, 'same') with bias and activation
    for every kernel shape k, concatenated, then batch-normalised; then dropout, flatten and the head.
    Default: filters 32, 64, 32 with (12,1) and (1,15) kernels. ``block: talk`` is the block as the seed
    talk prints it (``_talk_module``): per branch a convolution without bias, batch norm without scale,
    then the activation, and the branches concatenated.
    """
    inputs = keras.Input(shape=shape, name="matrix")
    x = _as_image(inputs, shape)
    for i, (filters, kernels) in enumerate(zip(_layers_values(m["filters"], m["modules"]), module_kernels(m))):
        if m.get("block") == "talk":
            x = _talk_module(x, filters, kernels, m, i)
            continue
        branches = [
            keras.layers.Conv2D(
                filters, tuple(k), padding="same", activation=m["activation"], kernel_regularizer=_regularizer(m)
            )(x)
            for k in kernels
        ]
        x = keras.layers.Concatenate()(branches) if len(branches) > 1 else branches[0]
        x = _block_end(x, m)
    if m["dropout"]:
        x = keras.layers.Dropout(m["dropout"])(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, _heads(x, m, targets, inputs), name="inception")


def _talk_module(x, filters: int, kernels: list[list[int]], m: dict, index: int):
    """One inception block of the seed talk: per branch Conv2D (no bias) -> BatchNorm (no scale) -> activation.

    The batch norm's shift replaces the bias and the following ReLU makes a scale redundant, so the
    first block on a one-channel 12x15 image has ``b0_12x1_conv`` 12*32 = 384 and ``b0_1x15_conv``
    15*32 = 480 weights, and each batch norm 96 numbers (32 shifts, 32 moving means, 32 moving variances).
    ``batch_norm: false`` leaves the batch norm out.
    """
    branches = []
    for j, (kh, kw) in enumerate(kernels):
        name = f"b{index}_{kh}x{kw}" + (f"_{j}" if [kh, kw] in kernels[:j] else "")
        h = keras.layers.Conv2D(
            filters, (kh, kw), padding="same", use_bias=False, kernel_regularizer=_regularizer(m), name=f"{name}_conv"
        )(x)
        if m["batch_norm"]:
            h = keras.layers.BatchNormalization(scale=False, name=f"{name}_bn")(h)
        branches.append(keras.layers.Activation(m["activation"], name=f"{name}_{m['activation']}")(h))
    return keras.layers.Concatenate(name=f"b{index}_concat")(branches) if len(branches) > 1 else branches[0]


@keras.saving.register_keras_serializable(package="cicy_search")
class Exchangeable(keras.layers.Layer):
    """One exchangeable matrix layer (Hartford et al., ICML 2018) on the present entries of a padded matrix.

    out[i, j] = W0 x[i, j] + W1 pool_j x[i, :] + W2 pool_i x[:, j] + W3 pool_ij x + b, where the pools run
    over the present rows and columns only (``mask``). Permuting rows or columns of the input permutes the
    output the same way, and padding stays zero, so where the padding sits does not matter.
    """

    def __init__(self, units: int, pooling: str = "mean", **kwargs):
        super().__init__(**kwargs)
        self.units, self.pooling = units, pooling
        self.parts = [keras.layers.Dense(units, use_bias=(k == 0), name=f"w{k}") for k in range(4)]

    def build(self, input_shape):
        x_shape = input_shape[0]
        for layer in self.parts:
            layer.build(x_shape)

    def call(self, inputs):
        x, mask = inputs
        row = masked_pool(x, mask, axis=2, pooling=self.pooling)  # (B, R, 1, F)
        col = masked_pool(x, mask, axis=1, pooling=self.pooling)  # (B, 1, C, F)
        both = masked_pool(x, mask, axis=(1, 2), pooling=self.pooling)  # (B, 1, 1, F)
        out = self.parts[0](x) + self.parts[1](row) + self.parts[2](col) + self.parts[3](both)
        return out * mask

    def get_config(self):
        return {**super().get_config(), "units": self.units, "pooling": self.pooling}


def masked_pool(x, mask, axis, pooling: str):
    """Mean, sum or max of ``x`` over ``axis`` counting only entries where ``mask`` is 1 (keeps dims)."""
    from keras import ops

    if pooling == "max":
        return ops.max(x * mask - (1.0 - mask) * 1e9, axis=axis, keepdims=True) * ops.minimum(
            ops.max(mask, axis=axis, keepdims=True), 1.0
        )
    total = ops.sum(x * mask, axis=axis, keepdims=True)
    if pooling == "sum":
        return total
    return total / ops.maximum(ops.sum(mask, axis=axis, keepdims=True), 1.0)


@keras.saving.register_keras_serializable(package="cicy_search")
class MaskedPool(keras.layers.Layer):
    """Pools the present members of x over ``axes`` (all but batch and features): the invariant read-out."""

    def __init__(self, pooling: str = "mean", axes: tuple = (1,), **kwargs):
        super().__init__(**kwargs)
        self.pooling, self.axes = pooling, tuple(axes)

    def call(self, inputs):
        from keras import ops

        x, mask = inputs
        return ops.squeeze(masked_pool(x, mask, axis=self.axes, pooling=self.pooling), axis=self.axes)

    def get_config(self):
        return {**super().get_config(), "pooling": self.pooling, "axes": list(self.axes)}


@keras.saving.register_keras_serializable(package="cicy_search")
class MatrixEncoding(keras.layers.Layer):
    """Entries (first channel) one-hot over 0..max_entry or as a value, plus any feature channels; and the
    mask of present entries (rows and columns that are not padding)."""

    def __init__(self, embedding: str = "onehot", max_entry: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.embedding, self.max_entry = embedding, max_entry

    def call(self, x):
        from keras import ops

        if len(x.shape) == 3:
            x = ops.expand_dims(x, -1)
        entries = x[..., 0]
        rows = ops.cast(ops.sum(entries, axis=2, keepdims=True) > 0, x.dtype)
        cols = ops.cast(ops.sum(entries, axis=1, keepdims=True) > 0, x.dtype)
        mask = ops.expand_dims(rows * cols, -1)
        if self.embedding == "onehot":
            code = ops.one_hot(ops.cast(ops.minimum(entries, self.max_entry), "int32"), self.max_entry + 1)
            code = ops.cast(code, x.dtype)
        else:
            code = entries[..., None]
        return ops.concatenate([code, x[..., 1:]], axis=-1) * mask, mask

    def get_config(self):
        return {**super().get_config(), "embedding": self.embedding, "max_entry": self.max_entry}


@keras.saving.register_keras_serializable(package="cicy_search")
class Bipartite(keras.layers.Layer):
    """Message passing on the bipartite graph of rows (ambient factors) and columns (equations).

    An entry q_ij = v is an edge of type v between row i and column j (0 included: a present row and
    column that do not meet). Each row gathers its columns' states per edge type, pooled over the present
    columns, and updates its own state with one Dense layer; then each column does the same with the new
    row states. The whole matrix's state costs (rows + columns) x width instead of rows x columns x width.

    ``update_layers`` > 1 makes each update a stack of that many Dense layers: the pooled messages are a linear
    function of the neighbours' states, and one Dense layer on them cannot separate every pair of neighbourhoods
    that colour refinement separates (GIN, Xu et al. 2019, needs a multi-layer perceptron there).
    """

    def __init__(self, units: int, pooling: str = "mean", activation: str = "relu", update_layers: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.units, self.pooling, self.activation, self.update_layers = units, pooling, activation, update_layers
        self.row_update = self._update(units, activation, update_layers, "row")
        self.col_update = self._update(units, activation, update_layers, "col")

    @staticmethod
    def _update(units: int, activation: str, layers: int, name: str):
        if layers == 1:  # a bare Dense layer, as models saved before ``update_layers`` existed have
            return keras.layers.Dense(units, activation=activation, name=name)
        return keras.Sequential([keras.layers.Dense(units, activation=activation) for _ in range(layers)], name=name)

    def build(self, input_shape):
        (b, r, f), (_, c, _), (_, _, _, v) = input_shape[0], input_shape[1], input_shape[2]
        self.row_update.build((b, r, f + v * f + f))
        self.col_update.build((b, c, f + v * f + f))

    def _gather(self, edges, states, count):
        from keras import ops

        # edges (B, R, C, V), states (B, C, F) -> (B, R, V * F): per edge type, the pooled neighbour states
        msg = ops.einsum("brcv,bcf->brvf", edges, states)
        if self.pooling == "mean":
            msg = msg / ops.maximum(count, 1.0)[..., None]
        return ops.reshape(msg, (-1, msg.shape[1], msg.shape[2] * msg.shape[3]))

    def call(self, inputs):
        from keras import ops

        rows, cols, edges, row_mask, col_mask = inputs
        n_cols = ops.sum(col_mask, axis=1, keepdims=True)  # (B, 1, 1)
        n_rows = ops.sum(row_mask, axis=1, keepdims=True)
        glob = masked_pool(cols, col_mask, axis=1, pooling=self.pooling) + masked_pool(rows, row_mask, axis=1, pooling=self.pooling)
        rows_in = ops.concatenate([rows, self._gather(edges, cols, n_cols), ops.broadcast_to(glob, ops.shape(rows))], axis=-1)
        rows = (rows + self.row_update(rows_in)) * row_mask
        edges_t = ops.transpose(edges, (0, 2, 1, 3))
        cols_in = ops.concatenate([cols, self._gather(edges_t, rows, n_rows), ops.broadcast_to(glob, ops.shape(cols))], axis=-1)
        cols = (cols + self.col_update(cols_in)) * col_mask
        return rows, cols

    def get_config(self):
        return {
            **super().get_config(), "units": self.units, "pooling": self.pooling, "activation": self.activation,
            "update_layers": self.update_layers,
        }


@keras.saving.register_keras_serializable(package="cicy_search")
class BipartiteEncoding(keras.layers.Layer):
    """Edge types (one-hot entries on present rows x columns), masks, and initial row and column states
    (their sums of entries and any feature channels, pooled along the row or column)."""

    def __init__(self, max_entry: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.max_entry = max_entry

    def call(self, x):
        from keras import ops

        if len(x.shape) == 3:
            x = ops.expand_dims(x, -1)
        entries = x[..., 0]
        row_mask = ops.cast(ops.sum(entries, axis=2, keepdims=True) > 0, x.dtype)  # (B, R, 1)
        col_mask = ops.cast(ops.sum(entries, axis=1)[..., None] > 0, x.dtype)  # (B, C, 1)
        present = row_mask * ops.transpose(col_mask, (0, 2, 1))  # (B, R, C)
        edges = ops.cast(ops.one_hot(ops.cast(ops.minimum(entries, self.max_entry), "int32"), self.max_entry + 1), x.dtype)
        edges = edges * present[..., None]
        pm = present[..., None]
        rows = ops.concatenate([ops.sum(x * pm, axis=2) / ops.maximum(ops.sum(pm, axis=2), 1.0), ops.sum(edges, axis=2)], axis=-1)
        cols = ops.concatenate([ops.sum(x * pm, axis=1) / ops.maximum(ops.sum(pm, axis=1), 1.0), ops.sum(edges, axis=1)], axis=-1)
        return rows * row_mask, cols * col_mask, edges, row_mask, col_mask

    def get_config(self):
        return {**super().get_config(), "max_entry": self.max_entry}


def _build_bipartite(m: dict, inputs, targets: list[Target]):
    rows, cols, edges, row_mask, col_mask = BipartiteEncoding(name="encoding")(inputs)
    embed_rows = keras.layers.Dense(m["width"], activation=m["activation"], name="embed_rows")
    embed_cols = keras.layers.Dense(m["width"], activation=m["activation"], name="embed_cols")
    rows = keras.layers.Multiply()([embed_rows(rows), row_mask])
    cols = keras.layers.Multiply()([embed_cols(cols), col_mask])
    for k in range(m["depth"]):
        if m["norm"] == "layer":
            rows = keras.layers.LayerNormalization(name=f"norm_rows{k}")(rows)
            cols = keras.layers.LayerNormalization(name=f"norm_cols{k}")(cols)
        rows, cols = Bipartite(m["width"], m["pooling"], m["activation"], m["update_layers"], name=f"bipartite{k}")([rows, cols, edges, row_mask, col_mask])
        if m["dropout"]:
            rows, cols = keras.layers.Dropout(m["dropout"])(rows), keras.layers.Dropout(m["dropout"])(cols)
    pooled = keras.layers.Concatenate()(
        [MaskedPool(m["pooling"], (1,), name="pool_rows")([rows, row_mask]), MaskedPool(m["pooling"], (1,), name="pool_cols")([cols, col_mask])]
    )
    return _pooled_head(inputs, pooled, m, targets)


def _pooled_head(inputs, pooled, m: dict, targets: list[Target]):
    h = keras.layers.Dense(m["head_width"], activation=m["activation"], kernel_regularizer=_regularizer(m))(pooled)
    return keras.Model(inputs, _heads(_block_end(h, m), m, targets, inputs), name="equivariant")


def build_equivariant(m: dict, shape: tuple, targets: list[Target]):
    """A permutation-invariant network: entries -> depth x exchangeable blocks -> pooled head.

    Each block: [LayerNorm] -> Exchangeable(width) -> activation [-> Dropout], added to its input when
    ``residual``. The head pools every present entry (``pooling``) into one vector, then
    Dense(head_width) and the output(s). Predictions are unchanged (to float rounding) by any row or column
    permutation of the input, padding included (tests/test_models.py).
    """
    inputs = keras.Input(shape=shape, name="matrix")
    if m["layer"] == "bipartite":
        return _build_bipartite(m, inputs, targets)
    x, mask = MatrixEncoding(m["embedding"], name="encoding")(inputs)
    x = keras.layers.Dense(m["width"], kernel_regularizer=_regularizer(m), name="embed")(x)
    x = keras.layers.Multiply()([x, mask])
    for k in range(m["depth"]):
        h = keras.layers.LayerNormalization(name=f"norm{k}")(x) if m["norm"] == "layer" else x
        h = Exchangeable(m["width"], m["pooling"], name=f"exchangeable{k}")([h, mask])
        h = keras.layers.Activation(m["activation"])(h)
        if m["dropout"]:
            h = keras.layers.Dropout(m["dropout"])(h)
        x = keras.layers.Add()([x, h]) if m["residual"] else h
        x = keras.layers.Multiply()([x, mask])
    return _pooled_head(inputs, MaskedPool(m["pooling"], (1, 2), name="pool")([x, mask]), m, targets)


class SvmModel:
    """The kernel-method baseline (He et al.): one scikit-learn SVR/SVC per target on the flattened matrix."""

    def __init__(self, m: dict, targets: list[Target]):
        from sklearn.svm import SVC, SVR

        self.targets = targets
        self.head = m["head"]
        if m["head"] == "regression":
            make = lambda: SVR(kernel=m["kernel"], C=m["C"], gamma=m["gamma"], epsilon=m["epsilon"])  # noqa: E731
        else:
            make = lambda: SVC(kernel=m["kernel"], C=m["C"], gamma=m["gamma"])  # noqa: E731
        self.estimators = {t.name: make() for t in targets}

    def fit(self, x: np.ndarray, y: dict[str, np.ndarray]) -> "SvmModel":
        flat = x.reshape(len(x), -1)
        for name, est in self.estimators.items():
            est.fit(flat, y[name])
        return self

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        flat = x.reshape(len(x), -1)
        return {name: est.predict(flat) for name, est in self.estimators.items()}

    def count_params(self) -> int:
        """Stored numbers: support vectors times features plus their coefficients."""
        return int(sum(e.support_vectors_.size + e.dual_coef_.size for e in self.estimators.values()))


@keras.saving.register_keras_serializable(package="cicy_search")
class Ensemble(keras.Model):
    """Trained models of one config (``train.ensemble``), as one: its outputs are theirs averaged, target by
    target (softmax probabilities, or regression values). Saved and loaded as one model (``bundle``)."""

    def __init__(self, members, **kwargs):
        super().__init__(**kwargs)
        self.members = list(members)

    def call(self, inputs, training=False):
        outputs = [member(inputs, training=training) for member in self.members]
        return keras.tree.map_structure(lambda *each: keras.ops.mean(keras.ops.stack(each), axis=0), *outputs)

    def get_config(self):
        return {**super().get_config(), "members": [keras.saving.serialize_keras_object(m) for m in self.members]}

    @classmethod
    def from_config(cls, config):
        members = [keras.saving.deserialize_keras_object(m) for m in config.pop("members")]
        return cls(members, **config)


BUILDERS = {"dense": build_dense, "cnn": build_cnn, "inception": build_inception, "equivariant": build_equivariant}


def _contract(fn):
    """A built-in builder as a plugin's: ``build(config, inputs, targets)``, its keys the flat ``model.*`` ones."""

    def build(config: dict, inputs: InputSpec, targets: list[TargetSpec]):
        return fn(config["model"], inputs.shape, targets)

    build.__doc__ = fn.__doc__
    return build


FAMILIES = {name: Family(name, _contract(fn), module=__name__, builtin=True) for name, fn in BUILDERS.items()}
KNOWN = (*FAMILIES, "svm")


def family(name: str) -> Family:
    """The family ``model.family`` names: a built-in one, or a plugin (``plugins.load``)."""
    return FAMILIES[name] if name in FAMILIES else plugins.load(name, known=KNOWN)


def build(config: dict, shape: tuple[int, ...], targets: list[Target]):
    """The untrained model for a resolved config: a Keras model, or an ``SvmModel``."""
    m = config["model"]
    if m["family"] == "svm":
        return SvmModel(m, targets)
    specs = [TargetSpec(t.name, t.low, t.high, kind=m["head"]) for t in targets]
    return family(m["family"]).build_model(config, InputSpec.of(shape), specs)
