"""The server's listening socket: connections it accepts send small writes at once (Nagle off).
With Nagle on, a streamed token written while the response headers were unacknowledged waited
for the client's delayed ACK (TTFT ~45 ms instead of ~25 ms for one client on this box)."""

from __future__ import annotations

import asyncio
import socket

from engine.serving.process import _bind


def test_connections_accepted_through_asyncio_have_nagle_off():
    async def accepted_nodelay() -> int:
        listener = _bind("127.0.0.1", 0)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted = transport.get_extra_info("socket")
                seen.set_result(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        try:
            port = listener.getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            value = await asyncio.wait_for(seen, 5)
            writer.close()
            return value
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_nodelay()) != 0
