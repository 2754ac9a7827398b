"""Evaluation harnesses: data, metrics and runs (HotPotQA so far)."""
