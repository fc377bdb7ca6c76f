"""The artifact web UI: plain HTML, CSS and JavaScript served from ``static/`` (no build step).

``GET /artifact/`` is a chat page that streams answers from ``/v1/chat/completions`` with ``artifact`` set
and renders artifacts in a side panel (code with syntax highlighting, text as text).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8"}


def ui_router() -> APIRouter:
    router = APIRouter(tags=["artifact", "public"])  # static files, readable without a key

    @router.get("/artifact", include_in_schema=False)
    async def redirect():
        return RedirectResponse("/artifact/")

    @router.get("/artifact/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type=MEDIA_TYPES[".html"],
                            headers={"Cache-Control": "no-cache"})

    @router.get("/artifact/static/{name}", include_in_schema=False)
    async def static(name: str):
        path = STATIC / name
        if "/" in name or "\\" in name or not path.is_file() or path.suffix not in MEDIA_TYPES:
            raise HTTPException(status_code=404, detail="not found")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})

    return router
