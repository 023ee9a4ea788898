"""An aiosmtpd server that requires authentication, for tenantry-smtp's AUTH tests.

The aiosmtpd command line cannot turn AUTH on, so the tests start this script through
aiosmtpd's Python API:

    PYTHONPATH=<this dir> python3 tenantry_smtp_auth_server.py \
        --port PORT --tls starttls|implicit --cert CERT --key KEY \
        --user USER --password-env VAR --mechanism PLAIN|LOGIN SPOOL_DIR

The password is read from the environment variable named by --password-env, so it never
shows in a process listing. TLS comes before AUTH (with STARTTLS aiosmtpd refuses AUTH until
the upgrade; with implicit TLS the socket is TLS from the first byte), AUTH is required before
MAIL, and only --mechanism is offered. Messages are
recorded by tenantry_smtp_recorder.Recorder into SPOOL_DIR; every AUTH decision is appended
to SPOOL_DIR/events.log as "auth <MECHANISM> ok" or "auth <MECHANISM> refused" (never the
credentials).
"""

import argparse
import os
import signal
import ssl

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tenantry_smtp_recorder import Recorder

MECHANISMS = ("PLAIN", "LOGIN")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", choices=("starttls", "implicit"), required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-env", required=True)
    parser.add_argument("--mechanism", choices=MECHANISMS, required=True)
    parser.add_argument("spool")
    args = parser.parse_args()

    password = os.environ[args.password_env].encode("utf-8")
    user = args.user.encode("utf-8")
    recorder = Recorder(args.spool)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user
            and auth_data.password == password
        )
        recorder._log(f"auth {mechanism} {'ok' if ok else 'refused'}")
        return AuthResult(success=ok, handled=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    smtp = dict(
        authenticator=authenticator,
        auth_required=True,
        # With STARTTLS, aiosmtpd refuses AUTH until the upgrade. With implicit TLS the
        # listening socket itself is TLS (no byte is ever plain), but aiosmtpd 1.4 only counts
        # a STARTTLS upgrade as TLS and would never offer AUTH, so the check is off there.
        auth_require_tls=args.tls == "starttls",
        auth_exclude_mechanism=[m for m in MECHANISMS if m != args.mechanism],
    )
    if args.tls == "starttls":
        controller = Controller(
            recorder,
            hostname="127.0.0.1",
            port=args.port,
            tls_context=context,
            require_starttls=True,
            **smtp,
        )
    else:
        controller = Controller(
            recorder,
            hostname="127.0.0.1",
            port=args.port,
            ssl_context=context,
            **smtp,
        )
    controller.start()
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
