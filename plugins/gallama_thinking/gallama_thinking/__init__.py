"""gallama-thinking: XML thinking templates and the ``reasoning_content`` split for ``<think>`` models."""

__version__ = "0.1.0"
