"""The rate limiter's computed waits (a fake clock, no timing) and Retry-After parsing."""

import threading

import pytest

from envs.webqa import RateLimiter, parse_retry_after


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_min_interval_waits_grow_by_one_interval_per_queued_request():
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock)  # 0.25 s apart
    assert [limiter.reserve() for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]


def test_time_passing_frees_slots():
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock)
    assert limiter.reserve() == 0.0
    clock.now += 0.2
    assert limiter.reserve() == pytest.approx(0.3)  # next slot at +0.5
    clock.now += 10.0  # idle: no credit piles up beyond the burst
    assert [limiter.reserve() for _ in range(2)] == [0.0, pytest.approx(0.5)]


def test_burst_lets_that_many_through_at_once():
    clock = FakeClock()
    limiter = RateLimiter(2.0, burst=3, clock=clock)
    assert [limiter.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 0.5, 1.0]


def test_acquire_sleeps_the_reserved_wait():
    clock = FakeClock()
    slept = []
    limiter = RateLimiter(5.0, clock=clock, sleep=slept.append)
    limiter.acquire()
    limiter.acquire()
    assert slept == [pytest.approx(0.2)]


def test_no_limit_never_waits():
    limiter = RateLimiter(None)
    assert {limiter.reserve() for _ in range(100)} == {0.0}


def test_concurrent_callers_get_distinct_slots():
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock)
    waits, lock = [], threading.Lock()

    def worker():
        for _ in range(25):
            w = limiter.reserve()
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 200 reservations at one instant: every slot 0, 0.1, ..., 19.9 handed out exactly once.
    assert sorted(round(w * 10) for w in waits) == list(range(200))


@pytest.mark.parametrize("bad", [0, -1.0])
def test_bad_rate_is_rejected(bad):
    with pytest.raises(ValueError, match="rate_per_s"):
        RateLimiter(bad)


def test_retry_after_reads_seconds_and_dates():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
