"""``segrefine serve``: a local web app to segment, refine and scribble in the browser.

- ``pipeline.py``: what happens to an uploaded image (no web framework in it);
- ``runs.py``: the runs under ``--runs`` and a cache of loaded models;
- ``jobs.py``: one background worker with progress the page polls;
- ``app.py``: the Starlette app (one page in ``static/`` and a JSON API).
"""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
