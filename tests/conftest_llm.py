"""Shared helpers for the model-narrative tests: small facts, scripted replies, cassettes.

Cassettes live in cassettes/<test module>/<test name>.yaml and are replayed only (vcrpy record
mode "none") unless a record mode is asked for, with `--record-mode` (when tests/conftest.py
registers it) or JUNO_RECORD_MODE:

- rewrite: delete the cassette and record it again, through the real SDK. Each test carries a
  script (hand-written responses in OpenAI's format); without a real key the SDK talks to an
  httpx2.MockTransport that plays it, so request bodies are the ones the code sends today. With
  a real OPENAI_API_KEY (and OPENAI_BASE_URL for another server), the tests marked live (the good
  draft) call the real server instead; fault cases always come from their script.
- once / new_episodes / all: vcrpy's own modes, same split.

Authorization and cookies are dropped from requests; openai-organization, openai-project and
set-cookie from responses, before anything is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import vcr
from vcr.cassette import Cassette

from juno.brief import CohortFacts, CycleFact, Facts, FlagCount, ReasonCount, Scope
from juno.config import Narrative as NarrativeConfig

ROOT = Path(__file__).resolve().parents[1]
CASSETTES = ROOT / "cassettes"
FAKE_KEY = "sk-test-not-a-real-key"
MODEL = "gpt-4o-mini"
SERVED_MODEL = "gpt-4o-mini-2024-07-18"

REQUEST_HEADERS_DROPPED = ["authorization", "cookie", "openai-organization", "openai-project"]
RESPONSE_HEADERS_DROPPED = {"set-cookie", "openai-organization", "openai-project"}


# --- facts -------------------------------------------------------------------------------


def sample_facts() -> Facts:
    """A small store's facts: three cohorts, every number hand-written."""
    return Facts(
        scope=Scope(
            store="demo-store",
            source="generic",
            as_of="2024-06-30 23:59",
            as_of_source="latest order in the data",
            window_days=365,
            value="net revenue",
            currency="USD",
            population="excluding tags test, staff",
            consent="email needs subscribed; otherwise paid audience",
            cohorts=["lapsed_high_value", "vip", "first_to_second"],
            precedence=["lapsed_high_value", "vip", "first_to_second"],
        ),
        customers_in=4210,
        customers_classified=1834,
        customers_unclassified=2306,
        customers_excluded=70,
        orders_used=11873,
        history_days=730,
        margin_coverage=0.962,
        margin_incomplete=False,
        rejected_rows=37,
        rejected_by_reason=[
            ReasonCount(reason="unparseable date", count=21),
            ReasonCount(reason="negative revenue", count=16),
        ],
        duplicate_groups=12,
        vip_excluded_discount_dependent=9,
        cycles=[
            CycleFact(
                level="category",
                product="coffee",
                median_days=31.5,
                pairs=412,
                replenishable=True,
                reason="enough reorder pairs",
            )
        ],
        replenishment_note=None,
        cohorts=[
            CohortFacts(
                cohort="lapsed_high_value",
                title="Lapsed high-value",
                size=286,
                share_of_customers=0.0679,
                value_window=41230.10,
                margin_window=21001.00,
                value_share=0.0932,
                rule="lifetime net revenue in the top 20% AND no order for >= 2x own gap (min 90d)",
                value_signal="top 20% by lifetime net revenue",
                risk="a discount-first winback teaches them to wait for offers",
                action="winback: personal outreach, not discount-first",
                allowed_actions=["winback", "survey", "review"],
                outreach_ready=241,
                held_back=45,
                held_back_by_flag=[
                    FlagCount(flag="no_consent", count=30),
                    FlagCount(flag="open_ticket", count=15),
                ],
                secondary_members=0,
                priority="P1",
                priority_score=0.78,
                timing="this week, personal outreach before any offer",
                confidence="medium",
                confidence_reasons=["286 members", "730 days of history"],
                stability=0.88,
                thin=False,
                margin_incomplete=False,
            ),
            CohortFacts(
                cohort="vip",
                title="VIP",
                size=412,
                share_of_customers=0.0979,
                value_window=182340.55,
                margin_window=98211.20,
                value_share=0.4123,
                rule="net revenue 365d >= 812.40 AND orders 365d >= 2",
                value_signal="top 10% by net revenue in the window",
                risk="over-messaging loyal customers",
                action="loyalty treatment: early access, thank-you; no discount needed",
                allowed_actions=["loyalty treatment", "review"],
                outreach_ready=375,
                held_back=37,
                held_back_by_flag=[
                    FlagCount(flag="open_ticket", count=21),
                    FlagCount(flag="no_consent", count=16),
                ],
                secondary_members=15,
                priority="P2",
                priority_score=0.61,
                timing="with the next launch or early-access moment",
                confidence="high",
                confidence_reasons=["412 members", "stable under threshold moves"],
                stability=0.94,
                thin=False,
                margin_incomplete=False,
            ),
            CohortFacts(
                cohort="first_to_second",
                title="First to second purchase",
                size=1136,
                share_of_customers=0.2698,
                value_window=38120.00,
                margin_window=17500.00,
                value_share=0.0862,
                rule="exactly 1 order AND ordered 7 to 90 days ago",
                value_signal="one order so far",
                risk="a nudge too early feels pushy",
                action="product education, then a second-purchase nudge",
                allowed_actions=["product education", "second-purchase nudge", "review"],
                outreach_ready=1012,
                held_back=124,
                held_back_by_flag=[FlagCount(flag="no_consent", count=124)],
                secondary_members=0,
                priority="P3",
                priority_score=0.44,
                timing="at day 41 after the first order (the store's median gap)",
                confidence="high",
                confidence_reasons=["1136 members"],
                stability=0.91,
                thin=False,
                margin_incomplete=False,
            ),
        ],
        campaign_priorities=["lapsed_high_value", "vip", "first_to_second"],
        data_notes=["37 input rows were rejected (see rejected_rows.csv)"],
    )


