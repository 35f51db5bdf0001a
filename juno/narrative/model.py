"""The model-drafted narrative: one structured call, checked against the facts, template as fallback.

The flow (instructor's loop shape): send the facts -> parse into `Narrative` -> ground-check
-> on failure re-ask once with the errors -> on a second failure, or any model failure, the
template writes the words and the provenance says why. Transient failures (connection errors
and timeouts, 429, 5xx) are retried with exponential backoff and jitter, bounded by
`max_attempts` per request and by `deadline_s` overall; the SDK's own retries are off so each
attempt is counted once. Only `openai.OpenAIError` and validation errors fall back: anything
else is a bug and propagates.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import openai
import pydantic
import tenacity
from openai._legacy_response import LegacyAPIResponse
from openai.lib._parsing import type_to_response_format_param
from openai.types.chat import ChatCompletionMessageParam, ParsedChatCompletion

from juno.brief import Facts, Narrative, Provenance
from juno.config import Narrative as NarrativeConfig
from juno.narrative.facts_payload import facts_payload
from juno.narrative.grounding import LIMITS, check_narrative

log = logging.getLogger("juno.narrative")

ROOT = Path(__file__).resolve().parents[2]
PROMPTS_DIR = ROOT / "prompts"
SCHEMA_PATH = ROOT / "schemas" / "narrative.schema.json"

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 20.0
BACKOFF_JITTER_S = 1.0
RETRY_AFTER_MAX_S = 60.0
REASON_MAX = 300

# Module-level so tests can make backoff instant and time deterministic.
_sleep: Callable[[float], None] = time.sleep
_monotonic: Callable[[], float] = time.monotonic


# --- the request ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _prompts() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(PROMPTS_DIR),
        autoescape=False,  # plain text sent to a model, never rendered as HTML
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )


def model_name(cfg: NarrativeConfig) -> str:
    """The model to ask: JUNO_MODEL, else the config's."""
    return os.environ.get("JUNO_MODEL") or cfg.model


def response_format() -> dict[str, Any]:
    """The strict `response_format` the SDK sends for `Narrative`."""
    fmt = type_to_response_format_param(Narrative)
    assert isinstance(fmt, dict)
    return dict(fmt)


def narrative_schema() -> dict[str, Any]:
    """The JSON Schema the model fills (checked in as schemas/narrative.schema.json)."""
    schema = response_format()["json_schema"]["schema"]
    assert isinstance(schema, dict)
    return schema


