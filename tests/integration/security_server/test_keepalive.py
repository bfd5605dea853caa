"""Dead links noticed: a peer connection that goes silent (no close, no reset: a firewall or NAT
that dropped its state) is found dead by gRPC keepalive and replaced, so the next call succeeds
once the peer is reachable, instead of waiting out its deadline on a dead connection.

A tiny asyncio TCP proxy stands between the consumer server SOC and the provider server POP (the
configuration lists the proxy's address). It can black-hole the connections open at a moment:
it keeps them open, reads what either side sends and forwards nothing. Connections opened after
that are forwarded as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Final

from tests.integration.security_server.bed import (
    PERSON_REQUEST,
    POP,
    SOC,
    bed,
    call_metadata,
    get_person,
)

#: Keepalive of the consumer server in this test: a ping every second, a second to answer.
KEEPALIVE: Final = {"time_seconds": 1.0, "timeout_seconds": 1.0, "permit_without_calls": True}
#: Longest wait for the consumer to drop the silent connection (polls, then fails the test).
NOTICE_WAIT_SECONDS: Final = 30.0
#: Longest a call may take (each call is bounded; none hangs).
CALL_DEADLINE_SECONDS: Final = 10.0
_CHUNK: Final = 64 * 1024


class SilencingProxy:
    """Forwards TCP connections to ``upstream``; :meth:`silence` makes the open ones go quiet."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._server: asyncio.Server | None = None
        self._open: dict[int, _Pair] = {}
        self._next = 0
        self.accepted = 0
        #: Silenced connections the downstream side (the consumer) closed.
        self.dropped_by_client = 0
        self.silenced = 0

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    def silence(self) -> int:
        """Stop forwarding on every connection open now, without closing any; returns how
        many."""
        pairs = [pair for pair in self._open.values() if not pair.silent]
        for pair in pairs:
            pair.silent = True
        self.silenced += len(pairs)
        return len(pairs)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in list(self._open.values()):
            pair.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        key = self._next
        self._next += 1
        pair = _Pair(writer, up_writer)
        self._open[key] = pair
        try:
            down = asyncio.create_task(self._pump(reader, up_writer, pair))
            up = asyncio.create_task(self._pump(up_reader, writer, pair))
            done, _ = await asyncio.wait((down, up), return_when=asyncio.FIRST_COMPLETED)
            if down in done and pair.silent:
                self.dropped_by_client += 1
            for task in (down, up):
                task.cancel()
            await asyncio.gather(down, up, return_exceptions=True)
        finally:
            self._open.pop(key, None)
            pair.close()

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair
    ) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    return  # this side closed
                if pair.silent:
                    continue  # read and dropped: the connection is open but says nothing
                writer.write(data)
                await writer.drain()


class _Pair:
    def __init__(self, down: asyncio.StreamWriter, up: asyncio.StreamWriter) -> None:
        self.down = down
        self.up = up
        self.silent = False

    def close(self) -> None:
        for writer in (self.down, self.up):
            writer.transport.abort()


async def test_a_silently_dead_peer_connection_is_replaced(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        proxy = SilencingProxy(("127.0.0.1", instance.transport_ports[POP]))
        try:
            instance.advertised[POP] = await proxy.start()
            instance.publish()
            pop = instance.settings_dict(POP)
            pop["transport"]["keepalive"] = {"min_ping_interval_seconds": 1.0}
            await instance.start_server(POP, data=pop)
            soc = instance.settings_dict(SOC)
            soc["transport"]["keepalive"] = KEEPALIVE
            await instance.start_server(SOC, data=soc)
            async with instance.consumer_channel(SOC) as channel:
                call = get_person(channel)
                await call(PERSON_REQUEST, metadata=call_metadata(), timeout=CALL_DEADLINE_SECONDS)
                assert proxy.silence() >= 1
                accepted = proxy.accepted

                # Keepalive finds the silent connection dead and closes it (the proxy sees the
                # consumer's side close): bounded wait, no time asserted.
                for _ in range(int(NOTICE_WAIT_SECONDS / 0.1)):
                    if proxy.dropped_by_client >= 1:
                        break
                    await asyncio.sleep(0.1)
                assert proxy.dropped_by_client >= 1, "the silent connection was never dropped"

                # The peer is reachable (new connections are forwarded): the next call succeeds.
                answer = await call(
                    PERSON_REQUEST, metadata=call_metadata(), timeout=CALL_DEADLINE_SECONDS
                )
                assert answer
                assert proxy.accepted > accepted  # over a new connection
        finally:
            await proxy.stop()
