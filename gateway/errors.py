"""The project's own errors: an HTTP status and a message safe to show a client.

Third-party exceptions are mapped to these at one boundary per dependency
(origin/s3.py for botocore and aiohttp, cluster/redis.py for Redis); handlers
only ever see ``GatewayError``. Every error the gateway raises is declared here,
each with its status and public message as class arguments.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    status: ClassVar[int] = 500
    public_message: ClassVar[str] = "internal error"
    #: The detail tells the client what was wrong with its request (and never echoes
    #: the request): it is the answer. Otherwise the detail is for the log only.
    detail_is_public: ClassVar[bool] = False
    #: Logged already (or on purpose not): the edge answers it without a log line.
    quiet: bool = False

    def __init_subclass__(cls, *, status: int | None = None, message: str | None = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if message is not None:
            cls.public_message = message

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.public_message)
        self.detail = detail or self.public_message

    @property
    def answer(self) -> str:
        """The message the client gets."""
        return self.detail if self.detail_is_public else self.public_message


# -- the client's request ---------------------------------------------------------------

class BadRequest(GatewayError, status=400, message="bad request"):
    detail_is_public = True  # "w must be one of 32, 48, ...": what to fix


class NotFound(GatewayError, status=404, message="image not found"):
    pass


class NotAnImage(GatewayError, status=415,
                 message="upload is not a supported image (png, jpeg, gif, webp, avif)"):
    """An upload whose bytes are not an image type the gateway serves."""


class UploadsUnsupported(GatewayError, status=501,
                         message="the configured origin does not accept uploads"):
    pass


# -- the origin -------------------------------------------------------------------------

class OriginError(GatewayError, status=502, message="origin error"):
    """The origin failed or answered something we refuse to serve.

    ``retryable`` marks failures of availability (5xx, connection lost) that a
    retry may cure, as opposed to answers that would be the same next time.
    """

    def __init__(self, detail: str | None = None, *, retryable: bool = False) -> None:
        super().__init__(detail)
        self.retryable = retryable


class OriginTimeout(OriginError, status=504, message="origin timed out"):
    pass


class LockTimeout(OriginTimeout, message="timed out waiting for the origin"):
    """A single-flight waited longer than ``fetch.lock_timeout`` for its leader."""


class OriginUnavailable(OriginError, message="origin unavailable"):
    """The circuit breaker is open: the origin failed repeatedly, we are not asking it."""


class UnsupportedMedia(OriginError, message="origin object is not an allowed image type"):
    """The origin object is not an allowed image type."""


class TooLarge(OriginError, message="origin object is too large"):
    pass


# -- capacity and dependencies ------------------------------------------------------------

class Busy(GatewayError, status=503, message="busy, retry shortly"):
    pass


class Unavailable(GatewayError, status=503, message="dependency unavailable, retry later"):
    """A dependency needed for this operation (not for serving) is down."""


class AliasesFull(GatewayError, status=507,
                  message="alias store full: without redis.url one process keeps a "
                          "bounded number of aliases; remove one first"):
    """Without Redis the process's own map is the only copy of the aliases: a new one
    beyond its bound is refused rather than silently dropping the oldest."""


# -- variants ----------------------------------------------------------------------------

class TransformError(GatewayError, status=422, message="image cannot be transformed"):
    """The stored picture cannot be made into the asked-for variant."""


class TooManyPixels(TransformError,
                    message="image is too large to transform (transform.max_pixels)"):
    pass


class Undecodable(TransformError, message="image data is corrupt, truncated or of a type "
                                          "that cannot be transformed"):
    pass
