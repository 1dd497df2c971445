"""toolkit: provision, benchmark and health-check self-hosted GPU nodes for LLM work."""

__version__ = "0.1.0"
