#!/usr/bin/env python3
"""An HTTP proxy that sends a request again when it is answered with a 5xx, as a client that
retries would: for running the conformance suites against a registry whose storage fails on
purpose (tests/faults.sh).

    retry_proxy.py LISTEN_PORT UPSTREAM_HOST:PORT

Each request is buffered whole (conformance requests are small; chunked bodies are read and
sent on with a length) and sent up to 50 times
while the answer is a 5xx; the proxy counts what it retried and prints the totals when it
is stopped (SIGTERM). Local addresses only.
"""
import http.client
import http.server
import signal
import socketserver
import sys
import threading

ATTEMPTS = 50
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection"}


class Counts:
    lock = threading.Lock()
    requests = 0
    retried = 0
    failures = 0  # 5xx answers seen (and retried past)


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = ("127.0.0.1", 0)

    def log_message(self, *args):
        pass

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def forward(self):
        body = self.read_body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        for attempt in range(ATTEMPTS):
            connection = http.client.HTTPConnection(*self.upstream, timeout=120)
            try:
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except (ConnectionError, http.client.HTTPException):
                # The registry dropped the connection (a body that broke mid-stream).
                connection.close()
                with Counts.lock:
                    Counts.failures += 1
                continue
            connection.close()
            if response.status >= 500:
                # What failed, for the log (stderr).
                print(f"{self.command} {self.path}: {response.status} {data[:1000]!r}",
                      file=sys.stderr, flush=True)
            if response.status >= 500 and attempt + 1 < ATTEMPTS:
                with Counts.lock:
                    Counts.failures += 1
                continue
            with Counts.lock:
                Counts.requests += 1
                Counts.retried += 1 if attempt else 0
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            # A HEAD's Content-Length describes the GET body, so it is passed on as it is.
            length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        self.send_error(502, "the registry kept failing")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    port = int(sys.argv[1])
    host, upstream_port = sys.argv[2].rsplit(":", 1)
    Proxy.upstream = (host, int(upstream_port))
    server = Server(("127.0.0.1", port), Proxy)

    def stop(*_):
        print(f"retry proxy: {Counts.requests} requests, {Counts.retried} retried, "
              f"{Counts.failures} failed attempts", flush=True)
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
