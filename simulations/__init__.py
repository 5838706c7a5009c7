"""Deterministic simulator, chaos runner, workloads and history checker."""
