"""Prometheus metrics of one replica, in their own registry (several apps in one process do not clash)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


class Metrics:
    """Queue length, running batch size, tokens/s, request latency and time to first audio."""

    def __init__(self, queue_length: Callable[[], int], batch_size: Callable[[], int]):
        r = self.registry = CollectorRegistry()
        Gauge("audiollm_queue_length", "requests waiting for a batch slot", registry=r).set_function(
            queue_length
        )
        Gauge("audiollm_running_batch_size", "requests in the running decode batch", registry=r).set_function(
            batch_size
        )
        self.tokens = Counter("audiollm_generated_tokens", "decoded steps, summed over requests", registry=r)
        self.tokens_per_second = Gauge(
            "audiollm_tokens_per_second", "decoded steps per second over the last second", registry=r
        )
        self.latency = Histogram(
            "audiollm_request_latency_seconds", "time from request to full response", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.first_audio = Histogram(
            "audiollm_time_to_first_audio_seconds", "time from a streamed request to its first audio bytes",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.requests = Counter(
            "audiollm_requests",
            "requests answered, by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=r,
        )
        self.cancelled = Counter(
            "audiollm_cancelled_requests", "requests dropped before their end", registry=r
        )
        self._lock = threading.Lock()
        self._window_start, self._window_tokens = time.monotonic(), 0

    def on_step(self, jobs: int, rows: int) -> None:
        """Scheduler hook: one decode step advanced `jobs` requests."""
        self.tokens.inc(jobs)
        self._roll(jobs)

    def _roll(self, tokens: int) -> None:
        """Count tokens into the current window; a window of a second or more sets tokens/s."""
        with self._lock:
            self._window_tokens += tokens
            now = time.monotonic()
            if now - self._window_start >= 1.0:
                self.tokens_per_second.set(self._window_tokens / (now - self._window_start))
                self._window_start, self._window_tokens = now, 0

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        self._roll(0)  # an idle server reads 0 tokens/s
        return generate_latest(self.registry)
