"""The project's own errors: an HTTP status and a message safe to show a client.

Third-party exceptions are mapped to these at one boundary per dependency
(origin/s3.py for botocore and aiohttp, presign.py for Redis); handlers only
ever see ``GatewayError``.
"""

from __future__ import annotations


class GatewayError(Exception):
    status = 500
    public_message = "internal error"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.public_message)
        self.detail = detail or self.public_message


class BadRequest(GatewayError):
    status = 400
    public_message = "bad request"


class NotFound(GatewayError):
    status = 404
    public_message = "image not found"


class OriginError(GatewayError):
    """The origin failed or answered something we refuse to serve.

    ``retryable`` marks failures of availability (5xx, connection lost) that a
    retry may cure, as opposed to answers that would be the same next time.
    """

    status = 502
    public_message = "origin error"

    def __init__(self, detail: str | None = None, *, retryable: bool = False) -> None:
        super().__init__(detail)
        self.retryable = retryable


class OriginTimeout(OriginError):
    status = 504
    public_message = "origin timed out"


class OriginUnavailable(OriginError):
    """The circuit breaker is open: the origin failed repeatedly, we are not asking it."""

    public_message = "origin unavailable"


class UnsupportedMedia(OriginError):
    """The origin object is not an allowed image type."""

    public_message = "origin object is not an allowed image type"


class TooLarge(OriginError):
    public_message = "origin object is too large"


class Busy(GatewayError):
    status = 503
    public_message = "busy, retry shortly"


class Unavailable(GatewayError):
    """A dependency needed for this operation (not for serving) is down."""

    status = 503
    public_message = "dependency unavailable, retry later"
