"""Realistic call traffic for N practices, as the real providers send it (docs/demo.md).

The API, for `ringback demo` and `ringback bench` alike:

```python
from ringback.dev.simulator import Day, Player, Secrets, Targets, EhrFeed, demo_practices, plan_day, sites_for

practices_file, providers = demo_practices(n=5, speed=600)     # dict for YAML + each practice's phone system
practices = parse_practices(practices_file).practices           # ringback.config.practices_file
plan = plan_day(seed=7, sites=sites_for(practices, providers), day=Day(speed=600))   # pure
plan.events          # ordered SimEvents: at (wall s after 08:00), kind, practice, caller, ...
plan.preload         # the EHR in the morning (FHIR resources), to publish before the first call
plan.cases           # CaseSpec per missed-call case: scenario, expected SMS steps and outcome
plan.summary()       # counts, expected SMS by step

player = Player(plan, {p.id: p for p in practices}, Secrets(twilio=..., ringcentral=..., dialpad=...,
                vonage=...), Targets(gateway_url=..., cdr_dirs={...}, ehr=EhrFeed(settings, by_id),
                console_url=..., console_login=("demo", "..."), sms_received=lambda practice, phone: ...))
await player.preload()
result = await player.play()    # PlayResult: requests by status, unexpected answers, lag
```

Modules: `plan.py` (what happens when: the pure plan), `render.py` (an event → the
signed webhook, the CDR line, the FHIR resources, at play time), `player.py`
(posting at the plan's times), `hl7_feed.py` (the EHR's patients and appointments as
HL7 v2 messages over MLLP to `ringback ehr hl7`, flags over FHIR), `practices.py` (the demo practices file, windows
scaled to the speed), `webhooks.py` (the providers' payload builders, shared with the
gateway tests). docs/demo.md describes the day and the assumptions behind it.
"""

from ringback.dev.simulator.plan import (
    CALL,
    EHR,
    GV_AUDIT,
    GV_EMAIL,
    GVOICE,
    IMPORT,
    JUNK,
    PROVIDERS,
    SMS,
    STAFF,
    TRANSCRIPT,
    CaseSpec,
    Day,
    Plan,
    SimEvent,
    Site,
    plan_day,
    sites_for,
)
from ringback.dev.simulator.player import EhrFeed, Player, PlayResult, Targets
from ringback.dev.simulator.practices import demo_practices, scaled_windows
from ringback.dev.simulator.render import Secrets

__all__ = [
    "CALL",
    "EHR",
    "GV_AUDIT",
    "GV_EMAIL",
    "GVOICE",
    "IMPORT",
    "JUNK",
    "PROVIDERS",
    "SMS",
    "STAFF",
    "TRANSCRIPT",
    "CaseSpec",
    "Day",
    "EhrFeed",
    "Plan",
    "PlayResult",
    "Player",
    "Secrets",
    "SimEvent",
    "Site",
    "Targets",
    "demo_practices",
    "plan_day",
    "scaled_windows",
    "sites_for",
]
