"""/docs (Swagger UI) and /redoc, with their scripts, styles and icon served by the service
itself, so that both work on a machine without internet access. The files are those the
fastapi-offline package ships; FastAPI's own pages would fetch them from a CDN."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/docs/static"
_FILES = resources.files("fastapi_offline") / "static"

router = APIRouter(include_in_schema=False)


def add_docs(app: FastAPI) -> None:
    """Serve the docs pages and their files; the app is created with docs_url=None and
    redoc_url=None so that FastAPI does not add its CDN-backed pages."""
    app.mount(STATIC_URL, StaticFiles(directory=str(_FILES)), name="docs-static")
    app.include_router(router)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI: try the API from the browser."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
        # No badge from swagger.io's online validator: it would send the schema's URL there.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc: the API reference on one page."""
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
        with_google_fonts=False,
    )
