"""What the WSGI and ASGI apps share about request heads."""
from __future__ import annotations

from typing import Iterable, Tuple

#: The largest length berth accepts as a byte count (an unsigned 64-bit integer).
MAX_LENGTH = (1 << 64) - 1


def length_is_countable(headers: Iterable[Tuple[str, str]]) -> bool:
    """Whether the request's Content-Length (if any) is a byte count berth accepts. When it is
    not, berth refuses the request without reading its body, and the app must not wait for
    one: a client that announced 99999999999999999999 bytes never sends them."""
    for name, value in headers:
        if name.lower() == "content-length":
            text = value.strip()
            return text.isdigit() and text.isascii() and int(text) <= MAX_LENGTH
    return True
