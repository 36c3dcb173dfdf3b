"""HAPI FHIR for every EHR test module: registered here, once, so the whole folder shares
one server per session (a fixture imported into several modules is a separate fixture in
each, and each would start its own server)."""

from tests.support.hapi import hapi_fixture, hapi_session_fixture  # noqa: F401 - fixtures
