"""An aiosmtpd handler for tenantry-smtp's tests.

Loaded by the test harness as
    PYTHONPATH=<this dir> python3 -m aiosmtpd -n -l 127.0.0.1:PORT \
        -c tenantry_smtp_recorder.Recorder SPOOL_DIR

For every accepted message it writes SPOOL_DIR/msg-<ns>-<pid>-<n>.json: the envelope
(MAIL FROM, RCPT TO), the decoded headers, the plain-text and HTML parts (as parsed by
Python's own email package, independently of the Rust code under test) and the raw bytes.

It can be told to refuse: while SPOOL_DIR/control.json exists and holds {"rcpt": "451 ..."}
or {"data": "554 ..."}, that reply is given to RCPT TO or to the end of DATA instead of 250.
With {"data_delay": SECONDS} it waits that long before taking a message (a slow server).
Every RCPT and DATA decision is appended to SPOOL_DIR/events.log ("rcpt 451 ..." etc.).
"""

import asyncio
import email
import email.policy
import itertools
import json
import os
import pathlib
import time


class Recorder:
    def __init__(self, spool):
        self.spool = pathlib.Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.counter = itertools.count(1)

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("Recorder takes one argument: the spool directory")
        return cls(args[0])

    def _control_file(self):
        try:
            control = json.loads((self.spool / "control.json").read_text())
        except (OSError, ValueError):
            return {}
        return control if isinstance(control, dict) else {}

    def _control(self, stage):
        reply = self._control_file().get(stage)
        return reply if isinstance(reply, str) and reply else None

    def _log(self, line):
        with open(self.spool / "events.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self._control("rcpt")
        if reply:
            self._log(f"rcpt {reply}")
            return reply
        self._log("rcpt 250")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        delay = self._control_file().get("data_delay")
        if isinstance(delay, (int, float)) and delay > 0:
            await asyncio.sleep(delay)
        reply = self._control("data")
        if reply:
            self._log(f"data {reply}")
            return reply
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        parts = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            parts.append(
                {"content_type": part.get_content_type(), "content": part.get_content()}
            )
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "message_id": str(msg["Message-ID"]),
            "date": str(msg["Date"]),
            "content_type": msg.get_content_type(),
            "parts": parts,
            "raw": raw.decode("utf-8", "replace"),
        }
        name = f"msg-{time.time_ns():020d}-{os.getpid()}-{next(self.counter):06d}.json"
        tmp = self.spool / ("." + name + ".tmp")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, self.spool / name)
        self._log("data 250")
        return "250 Message accepted for delivery"
