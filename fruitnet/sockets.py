"""The socket timeout shared by the weights and dataset downloads."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every blocking socket call inside the block; urllib-based downloaders
    (torch.hub.download_url_to_file, the kaggle client) expose no timeout of their own."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)
