"""Staff notifications by e-mail over SMTP (aiosmtplib, so the event loop never blocks).

`SMTP_URL`: `smtp://[user:password@]host[:port]` (STARTTLS when the server offers
it; `?starttls=require` insists, `?starttls=off` never), `smtps://...` for implicit
TLS. The sender is `RINGBACK_SMTP_FROM` (default `ringback@localhost`). Each message
gets a Message-ID derived from the action id, so a resend after a crash is
recognisable as the same message by mail clients and by us. An urgent task's message
is flagged high importance.
"""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from ringback.sinks.retry import Permanent, Transient


def message_id(action_id: str) -> str:
    return f"<{hashlib.sha256(action_id.encode()).hexdigest()[:32]}@ringback>"


class SmtpMailer:
    def __init__(self, smtp_url: str, sender: str = "ringback@localhost", timeout_s: float = 15.0) -> None:
        url = urlsplit(smtp_url)
        if url.scheme not in ("smtp", "smtps") or not url.hostname:
            raise ValueError("SMTP_URL must look like smtp://[user:password@]host[:port] or smtps://...")
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.hostname = url.hostname
        self.use_tls = url.scheme == "smtps"
        self.port = url.port or (465 if self.use_tls else 25)
        self.username = unquote(url.username) if url.username else None
        self.password = unquote(url.password) if url.password else None
        starttls = query.get("starttls", "auto")
        self.start_tls = None if starttls == "auto" else starttls in ("require", "1", "true", "yes")
        self.sender = sender  # RINGBACK_SMTP_FROM
        self.timeout_s = timeout_s  # RINGBACK_SMTP_TIMEOUT_S

    def build(self, action_id: str, to: str, subject: str, text: str, urgent: bool = False) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Message-ID"] = message_id(action_id)
        msg["X-Ringback-Action"] = hashlib.sha256(action_id.encode()).hexdigest()[:16]
        if urgent:  # the high-importance flag of RFC 2156 (Outlook, Thunderbird) and its older X-Priority form
            msg["Importance"] = "high"
            msg["X-Priority"] = "1"
        msg.set_content(text)
        return msg

    async def send(self, action_id: str, to: str, subject: str, text: str, urgent: bool = False) -> None:
        msg = self.build(action_id, to, subject, text, urgent)
        try:
            await aiosmtplib.send(
                msg,
                hostname=self.hostname,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.use_tls,
                start_tls=self.start_tls,
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = {r.code for r in exc.recipients}
            if all(400 <= c < 500 for c in codes):
                raise Transient(f"SMTP recipient deferred ({sorted(codes)})") from None
            raise Permanent(f"SMTP refused the recipient ({sorted(codes)})") from None
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise Transient(f"SMTP answered {exc.code}") from None
            raise Permanent(f"SMTP refused the message: {exc.code}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise Transient(f"SMTP failed: {type(exc).__name__}", ambiguous=True) from None
