"""edgecache's own refusals read exactly like Glance's, in the format the caller accepts."""

from __future__ import annotations

import json

import pytest

from edgecache.glance_errors import GlanceError, preferred_offer


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
