from sanic_testing.reusable import ReusableClient
import orjson

def test_probe(client: ReusableClient) -> None:
    _, r = client.put("/api/v2/alerts/abc")
    print("405 param", r.status, dict(r.headers))
    _, r = client.put("/api/v2/auth/login")
    print("405 plain", r.status, r.headers.get("allow"))
    body = b'{"a":' * 600 + b'1' + b'}' * 600
    _, r = client.post("/api/v2/auth/login", content=body)
    print("nested", r.status, r.text[:300])
    body = b'[' * 2000 + b']' * 2000
    _, r = client.post("/api/v2/auth/login", content=body)
    print("nested list", r.status, r.text[:300])
    _, r = client.post("/api/v2/auth/register", json={"email": "probe1@example.com", "password": "password123", "display_name": "x"}, headers={"user-agent": b"abc\xff\x00def"})
    print("ua", r.status, r.text[:300])
