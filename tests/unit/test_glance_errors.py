"""edgecache's own refusals read exactly like Glance's, in the format the caller accepts."""

from __future__ import annotations

import json

import pytest

from edgecache.glance_errors import GlanceError, preferred_offer
from edgecache.refusals import (
    not_a_record,
    uplink_down,
    upstream_busy,
    upstream_unreachable,
)
from edgecache.upstream.pools import PoolExhausted


@pytest.mark.parametrize(
    ("accept", "offer"),
    [
        (None, None),  # Glance 33 answers plain text to a caller that sent no Accept
        ("", None),
        ("*/*", "text/html"),  # python-glanceclient
        ("application/json", "application/json"),  # keystoneauth clients
        ("application/json, */*;q=0.1", "application/json"),
        ("text/*", "text/html"),
        ("text/plain", None),
        ("text/html;q=0, application/json;q=0.5", "application/json"),
        ("application/json;q=nonsense", None),
    ],
)
def test_the_offer_webob_would_pick(accept: str | None, offer: str | None) -> None:
    assert preferred_offer(accept) == offer


def test_json_shape() -> None:
    content_type, body = GlanceError(404, "No image found with ID x").render("application/json")
    assert content_type == "application/json"
    assert json.loads(body) == {
        "message": "No image found with ID x<br /><br />\n\n\n",
        "code": "404 Not Found",
        "title": "Not Found",
    }


def test_html_page_escapes_the_message() -> None:
    content_type, body = GlanceError(400, "bad <range>", detail="d").render("*/*")
    assert content_type == "text/html"
    assert b"<title>400 Bad Request</title>" in body
    assert b"bad &lt;range&gt;<br /><br />\nd\n" in body


def test_plain_text_has_no_tags() -> None:
    content_type, body = GlanceError(503, "uplink down").render("text/plain")
    assert content_type == "text/plain"
    assert body.startswith(b"503 Service Unavailable\n\nuplink down")
    assert b"<" not in body


IMAGE_ID = "5b7c3a1e-2f4d-4a8b-9c6e-0d1f2a3b4c5d"
OWN_REFUSALS = {
    "not cached, uplink down": uplink_down(
        "the data of image 5b7c3a1e-2f4d-4a8b-9c6e-0d1f2a3b4c5d"
    ),
    "no remembered document": uplink_down("the answer to GET /v2/images?limit=5"),
    "write while unreachable": upstream_unreachable("PATCH", "/v2/images/x"),
    "pool full": upstream_busy(PoolExhausted("metadata", 32, 10.0)),
    "not a record": not_a_record(),
}


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "text/plain"])
@pytest.mark.parametrize("name", sorted(OWN_REFUSALS))
def test_own_refusals_read_as_plain_sentences_in_every_format(
    name: str, accept: str | None
) -> None:
    """Seen by nova through glanceclient (which strips the tags of the HTML page), a message
    with an apostrophe read `this site&#x27;s cache`: the words must survive every format."""
    error = OWN_REFUSALS[name].error
    assert error is not None
    text = error.explanation
    assert text[0].isupper(), text
    assert text.endswith("."), text
    assert "this answer" not in text
    content_type, body = error.render(accept)
    shown = json.loads(body)["message"] if content_type == "application/json" else body.decode()
    assert text in shown, (content_type, shown)
    assert "&#" not in shown
    assert "&amp;" not in shown
