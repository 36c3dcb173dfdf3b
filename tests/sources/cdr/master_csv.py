"""Master.csv lines as Asterisk's cdr_csv writes them, and the practices the CDR tests read them for."""

from __future__ import annotations

from ringback.config.practices_file import parse_practices
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.sources.cdr import records

PRACTICES = parse_practices(
    {
        "practices": [
            {
                "id": "maple-family",
                "name": "Maple Family Practice",
                "time_zone": "America/Chicago",
                "phone_numbers": ["(312) 555-0100", "+1 312 555 0101"],
                "sms_from": "+13125550100",
                "booking_link": "https://book.example.org/maple",
            },
            {
                "id": "lakeside-peds",
                "name": "Lakeside Pediatrics",
                "time_zone": "America/New_York",
                "phone_numbers": ["+16175550142"],
                "sms_from": "+16175550142",
                "booking_link": "https://book.example.org/lakeside",
            },
        ]
    }
).practices
DIRECTORY = PracticeDirectory(PRACTICES)
CTX = records.Context.of(PRACTICES[0], DIRECTORY)


def line(
    src="4155550123",
    dst="3125550100",
    dcontext="from-trunk",
    clid='"Jane Roe" <4155550123>',
    channel="SIP/trunk-00000001",
    dstchannel="SIP/201-00000002",
    lastapp="Dial",
    lastdata="SIP/201,30",
    start="2026-03-02 09:15:00",
    answer="",
    end="2026-03-02 09:15:30",
    duration="30",
    billsec="0",
    disposition="NO ANSWER",
    amaflags="DOCUMENTATION",
    uniqueid="1772464500.17",
    userfield="",
    extra: tuple[str, ...] = (),
) -> bytes:
    """A line as Asterisk's cdr_csv writes it: text quoted (quotes doubled), numbers bare."""

    def q(v: str) -> str:
        return '"' + v.replace('"', '""') + '"'

    cols = [q(accountcode) for accountcode in [""]] + [
        q(v) for v in (src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata, start, answer, end)
    ]
    cols += [duration, billsec, q(disposition), q(amaflags)]
    if uniqueid is not None:
        cols.append(q(uniqueid))
        if userfield is not None:
            cols.append(q(userfield))
    cols += [q(v) for v in extra]
    return ",".join(cols).encode()
