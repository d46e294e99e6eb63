"""``segrefine serve``: a local web app to segment, refine and scribble in the browser.

- ``pipeline.py``: what happens to an uploaded image (no web framework in it);
- ``runs.py``: the runs under ``--runs`` and a cache of loaded models;
- ``jobs.py``: one background worker with progress the page polls, cancelling and a time
  budget per job;
- ``app.py``: the Starlette app (one page in ``static/`` and a JSON API), with the job
  routes in ``job_routes.py`` and JSON error replies in ``replies.py``;
- ``security.py``, ``inputs.py``, ``scribbles.py``: what the server trusts and checks;
- ``server.py``: serving it with uvicorn.
"""

from .app import create_app
from .server import serve

__all__ = ["create_app", "serve"]
