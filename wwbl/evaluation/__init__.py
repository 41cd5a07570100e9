"""Evaluation of wwbl on the papers' benchmarks: per-task processing and scoring (``tasks``), the
resumable runner (``evaluate``), the command (``python -m wwbl.evaluation``) and the table writers.

The metrics (``wwbl.metrics``) and the benchmark readers (``wwbl.readers``) live on the ground
floor, where training validation uses them too.
"""
