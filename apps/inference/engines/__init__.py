"""Model servers: the engine interface (``base``), the serving thread every backend shares
(``thread``), the backends (``fake``, ``transformers_backend`` with ``batching`` and ``decoder``,
``embeddings``, ``classifier``), and the per-process registry of loaded models (``registry``).

Importing this package does not import torch: backends are imported only when a worker first
needs one, so web processes never load them.
"""
