"""The demo's practices file: N practices of one health system, windows scaled to the speed.

`demo_practices(n, speed)` returns the practices file as a dict (write it with
`yaml.safe_dump`, validate it with `ringback.config.practices_file.parse_practices`) and
the phone system of each practice. Practice 0 is the reference practice of docs/product.md
(Maple Family Practice, on Twilio, 94 calls a day); the others take the phone systems
in turn: RingCentral, Dialpad, Vonage, a legacy PBX (CDR file), Twilio again, ...
Twilio practices use the ready-made call flow (`call_flow`: ring the front desk, then
voicemail), so their calls arrive as forwarded calls' callbacks.

Windows: every default window of a practice (`Windows`) divided by `speed` (practice seconds per wall
second) and rounded, at least 1 s, except the first-response hold and the urgent
acknowledgement, which may round to 0 (respond while the missed call is processed:
45 s / 600 is 0.075 s, and 0 is its nearest whole second). Two things are not scaled:
the appointment horizons (14 days for the reschedule link, 48 h for protection: they
compare calendar dates of real appointments) and `case_expiry`, which is 6 practice
hours instead of 24 so that the day's report is decided a few seconds after the last
call. SMS are allowed all day (the demo may run at night) and the secrets are named,
never written: the demo puts their values in its own secrets folder.
"""

from __future__ import annotations

from ringback.dev.simulator.plan import PROVIDERS
from ringback.domain.practice import Windows

# Calendar horizons: not durations of the workflow.
UNSCALED = frozenset({"reschedule_link_horizon", "reschedule_protect_horizon"})
MAY_BE_ZERO = frozenset({"first_response_hold", "urgent_ack"})
DEMO_CASE_EXPIRY_S = 6 * 3600

# Secret names (the values live in the demo's secrets folder).
SECRET_NAMES = {
    "twilio": ("twilio_auth_token", "TWILIO_AUTH_TOKEN"),
    "ringcentral": ("ringcentral_verification_token", "DEMO_RINGCENTRAL_VERIFICATION_TOKEN"),
    "dialpad": ("dialpad_webhook_secret", "DEMO_DIALPAD_WEBHOOK_SECRET"),
    "vonage": ("vonage_signature_secret", "DEMO_VONAGE_SIGNATURE_SECRET"),
}
SLACK_SECRET = "DEMO_SLACK_WEBHOOK"
# Twilio practices forward to two front-desk phones, which ring this long before the voicemail
# (practice seconds: the plan spreads a forwarded call's callbacks over them).
FRONT_DESK_RING_S = 20

# (id, name, time zone, area code) of the first practices; more are numbered.
NAMES = (
    ("maple-family", "Maple Family Practice", "America/Chicago", "312"),
    ("lakeside-peds", "Lakeside Pediatrics", "America/New_York", "617"),
    ("harbor-internal", "Harbor Internal Medicine", "America/Los_Angeles", "415"),
    ("pine-ridge", "Pine Ridge Family Health", "America/Denver", "303"),
    ("riverside-clinic", "Riverside Community Clinic", "America/Chicago", "608"),
    ("cedar-womens", "Cedar Women's Health", "America/New_York", "215"),
    ("summit-ortho", "Summit Orthopedics", "America/Denver", "801"),
    ("bayview-cardio", "Bayview Cardiology", "America/Los_Angeles", "619"),
)
EXTRA_AREAS = ("202", "206", "305", "404", "503", "512", "602", "612", "702", "713", "720", "808", "816", "919")


def scaled_windows(speed: float, case_expiry_s: int = DEMO_CASE_EXPIRY_S) -> dict[str, int]:
    """The default windows for a day running `speed` times faster, in whole wall seconds."""
    defaults = Windows()
    out: dict[str, int] = {}
    for name in Windows.model_fields:
        if name in UNSCALED:
            continue
        seconds = case_expiry_s if name == "case_expiry" else getattr(defaults, name)
        scaled = int(seconds / speed + 0.5)
        out[name] = max(0 if name in MAY_BE_ZERO else 1, scaled)
    return out


def practice_identity(index: int) -> tuple[str, str, str, str]:
    if index < len(NAMES):
        return NAMES[index]
    area = EXTRA_AREAS[(index - len(NAMES)) % len(EXTRA_AREAS)]
    return (f"site-{index + 1:03d}", f"Health System Site {index + 1}", "America/Chicago", area)


def demo_practices(n: int, speed: float, providers: list[str] | None = None) -> tuple[dict, list[str]]:
    """(practices file as a dict, provider of each practice)."""
    if n < 1:
        raise ValueError("at least one practice")
    chosen = providers or [PROVIDERS[i % len(PROVIDERS)] for i in range(n)]
    windows = scaled_windows(speed)
    practices = []
    for i in range(n):
        pid, name, zone, area = practice_identity(i)
        block = i // (len(NAMES) + len(EXTRA_AREAS))
        did = f"+1{area}555{100 + 2 * block:04d}"  # 555-01xx: reserved for fiction
        spam = f"+1{area}555{199 - block:04d}"
        provider = chosen[i]
        secrets = {}
        if provider in SECRET_NAMES:
            key, secret = SECRET_NAMES[provider]
            secrets[key] = secret
        practices.append(
            {
                "id": pid,
                "name": name,
                "time_zone": zone,
                "phone_numbers": [did],
                "sms_from": did,
                "booking_link": f"https://book.example.org/{pid}",
                "reschedule_link": f"https://book.example.org/{pid}/reschedule",
                "routing": {
                    "scheduling_coordinator": f"email:frontdesk@{pid}.example.org",
                    "scheduling_queue": f"email:scheduling@{pid}.example.org",
                    "nurse": f"email:nurse@{pid}.example.org",
                    "department_manager": f"slack:{SLACK_SECRET}",
                    "admin_team": f"email:admin@{pid}.example.org",
                },
                "windows": dict(windows),
                "quiet_hours": {"start": "00:00", "end": "00:00"},
                "sms_caps": {"per_day": 3, "per_week": 6, "fcc_healthcare_exemption": False},
                "blocked_numbers": [spam],
                "secrets": secrets,
            }
        )
        if provider == "twilio":  # the ready-made call flow: ringback answers the number (docs/providers/twilio.md)
            practices[-1]["call_flow"] = {
                "front_desk": [f"+1{area}555{150 + 2 * block:04d}", f"+1{area}555{151 + 2 * block:04d}"],
                "ring_seconds": FRONT_DESK_RING_S,
                "voicemail_greeting": f"You have reached {name}. Please leave a message after the tone.",
                "machine_detection": True,
            }
    return {"practices": practices}, chosen
