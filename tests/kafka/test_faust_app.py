"""The settings every ringback Faust app shares: static group membership, the inline
hand-over of the worker (unit, no broker)."""

from __future__ import annotations

from ringback.config.settings import Settings
from ringback.kafka.faust_app import MAX_POLL_RECORDS
from ringback.sinks.app import make_app as sinks_app
from ringback.worker.app import make_app as worker_app


def test_an_instance_id_makes_each_app_a_static_member_named_by_it():
    for make in (worker_app, sinks_app):
        app = make(Settings(ringback_namespace="static-unit", ringback_instance_id="worker-0"))
        assert app.conf.consumer_group_instance_id == "worker-0"
        # Not host:port: a restart on another port must not change what the assignor checks.
        assert str(app.conf.canonical_url) == "http://worker-0"


def test_without_an_instance_id_the_members_are_dynamic():
    for make in (worker_app, sinks_app):
        app = make(Settings(ringback_namespace="dynamic-unit"))
        assert app.conf.consumer_group_instance_id is None
        assert str(app.conf.canonical_url).endswith(f":{app.conf.web_port}")


def test_the_worker_hands_records_over_inline_with_capped_polls_and_the_sinks_do_not():
    worker = worker_app(Settings(ringback_namespace="handover-unit"))
    assert worker.conf.broker_max_poll_records == MAX_POLL_RECORDS
    assert getattr(worker.consumer, "_ringback_inline_handover", False)
    sinks = sinks_app(Settings(ringback_namespace="handover-unit"))
    assert sinks.conf.broker_max_poll_records is None  # Faust's default
    assert not getattr(sinks.consumer, "_ringback_inline_handover", False)
