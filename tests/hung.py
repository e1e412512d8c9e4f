"""A port that accepts connections and never answers: a hung Redis, broker or server, for real."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def hung_port(backlog: int = 64) -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1 (its port: ``getsockname()[1]``): connections complete in
    the backlog; nothing reads or answers. Closed afterwards."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(backlog)
    try:
        yield hung
    finally:
        hung.close()


def connections_made(hung: socket.socket) -> int:
    """How many connections reached ``hung`` so far (each accepted and closed)."""
    hung.setblocking(False)
    count = 0
    while True:
        try:
            conn = hung.accept()[0]
        except BlockingIOError:
            return count
        conn.close()
        count += 1
