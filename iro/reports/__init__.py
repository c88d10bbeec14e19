"""Win-rate reports of a run's evaluation outputs: reward model, pairwise LLM judge, AlpacaEval.

Algorithms only, no Prefect: `flows/report.py` runs them on a schedule and mirrors the results.
"""
