"""Property-based fuzzing of aal-web's HTTP endpoints (hypothesis), on aal-web started as its command in front of a
real coordinator: random methods, paths, headers and bodies (JSON of odd shapes and depth, wrong types, huge
numbers, bytes that are no JSON), and plausible API calls (a real login, page and lease) with one hostile value.
aal-web answers each without a 5xx, logs no traceback, and keeps serving."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_web import queue_digits, start_web
from tests.test_web_limits import Http, web_log

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
API = ["login", "logout", "tab", "lease", "label", "skip", "defer", "release", "correct", "heartbeat", "close"]
METHODS = st.sampled_from(["POST", "POST", "POST", "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"])
URL_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~%/?=&", max_size=30)
PATHS = st.one_of(st.sampled_from([f"/api/{p}" for p in API]),
                  st.sampled_from(["/", "/static/app.js", "/static/../sessions.py", "/static/%2e%2e/app.py", "/api/",
                                   "/api/login/x", "//api/login", "/api/LOGIN", "/static/"]),
                  URL_TEXT.map(lambda t: "/" + t))
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)
HUGE = ["1" + "0" * 5000, "1e999999", "-1e999999", "NaN", "Infinity", "-Infinity", "18446744073709551616", "-0"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=20), st.sampled_from(["", "\x00", "\ud800", "x" * 5000, "é" * 100]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=20)
KEYS = ["token", "name", "session", "tab", "lease", "label", "wait", "done", "action"]
HOSTILE = st.one_of(SCALARS, st.sampled_from([[], {}, [{}], {"a": [1]}, -1, 2**31, 2**63, 10**100, 11, 1e308]))


def raw_json(value) -> bytes:
    return json.dumps(value, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["json", "object", "deep", "huge", "bytes", "big"]))
    if kind == "json":
        return raw_json(draw(JSON))
    if kind == "object":  # the API's own keys, with values of any type
        return raw_json(draw(st.dictionaries(st.sampled_from(KEYS), JSON, max_size=5)))
    if kind == "deep":
        depth = draw(st.one_of(st.integers(50, 8000), st.sampled_from([1000, 3000, 8000])))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (opener * depth + "1" + closer * depth).encode()
    if kind == "huge":
        return ('{"%s": %s}' % (draw(st.sampled_from(KEYS)), draw(st.sampled_from(HUGE)))).encode()
    if kind == "big":
        return b'{"name": "' + b"x" * draw(st.integers(16_000, 40_000)) + b'"}'
    return draw(st.binary(max_size=300))


def test_aal_web_survives_hostile_requests(grpc_coordinator, procs):
    address, _ = grpc_coordinator
    queue_digits(address, range(60))
    web = start_web(procs, address, "--lease-seconds", "60")
    client = Http(web)
    real = {"session": "", "tab": "", "lease": ""}

    def ready() -> dict:
        """A live login, page and lease for the next call (the one before may have ended or used them)."""
        status, data, _ = client.post("heartbeat", {"session": real["session"], "tab": real["tab"]})
        if status != 200:
            real["session"], real["tab"] = client.login(name="alice")
            data = {"deadlines": {}}
        if real["lease"] not in data["deadlines"]:
            item = client.api("lease", {"session": real["session"], "tab": real["tab"], "wait": 0})["item"]
            real["lease"] = item["lease"] if item else real["lease"]
        return dict(real)

    port = web.rsplit(":", 1)[1]
    origins = st.one_of(st.none(), st.sampled_from([f"http://127.0.0.1:{port}", "http://evil.example", "null",
                                                    "http://[::1", "garbage"]), HEADER_TEXT)
    hosts = st.one_of(st.none(), st.sampled_from([f"127.0.0.1:{port}", f"localhost:{port}", "evil.example",
                                                  "[::1]:1", "", ":::"]), HEADER_TEXT)

    def check(method, path, body, headers):
        status, data, _ = client.send(method, path, body, {k: v for k, v in headers.items() if v is not None})
        assert status < 500, (method, path, body[:80], headers, status, data)

    @FUZZ
    @given(METHODS, PATHS, bodies(), st.fixed_dictionaries({"Origin": origins, "Host": hosts, "Content-Type": st.one_of(
        st.none(), st.sampled_from(["application/json", "text/plain", "multipart/form-data"]), HEADER_TEXT)}))
    def anything(method, path, body, headers):
        check(method, path, body, headers)

    @FUZZ
    @given(st.sampled_from(API), bodies())
    def api_bodies(path, body):
        check("POST", f"/api/{path}", body, {})

    @FUZZ
    @given(st.sampled_from(API), st.sampled_from(KEYS), HOSTILE)
    def plausible(path, key, value):
        """A real session, page and lease, with one value hostile (waits never long: an empty pool would hold)."""
        args = {**ready(), "label": 1, "wait": 0, "name": "bob"}
        args["done"] = [{"action": "label", "lease": args["lease"], "label": 1}]
        if not (key == "wait" and isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value):
            args[key] = value
        check("POST", f"/api/{path}", raw_json(args), {})

    anything()
    api_bodies()
    plausible()
    assert client.send("GET", "/")[0] == 200
    fresh, fresh_tab = client.login(name="carol")
    assert client.api("lease", {"session": fresh, "tab": fresh_tab, "wait": 0})["item"]
    log = web_log(procs)
    assert "Traceback" not in log and "Exception" not in log
