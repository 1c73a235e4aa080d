"""Losses as pure functions of model outputs, each returning the trainer's
`(loss_sum, weight, metrics)`: the sum of per-example losses, the sum of example weights (the
trainer divides once by the total, so gradient accumulation is exact) and extra metrics as sums
(also divided by the total weight).

- `ranking`: next-item losses over item scores (SASRec's bce, gbce, sampled softmax, full ce).
- `lm`: the causal-LM next-token loss over packed rows.
- `contrastive`: in-batch InfoNCE between two embeddings of the same examples.

A new loss is a new function here (or a new module), called from a Task's `loss`; it never
imports a model, a task or the data pipeline.
"""
