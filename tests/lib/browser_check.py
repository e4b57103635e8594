#!/usr/bin/env python3
"""Opens a page in headless Chromium through chromedriver (the WebDriver protocol, spoken
with the standard library) and waits for its #result element to say PASS or FAIL.

    browser_check.py URL [TIMEOUT_SECONDS]

Prints the page's #log and #result; exits 0 on PASS.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["value"]


def main():
    url, timeout = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 120
    port = free_port()
    driver = subprocess.Popen([os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"), f"--port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    profile = tempfile.mkdtemp(prefix="berth-chromium-")
    try:
        for _ in range(100):
            try:
                call(base, "GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        # The flags the machine notes ask for: no sandbox as root, and no background
        # networking, which this machine's closed network would refuse.
        arguments = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
        capabilities = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": os.environ.get("CHROMIUM", "/usr/bin/chromium"), "args": arguments}}}}
        session = call(base, "POST", "/session", capabilities)["sessionId"]
        try:
            call(base, "POST", f"/session/{session}/url", {"url": url})
            deadline = time.monotonic() + timeout
            result = "running"
            while time.monotonic() < deadline:
                result = call(base, "POST", f"/session/{session}/execute/sync", {
                    "script": "const r = document.getElementById('result'); return r ? r.textContent : 'loading';",
                    "args": []})
                if result.startswith("PASS") or result.startswith("FAIL"):
                    break
                time.sleep(0.25)
            page_log = call(base, "POST", f"/session/{session}/execute/sync", {
                "script": "const l = document.getElementById('log'); return l ? l.textContent : '';", "args": []})
            print(page_log.rstrip())
            print(result)
            return 0 if result.startswith("PASS") else 1
        finally:
            call(base, "DELETE", f"/session/{session}")
    finally:
        driver.terminate()
        driver.wait()
        subprocess.run(["rm", "-rf", profile])


if __name__ == "__main__":
    sys.exit(main())
