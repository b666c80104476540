"""The cluster performance model in three parts: measure, model, report."""
