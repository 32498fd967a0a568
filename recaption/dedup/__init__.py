"""Duplicate finding as plain array algorithms, used by the ``dedup`` and ``semantic_dedup``
stages and by ``recaption index``: near 64-bit hashes (``hashes``), near texts (``text``),
groups from links (``groups``), reference indexes (``index``) and embeddings (``semantic``)."""
