"""Dates and entity tags an origin sends: checked, and dropped when out of range."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from gateway.origin.headers import END_OF_DATES, entity_tag, epoch, http_date


def test_a_good_date_is_its_seconds():
    assert http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777


@pytest.mark.parametrize("value", [
    None, "", "yesterday", "Sun, 06 Nov 99999999999 08:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:37 +99999999999999999999999", "Sun, 06 Nov 1994 99:49:37 GMT",
    "Fri, 31 Dec 9999 23:59:59 -2359", "Sun, 06 Nov 1000 08:49:37 GMT", "Sun, 06",
])
def test_a_date_no_http_date_can_show_is_now(value):
    before = int(time.time())
    seconds = http_date(value)
    assert before <= seconds <= time.time()
    formatdate(seconds, usegmt=True)  # what the answer's Last-Modified needs


@pytest.mark.parametrize("seconds", [-1.0, float(END_OF_DATES), 1e300])
def test_a_file_time_no_http_date_can_show_is_now(seconds):
    assert abs(epoch(seconds) - time.time()) < 5
    assert epoch(END_OF_DATES - 1) == END_OF_DATES - 1
    formatdate(END_OF_DATES - 1, usegmt=True)


@pytest.mark.parametrize("value", ['"abc"', 'W/"abc"', '"' + "a" * 200 + '"'])
def test_a_plain_entity_tag_is_kept(value):
    assert entity_tag(value) == value


@pytest.mark.parametrize("value", [None, "", "abc", '"a" , "b"', '"\xff"', '"a\x00"', '""',
                                   '"' + "a" * 201 + '"', 'W/ "a"'])
def test_anything_else_is_no_entity_tag(value):
    assert entity_tag(value) is None
