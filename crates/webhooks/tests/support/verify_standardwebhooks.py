"""Verifies webhooks with the standardwebhooks package's own Webhook(secret).verify.

Reads a JSON list of {"secret", "body", "headers"} on stdin; prints a JSON list with, per
item, "ok" when verify accepted it (and returned the parsed body) or the error's text.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook

results = []
for item in json.load(sys.stdin):
    try:
        parsed = Webhook(item["secret"]).verify(item["body"], item["headers"])
        results.append("ok" if parsed == json.loads(item["body"]) else "parsed differently")
    except Exception as e:  # the verifier's refusal, reported to the Rust test
        results.append(f"{type(e).__name__}: {e}")
print(json.dumps(results))
