"""A small legacy business-register service: SOAP 1.1, document/literal, one operation.

``python -m adapters.examples.legacy_business --listen 127.0.0.1:8092`` serves::

    GET  /business?wsdl   the WSDL (its address points back at this server)
    POST /business        FindCompaniesByOwner(ownerId) -> ownerId, company*
                          {code, name, status, role, registeredOn}
                          SOAP Fault (Client) "UnknownOwner" for an id the register never saw,
                          "InvalidOwnerId" for an id that is not ten digits

Requests are parsed with DTDs, entities and network access off. The companies are fictional and
owned by the example population register's persons.
"""

from __future__ import annotations

import sys
from typing import Final

from aiohttp import web
from lxml import etree  # type: ignore[import-untyped]

from adapters.examples._legacy_http import run_legacy_service
from ruta.http_body import read_bounded

__all__ = ["COMPANIES", "KNOWN_OWNERS", "NAMESPACE", "main", "make_app", "wsdl"]

NAMESPACE: Final = "urn:ruta-example:business-register"
_SOAP_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
#: Largest request body read.
MAX_REQUEST_BYTES: Final = 64 * 1024

#: owner national id -> [(code, name, status, role, registered_on)]
COMPANIES: Final[dict[str, list[tuple[str, str, str, str, str]]]] = {
    "4410000025": [
        ("20600000011", "Panadería Fernández SAC", "active", "OWNER", "2016-05-10"),
        ("20600000029", "Transportes Rojas EIRL", "dissolved", "OWNER", "2012-03-01"),
    ],
    "4410000033": [
        ("20600000037", "Consultora Soto y Asociados SRL", "active", "PARTNER", "2019-10-22"),
    ],
}
#: Every national id the register has seen (owners or not).
KNOWN_OWNERS: Final = frozenset(
    {"4410000017", "4410000025", "4410000033", "4410000041", "4410000058"}
)

_WSDL: Final = """<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    xmlns:tns="{ns}" targetNamespace="{ns}" name="BusinessRegister">
  <types>
    <xsd:schema targetNamespace="{ns}" elementFormDefault="qualified">
      <xsd:element name="FindCompaniesByOwner">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="ownerId" type="xsd:string"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:complexType name="Company"><xsd:sequence>
        <xsd:element name="code" type="xsd:string"/>
        <xsd:element name="name" type="xsd:string"/>
        <xsd:element name="status" type="xsd:string"/>
        <xsd:element name="role" type="xsd:string"/>
        <xsd:element name="registeredOn" type="xsd:date"/>
      </xsd:sequence></xsd:complexType>
      <xsd:element name="FindCompaniesByOwnerResponse">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="ownerId" type="xsd:string"/>
          <xsd:element name="company" type="tns:Company" minOccurs="0" maxOccurs="unbounded"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
    </xsd:schema>
  </types>
  <message name="FindCompaniesByOwnerInput">
    <part name="parameters" element="tns:FindCompaniesByOwner"/>
  </message>
  <message name="FindCompaniesByOwnerOutput">
    <part name="parameters" element="tns:FindCompaniesByOwnerResponse"/>
  </message>
  <portType name="BusinessRegisterPortType">
    <operation name="FindCompaniesByOwner">
      <input message="tns:FindCompaniesByOwnerInput"/>
      <output message="tns:FindCompaniesByOwnerOutput"/>
    </operation>
  </portType>
  <binding name="BusinessRegisterBinding" type="tns:BusinessRegisterPortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="FindCompaniesByOwner">
      <soap:operation soapAction="{ns}#FindCompaniesByOwner"/>
      <input><soap:body use="literal"/></input>
      <output><soap:body use="literal"/></output>
    </operation>
  </binding>
  <service name="BusinessRegisterService">
    <port name="BusinessRegisterPort" binding="tns:BusinessRegisterBinding">
      <soap:address location="{location}"/>
    </port>
  </service>
</definitions>
"""


def wsdl(location: str) -> str:
    """The service's WSDL, with its SOAP address set to ``location``."""
    return _WSDL.format(ns=NAMESPACE, location=location)


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _envelope(body: etree._Element) -> bytes:
    env = etree.Element(f"{{{_SOAP_ENV}}}Envelope", nsmap={"soap": _SOAP_ENV})
    etree.SubElement(env, f"{{{_SOAP_ENV}}}Body").append(body)
    result: bytes = etree.tostring(env, xml_declaration=True, encoding="utf-8")
    return result


def _fault(code: str, text: str) -> web.Response:
    fault = etree.Element(f"{{{_SOAP_ENV}}}Fault")
    etree.SubElement(fault, "faultcode").text = f"soap:{code}"
    etree.SubElement(fault, "faultstring").text = text
    return web.Response(body=_envelope(fault), status=500, content_type="text/xml", charset="utf-8")


def answer(owner_id: str) -> web.Response:
    """The SOAP answer for ``FindCompaniesByOwner(owner_id)``."""
    if not (len(owner_id) == 10 and owner_id.isdigit()):
        return _fault("Client", "InvalidOwnerId: the owner id must be ten digits")
    if owner_id not in KNOWN_OWNERS:
        return _fault("Client", "UnknownOwner: the register has no such person")
    response = etree.Element(
        f"{{{NAMESPACE}}}FindCompaniesByOwnerResponse", nsmap={None: NAMESPACE}
    )
    etree.SubElement(response, f"{{{NAMESPACE}}}ownerId").text = owner_id
    for code, name, status, role, registered_on in COMPANIES.get(owner_id, []):
        company = etree.SubElement(response, f"{{{NAMESPACE}}}company")
        for tag, value in (
            ("code", code),
            ("name", name),
            ("status", status),
            ("role", role),
            ("registeredOn", registered_on),
        ):
            etree.SubElement(company, f"{{{NAMESPACE}}}{tag}").text = value
    return web.Response(body=_envelope(response), content_type="text/xml", charset="utf-8")


async def _get_wsdl(request: web.Request) -> web.Response:
    location = str(request.url.with_query(None))
    return web.Response(text=wsdl(location), content_type="text/xml")


async def _post(request: web.Request) -> web.Response:
    raw = await read_bounded(request.content, MAX_REQUEST_BYTES)
    if raw is None:
        return _fault("Client", "request too large")
    try:
        doc = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError:
        return _fault("Client", "request is not XML")
    if doc.getroottree().docinfo.doctype:
        return _fault("Client", "DTDs are not accepted")
    owner = doc.find(f".//{{{NAMESPACE}}}FindCompaniesByOwner/{{{NAMESPACE}}}ownerId")
    if owner is None:
        return _fault("Client", "unknown operation or missing ownerId")
    return answer((owner.text or "").strip())


def make_app() -> web.Application:
    """The service as an aiohttp application (tests run it on a loopback port)."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_get("/business", _get_wsdl)
    app.router.add_post("/business", _post)
    return app


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--listen HOST:PORT`` (default 127.0.0.1:8092), ``--ready-file PATH``."""
    return run_legacy_service(
        argv,
        make_app,
        name="legacy business register",
        description="Example legacy business-register SOAP service.",
        default_listen="127.0.0.1:8092",
        url_path="/business",
        ready_extra=lambda url: {"wsdl": f"{url}?wsdl"},
    )


if __name__ == "__main__":
    sys.exit(main())
