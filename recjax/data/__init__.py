"""Data: raw files -> canonical tables -> splits -> pipelines."""
