"""Evaluation: metric definitions, fairness group metrics, bootstrap intervals, the backdoor and
fairness evaluators, the attention-mediation check, plots and the report."""
