"""Adapters to other training frameworks (optional extras): :mod:`archgraph.integrations.lightning`."""
