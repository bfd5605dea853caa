"""Trust: keys and signers, certificate profiles, mutual TLS, OCSP and message signatures.

Modules, one concern each: :mod:`ruta.pki.keys`, :mod:`ruta.pki.certs`, :mod:`ruta.pki.tls`,
:mod:`ruta.pki.ocsp`, :mod:`ruta.pki.signature`, :mod:`ruta.pki.errors`; :mod:`ruta.pki.testing`
builds throwaway CAs for tests. Import from the module that owns a name.
"""
