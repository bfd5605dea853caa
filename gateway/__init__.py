"""The HTTP edge of Ruta.

It owns REST/JSON access to the bus for systems that cannot speak gRPC (transcoded with the
descriptors of the global configuration and carried over the same signed transport), the directory
services, the web consoles for administrators, auditors and citizens, the open-data and impact
reports, and the Prometheus endpoint. It imports :mod:`ruta` only and meets the other parts on the
wire.
"""
