"""victims layer."""
