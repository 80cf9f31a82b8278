"""`edgeport-run serve`: the model as an HTTP service (the ``[serve]`` extra: Starlette, Uvicorn, prometheus-client).

Endpoints: ``POST /predict`` (JSON, .npy or an image), ``GET /health``, ``GET /info``, ``GET /metrics`` and a page
at ``/``. Importing this package does not import Starlette; :func:`create_app` and :func:`serve` do.
"""
from __future__ import annotations


def create_app(*args, **kwargs):
    """Load a model and build the ASGI app (see :func:`edgeport_runtime.serve.app.create_app`)."""
    from .app import create_app as _create

    return _create(*args, **kwargs)


def serve(*args, **kwargs) -> int:
    """Run the service until stopped (see :func:`edgeport_runtime.serve.server.serve`)."""
    from .server import serve as _serve

    return _serve(*args, **kwargs)


__all__ = ["create_app", "serve"]
