"""attack layer."""
