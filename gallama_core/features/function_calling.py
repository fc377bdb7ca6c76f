"""Function calling for any model (tools, tool_choice, parallel_tool_calls)."""

from __future__ import annotations
