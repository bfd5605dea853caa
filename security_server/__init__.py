"""The security server an agency runs in front of its systems.

It owns the consumer proxy (a generic gRPC handler for the agency's own backends), the provider
proxy (verifies, checks the contract, calls the mapped backend), the mutual-TLS server-to-server
transport, access control, the global-configuration client's local copy, the tamper-evident message
log and the audit API. It imports :mod:`ruta` only and meets the other parts on the wire.
"""
