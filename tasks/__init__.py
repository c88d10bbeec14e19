"""Prefect tasks: one per pipeline stage, thin wrappers over `iro.pipeline.runner.Pipeline`."""
