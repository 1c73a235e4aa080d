"""Scaling laws: power-law fits of held-out loss against model and data size (`fit`), and the
sweep that makes the points (`sweep`, `python -m recjax.scaling --config=configs/scaling.py`).
"""
