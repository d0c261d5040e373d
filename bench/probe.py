"""What the hardware does at its best: the float32 matrix-multiply rate, measured in the same process."""

from __future__ import annotations

import time


def matmul_gflops(rows: int = 1024, size: int = 1024, *, seconds: float = 1.0) -> float:
    """GFLOP/s of ``(rows x size) @ (size x size)`` float32 products run back to back in one compiled loop.

    The default is the large square product (the CPU's peak); ``rows=32, size=128`` is one dense layer's
    product at batch 32.
    """
    import tensorflow as tf

    a = tf.random.stateless_normal((rows, size), seed=(1, 2))
    b = tf.random.stateless_normal((size, size), seed=(3, 4)) / size**0.5

    @tf.function
    def chain(times):
        x = a
        for _ in tf.range(times):  # each product feeds the next: none can be skipped
            x = tf.matmul(x, b)
        return tf.reduce_sum(x[:1, :1])

    chain(tf.constant(2)).numpy()  # trace and warm up
    times = 2
    while True:
        start = time.perf_counter()
        chain(tf.constant(times)).numpy()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or times >= 1 << 22:
            return 2 * rows * size * size * times / elapsed / 1e9
        times *= 2


if __name__ == "__main__":
    print(f"matmul 1024x1024: {matmul_gflops():.1f} GFLOP/s; 32x128 @ 128x128: {matmul_gflops(32, 128):.1f} GFLOP/s")
