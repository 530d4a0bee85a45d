"""Validity harness: measures whether riskgate's forecasts and verdicts predict real safety damage.

Run `python -m benchmarks.validity.run --out benchmarks/results/validity.json`; see run.py.
"""
