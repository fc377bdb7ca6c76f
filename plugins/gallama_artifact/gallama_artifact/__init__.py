"""gallama-artifact: answers as text parts and artifacts (Claude-style), plus a web UI at ``/artifact/``."""

__version__ = "0.1.0"