def good_draft() -> dict[str, Any]:
    """A draft of sample_facts() that passes the grounding check."""
    return {
        "headline": "286 lapsed high-value customers are worth a personal winback this week",
        "summary": (
            "Of 4,210 customers, 1,834 fall into 3 cohorts. VIPs hold 41% of store value"
            " ($182k in the window). The 286 lapsed high-value customers come first: 241 of them"
            " are ready for outreach."
        ),
        "campaign_priorities": [
            {
                "cohort": "lapsed_high_value",
                "action": "winback",
                "timing": "this week, personal outreach before any offer",
                "why": (
                    "241 of 286 lapsed high-value customers can be contacted;"
                    " they spent $41.2k in the window."
                ),
            },
            {
                "cohort": "vip",
                "action": "loyalty treatment",
                "timing": "with the next launch or early-access moment",
                "why": "375 VIPs are ready for early access and a thank-you; no discount is needed.",
            },
            {
                "cohort": "first_to_second",
                "action": "second-purchase nudge",
                "timing": "at day 41 after the first order",
                "why": "1,012 first-time buyers can get a nudge at the store's median gap.",
            },
        ],
        "review_priorities": [
            {
                "cohort": "first_to_second",
                "text": "124 held back for missing email consent: paid audience only.",
            },
            {
                "cohort": "lapsed_high_value",
                "text": "45 held back: 30 without email consent, 15 with an open support ticket.",
            },
            {"cohort": "vip", "text": "37 held back: 21 with an open ticket, 16 without consent."},
        ],
        "cohort_lines": [
            {
                "cohort": "lapsed_high_value",
                "narrative": "286 lapsed high-value customers spent $41k; win them back personally.",
                "risk_note": "A discount-first winback teaches them to wait for offers.",
            },
            {
                "cohort": "vip",
                "narrative": (
                    "412 VIPs (10% of customers) hold 41% of store value; give them loyalty treatment."
                ),
                "risk_note": "Too many messages wear out loyal customers.",
            },
            {
                "cohort": "first_to_second",
                "narrative": "1,136 one-time buyers (27%) are due a second-purchase nudge around day 41.",
                "risk_note": "A nudge too early feels pushy.",
            },
        ],
        "caveats": [
            "37 input rows were rejected; see rejected_rows.csv.",
            "Cost is known for 96% of revenue.",
        ],
    }


def narrative_config(**overrides: Any) -> NarrativeConfig:
    values: dict[str, Any] = {"mode": "model", "model": MODEL, "temperature": 0.2, "max_attempts": 4}
    values.update(overrides)
    return NarrativeConfig(**values)


# --- scripted replies (the documented response format, see cassettes/README.md) ------------


@dataclass(frozen=True)
class Reply:
    """One HTTP response as the server would send it."""

    status: int
    body: str
    headers: tuple[tuple[str, str], ...] = ()


_COMMON_HEADERS = (
    ("content-type", "application/json"),
    ("openai-version", "2020-10-01"),
    ("openai-organization", "org-scrubbed-before-save"),
    ("openai-project", "proj_scrubbed_before_save"),
    ("set-cookie", "__cf_bm=scrubbed-before-save; path=/; HttpOnly"),
)


def completion(
    content: str | None,
    *,
    refusal: str | None = None,
    finish_reason: str = "stop",
    request_id: str = "req_0001",
) -> Reply:
    """A 200 chat.completion in OpenAI's response format."""
    body = {
        "id": f"chatcmpl-{request_id.removeprefix('req_')}",
        "object": "chat.completion",
        "created": 1719792000,
        "model": SERVED_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": 2380,
            "completion_tokens": 412 if content else 12,
            "total_tokens": 2792 if content else 2392,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_0ba0d124f1",
    }
    headers = (*_COMMON_HEADERS, ("x-request-id", request_id), ("openai-processing-ms", "2140"))
    return Reply(200, json.dumps(body, indent=2), headers)


