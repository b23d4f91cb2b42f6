"""Sinks: where messages go."""
