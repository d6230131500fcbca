#!/usr/bin/env python3
"""A webhook receiver that verifies Standard Webhooks signatures with the standard library only.

    WEBHOOK_SECRET=whsec_... python3 examples/webhook_receiver.py   # listens on 127.0.0.1:$PORT (9099)

Subscribe it with POST /v1/webhook_endpoints {"url": "http://127.0.0.1:9099/hooks", ...}.
It answers 204 to a delivery whose signature is valid and whose timestamp is within five minutes,
400 otherwise, and prints each event it accepts.
"""
import base64, hashlib, hmac, http.server, json, os, time

SECRET = os.environ["WEBHOOK_SECRET"]  # whsec_…, from the endpoint's creation
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))

class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        msg_id, ts = self.headers["webhook-id"], self.headers["webhook-timestamp"]
        expected = base64.b64encode(hmac.new(KEY, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
        signatures = [s.removeprefix("v1,") for s in self.headers["webhook-signature"].split()]
        fresh = abs(time.time() - int(ts)) < 300
        if not fresh or not any(hmac.compare_digest(expected, s) for s in signatures):
            self.send_response(400); self.end_headers(); return
        event = json.loads(body)
        print(msg_id, event["type"], event["data"]["object"]["id"], flush=True)
        self.send_response(204); self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "9099"))), Hook).serve_forever()
