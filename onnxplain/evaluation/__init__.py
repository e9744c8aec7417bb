"""Evaluating explanations: the metric functions (``metrics/``) and the method x metric runner."""