def write_schema(path: Path = SCHEMA_PATH) -> None:
    """Re-export schemas/narrative.schema.json from `juno.brief.Narrative`."""
    path.write_text(json.dumps(narrative_schema(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_messages(facts: Facts) -> list[ChatCompletionMessageParam]:
    """The system and user messages: rules and tone, then the aggregate facts as JSON."""
    env = _prompts()
    payload = facts_payload(facts)
    allowed = {c["cohort"]: c["allowed_actions"] for c in payload["cohorts"]}
    system = env.get_template("system.j2").render(limits=LIMITS)
    user = env.get_template("user.j2").render(
        facts_json=json.dumps(payload, indent=2, ensure_ascii=False),
        allowed=allowed,
        priorities=payload["campaign_priorities"],
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def reask_message(errors: Sequence[str]) -> str:
    """The follow-up that lists why a draft was rejected (prompts/reask.j2)."""
    return _prompts().get_template("reask.j2").render(errors=list(errors))


def build_request(facts: Facts, cfg: NarrativeConfig) -> dict[str, Any]:
    """The exact JSON body of the first chat.completions request (for `--show-prompt`)."""
    return {
        "messages": build_messages(facts),
        "model": model_name(cfg),
        "response_format": response_format(),
        "stream": False,
        "temperature": cfg.temperature,
    }


def show_prompt(facts: Facts, cfg: NarrativeConfig) -> str:
    """The request as `juno run --show-prompt` prints it: endpoint, then the JSON body."""
    base = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    body = json.dumps(build_request(facts, cfg), indent=2, ensure_ascii=False)
    return f"POST {base.rstrip('/')}/chat/completions\n{body}\n"


def make_client(cfg: NarrativeConfig) -> openai.OpenAI:
    """An OpenAI(-compatible) client from OPENAI_API_KEY / OPENAI_BASE_URL, SDK retries off."""
    return openai.OpenAI(
        base_url=os.environ.get("OPENAI_BASE_URL") or None,
        max_retries=0,
        timeout=cfg.timeout_s,
    )


# --- retries -------------------------------------------------------------------------------


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = _monotonic() + seconds

    def remaining(self) -> float:
        return self.end - _monotonic()


class _DeadlineReached(Exception):
    """Internal: no time left for another attempt."""


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: connection errors and timeouts, 429 (not quota), 5xx."""
    if isinstance(exc, openai.RateLimitError):
        return exc.code != "insufficient_quota"
    return isinstance(exc, openai.APIConnectionError | openai.InternalServerError)


def _retry_after(exc: BaseException | None) -> float | None:
    if not isinstance(exc, openai.APIStatusError):
        return None
    value = exc.response.headers.get("retry-after")
    try:
        return None if value is None else min(float(value), RETRY_AFTER_MAX_S)
    except ValueError:
        return None


def backoff(state: tenacity.RetryCallState) -> float:
    """Exponential backoff with jitter; a server's Retry-After (seconds) is honoured when longer."""
    exp = min(BACKOFF_BASE_S * 2.0 ** (state.attempt_number - 1), BACKOFF_MAX_S)
    wait = exp + random.uniform(0, BACKOFF_JITTER_S)
    exc = state.outcome.exception() if state.outcome is not None else None
    after = _retry_after(exc)
    return max(wait, after) if after is not None else wait


@dataclass
class _Counter:
    attempts: int = 0
    stopped_by_deadline: bool = False


def _ask(
    client: openai.OpenAI,
    messages: list[ChatCompletionMessageParam],
    name: str,
    cfg: NarrativeConfig,
    deadline: _Deadline,
    counter: _Counter,
) -> LegacyAPIResponse[ParsedChatCompletion[Narrative]]:
    """One request, retried on transient errors within max_attempts and the deadline."""

    def once() -> LegacyAPIResponse[ParsedChatCompletion[Narrative]]:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise _DeadlineReached
        counter.attempts += 1
        return client.chat.completions.with_raw_response.parse(
            model=name,
            messages=messages,
            response_format=Narrative,
            temperature=cfg.temperature,
            timeout=min(cfg.timeout_s, remaining),
        )

    def stop(state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= cfg.max_attempts:
            return True
        counter.stopped_by_deadline = deadline.remaining() <= state.upcoming_sleep
        return counter.stopped_by_deadline

    retrying = tenacity.Retrying(
        sleep=lambda s: _sleep(s),
        stop=stop,
        wait=backoff,
        retry=tenacity.retry_if_exception(is_transient),
        reraise=True,
    )
    response: LegacyAPIResponse[ParsedChatCompletion[Narrative]] = retrying(once)
    return response


# --- the draft -----------------------------------------------------------------------------


class _Fallback(Exception):
    """Internal: the model's draft cannot be used; the reason goes into the provenance."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_KEY_LIKE = re.compile(r"sk-[A-Za-z0-9_*-]{6,}")


def _cap(text: str, limit: int = REASON_MAX) -> str:
    """One line, at most `limit` characters, with anything key-like masked (reasons are published)."""
    text = _KEY_LIKE.sub("sk-***", " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(exc: openai.OpenAIError, attempts: int) -> str:
    """Why a model call failed, for the provenance (never the key)."""
    tries = f" after {attempts} attempt{'s' if attempts != 1 else ''}"
    if isinstance(exc, openai.APITimeoutError):
        return f"request timed out{tries}"
    if isinstance(exc, openai.APIConnectionError):
        url = exc.request.url
        return f"could not reach {url.scheme}://{url.netloc.decode()}{tries}"
    if isinstance(exc, openai.APIStatusError):
        what = {
            401: "authentication failed",
            403: "permission denied",
            404: "model or endpoint not found",
            429: "rate limited" if exc.code != "insufficient_quota" else "quota exhausted",
        }.get(exc.status_code, "server error" if exc.status_code >= 500 else "request rejected")
        detail = exc.body.get("message") if isinstance(exc.body, dict) else None
        detail = detail if isinstance(detail, str) else exc.message
        return f"{what} (HTTP {exc.status_code}){tries if is_transient(exc) else ''}: {_cap(detail, 160)}"
    if isinstance(exc, openai.LengthFinishReasonError):
        return "the reply was cut off at the token limit"
    if isinstance(exc, openai.ContentFilterFinishReasonError):
        return "the reply was stopped by the content filter"
    return f"{type(exc).__name__}: {_cap(str(exc), 160)}"


def _raw_content(raw: LegacyAPIResponse[Any]) -> str | None:
    """The message content as sent; raises _Fallback when the body is no chat completion at all.

    A proxy's HTML page or a server's odd JSON would otherwise fail deep in the SDK's parser
    with errors that cannot be told apart from bugs.
    """
    try:
        body = json.loads(raw.text)
    except ValueError:
        ctype = raw.headers.get("content-type", "no content type")
        raise _Fallback(f"the server's reply is not JSON ({ctype}): check OPENAI_BASE_URL") from None
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not all(
        isinstance(c, dict) and isinstance(c.get("message"), dict) for c in choices
    ):
        raise _Fallback("the server's reply is not a chat completion: check OPENAI_BASE_URL")
    content = choices[0]["message"].get("content") if choices else None
    return content if isinstance(content, str) else None


def _validation_errors(exc: pydantic.ValidationError) -> list[str]:
    out = []
    for e in exc.errors()[:8]:
        loc = ".".join(str(p) for p in e["loc"]) or "reply"
        out.append(
            f"{loc}: {e['msg']}"
            if e["type"] != "json_invalid"
            else f"the reply is not valid JSON ({e['msg']})"
        )
    return out


def _draft(
    facts: Facts, cfg: NarrativeConfig, name: str, client: openai.OpenAI | None, counter: _Counter
) -> tuple[Narrative, str, bool]:
    """(narrative, model that served it, whether a re-ask was needed); raises _Fallback."""
    deadline = _Deadline(cfg.deadline_s)
    try:
        client = client or make_client(cfg)
    except openai.OpenAIError as exc:
        raise _Fallback(f"could not create the client: {_cap(str(exc), 160)}") from exc
    messages = build_messages(facts)
    for round_ in (1, 2):
        try:
            raw = _ask(client, messages, name, cfg, deadline, counter)
        except _DeadlineReached:
            raise _Fallback(
                f"deadline of {cfg.deadline_s:g}s reached after {counter.attempts} attempts"
            ) from None
        except openai.OpenAIError as exc:
            reason = describe(exc, counter.attempts)
            if counter.stopped_by_deadline:
                reason += f" (the {cfg.deadline_s:g}s deadline left no time for another attempt)"
            raise _Fallback(reason) from exc
        content = _raw_content(raw)
        try:
            completion = raw.parse()
        except openai.OpenAIError as exc:  # length, content filter
            raise _Fallback(describe(exc, counter.attempts)) from exc
        except pydantic.ValidationError as exc:
            errors = _validation_errors(exc)
        else:
            message = completion.choices[0].message if completion.choices else None
            if message is not None and message.refusal:
                raise _Fallback(f"the model refused: {_cap(message.refusal, 160)}")
            if message is None or message.parsed is None:
                errors = ["the reply has no content; reply with the JSON object"]
            else:
                errors = [str(e) for e in check_narrative(message.parsed, facts)]
                if not errors:
                    return message.parsed, completion.model or name, round_ == 2
        if round_ == 1:
            log.info("draft rejected, re-asking once: %s", "; ".join(errors))
            if content is not None:
                messages = [*messages, {"role": "assistant", "content": content}]
            messages = [*messages, {"role": "user", "content": reask_message(errors)}]
    shown = "; ".join(errors[:3])
    raise _Fallback(_cap(f"the draft failed the checks twice (second draft: {shown})"))


def draft_with_model(
    facts: Facts, cfg: NarrativeConfig, *, client: openai.OpenAI | None = None
) -> tuple[Narrative, Provenance]:
    """The model's words when they pass the grounding check; the template's otherwise."""
    name = model_name(cfg)
    counter = _Counter()
    try:
        narrative, served_by, reasked = _draft(facts, cfg, name, client, counter)
    except _Fallback as fb:
        from juno.narrative.template import template_narrative

        log.warning("narrative: %s failed (%s); using the template", name, fb.reason)
        return template_narrative(facts), Provenance(
            method="template", model=None, attempts=counter.attempts, reason=f"{name}: {fb.reason}"
        )
    reason = "passed the grounding check" + (" after one re-ask" if reasked else "")
    return narrative, Provenance(method="model", model=served_by, attempts=counter.attempts, reason=reason)
