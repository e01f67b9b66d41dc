"""A judge behind an OpenAI-compatible chat completions API: GPT-4o, or any vLLM server.

Scoring follows Betley et al. (`open_models/judge.py`): the rendered judge prompt is one user
turn; the request asks for one token at temperature 0 with the top-20 logprobs and seed 0, and
the score is `aggregate_0_100` of those probabilities. What upstream leaves out and this adds:

- Concurrency: `concurrency` requests in flight at once (one httpx client, a thread pool; the
  public API stays synchronous).
- Retries (tenacity): 408/409/425/429 and 5xx, timeouts and connection errors are retried up to
  `max_attempts` times with exponential backoff and jitter; a `Retry-After` (or OpenAI's
  `retry-after-ms`) header is honoured instead of the backoff. A body that is not the expected
  JSON is retried up to `malformed_attempts` times. Other 4xx are not retried.
- Every request ends in exactly one `JudgeResult`: a score, or None with a reason —
  `low-probability-mass` (the judge said CODE / REFUSAL / anything but a number),
  `no-logprobs-unparseable`, `malformed-response`, `http-<status>`, `timeout`,
  `connection-error`. An endpoint that returns no logprobs is scored by parsing an integer 0..100
  from its text (method "text-parse", recorded per row); that is coarser than the logprob mean.
- Two modes (`mode`). `logprobs` (the default, and the suite's official judge) is the above.
  `text` is the seed release's: one user turn at temperature 0 with no token limit and no
  logprobs, the reply parsed as its first number, a bare CODE / REFUSAL kept as that word
  (atagade/sgtr-em@8303210 scripts/eval/em/em_eval.py:127-139, 181-197;
  utils/model_runner.py:137-148), so the release's published outputs can be replayed and
  compared. Its scores are integers in practice: never official, its id says `?mode=text`.
- The API key is read from the environment (`api_key_env`) at call time and sent only in the
  Authorization header: it is never stored on the object, logged, put into `raw`, `describe()`
  or an exception message.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import certifi
import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
)

from emarena.errors import EmArenaError
from emarena.eval.judges.aggregate import MIN_MASS, aggregate_0_100, probs_from_top_logprobs
from emarena.eval.judges.base import (
    CONNECTION_ERROR,
    EXTRACTION_EMPTY,
    LOW_MASS,
    MALFORMED,
    NO_LOGPROBS_UNPARSEABLE,
    TIMEOUT,
    JudgeRequest,
    JudgeResult,
    Method,
    check_unique_keys,
    normalise_label,
    parse_int_0_100,
    parse_text_score,
)
from emarena.eval.judges.config import load_judges_config

log = logging.getLogger(__name__)

REFERENCE_MODEL = "gpt-4o-2024-08-06"
REFERENCE_BASE_URL = "https://api.openai.com/v1"
MODES = ("logprobs", "text")
"""logprobs: Betley et al.'s probability-weighted score (official); text: the seed release's."""
RETRY_STATUSES = frozenset({408, 409, 425, 429})
"""Retried besides every 5xx: request timeout, conflict, too early, rate limited."""


class _Retryable(Exception):
    """One attempt failed in a way worth another try. Its text is only the reason (no secrets)."""

    def __init__(self, reason: str, *, retry_after: float | None = None, malformed: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.malformed = malformed


class _Malformed(ValueError):
    """The body is not the chat completion shape we asked for."""


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _public_url(url: str) -> str:
    """`url` without user:password@ (never recorded)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _first_choice(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _Malformed("body is not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Malformed("no choices")
    choice = choices[0]
    message = choice.get("message")
    if message is not None and not isinstance(message, dict):
        raise _Malformed("message is not an object")
    return choice


def _content(choice: dict[str, Any]) -> str | None:
    content = (choice.get("message") or {}).get("content")
    if content is not None and not isinstance(content, str):
        raise _Malformed("content is not text")
    return content


def _top_logprobs(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The first token's top_logprobs; None when the endpoint sent no logprobs at all."""
    logprobs = choice.get("logprobs")
    if logprobs is None:
        return None
    if not isinstance(logprobs, dict):
        raise _Malformed("logprobs is not an object")
    content = logprobs.get("content")
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        # Upstream notes this "should not happen according to the API docs. But it sometimes
        # does." Upstream scores it None; here it is retried, then unscored (not cached).
        raise _Malformed("logprobs.content is empty")
    top = content[0].get("top_logprobs")
    if top is None or top == []:
        return None
    if not isinstance(top, list):
        raise _Malformed("top_logprobs is not a list")
    for el in top:
        if (
            not isinstance(el, dict)
            or not isinstance(el.get("token"), str)
            or not isinstance(el.get("logprob"), int | float)
            or isinstance(el.get("logprob"), bool)
            or math.isnan(el["logprob"])
        ):
            raise _Malformed("a top_logprobs entry is not {token, logprob}")
    return top


class OpenAIJudge:
    """Judge through `POST {base_url}/chat/completions` (see the module docstring)."""

    backend = "openai"

    def __init__(
        self,
        model: str = REFERENCE_MODEL,
        base_url: str = REFERENCE_BASE_URL,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        max_attempts: int = 6,
        *,
        top_logprobs: int = 20,
        min_mass: float = MIN_MASS,
        seed: int = 0,
        malformed_attempts: int = 3,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        max_retry_after: float = 120.0,
        extraction_max_tokens: int = 16,
        mode: str = "logprobs",
    ):
        if mode not in MODES:
            raise ValueError(f"judge mode {mode!r} is unknown; use one of {', '.join(MODES)}")
        if concurrency < 1 or max_attempts < 1 or malformed_attempts < 1 or timeout <= 0:
            raise ValueError(
                "concurrency, max_attempts, malformed_attempts and timeout must be > 0"
            )
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env or None
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_attempts = max_attempts
        self.top_logprobs = top_logprobs
        self.min_mass = min_mass
        self.seed = seed
        self.malformed_attempts = malformed_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.extraction_max_tokens = extraction_max_tokens
        self.mode = mode
        self._ssl: ssl.SSLContext | None = None

        ref = load_judges_config().reference
        settings = (self.top_logprobs, self.min_mass, self.seed)
        ref_settings = (ref.top_logprobs, ref.min_mass, ref.seed)
        self.official = (
            self.model == ref.model
            and self.base_url == ref.base_url.rstrip("/")
            and settings == ref_settings
            and mode == "logprobs"
        )
        ident = f"openai:{self.model}"
        if self.base_url != ref.base_url.rstrip("/"):
            ident += f"@{_public_url(self.base_url)}"
        changed = [
            f"{name}={value}"
            for name, value, default in zip(
                ("top_logprobs", "min_mass", "seed"), settings, ref_settings, strict=True
            )
            if value != default
        ]
        if mode != "logprobs":
            changed.append(f"mode={mode}")
        if changed:  # settings that change the numbers are part of the identity (and cache key)
            ident += "?" + "&".join(changed)
        self.id = ident

    def __repr__(self) -> str:
        return f"OpenAIJudge(id={self.id!r})"

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "backend": self.backend,
            "official": self.official,
            "model": self.model,
            "base_url": _public_url(self.base_url),
            "api_key_env": self.api_key_env,
            "concurrency": self.concurrency,
            "timeout": self.timeout,
            "max_attempts": self.max_attempts,
            "malformed_attempts": self.malformed_attempts,
            "min_mass": self.min_mass,
            "mode": self.mode,
            "request": self._score_payload("<prompt>") | {"messages": "<one user turn>"},
            "extraction_request": self._extract_payload("<prompt>")
            | {"messages": "<one user turn>"},
        }

    # -- requests ---------------------------------------------------------------------------

    def _score_payload(self, prompt: str) -> dict[str, Any]:
        if self.mode == "text":  # the release's call: the model, one user turn, temperature 0
            return {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                    "temperature": 0}
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
            "seed": self.seed,
        }

    def _extract_payload(self, prompt: str) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.extraction_max_tokens,
            "temperature": 0,
            "seed": self.seed,
        }

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if not key and urlsplit(self.base_url).hostname == "api.openai.com":
            raise EmArenaError(
                f"the judge {self.id} needs an API key and ${self.api_key_env} is not set",
                fix=f"export {self.api_key_env}=... (or pick a local judge: --judge hf)",
            )
        return {"Authorization": f"Bearer {key}"} if key else {}

    def judge(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        """Score each prompt 0..100; one result per request, in order."""
        if self.mode == "text":
            return self._run(requests, self._score_payload, self._parse_text, "text-parse")
        return self._run(requests, self._score_payload, self._parse_score, "logprobs")

    def extract(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        """Answer each prompt with a short text; `label` is its normalised first line."""
        return self._run(requests, self._extract_payload, self._parse_extraction, "extraction")

    def _ssl_context(self) -> ssl.SSLContext:
        # Built once per judge: loading the CA bundle costs ~0.1 s, per batch otherwise.
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    def _run(
        self,
        requests: Sequence[JudgeRequest],
        payload: Callable[[str], dict[str, Any]],
        parse: Callable[[str, dict[str, Any]], JudgeResult],
        method: Method,
    ) -> list[JudgeResult]:
        requests = list(requests)
        check_unique_keys(requests)
        if not requests:
            return []
        workers = min(self.concurrency, len(requests))
        client = httpx.Client(
            base_url=self.base_url,
            headers=self._headers(),
            verify=self._ssl_context(),
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
        )
        # httpx.Client is thread-safe; each request's retry state lives in its own `_one` call,
        # and results are collected by index, so none is lost or duplicated.
        with client, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge") as pool:
            futures = [pool.submit(self._one, client, r, payload, parse, method) for r in requests]
            try:
                return [f.result() for f in futures]
            except BaseException:  # Ctrl-C or a bug: do not send the requests still queued
                for f in futures:
                    f.cancel()
                raise

    def _one(
        self,
        client: httpx.Client,
        req: JudgeRequest,
        payload: Callable[[str], dict[str, Any]],
        parse: Callable[[str, dict[str, Any]], JudgeResult],
        method: Method,
    ) -> JudgeResult:
        state = {"attempts": 0, "malformed": 0}
        body = payload(req.prompt)

        def attempt() -> JudgeResult:
            state["attempts"] += 1
            try:
                resp = client.post("/chat/completions", json=body)
            except httpx.TimeoutException:
                raise _Retryable(TIMEOUT) from None
            except httpx.TransportError:
                raise _Retryable(CONNECTION_ERROR) from None
            status = resp.status_code
            if status >= 500 or status in RETRY_STATUSES:
                raise _Retryable(f"http-{status}", retry_after=_retry_after(resp.headers))
            if status >= 400:
                return self._unscored(req.key, f"http-{status}", method=method)
            try:
                return parse(req.key, resp.json())
            except (ValueError, _Malformed):  # JSONDecodeError is a ValueError
                state["malformed"] += 1
                raise _Retryable(MALFORMED, malformed=True) from None

        def malformed_exhausted(_: RetryCallState) -> bool:
            return state["malformed"] >= self.malformed_attempts

        retrying = Retrying(
            stop=stop_any(stop_after_attempt(self.max_attempts), malformed_exhausted),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            before_sleep=self._log_retry,
            reraise=True,
            sleep=time.sleep,
        )
        try:
            result = retrying(attempt)
        except _Retryable as e:
            log.info("judge %s: request %s unscored after %d attempt(s): %s",
                     self.id, req.key, state["attempts"], e.reason)
            result = self._unscored(req.key, e.reason, method=method)
        raw = dict(result.raw, attempts=state["attempts"])
        return JudgeResult(result.key, result.score, result.unscored_reason, result.method, raw,
                           result.label)

    def _wait(self, rs: RetryCallState) -> float:
        exc = rs.outcome.exception() if rs.outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        # Exponential backoff with jitter (written out: tenacity's helper changed signature
        # across the versions we allow). The jitter spreads out workers that failed together.
        base = min(self.backoff_max, self.backoff_initial * 2 ** (rs.attempt_number - 1))
        return base + random.uniform(0, self.backoff_initial)

    def _log_retry(self, rs: RetryCallState) -> None:
        exc = rs.outcome.exception() if rs.outcome is not None else None
        log.debug("judge %s: attempt %d failed (%s), retrying in %.2f s", self.id,
                  rs.attempt_number, getattr(exc, "reason", type(exc).__name__),
                  rs.next_action.sleep if rs.next_action else 0.0)

    @staticmethod
    def _unscored(key: str, reason: str, *, method: Method) -> JudgeResult:
        return JudgeResult(key, None, reason, method, {"error": reason})

    # -- responses --------------------------------------------------------------------------

    def _parse_score(self, key: str, body: dict[str, Any]) -> JudgeResult:
        choice = _first_choice(body)
        content = _content(choice)
        top = _top_logprobs(choice)
        meta = {k: body[k] for k in ("model", "system_fingerprint") if isinstance(body.get(k), str)}
        if top is None:
            if content is None:
                raise _Malformed("neither logprobs nor content")
            n = parse_int_0_100(content)
            raw = {"content": content, "logprobs": None, **meta}
            if n is None:
                return JudgeResult(key, None, NO_LOGPROBS_UNPARSEABLE, "text-parse", raw)
            return JudgeResult(key, float(n), None, "text-parse", raw)
        probs = probs_from_top_logprobs(top)
        score, mass = aggregate_0_100(probs, min_mass=self.min_mass)
        raw = {"probs": probs, "mass": mass, "content": content, **meta}
        if score is None:
            return JudgeResult(key, None, LOW_MASS, "logprobs", raw)
        return JudgeResult(key, score, None, "logprobs", raw)

    def _parse_text(self, key: str, body: dict[str, Any]) -> JudgeResult:
        """Text mode: the reply's first number, or the word the judge said (unscored)."""
        choice = _first_choice(body)
        content = _content(choice)
        if content is None:
            raise _Malformed("no content")
        meta = {k: body[k] for k in ("model", "system_fingerprint") if isinstance(body.get(k), str)}
        score, reason = parse_text_score(content)
        return JudgeResult(key, score, reason, "text-parse", {"content": content, **meta})

    def _parse_extraction(self, key: str, body: dict[str, Any]) -> JudgeResult:
        choice = _first_choice(body)
        content = _content(choice)
        meta = {k: body[k] for k in ("model", "system_fingerprint") if isinstance(body.get(k), str)}
        raw = {"content": content, "finish_reason": choice.get("finish_reason"), **meta}
        label = normalise_label(content or "")
        if label is None:
            return JudgeResult(key, None, EXTRACTION_EMPTY, "extraction", raw)
        return JudgeResult(key, None, None, "extraction", raw, label=label)

