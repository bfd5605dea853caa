"""The citizen pages without a browser: one line per exchange however many servers logged it,
the contract's purpose and legal basis, every value escaped, the subject only ever the signed-in
one, sessions that expire, sign-out only with the form's token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import timestamp_pb2

from gateway.console.access_record import AccessRecord, AccessRecordReader, ExchangeLine, merge
from gateway.console.citizen import (
    RECORD_CACHE_SECONDS,
    SIGN_IN_COOKIE,
    SIGN_IN_SECONDS,
    CitizenConsole,
    _SealedSignIns,
)
from gateway.console.oidc import OidcClient
from gateway.console.pages import PAGES
from gateway.settings import CitizenSettings
from ruta.globalconf import GlobalConf
from ruta.ids import MemberId, ServiceId, SubsystemId
from ruta.v1 import audit_pb2, globalconf_pb2
from ruta.web import SESSION_COOKIE, Sessions

SOC = MemberId.parse("DEV/GOV/SOC")
POP = MemberId.parse("DEV/GOV/POP")
CLIENT = SubsystemId(SOC, "benefits")
SERVICE = ServiceId(SubsystemId(POP, "registry"), "population.v1.PopulationRegister")
HOSTILE = '<script>alert("x")</script>'
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def _ts(at: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


def _conf(*, soc_name: str = "Social Benefits Agency") -> GlobalConf:
    conf = globalconf_pb2.GlobalConfiguration(
        instance="DEV", serial=1, generated_at=_ts(T0), expires_at=_ts(T0 + timedelta(days=1))
    )
    conf.members.add(id=SOC.to_proto(), name=soc_name)
    conf.members.add(id=POP.to_proto(), name="Population Registry Agency")
    conf.subsystems.add(id=CLIENT.to_proto())
    conf.subsystems.add(id=SERVICE.subsystem.to_proto())
    conf.services.add(id=SERVICE.to_proto(), methods=["GetPerson"])
    conf.contracts.add(
        contract_id="C-7",
        consumer=CLIENT.to_proto(),
        service=SERVICE.to_proto(),
        purpose="benefit-eligibility",
        legal_basis="Social Benefits Act, s.12",
        valid_from=_ts(T0 - timedelta(days=30)),
    )
    return GlobalConf.from_proto(conf)


def _record(
    message_id: str,
    kind: str,
    at: datetime,
    *,
    status: int = 0,
    fault: str = "",
    purpose: str = "C-7",
) -> audit_pb2.AccessRecord:
    return audit_pb2.AccessRecord(
        message_id=message_id,
        kind=kind,
        client=str(CLIENT),
        service=str(SERVICE),
        method="GetPerson",
        purpose=purpose,
        created_at=_ts(at),
        status_code=status,
        fault=fault,
    )


def test_both_servers_records_of_an_exchange_make_one_line_newest_first() -> None:
    consumer = [
        _record("m1", "request", T0),
        _record("m1", "response", T0 + timedelta(seconds=1)),
        _record("m2", "request", T0 + timedelta(hours=1)),
        _record(
            "m2",
            "response",
            T0 + timedelta(hours=1),
            status=7,
            fault="server.provider.access_denied",
        ),
        _record("m3", "request", T0 + timedelta(hours=2)),
    ]
    provider = [_record("m1", "request", T0), _record("m1", "response", T0 + timedelta(seconds=1))]
    lines = merge(_conf(), [consumer, provider])
    assert [(line.when, line.outcome) for line in lines] == [
        (T0 + timedelta(hours=2), "unanswered"),
        (T0 + timedelta(hours=1), "refused"),
        (T0, "answered"),
    ]
    # The signed purpose named the contract by its id: the contract's purpose and legal basis.
    assert {line.purpose for line in lines} == {"benefit-eligibility"}
    assert {line.legal_basis for line in lines} == {"Social Benefits Act, s.12"}
    assert {line.agency for line in lines} == {"Social Benefits Agency"}
    assert {line.provider for line in lines} == {"Population Registry Agency"}


def test_a_purpose_no_contract_names_is_shown_as_signed() -> None:
    [line] = merge(_conf(), [[_record("m1", "request", T0, purpose="audit-of-2025")]])
    assert (line.purpose, line.legal_basis) == ("audit-of-2025", "")


def test_every_value_on_the_page_is_escaped() -> None:
    record = AccessRecord(
        exchanges=(
            ExchangeLine(
                when=T0,
                agency=HOSTILE,
                client=str(CLIENT),
                provider=HOSTILE,
                service=HOSTILE,
                method=HOSTILE,
                purpose=HOSTILE,
                legal_basis=HOSTILE,
                outcome="answered",
            ),
        ),
        unreachable=(HOSTILE,),
    )
    for language in ("en", "es", "pt"):
        page = PAGES.render(
            "citizen_record.html",
            language,
            path="/citizen",
            record=record,
            subject=HOSTILE,
            name=HOSTILE,
            csrf_field="csrf_token",
            csrf_token="t",
            sign_out="/citizen/sign-out",
        )
        assert "<script>" not in page
        assert page.count("&lt;script&gt;") >= 8


@dataclass
class FakeReader(AccessRecordReader):
    """Answers from memory and remembers which subjects it was asked for."""

    asked: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        pass

    async def read(self, conf: GlobalConf, subject: str) -> AccessRecord:
        self.asked.append(subject)
        return AccessRecord(exchanges=(), unreachable=())

    async def close(self) -> None:
        pass


@dataclass
class Console:
    client: TestClient[web.Request, web.Application]
    sessions: Sessions
    reader: FakeReader
    now: list[float]
    pages: CitizenConsole

    def sign_in(self, subject: str) -> str:
        """A session for ``subject`` (as the callback starts one); its cookie header."""
        session = self.sessions.start(web.Response(), subject=subject, name="")
        return f"{SESSION_COOKIE}={session.id}"


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    now = [1000.0]
    sessions = Sessions(idle_seconds=60, absolute_seconds=600, clock=lambda: now[0])
    reader = FakeReader()
    secret = tmp_path / "secret"
    secret.write_text("s")
    settings = CitizenSettings(
        issuer="https://id.example.gov",
        client_id="ruta",
        client_secret_file=secret,
        public_url="http://localhost:8080",
        cert=tmp_path / "c.pem",
        key=tmp_path / "k.pem",
        ca=tmp_path / "ca.pem",
    )
    pages = CitizenConsole(
        settings=settings,
        pages=PAGES,
        conf=_conf,
        oidc=OidcClient(
            issuer=settings.issuer,
            client_id="ruta",
            client_secret="s",
            redirect_uri="http://localhost:8080/citizen/callback",
        ),
        reader=reader,
        sessions=sessions,
        clock=lambda: now[0],
    )
    app = web.Application()
    pages.add_routes(app)
    async with TestClient(TestServer(app)) as client:
        yield Console(client, sessions, reader, now, pages)
    await pages.close()


async def test_the_subject_is_the_signed_in_one_whatever_the_url_says(console: Console) -> None:
    cookie = console.sign_in("4410000017")
    for path in ("/citizen", "/citizen?subject=4410000033", "/citizen?sub=4410000033"):
        response = await console.client.get(path, headers={"Cookie": cookie})
        assert response.status == 200
        assert "4410000033" not in await response.text()
    # Gathered once, then kept for the session (RECORD_CACHE_SECONDS).
    assert console.reader.asked == ["4410000017"]


async def test_without_a_session_the_page_asks_to_sign_in_and_reads_nothing(
    console: Console,
) -> None:
    response = await console.client.get("/citizen?subject=4410000017")
    text = await response.text()
    assert response.status == 200
    assert 'href="/citizen/sign-in?lang=' in text
    assert console.reader.asked == []
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


@pytest.mark.parametrize(("idle", "advance"), [(True, 61.0), (False, 601.0)])
async def test_sessions_expire(console: Console, idle: bool, advance: float) -> None:
    cookie = console.sign_in("4410000017")
    if not idle:  # kept busy, it still ends at its absolute lifetime
        for _ in range(12):
            console.now[0] += 50
            assert (await console.client.get("/citizen", headers={"Cookie": cookie})).status == 200
        advance -= 600
    console.now[0] += advance
    response = await console.client.get("/citizen", headers={"Cookie": cookie})
    text = await response.text()
    assert "You were signed out after a while without activity" in text
    assert 'href="/citizen/sign-in?lang=' in text
    # Busy: read afresh only when the kept record is over RECORD_CACHE_SECONDS old.
    assert len(console.reader.asked) == (0 if idle else 6)


async def test_sign_out_needs_the_forms_token(console: Console) -> None:
    cookie = console.sign_in("4410000017")
    refused = await console.client.post(
        "/citizen/sign-out", data={"csrf_token": "forged"}, headers={"Cookie": cookie}
    )
    assert refused.status == 403
    page = await (await console.client.get("/citizen", headers={"Cookie": cookie})).text()
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    signed_out = await console.client.post(
        "/citizen/sign-out", data={"csrf_token": token}, headers={"Cookie": cookie}
    )
    assert signed_out.status == 200
    again = await (await console.client.get("/citizen", headers={"Cookie": cookie})).text()
    assert 'href="/citizen/sign-in?lang=' in again


async def test_a_callback_without_this_browsers_sign_in_is_refused(console: Console) -> None:
    response = await console.client.get("/citizen/callback?code=c&state=s")
    assert response.status == 401
    assert SESSION_COOKIE not in response.cookies
    # A genuine sign-in cookie does not help a callback carrying another state.
    sealed, _ = console.pages._pending.start("en")
    response = await console.client.get(
        "/citizen/callback?code=c&state=s", headers={"Cookie": f"{SIGN_IN_COOKIE}={sealed}"}
    )
    assert response.status == 401
    assert SESSION_COOKIE not in response.cookies


async def test_reloads_reuse_the_record_for_a_while_and_sign_out_drops_it(
    console: Console,
) -> None:
    cookie = console.sign_in("4410000017")
    for _ in range(5):
        assert (await console.client.get("/citizen", headers={"Cookie": cookie})).status == 200
    assert console.reader.asked == ["4410000017"]
    # (In steps, as the test sessions end after 60 idle seconds.)
    console.now[0] += RECORD_CACHE_SECONDS - 1
    await console.client.get("/citizen", headers={"Cookie": cookie})
    assert console.reader.asked == ["4410000017"]
    console.now[0] += 2
    page = await (await console.client.get("/citizen", headers={"Cookie": cookie})).text()
    assert console.reader.asked == ["4410000017"] * 2
    # Another citizen's session never sees the first one's record.
    other = console.sign_in("4410000033")
    await console.client.get("/citizen", headers={"Cookie": other})
    assert console.reader.asked[-1] == "4410000033"
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    await console.client.post(
        "/citizen/sign-out", data={"csrf_token": token}, headers={"Cookie": cookie}
    )
    assert len(console.pages._records) == 1  # only the other session's record is kept


def test_a_sign_in_lives_in_its_sealed_cookie_and_a_flood_cannot_evict_it() -> None:
    now = [1000.0]
    sealer = _SealedSignIns(lambda: now[0])
    mine, pending = sealer.start("pt")
    for _ in range(20_000):  # more than any in-memory table would hold
        sealer.start("en")
    assert len(mine) <= 512
    assert pending.verifier not in mine
    assert pending.nonce not in mine
    assert sealer.take(mine) == (pending, "pt")
    # Tampered, truncated, oversized, foreign (another process's key) or garbage: refused.
    flipped = mine[:20] + ("A" if mine[20] != "A" else "B") + mine[21:]
    for bad in (flipped, mine[:-4], mine + "A" * 600, "", "!!!", None):
        assert sealer.take(bad) is None
    assert _SealedSignIns(lambda: now[0]).take(mine) is None
    now[0] += SIGN_IN_SECONDS + 1
    assert sealer.take(mine) is None


@pytest.mark.parametrize(
    ("field_", "value"),
    [
        ("issuer", "http://id.example.gov"),  # plain HTTP off loopback
        ("issuer", "ftp://id.example.gov"),
        ("public_url", "https://gw.example.gov/?next=x"),
        ("public_url", "gw.example.gov"),
        ("deadline_seconds", 0),
    ],
)
def test_citizen_settings_refuse_what_cannot_work(field_: str, value: object) -> None:
    good = {
        "issuer": "https://id.example.gov",
        "client_id": "ruta",
        "client_secret_file": "secret",
        "public_url": "https://gw.example.gov",
        "cert": "c.pem",
        "key": "k.pem",
        "ca": "ca.pem",
    }
    CitizenSettings(**good)
    CitizenSettings(**{**good, "issuer": "http://127.0.0.1:9000"})
    with pytest.raises(ValueError, match=field_):
        CitizenSettings(**{**good, field_: value})
