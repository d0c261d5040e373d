"""Figures and reports built from what tracking wrote."""
