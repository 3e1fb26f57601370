"""Mints one token per algorithm with PyJWT (an independent implementation) for tests/pyjwt.rs."""
import json, sys, time
import jwt

keys = sys.argv[1]
now = int(time.time())
claims = {"sub": "py-user", "exp": now + 600, "nbf": now - 5, "iat": now, "iss": "py", "aud": "switchboard", "role": "tester"}
def pem(name):
    return open(f"{keys}/{name}", "rb").read()
signing = {
    "HS256": b"test-secret", "HS384": b"test-secret", "HS512": b"test-secret",
    "RS256": pem("rsa.key"), "RS384": pem("rsa.key"), "RS512": pem("rsa.key"),
    "PS256": pem("rsa.key"), "PS384": pem("rsa.key"), "PS512": pem("rsa.key"),
    "ES256": pem("ec256.key"), "ES384": pem("ec384.key"), "EdDSA": pem("ed25519.key"),
}
kids = {"RS256": "rsa-1", "ES256": "ec-256", "ES384": "ec-384", "EdDSA": "ed-1"}
out = {alg: jwt.encode(claims, key, algorithm=alg, headers={"kid": kids.get(alg, "k")} if alg in kids else None) for alg, key in signing.items()}
out["expired"] = jwt.encode({**claims, "exp": now - 3600}, b"test-secret", algorithm="HS256")
out["wrong_aud"] = jwt.encode({**claims, "aud": "other"}, b"test-secret", algorithm="HS256")
print(json.dumps(out))
