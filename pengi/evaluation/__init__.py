"""Downstream evaluation: metrics (:mod:`pengi.evaluation.metrics`) and the task runners.

Submodules are imported explicitly (``from pengi.evaluation.metrics import caption_metrics``)
so that importing the package stays cheap.
"""
