"""The auditor console's HTTPS listener inside the security server process."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final

from aiohttp import web
from cryptography import x509

from ruta.addresses import join_address, split_address
from ruta.globalconf import GlobalConf
from ruta.listeners import ListenerError
from ruta.pki.certs import certificate_pem
from ruta.web import console_tls_context
from security_server.console.pages import AuditConsole, console_app
from security_server.console.settings import ConsoleSettings

__all__ = ["CLIENT_CA_FILE", "ConsoleListener"]

#: Where, in the data directory, the trust anchors the console accepts browsers' certificates
#: under are written (when ``[console] client_ca`` is not set).
CLIENT_CA_FILE: Final = "console-client-ca.pem"


class ConsoleListener:
    """A started console. Build with :meth:`start`; always :meth:`stop` it."""

    def __init__(
        self,
        runner: web.AppRunner,
        context: ssl.SSLContext,
        address: str,
        *,
        anchors: tuple[x509.Certificate, ...],
        follow_anchors: bool,
    ) -> None:
        self._runner = runner
        self._context = context
        self._anchors = {certificate_pem(a) for a in anchors}
        self._follow_anchors = follow_anchors
        #: ``https://host:port/``, the port as bound.
        self.url = address

    @classmethod
    async def start(
        cls,
        console: AuditConsole,
        *,
        settings: ConsoleSettings,
        auth_cert: Path,
        auth_key: Path,
        data_dir: Path,
        view: GlobalConf | None,
    ) -> ConsoleListener:
        """Serve ``console`` on ``settings.listen`` over TLS. Browsers' certificates must chain
        to ``settings.client_ca``, or else to the trust anchors of ``view`` (the configuration
        in force; :meth:`configuration_changed` adds later ones).

        Raises :class:`ListenerError` when the address cannot be bound, or there is no CA to
        check browsers' certificates against; nothing is left listening then.
        """
        client_ca = settings.client_ca
        anchors: tuple[x509.Certificate, ...] = ()
        if client_ca is None:
            if view is None or not view.trust_anchors:
                raise ListenerError(
                    "the console needs [console] client_ca or a configuration with trust anchors"
                )
            anchors = view.trust_anchors
            client_ca = data_dir / CLIENT_CA_FILE
            client_ca.write_bytes(certificate_pem(*anchors))
        try:
            context = console_tls_context(
                cert=settings.tls_cert or auth_cert,
                key=settings.tls_key or auth_key,
                client_ca=client_ca,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ListenerError(f"the console's TLS files cannot be used ({exc})") from None
        runner = web.AppRunner(console_app(console), access_log=None)
        await runner.setup()
        host, port = split_address(settings.listen)
        try:
            await web.TCPSite(runner, host, port, ssl_context=context).start()
        except OSError as exc:
            await runner.cleanup()
            raise ListenerError(
                f"cannot listen on {settings.listen} for the auditor console ({exc.strerror})"
            ) from None
        bound = runner.addresses[0]
        return cls(
            runner,
            context,
            f"https://{join_address(host, bound[1])}/",
            anchors=anchors,
            follow_anchors=settings.client_ca is None,
        )

    def configuration_changed(self, view: GlobalConf) -> None:
        """Accept browsers' certificates under trust anchors ``view`` adds. (An anchor the
        configuration drops stays accepted until the server restarts: a TLS context can learn
        CAs but not forget them.)"""
        if not self._follow_anchors:
            return
        for anchor in view.trust_anchors:
            pem = certificate_pem(anchor)
            if pem not in self._anchors:
                self._context.load_verify_locations(cadata=pem.decode("ascii"))
                self._anchors.add(pem)

    async def stop(self) -> None:
        """Stop listening; requests in flight are cut."""
        await self._runner.cleanup()