def draft_reply(draft: dict[str, Any], request_id: str = "req_0001") -> Reply:
    return completion(json.dumps(draft), request_id=request_id)


def api_error(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None = None,
    retry_after: str | None = None,
    request_id: str = "req_0001",
) -> Reply:
    """An error response in OpenAI's format: {"error": {message, type, param, code}}."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    headers = [*_COMMON_HEADERS, ("x-request-id", request_id)]
    if retry_after is not None:
        headers.append(("retry-after", retry_after))
    return Reply(status, json.dumps(body, indent=2), tuple(headers))


def rate_limited(request_id: str, retry_after: str = "2") -> Reply:
    return api_error(
        429,
        "Rate limit reached for gpt-4o-mini in organization org-scrubbed on requests per min (RPM):"
        " Limit 500, Used 500, Requested 1. Please try again in 120ms.",
        type_="requests",
        code="rate_limit_exceeded",
        retry_after=retry_after,
        request_id=request_id,
    )


def server_error(request_id: str) -> Reply:
    return api_error(
        500,
        "The server had an error while processing your request. Sorry about that!",
        type_="server_error",
        request_id=request_id,
    )


def scripted_client(script: list[Reply]) -> openai.OpenAI:
    """A client whose transport plays `script` in order (used only to re-record cassettes)."""
    replies = iter(script)

    def handler(request: httpx2.Request) -> httpx2.Response:
        reply = next(replies)
        return httpx2.Response(reply.status, headers=list(reply.headers), content=reply.body.encode())

    return openai.OpenAI(
        api_key=FAKE_KEY,
        base_url="https://api.openai.com/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


# --- cassettes ----------------------------------------------------------------------------


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    response["headers"] = {
        k: v for k, v in response["headers"].items() if k.lower() not in RESPONSE_HEADERS_DROPPED
    }
    return response


def _same_endpoint(r1: Any, r2: Any) -> None:
    """The same API call (POST .../chat/completions) on whichever server it was recorded."""
    if r1.path.split("/")[-2:] != r2.path.split("/")[-2:]:
        raise AssertionError(f"{r1.path} != {r2.path}")


def make_vcr(record_mode: str) -> vcr.VCR:
    """vcrpy as these tests use it: scrubbed, and blind to the base URL, so a cassette recorded
    against Ollama or a gateway replays offline against the default client."""
    recorder = vcr.VCR(
        record_mode=record_mode,
        filter_headers=REQUEST_HEADERS_DROPPED,
        before_record_response=_scrub_response,
        decode_compressed_response=True,
        match_on=("method", "endpoint"),
    )
    recorder.register_matcher("endpoint", _same_endpoint)
    return recorder


def record_mode(config: pytest.Config) -> str:
    option = config.getoption("--record-mode", default=None)
    return str(option or os.environ.get("JUNO_RECORD_MODE") or "none")


def _json_body(body: bytes | str | None) -> dict[str, Any]:
    assert body is not None
    loaded = json.loads(body.decode() if isinstance(body, bytes) else body)
    assert isinstance(loaded, dict)
    return loaded


@dataclass
class Played:
    """The cassette in use, the client to pass (recording a script only) and what was sent."""

    cassette: Cassette
    client: openai.OpenAI | None
    path: Path
    sent: list[dict[str, Any]]
    replaying: bool

    def recorded_bodies(self) -> list[dict[str, Any]]:
        return [_json_body(r.body) for r in self.cassette.requests]


@contextmanager
def use_cassette(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    script: list[Reply],
    *,
    live: bool = False,
) -> Iterator[Played]:
    """Replay this test's cassette, or record it: from `script`, or from the real server when
    `live` and a real OPENAI_API_KEY is set (see the module docstring)."""
    path = CASSETTES / request.node.module.__name__ / f"{request.node.name}.yaml"
    mode = record_mode(request.config)
    client: openai.OpenAI | None = None
    if mode == "none":
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    else:
        if mode == "rewrite":
            path.unlink(missing_ok=True)
            mode = "once"
        if not (live and os.environ.get("OPENAI_API_KEY", FAKE_KEY).strip() not in ("", FAKE_KEY)):
            client = scripted_client(script)
    sent: list[dict[str, Any]] = []
    with make_vcr(mode).use_cassette(str(path)) as cassette:
        # Keep the bodies this run sends, replayed or recorded, to compare with build_request.
        play, append = cassette.play_response, cassette.append

        def play_response(req: Any) -> Any:
            sent.append(_json_body(req.body))
            return play(req)

        def record(req: Any, response: Any) -> None:
            sent.append(_json_body(req.body))
            append(req, response)

        monkeypatch.setattr(cassette, "play_response", play_response)
        monkeypatch.setattr(cassette, "append", record)
        yield Played(cassette, client, path, sent, replaying=record_mode(request.config) == "none")
