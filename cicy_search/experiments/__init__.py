"""What trains and then reports: bias-variance, recipe comparisons, the results table, engine comparison, README figures."""
