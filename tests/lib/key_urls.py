"""Token issuers' key sets at a URL, fetched by the registry through its host's HTTP client,
and failed logins held back, checked over HTTP against any host:

  key_urls.py setup DIR     writes DIR/settings.json (the login settings: an issuer whose key
                            set lives at a URL on a free port, a 1 s refetch interval, a 1 s
                            delay after a failed login, one htpasswd user) and the issuer's
                            keys
  key_urls.py run URL DIR   serves the key set on that port and checks the registry at URL

The key set server answers what the steps say: the first key; then errors and text that is
no key set (the registry keeps the keys it has); then the first and a rotated-in second key.
"""

import base64
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

ISSUER = "url-issuer"
SERVICE = "keys"
INTERVAL = 1
FAIL_DELAY = 1
KIDS = ("url-1", "url-2", "url-3")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(directory):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    os.makedirs(directory, exist_ok=True)
    port = free_port()
    public = {}
    for kid in KIDS:
        key = ec.generate_private_key(ec.SECP256R1())
        with open(os.path.join(directory, f"{kid}.pem"), "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        jwk["kid"] = kid
        public[kid] = jwk
    htpasswd = subprocess.run(["htpasswd", "-nbB", "-C", "4", "alice", "alice-secret"],
                              check=True, capture_output=True, text=True).stdout.strip() + "\n"
    settings = {
        "htpasswd": htpasswd,
        "service": SERVICE,
        "issuers": [{"issuer": ISSUER, "keys-url": f"http://127.0.0.1:{port}/jwks.json"}],
        "key-refetch-interval": INTERVAL,
        "login-fail-delay": FAIL_DELAY,
    }
    with open(os.path.join(directory, "settings.json"), "w") as out:
        json.dump(settings, out)
    with open(os.path.join(directory, "state.json"), "w") as out:
        json.dump({"port": port, "public": public}, out)


class KeySetServer:
    """Answers GET /jwks.json with what `answer` holds: (status, body). Counts the GETs."""

    def __init__(self, port):
        self.answer = (503, b"not yet")
        self.fetches = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.fetches += 1
                status, body = server.answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve_keys(self, keys):
        self.answer = (200, json.dumps({"keys": keys}).encode())


def token(directory, kid):
    import jwt

    with open(os.path.join(directory, f"{kid}.pem"), "rb") as source:
        key = source.read()
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": SERVICE, "sub": "robot", "exp": now + 600, "iat": now,
              "access": [{"type": "repository", "name": "keys/x", "actions": ["pull"]}]}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def run(url, directory):
    with open(os.path.join(directory, "state.json")) as source:
        state = json.load(source)
    public = state["public"]
    keys = KeySetServer(state["port"])
    parsed = urllib.parse.urlsplit(url)
    failures = []

    def ping(headers):
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        started = time.monotonic()
        try:
            connection.request("GET", "/v2/", headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status, time.monotonic() - started
        finally:
            connection.close()

    def bearer(kid):
        return {"Authorization": f"Bearer {token(directory, kid)}"}

    def expect(what, status, headers):
        got, _ = ping(headers)
        line = f"{what}: {got}"
        print(("  ok    " if got == status else "  FAIL  ") + line + ("" if got == status else f", expected {status}"))
        if got != status:
            failures.append(line)

    def expect_fetches(what, fetched, low, high):
        line = f"{what}: {fetched} fetches"
        ok = low <= fetched <= high
        print(("  ok    " if ok else "  FAIL  ") + line + ("" if ok else f", expected {low}..{high}"))
        if not ok:
            failures.append(line)

    def after_interval():
        time.sleep(INTERVAL + 0.3)

    # No key is known until a token names one: the first token fetches the set.
    keys.serve_keys([public["url-1"]])
    expect("a token signed by the first key, the set fetched at its first sight", 200, bearer("url-1"))
    expect_fetches("fetched once", keys.fetches, 1, 1)
    # The set's server fails, then answers something that is no key set: the keys stay.
    for answer in ((503, b"unavailable"), (200, b"<html>maintenance</html>")):
        keys.answer = answer
        after_interval()
        before = keys.fetches
        expect(f"a token naming an unknown key while the set's URL answers {answer[0]} "
               f"{answer[1][:20]!r}", 401, bearer("url-3"))
        expect_fetches("the failed fetch was tried", keys.fetches - before, 1, 1)
        expect("a token signed by the first key still passes", 200, bearer("url-1"))
    # Made-up keys cannot make the registry fetch on every request: at most once an interval
    # (sent at once, as far as the host takes them at once: each refusal is held back).
    before, started = keys.fetches, time.monotonic()
    made_up = bearer("url-3")
    senders = [threading.Thread(target=ping, args=(made_up,)) for _ in range(20)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    took = time.monotonic() - started
    expect_fetches(f"20 tokens naming an unknown key, answered within {took:.1f} s",
                   keys.fetches - before, 0, 1 + int(took // INTERVAL))
    # The issuer rotates a second key in: the next token that names it fetches the set.
    keys.serve_keys([public["url-1"], public["url-2"]])
    after_interval()
    expect("a token signed by the rotated-in key", 200, bearer("url-2"))
    expect("a token signed by the first key", 200, bearer("url-1"))
    expect("a token signed by a key the set never had", 401, bearer("url-3"))

    # Failed logins are held back; good ones and requests without credentials are not.
    wrong = {"Authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()}
    right = {"Authorization": "Basic " + base64.b64encode(b"alice:alice-secret").decode()}
    for what, headers, status, slow in (
        ("a wrong password", wrong, 401, True),
        ("the right password", right, 200, False),
        ("no credentials", {}, 401, False),
    ):
        got, took = ping(headers)
        ok = got == status and (took >= FAIL_DELAY * 0.9 if slow else took < FAIL_DELAY * 0.5)
        line = f"{what}: {got} after {took:.2f} s"
        print(("  ok    " if ok else "  FAIL  ") + line)
        if not ok:
            failures.append(line)
    keys.httpd.shutdown()
    print(f"key sets at a URL: {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "setup":
        setup(*args)
    elif command == "run":
        sys.exit(run(*args))
    else:
        sys.exit(f"unknown command {command}")
