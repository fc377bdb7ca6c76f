"""The Anthropic Messages API (``/v1/messages``): an adapter over the chat pipeline."""
