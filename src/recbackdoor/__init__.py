"""recbackdoor: BadRec attacks and P-Scanner defenses for LLM recommenders."""

__version__ = "0.1.0"
