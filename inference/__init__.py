"""Batch generation of paired defect datasets (used by ``infer.py``)."""
