"""Keys and tokens made by an independent JWT library (PyJWT), for tests/tokens.sh.

  tokens.py key PEM JWKS KID            a P-256 key (PEM) and its public key set
  tokens.py oidc-key JWK KID            a P-256 private JWK (alg ES256), as oauth2-mock-server
                                        takes it
  tokens.py mint PEM KID [name=value...]   a token; claims: iss, aud, sub, exp and nbf (seconds
                                        from now), access (JSON); alg=none and alg=HS256
                                        (signed with the public key as secret) make the two
                                        classic forgeries
"""

import base64
import hashlib
import hmac
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key(pem_path: str, jwks_path: str, kid: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with open(pem_path, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    public = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    public["kid"] = kid
    with open(jwks_path, "w") as out:
        json.dump({"keys": [public]}, out)


def new_oidc_key(jwk_path: str, kid: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    private = json.loads(ECAlgorithm.to_jwk(key))
    private.update({"kid": kid, "alg": "ES256", "use": "sig"})
    with open(jwk_path, "w") as out:
        json.dump(private, out)


def mint(pem_path: str, kid: str, settings: list[str]) -> str:
    claims: dict = {"iss": "pyjwt-issuer", "aud": "berth-tests", "sub": "alice"}
    alg = "ES256"
    now = int(time.time())
    claims["exp"] = now + 300
    for setting in settings:
        name, value = setting.split("=", 1)
        if name == "alg":
            alg = value
        elif name in ("exp", "nbf"):
            claims[name] = now + int(value)
        elif name == "access":
            claims[name] = json.loads(value)
        else:
            claims[name] = value
    with open(pem_path, "rb") as source:
        private = serialization.load_pem_private_key(source.read(), None)
    if alg == "ES256":
        return jwt.encode(claims, private, algorithm="ES256", headers={"kid": kid})
    header = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode())
    payload = b64(json.dumps(claims).encode())
    signed = f"{header}.{payload}"
    if alg == "none":
        return f"{signed}."
    # Algorithm confusion: the public key, as a verifier would hold it, taken as an HMAC secret.
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = hmac.new(public, signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{b64(signature)}"


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "key":
        new_key(*args)
    elif command == "oidc-key":
        new_oidc_key(*args)
    elif command == "mint":
        print(mint(args[0], args[1], args[2:]))
    else:
        sys.exit(f"unknown command {command}")
