"""An example model plugin for cicy-search: self-attention over the entries of a configuration matrix.

Written against the public contract only (``cicy_search.plugins``); see ``model.py`` and
docs/tutorials/own-model.md. Put this folder's parent (``examples/``) on PYTHONPATH and name the family
``matrix_attention.model:build``.
"""

__version__ = "0.1.0"
