"""The socket timeout and the reachability probe shared by the weights and dataset downloads."""

from __future__ import annotations

import os
import socket
import threading
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


PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def unreachable(host: str, timeout: float, port: int = 443) -> str | None:
    """Why ``host:port`` cannot be reached within about ``timeout`` seconds, or None when it can
    (or when a proxy is set: a direct probe says nothing behind one). Clients that retry with
    backoff (the Hugging Face hub: ~25 s a file) then fail fast offline instead."""
    if any(os.environ.get(k) for k in PROXY_ENV):
        return None
    result: list[BaseException | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
            result.append(None)
        except OSError as e:
            result.append(e)

    # The socket timeout does not cover the DNS lookup, which can block far longer on a broken
    # resolver; a daemon thread bounds the whole probe and is abandoned if it overruns.
    t = threading.Thread(target=probe, name=f"probe-{host}", daemon=True)
    t.start()
    t.join(timeout + 1.0)
    if not result:
        return f"no answer from {host}:{port} within {timeout:g} s; this machine looks offline"
    err = result[0]
    if err is not None:
        return (
            f"cannot reach {host}:{port} within {timeout:g} s ({type(err).__name__}: {err}); "
            "this machine looks offline"
        )
    return None
