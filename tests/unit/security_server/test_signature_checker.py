"""A security server judges message signatures by the OCSP freshness and clock skew the signed
global configuration publishes (``VerificationParameters``), as an offline verifier of its
evidence does; its own setting applies only while the configuration publishes none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ruta.globalconf import GlobalConf
from ruta.pki.errors import OcspInvalidError
from ruta.pki.signature import sign_message
from ruta.pki.testing import TestPki
from ruta.v1 import transport_pb2
from security_server.exchange import SignatureChecker
from tests.unit.ruta.globalconf.support import POP, sample_configuration

HEADER = transport_pb2.MessageHeader(message_id="m-1").SerializeToString()


def _conf(pki: TestPki, *, skew: int = 0, freshness: int = 0) -> GlobalConf:
    conf = sample_configuration(now=datetime.now(UTC), trust_anchors=tuple(pki.trust_anchors))
    conf.verification.ocsp_clock_skew_seconds = skew
    conf.verification.ocsp_freshness_seconds = freshness
    return GlobalConf.from_proto(conf)


@pytest.mark.parametrize(
    ("skew", "freshness", "ocsp_age", "accepted"),
    [
        (0, 0, timedelta(minutes=-10), False),  # dated 10 min after signing; default skew 5 min
        (900, 0, timedelta(minutes=-10), True),  # the configuration allows 15 min
        (0, 0, timedelta(minutes=50), True),  # 50 min old: within the server's own 1 h
        (0, 1800, timedelta(minutes=50), False),  # the configuration says 30 min: stale
    ],
)
def test_the_configuration_sets_ocsp_freshness_and_skew(
    tmp_path: Path, skew: int, freshness: int, ocsp_age: timedelta, accepted: bool
) -> None:
    pki = TestPki(tmp_path)
    signer = pki.sign(POP)
    now = datetime.now(UTC)
    signature = sign_message(
        HEADER,
        signer=signer.signer(),
        certificate=signer.certificate,
        ocsp_response=pki.ocsp_response(signer.certificate, this_update=now - ocsp_age),
    )
    checker = SignatureChecker(ocsp_freshness=timedelta(hours=1))
    conf = _conf(pki, skew=skew, freshness=freshness)
    if accepted:
        checker.verify(conf, HEADER, signature, claimed_member=POP, signed_at=now)
    else:
        with pytest.raises(OcspInvalidError):
            checker.verify(conf, HEADER, signature, claimed_member=POP, signed_at=now)
