"""The core's default ``gallama_generate``: stream from the model's backend."""

from __future__ import annotations

from gallama_core import hookimpl


@hookimpl(trylast=True)
def gallama_generate(ctx, request):
    return ctx.backend.generate(request)
