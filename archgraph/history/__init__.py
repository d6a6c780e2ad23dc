"""A run's history: the run directory (written and read back in one place), replay, and its pictures, diffs, plots
and HTML report. Reading and replaying need no torch."""
