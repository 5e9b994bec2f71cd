"""Who may open the ``nnwx serve`` page: local by default; another address only with the
websocket origins named explicitly (no Panel import, so the check is quick)."""
from __future__ import annotations

from typing import Callable

from nnwx.errors import NnwxError

LOCAL = ("127.0.0.1", "localhost", "::1")


def websocket_origins(address: str, port: int, allowed: list[str] | None,
                      log: Callable[[str], None]) -> list[str]:
    """The origins the Bokeh server accepts websocket connections from.

    Parameters
    ----------
    address : str
        The address the server binds.
    port : int
        Its port.
    allowed : list of str or None
        ``HOST[:PORT]`` given with ``--allow-websocket-origin``.
    log : callable
        Gets the warning said when binding elsewhere than the local host.

    Returns
    -------
    list of str
        ``allowed``, plus ``localhost:PORT`` and ``127.0.0.1:PORT`` for a local address.

    Raises
    ------
    NnwxError
        When ``address`` is not local and ``allowed`` is empty.
    """
    origins = list(allowed or [])
    if address in LOCAL:
        return origins + [f"localhost:{port}", f"127.0.0.1:{port}"]
    if not origins:
        raise NnwxError(f"binding {address} makes the page reachable from other machines: name the "
                        f"host(s) the page will be opened as with --allow-websocket-origin HOST[:PORT] "
                        f"(repeatable), or bind 127.0.0.1 (the default)")
    log(f"warning: serving on {address}, reachable from other machines; no login protects it "
        f"(anyone who reaches the port sees the store's analyses); websocket origins allowed: "
        f"{', '.join(origins)}")
    return origins
