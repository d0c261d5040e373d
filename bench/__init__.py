"""Benchmarks, one module each (``python -m bench.NAME``); ``python -m bench`` runs ``throughput``.

The training loop's (``cluster``, ``scale``, ``tracking`` and ``mlflow_requests`` measure workers and bookkeeping; see
their docstrings):

- ``bench.epoch``: seconds per epoch of the default dense and inception networks (the project's loop).
- ``bench.throughput``: dense, CNN, inception and SVM; the project's loop against plain ``model.fit`` in
  the same process, and the achieved FLOP rate against a matrix-multiply probe run alongside.
- ``bench.accuracy``: the fast loop's accuracy against ``model.fit``'s at fixed seeds and epochs.
- ``bench.pack``: several training processes sharing one device (GPU packing; CPU where there is none).

Results go to ``bench/results/*.json``. Timings on a shared machine are noisy: compare ratios measured in
one run, not figures from different runs.
"""
