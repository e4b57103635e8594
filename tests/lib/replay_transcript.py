#!/usr/bin/env python3
"""Replays one transcript (tests/transcripts/*.json) over HTTP against a running registry.

    replay_transcript.py http://127.0.0.1:5000 tests/transcripts/blob-chunked.json [--all]

Exits non-zero with a message naming the first step that does not match (with --all, after
naming every step that does not match).
"""
import http.client
import json
import sys
import urllib.parse


# Headers berth may repeat, whose values (tags) contain no commas.
LIST_HEADERS = {"oci-tag"}


def substitute(text, variables):
    for name, value in variables.items():
        text = text.replace("${" + name + "}", value)
    return text


def parsed(data):
    try:
        return json.loads(data)
    except ValueError:
        return None


def error_code(data):
    """The code of the first error of a JSON error body, or None."""
    try:
        return parsed(data)["errors"][0]["code"]
    except (TypeError, KeyError, IndexError):
        return None


def main():
    base, path = sys.argv[1], sys.argv[2]
    keep_going = "--all" in sys.argv[3:]
    mismatches = []
    host = urllib.parse.urlparse(base).netloc
    transcript = json.load(open(path))
    variables = {}
    for i, step in enumerate(transcript["steps"]):
        request, expected = step["request"], step["response"]
        target = substitute(request["path"], variables)
        # Sent as UTF-8 bytes: a transcript may hold a header value that is not ASCII.
        headers = {k: substitute(v, variables).encode() for k, v in request.get("headers", {}).items()}
        if "body" in request:
            body = request["body"].encode()
        elif "body_repeat" in request:
            body = (request["body_repeat"]["text"] * request["body_repeat"]["count"]).encode()
        else:
            body = b""
        context = f"{transcript['name']} step {i}: {request['method']} {target}"
        connection = http.client.HTTPConnection(host, timeout=60)
        connection.request(request["method"], target, body=body or None, headers=headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        got = {}
        for name, value in response.getheaders():
            if name.lower() in LIST_HEADERS:
                # A host may join repeated field lines into one (RFC 9110 section 5.3, as the
                # Fetch API's Headers does): either way the first element is the first value.
                value = value.split(",")[0].strip()
            got.setdefault(name.lower(), value)  # the first of repeated headers, as the driver test reads


        def fail(what):
            message = f"{context}: {what}\n  status {response.status}, headers {got}\n  body {data[:300]!r}"
            if not keep_going:
                sys.exit(message)
            mismatches.append(message)
            print(message, file=sys.stderr)

        if response.status != expected["status"]:
            fail(f"status {response.status}, expected {expected['status']}")
        if got.get("docker-distribution-api-version") != "registry/2.0":
            fail("no Docker-Distribution-API-Version")
        for name, value in expected.get("headers", {}).items():
            value = substitute(value, variables)
            if name.lower() not in got or (value != "*" and got[name.lower()] != value):
                fail(f"header {name}: expected {value!r}")
        for name in expected.get("absent_headers", []):
            if name.lower() in got:
                fail(f"header {name} should be absent")
        if "error" in expected and error_code(data) != expected["error"]:
            fail(f"error code, expected {expected['error']}")
        if "body" in expected and data.decode(errors="replace") != expected["body"]:
            fail(f"body, expected {expected['body']!r}")
        if "json" in expected and parsed(data) != expected["json"]:
            fail(f"JSON body, expected {expected['json']}")
        if request["method"] != "HEAD" and "content-length" in got and int(got["content-length"]) != len(data):
            fail("Content-Length does not match the body")
        for name, header in step.get("save", {}).items():
            variables[name] = got[header.lower()]
    if mismatches:
        sys.exit(f"{transcript['name']}: {len(mismatches)} of {len(transcript['steps'])} steps do not match")
    print(f"{transcript['name']}: {len(transcript['steps'])} steps match")


if __name__ == "__main__":
    main()
