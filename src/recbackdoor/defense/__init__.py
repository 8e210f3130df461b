"""defense layer."""
