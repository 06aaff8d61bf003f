"""Image Builder: trusted OCI image builds for CI callers."""

__version__ = "0.1.0"
