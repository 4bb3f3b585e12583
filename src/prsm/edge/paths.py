"""One form of a request path, decided before a route is matched.

A proxy that matches routes on the path as sent, and forwards it as sent, lets
`/api/ai/%2e%2e/%2e%2e/metrics` match `/api/ai` and reach the upstream as a path outside the
route (`/api/v1/../../metrics`). So, as Envoy's `normalize_path` and Istio's defaults do,
the gateway normalises the decoded path before matching — `.` segments dropped, repeated
slashes merged — and forwards that form; a `..` segment, spelled or percent-encoded (clients
resolve their own dot-segments, RFC 3986 §5.2: only a crafted request sends one), or an
encoded slash or backslash (`%2F`, `%5C`: one segment to some servers, two to others), is
refused with 400 `invalid_path`. So no request leaves the prefix of the route it matched.

>>> normalized_path("/api/ai//v1/./models", b"/api/ai//v1/./models")
'/api/ai/v1/models'
"""

from __future__ import annotations

import re

from prsm.errors import BadRequestError

_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c)", re.IGNORECASE)


def normalized_path(path: str, raw_path: bytes | None) -> str:
    """`path` (decoded) without `.` or empty segments; 400 `invalid_path` for a `..` segment,
    a backslash, or a raw form (`raw_path`) that encodes a separator."""
    if raw_path is not None and _ENCODED_SEPARATOR.search(raw_path):
        raise BadRequestError(
            "the path encodes a slash or backslash (%2F, %5C): send separators as they are",
            code="invalid_path",
        )
    segments = path.split("/")
    if "\\" in path or ".." in segments:
        raise BadRequestError(
            "the path holds a `..` segment or a backslash: send it resolved", code="invalid_path"
        )
    kept = [segment for segment in segments if segment not in ("", ".")]
    trailing = "/" if kept and segments[-1] in ("", ".") else ""
    return "/" + "/".join(kept) + trailing
