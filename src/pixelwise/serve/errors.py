"""`RequestError`: a bad request, answered with its HTTP status and a one-line JSON error.

Everything a client can get wrong (not an image, too large, unknown format) raises this, and the
app turns it into `{"error": "...", "status": 4xx}`; the server itself never goes down for it.
"""

from __future__ import annotations

from pixelwise.errors import PixelwiseError


class RequestError(PixelwiseError, ValueError):
    """A request the server refuses, with the HTTP status to answer (always 4xx)."""

    def __init__(self, status: int, message: str) -> None:
        if not 400 <= status < 500:
            raise ValueError(f"status must be a 4xx client error, got {status}; try 400")
        super().__init__(message)
        self.status = status
