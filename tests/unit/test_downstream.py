"""``downstream.request``: any method, the token and correlation id sent, a 2xx answer kept with its
content type, and every other answer turned into the app's error types (or a CAE challenge)."""
from __future__ import annotations

import io
from typing import Any

import pytest
import requests

from shared import downstream
from shared.config import DownstreamApi
from shared.errors import DownstreamRejected, UpstreamError

API = DownstreamApi("Orders", "https://orders.example.test/v1", "orders", ("api://orders/Orders.Read",))


class Answer:
    def __init__(self, status: int, body: bytes = b"{}", **headers: str) -> None:
        self.status_code, self.headers = status, requests.structures.CaseInsensitiveDict(headers)
        self.raw = SimpleRaw(body)

    def __enter__(self) -> "Answer":
        return self

    def __exit__(self, *_: Any) -> None:
        pass


class SimpleRaw(io.BytesIO):
    connection = None  # urllib3's connection (its socket): none here

    def read1(self, n: int = -1, decode_content: bool = False) -> bytes:  # type: ignore[override]
        return super().read1(n)


class DripRaw:
    """A body that arrives one byte per read, each read taking ``seconds`` of the deadline's clock."""

    def __init__(self, clock: list[float], seconds: float) -> None:
        self.clock, self.seconds, self.reads = clock, seconds, 0
        self.connection = type("Conn", (), {"sock": self})()
        self.timeouts: list[float] = []

    def settimeout(self, value: float) -> None:
        self.timeouts.append(value)

    def read1(self, n: int = -1, decode_content: bool = False) -> bytes:
        self.reads += 1
        self.clock[0] += self.seconds
        return b"x"


class Session:
    def __init__(self, answer: Answer | Exception) -> None:
        self.answer, self.sent = answer, {}

    def request(self, method: str, url: str, **kwargs: Any) -> Answer:
        self.sent = {"method": method, "url": url, **kwargs}
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def call(answer: Answer | Exception, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    session = Session(answer)
    try:
        return downstream.request(session, API, "tok", **kwargs), session.sent  # type: ignore[arg-type]
    except Exception as err:  # noqa: BLE001 - the answer under test
        return err, session.sent


def test_any_method_with_a_json_body_the_token_and_the_correlation_id() -> None:
    answer, sent = call(Answer(201, b'{"id":1}', **{"Content-Type": "application/json; charset=utf-8"}),
                        method="POST", path="orders/new", body=b'{"item":"x"}', correlation_id="trace-1")
    assert answer == downstream.DownstreamResponse(201, "application/json; charset=utf-8", b'{"id":1}')
    assert (sent["method"], sent["url"], sent["data"]) == ("POST", "https://orders.example.test/v1/orders/new",
                                                          b'{"item":"x"}')
    assert sent["headers"] == {"Authorization": "Bearer tok", "Accept": "application/json",
                               "Content-Type": "application/json", "client-request-id": "trace-1"}
    assert sent["allow_redirects"] is False and sent["timeout"] == (API.connect_timeout, API.read_timeout)


def test_a_get_uses_the_relative_path_and_json_when_the_api_names_no_type() -> None:
    answer, sent = call(Answer(200, b"[]"))
    assert answer.content_type == "application/json" and sent["method"] == "GET" and sent["data"] is None
    assert sent["url"] == "https://orders.example.test/v1/orders" and "Content-Type" not in sent["headers"]


@pytest.mark.parametrize("answer,status,kind", [
    (Answer(401, **{"WWW-Authenticate": 'Bearer error="invalid_token"'}), 502, UpstreamError),
    (Answer(429, **{"Retry-After": "7"}), 503, UpstreamError),
    (Answer(404), 404, DownstreamRejected),
    (Answer(500), 502, UpstreamError),
    (Answer(200, b"x" * (downstream.MAX_BODY + 1)), 502, UpstreamError),
    (requests.Timeout(), 504, UpstreamError),
    (requests.ConnectionError(), 502, UpstreamError),
])
def test_failures_are_the_apps_errors(answer: Any, status: int, kind: type) -> None:
    err, _ = call(answer)
    assert type(err) is kind and err.status == status
    if status == 503:
        assert err.headers == {"Retry-After": "7"}


def test_a_claims_challenge_is_raised_for_the_pipeline() -> None:
    header = 'Bearer error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnt9fQ=="'
    err, _ = call(Answer(401, **{"WWW-Authenticate": header}))
    assert isinstance(err, downstream.DownstreamChallenge) and err.claims == '{"access_token":{}}'


def test_a_drip_fed_body_ends_with_504_at_the_request_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import deadline
    clock = [100.0]
    monkeypatch.setattr(deadline, "_clock", lambda: clock[0])
    answer = Answer(200)
    answer.raw = DripRaw(clock, 0.25)  # type: ignore[assignment]
    with deadline.within(2.0):
        err, _ = call(answer)
    assert isinstance(err, UpstreamError) and err.status == 504 and err.extra == {"upstream": "Orders"}
    assert answer.raw.reads == 8  # 2 s of budget, a byte every 0.25 s: it stops at the deadline
    # each socket read waits no longer than the time left (2.0, 1.75, ... 0.25), never the API's own read timeout
    assert answer.raw.timeouts == [pytest.approx(2.0 - 0.25 * i) for i in range(8)]
