"""The access matrix over HTTP: every principal x every operation x three repositories,
against an oracle written from the rules below (not from berth's code). Counts unauthorized
successes and wrongful refusals; both must be 0.

  auth_matrix.py setup DIR        writes the login settings for the hosts (settings.json)
                                  and for `berth serve` (users, access.toml, token.pem,
                                  issuer.jwks, berth.toml)
  auth_matrix.py run URL DIR      runs the matrix against the registry at URL

Principals: anonymous; reader, pusher, maint, other and admin with passwords; pusher, maint,
admin and an anonymous caller with tokens from the registry's /token (asking, as clients do,
for the scopes each request needs); maint with a token from another issuer (PyJWT), as a
Bearer token and as a Basic password, and signed by the issuer's second (rotated-in) key; and
invalid tokens (expired, not yet valid, wrong audience, wrong issuer, unknown key, a current
key's id on a retired key's signature, alg=none, HS256 signed with the public key).

Operations, on each repository: manifest and blob GET/HEAD, tags, referrers, an upload started,
sent in one POST, and sent as POST, PATCH, PUT in a session of one's own; manifest PUT (new tag,
same digest to an existing tag, tag move, by digest); deletes of a tag, a manifest by digest
and a blob; mounts with and without `from`; GET, PATCH, PUT and DELETE on another principal's
upload session; and the catalog and /v2/. A refused write leaves nothing; a refused delete
leaves what it named.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse

REPOSITORIES = ["team-a/x", "team-b/y", "public/z"]
USERS = ["reader", "pusher", "maint", "other", "admin"]
SERVICE = "matrix"
ISSUER = "matrix-issuer"

RULES = {
    "groups": {"team-a": ["reader", "pusher", "maint"]},
    "repositories": {
        "team-a/**": {
            "policies": [
                {"users": ["reader"], "actions": ["pull"]},
                {"users": ["pusher"], "actions": ["pull", "push"]},
                {"users": ["maint"], "actions": ["pull", "push", "overwrite", "delete"]},
            ]
        },
        "team-b/**": {"policies": [{"users": ["other"], "actions": ["pull", "push"]}]},
        "public/**": {
            "policies": [{"users": ["maint"], "actions": ["pull", "push", "overwrite", "delete"]}],
            "default": ["pull"],
            "anonymous": ["pull"],
        },
    },
    "admin": {"users": ["admin"]},
}


def oracle(user, action, repository):
    """Whether `user` (None: anonymous) may do `action` on `repository`, read off the rules
    by hand."""
    if user == "admin":
        return True
    team = repository.split("/")[0]
    if team == "team-a":
        return {
            "reader": {"pull"},
            "pusher": {"pull", "push"},
            "maint": {"pull", "push", "overwrite", "delete"},
        }.get(user, set()).__contains__(action)
    if team == "team-b":
        return user == "other" and action in ("pull", "push")
    if team == "public":
        if user == "maint":
            return True
        return action == "pull"
    return False


def password(user):
    return f"{user}-secret"


# ---------------------------------------------------------------------------------- setup


def setup(directory):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from jwt.algorithms import ECAlgorithm

    os.makedirs(directory, exist_ok=True)
    lines = []
    for user in USERS:
        out = subprocess.run(
            ["htpasswd", "-nbB", "-C", "4", user, password(user)],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        lines.append(out)
    htpasswd = "\n".join(lines) + "\n"
    token_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    # The issuer's key set holds its first key and the one rotated in after it; the retired
    # key is in no key set.
    jwks = {"keys": []}
    for name, kid in (("issuer.pem", "matrix-1"), ("issuer-2.pem", "matrix-2"), ("retired.pem", None)):
        issuer_key = ec.generate_private_key(ec.SECP256R1())
        with open(os.path.join(directory, name), "wb") as out:
            out.write(issuer_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
        if kid:
            public = json.loads(ECAlgorithm.to_jwk(issuer_key.public_key()))
            public["kid"] = kid
            jwks["keys"].append(public)
    settings = {
        "htpasswd": htpasswd,
        "rules": RULES,
        "service": SERVICE,
        "token": {"key": token_key, "realm": "http://{host}/token"},
        "issuers": [{"issuer": ISSUER, "keys": jwks}],
    }
    files = {
        "settings.json": json.dumps(settings),
        "users": htpasswd,
        "token.pem": token_key,
        "issuer.jwks": json.dumps(jwks),
        "access.toml": rules_toml(),
        "berth.toml": f'[[token-issuers]]\nissuer = "{ISSUER}"\njwks = "{directory}/issuer.jwks"\n',
    }
    for name, text in files.items():
        with open(os.path.join(directory, name), "w") as out:
            out.write(text)


def rules_toml():
    def strings(values):
        return "[" + ", ".join(json.dumps(v) for v in values) + "]"

    lines = ["[groups]"] + [f'"{k}" = {strings(v)}' for k, v in RULES["groups"].items()]
    for pattern, rules in RULES["repositories"].items():
        lines.append(f'\n[repositories."{pattern}"]')
        policies = ", ".join(
            f"{{ users = {strings(p['users'])}, actions = {strings(p['actions'])} }}"
            for p in rules["policies"]
        )
        lines.append(f"policies = [{policies}]")
        for key in ("default", "anonymous"):
            if key in rules:
                lines.append(f"{key} = {strings(rules[key])}")
    lines.append(f'\n[admin]\nusers = {strings(RULES["admin"]["users"])}')
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ requests


class Client:
    def __init__(self, url):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.requests = 0

    def request(self, method, path, headers=None, body=None):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            headers = dict(headers or {})
            if body is not None:
                headers.setdefault("Content-Type", "application/octet-stream")
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.requests += 1
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            connection.close()


def basic(user, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Fixtures:
    """Content the admin keeps in place: per repository a layer, a manifest tagged v1 and a
    second manifest (for tag moves)."""

    def __init__(self, client):
        self.client = client
        self.admin = basic("admin", password("admin"))
        self.config = json.dumps({"architecture": "amd64", "os": "linux",
                                  "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        self.layers = {}
        self.doomed = {}
        self.manifests = {}
        self.others = {}

    def blob(self, repository, data):
        status, _, body = self.client.request(
            "POST", f"/v2/{repository}/blobs/uploads/?digest={digest(data)}", self.admin, data)
        assert status == 201, f"admin blob push to {repository}: {status} {body[:200]!r}"

    def manifest(self, repository, reference, data):
        status, _, body = self.client.request(
            "PUT", f"/v2/{repository}/manifests/{reference}",
            {**self.admin, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}, data)
        assert status == 201, f"admin manifest push to {repository}: {status} {body[:200]!r}"

    def image(self, layer):
        return json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest(self.config), "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": digest(layer), "size": len(layer)}],
        }).encode()

    def create(self):
        for repository in REPOSITORIES:
            layer = f"the layer of {repository}".encode()
            other = f"another layer of {repository}".encode()
            doomed = f"a layer of {repository} that deletes take".encode()
            for data in (self.config, layer, other, doomed):
                self.blob(repository, data)
            self.layers[repository] = layer
            self.doomed[repository] = doomed
            self.manifests[repository] = self.image(layer)
            self.others[repository] = self.image(other)
            self.manifest(repository, "v1", self.manifests[repository])
            self.manifest(repository, digest(self.others[repository]), self.others[repository])

    def restore_tag(self, repository):
        self.manifest(repository, "v1", self.manifests[repository])

    def restore_other(self, repository):
        other = self.others[repository]
        self.manifest(repository, digest(other), other)

    def unlink(self, repository, layer):
        """Undoes a mount, so that the next one finds the layer only where the fixtures put
        it."""
        status, _, _ = self.client.request("DELETE", f"/v2/{repository}/blobs/{layer}", self.admin)
        # 404: the mount was an upload session (202), and linked nothing.
        assert status in (202, 404), f"admin unlink in {repository}: {status}"

    def restore_blob(self, repository):
        self.blob(repository, self.doomed[repository])


# ---------------------------------------------------------------------------- principals


class Principal:
    """Who asks, and how: `user` is whom the rules see (None: anonymous); `kind` is how it
    authenticates (none, password, token from /token, external token, invalid)."""

    def __init__(self, name, user, kind, secret=None):
        self.name, self.user, self.kind, self.secret = name, user, kind, secret
        self.tokens = {}

    def refusal(self, needs):
        """The status of a refusal: 401 without credentials, with bad ones, or with a token
        that lacks the scope (the client fetches another); 403 for a known principal whose
        token or password covers the request but whom the rules refuse."""
        if self.kind in ("password", "external", "external-as-password"):
            return 403
        if self.kind == "token" and self.user:
            # The token service granted what the rules allow; a tag move rides on `push`.
            covered = all(oracle(self.user, "push" if a == "overwrite" else a, r) for a, r in needs)
            return 403 if covered else 401
        return 401

    def may(self, action, repository):
        if self.kind == "invalid":
            return False
        return oracle(self.user, action, repository)

    def headers(self, client, scopes):
        if self.kind == "none":
            return {}
        if self.kind == "password":
            return basic(self.user, password(self.user))
        if self.kind in ("external", "invalid"):
            return bearer(self.secret)
        if self.kind == "external-as-password":
            return basic(self.user, self.secret)
        # A token from the registry's token service, for exactly these scopes.
        key = " ".join(sorted(scopes))
        if key not in self.tokens:
            query = urllib.parse.urlencode([("service", SERVICE)] + [("scope", s) for s in scopes])
            headers = basic(self.user, password(self.user)) if self.user else {}
            status, _, body = client.request("GET", f"/token?{query}", headers)
            assert status == 200, f"/token for {self.name}: {status} {body[:200]!r}"
            self.tokens[key] = json.loads(body)["token"]
        return bearer(self.tokens[key])


def mint(directory, **changes):
    import jwt

    now = int(time.time())
    claims = {
        "iss": ISSUER, "aud": SERVICE, "sub": "maint", "exp": now + 600,
        "access": [{"type": "repository", "name": r, "actions": ["pull", "push", "delete"]}
                   for r in REPOSITORIES] + [{"type": "registry", "name": "catalog", "actions": ["*"]}],
    }
    alg = changes.pop("alg", "ES256")
    kid = changes.pop("kid", "matrix-1")
    key_file = changes.pop("key", "issuer.pem")
    for name, value in changes.items():
        claims[name] = now + value if name in ("exp", "nbf") else value
    with open(os.path.join(directory, key_file), "rb") as source:
        key_pem = source.read()
    if alg == "ES256":
        return jwt.encode(claims, key_pem, algorithm="ES256", headers={"kid": kid})
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    signed = b64(json.dumps({"alg": alg, "kid": kid}).encode()) + "." + b64(json.dumps(claims).encode())
    if alg == "none":
        return signed + "."
    from cryptography.hazmat.primitives import serialization
    public = serialization.load_pem_private_key(key_pem, None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return signed + "." + b64(hmac.new(public, signed.encode(), hashlib.sha256).digest())


def principals(directory):
    found = [Principal("anonymous", None, "none")]
    found += [Principal(user, user, "password") for user in USERS]
    found += [Principal(f"{user} (token)", user, "token") for user in ("pusher", "maint", "admin")]
    found.append(Principal("anonymous (token)", None, "token"))
    external = mint(directory)
    found.append(Principal("maint (external token)", "maint", "external", external))
    found.append(Principal("maint (external token as password)", "maint", "external-as-password", external))
    found.append(Principal("maint (external token, rotated-in key)", "maint", "external",
                           mint(directory, kid="matrix-2", key="issuer-2.pem")))
    for name, changes in {
        "expired": {"exp": -600},
        "not yet valid": {"nbf": 600},
        "wrong audience": {"aud": "elsewhere"},
        "wrong issuer": {"iss": "someone-else"},
        "unknown key": {"kid": "matrix-9"},
        "a current key's id, signed by a retired key": {"key": "retired.pem"},
        "alg none": {"alg": "none"},
        "HS256 with the public key": {"alg": "HS256"},
    }.items():
        found.append(Principal(f"token: {name}", "maint", "invalid", mint(directory, **changes)))
    return found


# ---------------------------------------------------------------------------- operations


def scope(repository, *actions):
    return f"repository:{repository}:{','.join(actions)}"


def operations(fixtures):
    """(name, needed (action, repository) pairs, scopes, request function returning the
    status, expected success status, after) for each operation on each repository."""
    found = []
    for repository in REPOSITORIES:
        layer = digest(fixtures.layers[repository])
        manifest = digest(fixtures.manifests[repository])
        other = fixtures.others[repository]
        image_type = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        r = repository

        def op(name, needs, scopes, method, path, success, body=None, extra=None, after=None,
               absent=None, present=None):
            found.append(dict(name=f"{name} {r}", needs=needs, scopes=scopes, method=method,
                              path=path, success=success, body=body, extra=extra or {}, after=after,
                              absent=absent, present=present, repository=r))

        pull, push = [("pull", r)], [("push", r)]
        op("GET manifest", pull, [scope(r, "pull")], "GET", f"/v2/{r}/manifests/v1", 200)
        op("HEAD manifest", pull, [scope(r, "pull")], "HEAD", f"/v2/{r}/manifests/{manifest}", 200)
        op("GET blob", pull, [scope(r, "pull")], "GET", f"/v2/{r}/blobs/{layer}", 200)
        op("HEAD blob", pull, [scope(r, "pull")], "HEAD", f"/v2/{r}/blobs/{layer}", 200)
        op("tags", pull, [scope(r, "pull")], "GET", f"/v2/{r}/tags/list", 200)
        op("referrers", pull, [scope(r, "pull")], "GET", f"/v2/{r}/referrers/{manifest}", 200)
        op("start upload", push, [scope(r, "pull", "push")], "POST", f"/v2/{r}/blobs/uploads/", 202)
        data = os.urandom(64)
        op("monolithic upload", push, [scope(r, "pull", "push")], "POST",
           f"/v2/{r}/blobs/uploads/?digest={digest(data)}", 201, body=data,
           absent=f"/v2/{r}/blobs/{digest(data)}")
        tag = f"new-{os.urandom(4).hex()}"
        op("PUT manifest, new tag", push, [scope(r, "pull", "push")], "PUT",
           f"/v2/{r}/manifests/{tag}", 201, fixtures.manifests[r], image_type,
           absent=f"/v2/{r}/manifests/{tag}")
        op("PUT manifest by digest", push, [scope(r, "pull", "push")], "PUT",
           f"/v2/{r}/manifests/{manifest}", 201, fixtures.manifests[r], image_type)
        op("PUT manifest, same digest to v1", push, [scope(r, "pull", "push")], "PUT",
           f"/v2/{r}/manifests/v1", 201, fixtures.manifests[r], image_type)
        op("PUT manifest, move v1", [("push", r), ("overwrite", r)], [scope(r, "pull", "push")], "PUT",
           f"/v2/{r}/manifests/v1", 201, other, image_type,
           after=lambda r=r: fixtures.restore_tag(r), present=f"/v2/{r}/manifests/v1")
        op("DELETE tag", [("delete", r)], [scope(r, "delete")], "DELETE", f"/v2/{r}/manifests/v1",
           202, after=lambda r=r: fixtures.restore_tag(r), present=f"/v2/{r}/manifests/v1")
        other_manifest = f"/v2/{r}/manifests/{digest(other)}"
        op("DELETE manifest by digest", [("delete", r)], [scope(r, "delete")], "DELETE",
           other_manifest, 202, after=lambda r=r: fixtures.restore_other(r), present=other_manifest)
        doomed = f"/v2/{r}/blobs/{digest(fixtures.doomed[r])}"
        op("DELETE blob", [("delete", r)], [scope(r, "delete")], "DELETE", doomed, 202,
           after=lambda r=r: fixtures.restore_blob(r), present=doomed)
        for source in REPOSITORIES:
            if source == r:
                continue
            from_layer = digest(fixtures.layers[source])
            found.append(dict(
                name=f"mount {source} -> {r}", needs=push, mount_source=source,
                scopes=[scope(r, "pull", "push"), scope(source, "pull")], method="POST",
                path=f"/v2/{r}/blobs/uploads/?mount={from_layer}&from={source}", success=201,
                after=lambda r=r, layer=from_layer: fixtures.unlink(r, layer),
                body=None, extra={}, absent=None, present=None))
            found.append(dict(
                name=f"automatic mount of {source}'s layer -> {r}", needs=push,
                scopes=[scope(r, "pull", "push")], method="POST",
                path=f"/v2/{r}/blobs/uploads/?mount={from_layer}", success=202,
                automatic_source=source,
                after=lambda r=r, layer=from_layer: fixtures.unlink(r, layer),
                body=None, extra={}, absent=None, present=None))
    return found


#: Whether the registry tracks references (BERTH_MATRIX_TRACKED=1: `berth serve --gc`): then a
#: mount without `from` links the blob from a repository the caller may pull.
TRACKED = os.environ.get("BERTH_MATRIX_TRACKED") == "1"


def expected_status(principal, operation):
    if not all(principal.may(action, repository) for action, repository in operation["needs"]):
        return principal.refusal(operation["needs"])
    source = operation.get("mount_source")
    if source and not principal.may("pull", source):
        # Without pull on the source, a mount is an upload session, never a link.
        return 202
    automatic = operation.get("automatic_source")
    if automatic and TRACKED and principal.may("pull", automatic):
        # A token from /token covers only the scopes asked for (the target's): the source
        # stays out of its reach. Passwords and the other issuer's tokens reach it.
        return 202 if principal.kind == "token" else 201
    return operation["success"]


def session_target(location):
    """The request target of an upload session's Location (which may be an absolute URL)."""
    parts = urllib.parse.urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def run(url, directory):
    client = Client(url)
    fixtures = Fixtures(client)
    fixtures.create()
    checked = unauthorized = wrongful = 0
    problems = []

    def record(principal, what, expected, got):
        nonlocal checked, unauthorized, wrongful
        checked += 1
        if got == expected:
            return
        if 200 <= got < 300 and expected >= 400:
            unauthorized += 1
        elif got in (401, 403) and 200 <= expected < 300:
            wrongful += 1
        problems.append(f"{principal.name}: {what}: expected {expected}, got {got}")

    everyone = principals(directory)
    for principal in everyone:
        for operation in operations(fixtures):
            headers = {**principal.headers(client, operation["scopes"]), **operation["extra"]}
            status, _, _ = client.request(operation["method"], operation["path"], headers,
                                          operation["body"])
            expected = expected_status(principal, operation)
            record(principal, operation["name"], expected, status)
            if operation["after"] and 200 <= status < 300:
                operation["after"]()
            # A refused request changes nothing: what it would have made is absent, what it
            # would have moved or deleted is where it was.
            if operation["absent"] and expected >= 400:
                left, _, _ = client.request("HEAD", operation["absent"], fixtures.admin)
                record(principal, f"{operation['name']} (refused) left nothing", 404, left)
            if operation["present"] and expected >= 400:
                left, headers, _ = client.request("HEAD", operation["present"], fixtures.admin)
                record(principal, f"{operation['name']} (refused) left it", 200, left)
                if operation["method"] == "PUT":
                    record(principal, f"{operation['name']} (refused) left v1 where it was",
                           digest(fixtures.manifests[operation["repository"]]),
                           headers.get("docker-content-digest"))
        # /v2/: anonymous callers (with or without a token) and bad credentials are challenged.
        ping = 401 if principal.user is None or principal.kind == "invalid" else 200
        status, _, _ = client.request("GET", "/v2/", principal.headers(client, []))
        record(principal, "GET /v2/", ping, status)
        for repository in REPOSITORIES:
            scopes = [scope(repository, "pull", "push")]
            # An upload in a session of one's own: POST, PATCH, PUT.
            if principal.may("push", repository):
                data = os.urandom(48)
                steps = []
                status, headers, _ = client.request(
                    "POST", f"/v2/{repository}/blobs/uploads/", principal.headers(client, scopes))
                steps.append(("POST", 202, status))
                if status == 202:
                    status, headers, _ = client.request(
                        "PATCH", session_target(headers["location"]),
                        {**principal.headers(client, scopes), "Content-Range": f"0-{len(data) - 1}",
                         "Content-Type": "application/octet-stream"}, data)
                    steps.append(("PATCH", 202, status))
                if status == 202:
                    location = session_target(headers["location"])
                    separator = "&" if "?" in location else "?"
                    status, _, _ = client.request(
                        "PUT", f"{location}{separator}digest={digest(data)}",
                        principal.headers(client, scopes))
                    steps.append(("PUT", 201, status))
                for method, expected, status in steps:
                    record(principal, f"{method} in an upload session of its own in {repository}",
                           expected, status)
            # Another principal's upload session: never theirs to read, write, finish or
            # cancel (an admin may).
            admin_data = b"x"
            for method, action, success in (("GET", "pull", 204), ("PATCH", "push", 202),
                                            ("PUT", "push", 201), ("DELETE", "push", 204)):
                if method in ("GET", "DELETE"):
                    status, headers, _ = client.request(
                        "POST", f"/v2/{repository}/blobs/uploads/", fixtures.admin)
                    session = urllib.parse.urlsplit(headers["location"]).path
                if method == "PUT":
                    # Finishing needs the bytes the admin sent; their PATCH went through only
                    # when this principal is the admin.
                    if principal.user != "admin" or principal.kind == "invalid":
                        status, _, _ = client.request(
                            "PATCH", session, {**fixtures.admin,
                                               "Content-Type": "application/octet-stream"},
                            admin_data)
                    target = f"{session}?digest={digest(admin_data)}"
                else:
                    target = session
                needs = [(action, repository)]
                expected = (principal.refusal(needs) if not principal.may(action, repository)
                            else success if principal.user == "admin" else 404)
                status, _, _ = client.request(
                    method, target, {**principal.headers(client, scopes),
                                     "Content-Type": "application/octet-stream"},
                    admin_data if method == "PATCH" else None)
                record(principal, f"{method} admin's upload session in {repository}", expected, status)
        # The catalog lists exactly what the principal may pull.
        status, _, body = client.request("GET", "/v2/_catalog",
                                         principal.headers(client, ["registry:catalog:*"]))
        if principal.kind == "invalid":
            record(principal, "catalog", 401, status)
        else:
            listed = set(json.loads(body).get("repositories", [])) if status == 200 else None
            visible = {r for r in REPOSITORIES if principal.may("pull", r)}
            checked += 1
            if listed != visible:
                extra = (listed or set()) - visible
                unauthorized += bool(extra)
                wrongful += listed is None or bool(visible - listed)
                problems.append(f"{principal.name}: catalog {status} listed {sorted(listed or [])}, "
                                f"expected {sorted(visible)}")
    for problem in problems[:40]:
        print("  " + problem)
    print(f"auth matrix: {len(everyone)} principals, {checked} checks, {client.requests} requests: "
          f"{unauthorized} unauthorized successes, {wrongful} wrongful refusals, "
          f"{len(problems)} other differences")
    return 0 if not problems else 1


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "setup":
        setup(*args)
    elif command == "run":
        sys.exit(run(*args))
    else:
        sys.exit(f"unknown command {command}")
