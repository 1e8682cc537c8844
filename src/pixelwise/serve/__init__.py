"""``pixelwise serve``: a model over HTTP (FastAPI + uvicorn) with a page to look at predictions.

>>> from pixelwise.serve import create_app, ServeSettings
>>> app = create_app(pixelwise.Segmenter.from_checkpoint("best.safetensors"), ServeSettings())

Needs the ``serve`` extra (``pip install 'pixelwise[serve]'``). See docs/serving.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pixelwise.errors import MissingExtraError

try:
    import fastapi  # noqa: F401  (say which extra is missing before anything else fails)
    import uvicorn
except ImportError as error:
    raise MissingExtraError("fastapi and uvicorn must be installed for pixelwise serve, got "
                            f"{error}; try pip install 'pixelwise[serve]'") from error

from pixelwise.serve.app import ServeSettings, create_app  # noqa: E402

__all__ = ["ServeSettings", "create_app", "serve"]
logger = logging.getLogger(__name__)


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000,
          settings: ServeSettings | None = None, tile_above: int = 1024,
          device: str = "auto") -> None:
    """Serve the ``.safetensors`` checkpoint or exported ``.onnx`` file ``model`` until
    interrupted. Images with a side above ``tile_above`` pixels go through tiled inference."""
    from pixelwise.inference.predict import Segmenter

    segmenter = Segmenter.from_checkpoint(model, device=device, tile_above=tile_above)
    app = create_app(segmenter, settings, source=str(model))
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s: reachable from other machines, with no authentication",
                       host)
    print(f"pixelwise serve: {model} on http://{host}:{port}/ (API docs at /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
