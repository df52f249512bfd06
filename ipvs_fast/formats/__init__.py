"""Formats: CollectResults -> a planned text exposition.

One module per metric set (``ingress.py``: ingress_ipvs_exporter drop-in,
``node.py``: node_exporter drop-in, ``ipvs.py``: the full set), on shared
machinery: ``policy.py`` (cardinality controls, applied before rendering)
and ``exposition.py`` (label blocks, value columns, the planned
:class:`~ipvs_fast.formats.exposition.Body`). Every renderer has
``render_pieces(results, build_info, extra) -> Body``.
"""
