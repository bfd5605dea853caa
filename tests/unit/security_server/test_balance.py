"""ServerRotation: round robin over a member's servers, back-off for the ones that failed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from ruta.globalconf import SecurityServer
from ruta.ids import ServerId
from security_server.balance import MAX_TRACKED, ServerRotation


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def _servers(member: str = "LAC/GOV/POP", count: int = 3) -> tuple[SecurityServer, ...]:
    return tuple(
        SecurityServer(
            id=ServerId.parse(f"{member}/ss{i}"),
            address=f"127.0.0.1:{5500 + i}",
            auth_cert_sha256="0" * 64,
        )
        for i in range(count)
    )


def _codes(order: list[SecurityServer]) -> list[str]:
    return [server.id.code for server in order]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rotation(clock: Clock) -> ServerRotation:
    return ServerRotation(clock=clock, jitter=lambda: 1.0, initial_backoff=1.0, max_backoff=8.0)


def test_calls_take_the_servers_in_turn(rotation: ServerRotation) -> None:
    servers = _servers()
    firsts = [rotation.order(servers)[0].id.code for _ in range(6)]
    assert firsts == ["ss0", "ss1", "ss2", "ss0", "ss1", "ss2"]
    assert _codes(rotation.order(servers)) == ["ss0", "ss1", "ss2"]  # every server, once


def test_turns_are_kept_per_member(rotation: ServerRotation) -> None:
    pop, tax = _servers("LAC/GOV/POP"), _servers("LAC/GOV/TAX")
    assert rotation.order(pop)[0].id.code == "ss0"
    assert rotation.order(tax)[0].id.code == "ss0"
    assert rotation.order(pop)[0].id.code == "ss1"


def test_a_failed_server_backs_off_and_goes_last(rotation: ServerRotation, clock: Clock) -> None:
    servers = _servers()
    rotation.failed(servers[0].id)
    assert rotation.backing_off(servers[0].id)
    firsts = Counter(rotation.order(servers)[0].id.code for _ in range(10))
    assert firsts == {"ss1": 5, "ss2": 5}
    assert _codes(rotation.order(servers))[-1] == "ss0"  # tried last, never dropped
    clock.now += 1.0  # first back-off: 1 s
    assert not rotation.backing_off(servers[0].id)
    assert "ss0" in {rotation.order(servers)[0].id.code for _ in range(3)}


def test_back_off_doubles_per_failure_up_to_the_longest_and_ends_when_reached(
    rotation: ServerRotation, clock: Clock
) -> None:
    server = _servers(count=1)[0].id
    waits = []
    for _ in range(6):
        rotation.failed(server)
        start = clock.now
        while rotation.backing_off(server):
            clock.now += 0.5
        waits.append(clock.now - start)
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    rotation.failed(server)
    rotation.reached(server)
    assert not rotation.backing_off(server)
    rotation.failed(server)  # counting starts again
    assert rotation.backing_off(server)
    clock.now += 1.0
    assert not rotation.backing_off(server)


def test_all_backing_off_soonest_first(rotation: ServerRotation, clock: Clock) -> None:
    servers = _servers()
    for _ in range(2):
        rotation.failed(servers[0].id)  # 2 s
    rotation.failed(servers[2].id)  # 1 s
    clock.now += 0.5
    rotation.failed(servers[1].id)  # 1 s from now: 1.5 s
    assert _codes(rotation.order(servers)) == ["ss2", "ss1", "ss0"]


def test_jitter_shortens_the_back_off(clock: Clock) -> None:
    rotation = ServerRotation(clock=clock, jitter=lambda: 0.5, initial_backoff=1.0)
    server = _servers(count=1)[0].id
    rotation.failed(server)
    clock.now += 0.5
    assert not rotation.backing_off(server)


def test_state_is_bounded(rotation: ServerRotation) -> None:
    for i in range(MAX_TRACKED + 10):
        servers = _servers(f"LAC/GOV/M{i}", count=1)
        rotation.order(servers)
        rotation.failed(servers[0].id)
    assert not rotation.backing_off(_servers("LAC/GOV/M0", count=1)[0].id)  # forgotten
    assert rotation.backing_off(_servers(f"LAC/GOV/M{MAX_TRACKED + 9}", count=1)[0].id)


def test_no_servers_and_bad_settings() -> None:
    assert ServerRotation().order(()) == []
    with pytest.raises(ValueError, match="back-offs"):
        ServerRotation(initial_backoff=0)
    with pytest.raises(ValueError, match="back-offs"):
        ServerRotation(initial_backoff=10, max_backoff=1)


def test_a_lone_server_is_tried_backing_off_or_not(rotation: ServerRotation) -> None:
    (only,) = servers = _servers(count=1)
    assert rotation.order(servers) == [only]
    rotation.failed(only.id)
    assert rotation.backing_off(only.id)
    assert rotation.order(servers) == [only]
