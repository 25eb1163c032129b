"""Evaluation: metrics, analysis and reports."""
