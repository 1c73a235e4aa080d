"""Scaling laws: power-law fits of held-out loss against model and data size (`fit`).

The sweep CLI (`python -m recjax.scaling`) and plots are not built yet (docs/curriculum.md).
"""
