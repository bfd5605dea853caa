"""Gateway beds for the console pages: one with the names and savings an instance would show
(the screenshots), and one whose registry data carries markup, to show it is escaped."""

from __future__ import annotations

from typing import Final

from ruta.v1 import globalconf_pb2
from tests.integration.gateway.gwbed import REST_SERVICE, GatewayBed

MEMBER_NAMES: Final = {
    "POP": "Population Registry Agency",
    "SOC": "Social Security Institute",
    "TAX": "Revenue Service",
}
#: Markup in a member name and a service description: the page must show it as text.
HOSTILE_NAME: Final = '<script>alert("member")</script> Population'
HOSTILE_DESCRIPTION: Final = '<script>alert("service")</script><img src=x onerror=alert(1)>'


class ShowcaseBed(GatewayBed):
    """Members by their names; the gRPC service declares what one call saves."""

    def configuration(self) -> globalconf_pb2.GlobalConfiguration:
        conf = super().configuration()
        for member in conf.members:
            member.name = MEMBER_NAMES.get(member.id.member_code, member.name)
        for service in conf.services:
            if service.id.service_name != REST_SERVICE.service_name:
                service.savings.citizen_minutes = 42.5
                service.savings.paper_forms = 2
        return conf


class HostileBed(GatewayBed):
    """A member name and a service description holding markup."""

    def configuration(self) -> globalconf_pb2.GlobalConfiguration:
        conf = super().configuration()
        for member in conf.members:
            if member.id.member_code == "POP":
                member.name = HOSTILE_NAME
        for service in conf.services:
            service.description = HOSTILE_DESCRIPTION
        return conf
