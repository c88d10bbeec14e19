"""Prefect flows: one IRO iteration, and the whole pipeline with its evaluation table."""
