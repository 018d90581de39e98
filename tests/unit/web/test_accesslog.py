"""The access line's layer is what the code that made the answer recorded on the
request (web/keys.ANSWER_LAYER), never read back from the X-Cache header."""

from __future__ import annotations

import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.model import Layer
from gateway.web.accesslog import ACCESS_LOGGER, make_access_logger
from gateway.web.clientaddr import ClientAddress
from gateway.web.errors import error_response
from gateway.web.keys import ANSWER_LAYER


def logged_layer(request: web.BaseRequest, response: web.StreamResponse,
                 caplog: pytest.LogCaptureFixture) -> str:
    logger = make_access_logger(ClientAddress(()), "json")(
        logging.getLogger(ACCESS_LOGGER), "")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        logger.log(request, response, 0.001)
    layer: str = json.loads(caplog.records[-1].getMessage())["layer"]
    return layer


def test_the_layer_is_the_recorded_one(caplog: pytest.LogCaptureFixture) -> None:
    request = make_mocked_request("GET", "/images/a.png")
    request[ANSWER_LAYER] = Layer.STALE
    response = web.Response(body=b"x", headers={"X-Cache": "HIT-MEMORY"})
    assert logged_layer(request, response, caplog) == "STALE"


def test_no_recorded_layer_is_a_dash_whatever_the_headers(
        caplog: pytest.LogCaptureFixture) -> None:
    request = make_mocked_request("GET", "/images/a.png/url")
    response = web.json_response({}, headers={"X-Cache": "NONE"})
    assert logged_layer(request, response, caplog) == "-"


def test_an_error_answer_records_itself(caplog: pytest.LogCaptureFixture) -> None:
    request = make_mocked_request("GET", "/images/a.png")
    response = error_response(429, "too many requests", request)
    assert request[ANSWER_LAYER] is Layer.ERROR
    assert logged_layer(request, response, caplog) == "ERROR"
