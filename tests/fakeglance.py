"""An in-process Glance v2 stand-in for unit tests: just enough API, and fault injection.

It decides access the way Glance does (token -> project; public, community, shared, private),
answers errors in Glance's JSON shape, and counts what edgecache asks of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from aiohttp import web

ADMIN_TOKEN = "admin-token"
SERVICE_USER = ("edgecache", "service-password")


def service_credentials(glance_url: str) -> dict[str, str]:
    """edgecache's `[keystone]` settings for the fake's service user (its Keystone at /v3)."""
    return {
        "keystone_url": f"{glance_url}/v3",
        "keystone_username": SERVICE_USER[0],
        "keystone_password": SERVICE_USER[1],
        "keystone_project": "service",
    }


@dataclass
class Faults:
    """What the next data requests for one image will suffer. Lists are consumed in order."""

    cut_at: list[int] = field(default_factory=list)  # close the stream after this many bytes
    status: list[int | None] = field(default_factory=list)  # answer this status (None: don't)
    ignore_range: bool = False  # answer Range requests with the whole image (200)
    hold_at: int | None = None  # pause the stream at this offset until `release` is set
    release: asyncio.Event = field(default_factory=asyncio.Event)
    reached_hold: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class FakeImage:
    id: str
    data: bytes
    owner: str
    visibility: str = "private"
    status: str = "active"
    name: str = "image"
    members: dict[str, str] = field(default_factory=dict)  # project -> member status
    tags: list[str] = field(default_factory=list)
    checksum: str | None = None
    hash_value: str | None = None
    hash_algo: str = "sha512"
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if self.checksum is None:
            self.checksum = hashlib.md5(self.data, usedforsecurity=False).hexdigest()
        if self.hash_value is None:
            self.hash_value = hashlib.new(self.hash_algo, self.data).hexdigest()

    def change_data(self, data: bytes) -> None:
        """New bytes under the same id, with their own checksums (as if re-uploaded)."""
        self.data = data
        self.checksum = hashlib.md5(data, usedforsecurity=False).hexdigest()
        self.hash_value = hashlib.new(self.hash_algo, data).hexdigest()

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "visibility": self.visibility,
            "owner": self.owner,
            "size": len(self.data) if self.status == "active" else None,
            "checksum": self.checksum,
            "os_hash_algo": self.hash_algo,
            "os_hash_value": self.hash_value,
            "disk_format": "raw",
            "container_format": "bare",
            "tags": self.tags,
            "self": f"/v2/images/{self.id}",
            "file": f"/v2/images/{self.id}/file",
            "schema": "/v2/schemas/image",
        }


def is_download_check(headers: dict[str, str]) -> bool:
    """edgecache's one-byte GET asking Glance's download decision, not a transfer."""
    return headers.get("Range") == "bytes=0-0"


def _error(status: int, message: str) -> web.Response:
    phrase = HTTPStatus(status).phrase
    return web.json_response(
        {"message": message, "code": f"{status} {phrase}", "title": phrase}, status=status
    )


class FakeGlance:
    def __init__(self) -> None:
        self.images: dict[str, FakeImage] = {}
        self.tokens: dict[str, str] = {ADMIN_TOKEN: "admin-project"}
        self.data_requests: Counter[str] = Counter()
        self.bytes_sent: Counter[str] = Counter()  # image bytes written to callers, per image
        self.download_checks: Counter[str] = Counter()  # one-byte GETs: bytes=0-0
        self.readers: set[str] = set()  # tokens with only the reader role: see, not download
        self.users: dict[str, str] = {}  # token -> user id (default: one user per project)
        self.metadata_requests: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.uploads: dict[str, int] = {}
        self.token_expiry: dict[str, float] = {}  # Keystone's word on a token's expiry
        self.record_overrides: dict[str, bytes] = {}  # image id -> a body that is no record
        # Glance's own cache management API: off by default (404 "not supported", after the
        # policy check); policies allow admins, and the projects listed per policy name.
        self.cache_enabled = False
        self.cache_policy: dict[str, set[str]] = {}
        self.own_cache: set[str] = set()  # what Glance's own cache holds or has queued
        self.cache_answer: int | None = None  # answer every cache API request with this

    def make_app(self) -> web.Application:
        """A fresh application over the same state (a stopped server cannot restart an app)."""
        app = web.Application(client_max_size=0)
        app.router.add_get("/", self._versions)
        app.router.add_get("/versions", self._versions)
        app.router.add_get("/v2/images", self._list)
        app.router.add_get("/v2/images/{id}", self._show)
        app.router.add_get("/v2/images/{id}/members", self._members)
        app.router.add_get("/v2/images/{id}/file", self._download)
        app.router.add_put("/v2/images/{id}/file", self._upload)
        app.router.add_get("/v2/schemas/{name}", self._schema)
        app.router.add_get("/v2/cache", self._cache_state)
        app.router.add_put("/v2/cache/{id}", self._cache_queue)
        app.router.add_delete("/v2/cache", self._cache_clear)
        app.router.add_post("/v3/auth/tokens", self._keystone_issue)
        app.router.add_get("/v3/auth/tokens", self._keystone_validate)
        return app

    def make_keystone_app(self) -> web.Application:
        """Only the Keystone part, on a server of its own: an edge site's Keystone that stays
        up when the region (Glance and its Keystone) cannot be reached."""
        app = web.Application()
        app.router.add_post("/v3/auth/tokens", self._keystone_issue)
        app.router.add_get("/v3/auth/tokens", self._keystone_validate)
        return app

    # --- test set-up helpers -------------------------------------------------------------
    def add_project(self, project: str, user: str | None = None) -> str:
        """A token of a member of `project` (by default the project's one user)."""
        token = f"token-{project}-{uuid.uuid4().hex[:8]}"
        self.tokens[token] = project
        if user is not None:
            self.users[token] = user
        return token

    def add_reader(self, project: str) -> str:
        """A token of a user with only the reader role in `project`."""
        token = self.add_project(project)
        self.readers.add(token)
        return token

    def renew(self, token: str) -> str:
        """A new token for the same user, project and roles (a renewal, a trust)."""
        renewed = f"token-{self.tokens[token]}-{uuid.uuid4().hex[:8]}"
        self.tokens[renewed] = self.tokens[token]
        self.users[renewed] = self.user_of(token)
        if token in self.readers:
            self.readers.add(renewed)
        return renewed

    def ranges_asked(self, image_id: str) -> list[str | None]:
        """The Range header of each data request for the image, in order (None: the whole
        image); the one-byte download checks are left out."""
        return [
            headers.get("Range")
            for method, path, headers in self.requests
            if method == "GET" and path == f"/v2/images/{image_id}/file"
            if not is_download_check(headers)
        ]

    def user_of(self, token: str) -> str:
        return self.users.get(token, f"user-{self.tokens[token]}")

    def add_image(self, data: bytes, owner: str, **fields: Any) -> FakeImage:
        image = FakeImage(id=str(uuid.uuid4()), data=data, owner=owner, **fields)
        self.images[image.id] = image
        return image

    # --- access decisions ----------------------------------------------------------------
    def _caller(self, request: web.Request) -> str | None:
        self.requests.append((request.method, request.path_qs, dict(request.headers)))
        return self.tokens.get(request.headers.get("X-Auth-Token", ""))

    def _visible(self, image: FakeImage, project: str) -> bool:
        if project == "admin-project" or image.owner == project:
            return True
        if image.visibility in ("public", "community"):
            return True
        return image.visibility == "shared" and project in image.members

    def _lookup(self, request: web.Request) -> FakeImage | web.Response:
        project = self._caller(request)
        if project is None:
            return _error(401, "The request you have made requires authentication.")
        image = self.images.get(request.match_info["id"])
        if image is None or not self._visible(image, project):
            return _error(404, f"No image found with ID {request.match_info['id']}")
        return image

    def _may_download(self, image: FakeImage, token: str) -> bool:
        """Glance's default download_image: member (admins always), active images only."""
        if self.tokens[token] == "admin-project":
            return True
        return token not in self.readers and image.status == "active"

    # --- a Keystone just big enough for service credentials -------------------------------
    def _token_body(self, token: str, expires_at: float) -> dict[str, Any]:
        project = self.tokens[token]
        stamp = datetime.fromtimestamp(expires_at, tz=UTC).isoformat()
        if project == "admin-project":
            roles = [{"name": "admin"}, {"name": "member"}, {"name": "reader"}]
        elif token in self.readers:
            roles = [{"name": "reader"}]
        else:
            roles = [{"name": "member"}, {"name": "reader"}]
        body = {"project": {"id": project}, "user": {"id": self.user_of(token)}}
        return {"token": {**body, "expires_at": stamp, "roles": roles}}

    async def _keystone_issue(self, request: web.Request) -> web.Response:
        user = (await request.json())["auth"]["identity"]["password"]["user"]
        if (user["name"], user["password"]) != SERVICE_USER:
            return _error(401, "The request you have made requires authentication.")
        body = self._token_body(ADMIN_TOKEN, time.time() + 3600)
        return web.json_response(body, status=201, headers={"X-Subject-Token": ADMIN_TOKEN})

    async def _keystone_validate(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Auth-Token") != ADMIN_TOKEN:
            return _error(403, "You are not authorized to perform the requested action.")
        subject = request.headers.get("X-Subject-Token", "")
        if subject not in self.tokens:
            return _error(404, "Could not find token.")
        expires_at = self.token_expiry.get(subject, time.time() + 3600)
        return web.json_response(self._token_body(subject, expires_at))

    # --- handlers ------------------------------------------------------------------------
    async def _versions(self, request: web.Request) -> web.Response:
        base = f"http://{request.host}"
        doc = {
            "versions": [
                {
                    "id": "v2.17",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": f"{base}/v2/"}],
                },
                {
                    "id": "v2.0",
                    "status": "SUPPORTED",
                    "links": [{"rel": "self", "href": f"{base}/v2/"}],
                },
            ]
        }
        return web.json_response(doc, status=300 if request.path == "/" else 200)

    async def _schema(self, request: web.Request) -> web.Response:
        if self._caller(request) is None:
            return _error(401, "The request you have made requires authentication.")
        return web.json_response({"name": request.match_info["name"], "properties": {}})

    async def _list(self, request: web.Request) -> web.Response:
        project = self._caller(request)
        if project is None:
            return _error(401, "The request you have made requires authentication.")
        query = request.query
        visible = [
            image
            for image in self.images.values()
            if self._visible(image, project)
            and (image.visibility != "community" or query.get("visibility") == "community")
            and query.get("visibility") in (None, image.visibility)
            and query.get("name") in (None, image.name)
            and (query.get("tag") is None or query["tag"] in image.tags)
        ]
        return web.json_response(
            {
                "images": [image.record() for image in visible],
                "first": "/v2/images",
                "schema": "/v2/schemas/images",
            }
        )

    async def _show(self, request: web.Request) -> web.Response:
        found = self._lookup(request)
        if isinstance(found, web.Response):
            return found
        self.metadata_requests[found.id] += 1
        if found.id in self.record_overrides:  # a broken Glance (or something in front of it)
            return web.Response(body=self.record_overrides[found.id], content_type="text/html")
        return web.json_response(found.record())

    def _cache_refusal(self, project: str, policy: str) -> web.Response | None:
        """Glance 33's order, once the token (and the image) passed: the policy (403), then
        404 'not supported' when its own cache is off."""
        if self.cache_answer is not None:
            return _error(self.cache_answer, "injected failure")
        if project != "admin-project" and project not in self.cache_policy.get(policy, ()):
            return _error(403, "Access was denied to this resource.")
        if not self.cache_enabled:
            return _error(404, "Caching via API is not supported at this site.")
        return None

    async def _cache_state(self, request: web.Request) -> web.Response:
        project = self._caller(request)
        if project is None:
            return _error(401, "The request you have made requires authentication.")
        if (refused := self._cache_refusal(project, "cache_list")) is not None:
            return refused
        return web.json_response({"cached_images": [], "queued_images": sorted(self.own_cache)})

    async def _cache_queue(self, request: web.Request) -> web.Response:
        found = self._lookup(request)
        if isinstance(found, web.Response):
            return found
        project = self.tokens[request.headers["X-Auth-Token"]]
        if (refused := self._cache_refusal(project, "cache_image")) is not None:
            return refused
        if found.status != "active":
            return _error(400, "Only images with status active can be targeted for queueing")
        self.own_cache.add(found.id)
        return web.Response(status=202)

    async def _cache_clear(self, request: web.Request) -> web.Response:
        project = self._caller(request)
        if project is None:
            return _error(401, "The request you have made requires authentication.")
        if (refused := self._cache_refusal(project, "cache_delete")) is not None:
            return refused
        target = request.headers.get("x-image-cache-clear-target", "").lower()
        if target not in ("", "cache", "queue"):
            return _error(400, "If provided 'x-image-cache-clear-target' must be 'cache', ...")
        self.own_cache.clear()
        return web.Response(status=204)

    async def _members(self, request: web.Request) -> web.Response:
        found = self._lookup(request)
        if isinstance(found, web.Response):
            return found
        if found.visibility != "shared":  # Glance's image domain refuses before it looks
            return _error(403, "Only shared images have members.")
        project = self.tokens[request.headers["X-Auth-Token"]]
        members = [
            {"member_id": member, "image_id": found.id, "status": status}
            for member, status in found.members.items()
            if project in (found.owner, member, "admin-project")
        ]
        return web.json_response({"members": members, "schema": "/v2/schemas/members"})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        found = self._lookup(request)
        if isinstance(found, web.Response):
            return found
        image = found
        token = request.headers["X-Auth-Token"]
        if image.status == "queued" and token not in self.readers:
            # Glance 33: no data yet is 204; asked for a range of it, its store fails (500).
            if "Range" in request.headers:
                return _error(500, "The server has either erred or is incapable of performing")
            return web.Response(status=204)
        if not self._may_download(image, token):
            return _error(403, "You are not authorized to complete download_image action")
        if is_download_check(dict(request.headers)):
            self.download_checks[image.id] += 1
            self.bytes_sent[image.id] += 1
            return web.Response(
                status=206,
                body=image.data[:1],
                content_type="application/octet-stream",
                headers={"Content-Range": f"bytes 0-0/{len(image.data)}"},
            )
        self.data_requests[image.id] += 1
        faults = image.faults
        injected = faults.status.pop(0) if faults.status else None
        if injected is not None:
            return _error(injected, "injected failure")
        start, status = 0, 200
        response = web.StreamResponse()
        range_header = request.headers.get("Range")
        if range_header and not faults.ignore_range:
            first, _, last = range_header.removeprefix("bytes=").partition("-")
            start = int(first)
            end = int(last) + 1 if last else len(image.data)
            if start >= len(image.data):
                return _error(416, "Requested range not satisfiable")
            status = 206
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(image.data)}"
        else:
            end = len(image.data)
        response.set_status(status)
        response.content_type = "application/octet-stream"
        response.content_length = end - start
        response.headers["Content-MD5"] = image.checksum or ""
        await response.prepare(request)
        cut = faults.cut_at.pop(0) if faults.cut_at else None
        position = start
        while position < end:
            stop = min(end, position + 65536)
            if faults.hold_at is not None and position <= faults.hold_at < stop:
                self.bytes_sent[image.id] += faults.hold_at - position
                await response.write(image.data[position : faults.hold_at])
                position = faults.hold_at
                faults.reached_hold.set()
                await faults.release.wait()
                faults.hold_at = None
                continue
            if cut is not None and position <= cut < stop:
                self.bytes_sent[image.id] += cut - position
                await response.write(image.data[position:cut])
                assert request.transport is not None
                request.transport.close()
                return response
            self.bytes_sent[image.id] += stop - position
            await response.write(image.data[position:stop])
            position = stop
        await response.write_eof()
        return response

    async def _upload(self, request: web.Request) -> web.Response:
        project = self._caller(request)
        if project is None:
            return _error(401, "The request you have made requires authentication.")
        received = 0
        async for piece in request.content.iter_any():
            received += len(piece)
        self.uploads[request.match_info["id"]] = received
        return web.Response(status=204)
