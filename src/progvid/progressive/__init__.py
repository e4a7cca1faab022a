"""Temporal progressive learning: plans, exact budgets and the configuration search."""
