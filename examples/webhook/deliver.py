#!/usr/bin/env python3
"""Sends a Standard Webhooks delivery (what GitHub, Stripe-style senders do), signed with
a `whsec_...` secret. Python standard library only.

    deliver.py URL SECRET [BODY_JSON]
"""
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.request
import uuid

url, secret = sys.argv[1], sys.argv[2]
body = (sys.argv[3] if len(sys.argv) > 3 else json.dumps({"items": [{"order": 1}]})).encode()
msg_id, ts = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
req = urllib.request.Request(url, data=body, method="POST", headers={
    "content-type": "application/json",
    "webhook-id": msg_id,
    "webhook-timestamp": ts,
    "webhook-signature": "v1," + base64.b64encode(mac).decode(),
})
try:
    with urllib.request.urlopen(req) as resp:
        print(resp.status, resp.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
    sys.exit(1)
