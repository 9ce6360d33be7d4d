from __future__ import annotations

import random

from fieldlens_core.config import validate_config
from fieldlens_fielddata.sampling.config import SamplingConfig
from fieldlens_fielddata.sampling.policy import SamplingPolicy
from tests.helpers.predictions import ranked

UNSURE = ranked(("hen", 0.45), ("duck", 0.40))
SURE = ranked(("hen", 0.97), ("duck", 0.02))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def policy(raw: dict[str, object], clock: Clock, already_kept: list[float] | None = None) -> SamplingPolicy:
    return SamplingPolicy(validate_config(SamplingConfig, raw), clock, random.Random(1), already_kept or [])


def test_the_first_strategy_that_wants_it_gives_the_reason_and_the_score_is_uncertainty() -> None:
    verdict = policy({"strategies": [{"type": "least_confidence", "threshold": 0.6}, {"type": "always"}]}, Clock())
    unsure, sure = verdict.decide(UNSURE), verdict.decide(SURE)
    assert (unsure.keep, unsure.reason, unsure.score) == (True, "policy: least_confidence (0.450 < 0.6)", 0.55)
    assert (sure.keep, sure.reason) == (True, "policy: always")


def test_nothing_wanted_is_not_kept_but_save_always_is_and_scores_highest() -> None:
    p = policy({"strategies": []}, Clock())
    assert p.decide(SURE).keep is False
    saved = p.decide(SURE, saved=True)
    assert saved.keep and saved.reason == "request: save" and saved.score > 1


def test_caps_per_minute_hour_and_day() -> None:
    clock = Clock()
    p = policy({"caps": {"perMinute": 2, "perHour": 3, "perDay": 4}}, clock)
    assert [p.decide(SURE).keep for _ in range(3)] == [True, True, False]
    assert p.decide(SURE).reason == "cap: per_minute (2) reached"
    clock.now += 61
    assert [p.decide(SURE).keep for _ in range(2)] == [True, False]
    assert p.decide(SURE).reason == "cap: per_hour (3) reached"
    clock.now += 3600
    assert [p.decide(SURE).keep for _ in range(2)] == [True, False]
    assert p.decide(SURE).reason == "cap: per_day (4) reached"
    clock.now += 86400
    assert p.decide(SURE).keep


def test_saved_images_bypass_the_caps() -> None:
    p = policy({"caps": {"perMinute": 0}}, Clock())
    assert not p.decide(SURE).keep and p.decide(SURE, saved=True).keep


def test_per_class_quotas() -> None:
    clock = Clock()
    p = policy({"classQuota": {"perDay": 2, "classes": {"duck": 1}}}, clock)
    duck = ranked(("duck", 0.9), ("hen", 0.1))
    assert [p.decide(SURE).keep for _ in range(3)] == [True, True, False]
    assert p.decide(SURE).reason == "quota: 2 'hen' images per day reached"
    assert [p.decide(duck).keep for _ in range(2)] == [True, False]
    clock.now += 86401
    assert p.decide(SURE).keep and p.decide(duck).keep


def test_caps_count_what_was_kept_before_a_restart() -> None:
    clock = Clock()
    p = policy({"caps": {"perDay": 3}}, clock, already_kept=[clock.now - 10, clock.now - 20, clock.now - 90000])
    assert [p.decide(SURE).keep for _ in range(2)] == [True, False]


def test_saves_past_their_cap_fall_through_to_the_policy_and_say_so() -> None:
    """30 saves in a minute under the default policy (`always`) and save caps (10 a minute) once kept 10."""
    p = policy({}, Clock())
    verdicts = [p.decide(SURE, saved=True) for _ in range(30)]
    assert all(v.keep for v in verdicts)
    assert [v.reason for v in verdicts[:10]] == ["request: save"] * 10 and all(v.saved for v in verdicts[:10])
    past = verdicts[10:]
    assert {v.reason for v in past} == {"policy: always; save cap: per_minute (10) reached"}
    assert not any(v.saved for v in past) and all(v.score < 1 for v in past)  # filed and scored as sampled


def test_a_save_past_its_cap_that_the_policy_refuses_names_both() -> None:
    p = policy(
        {"strategies": [{"type": "confidence_band", "low": 0.6, "high": 0.99}], "saveCaps": {"perMinute": 1}}, Clock()
    )
    assert p.decide(SURE, saved=True).reason == "request: save"
    refused = p.decide(SURE, saved=True)
    assert not refused.keep and not refused.saved
    assert refused.reason == "save cap: per_minute (1) reached; policy: no strategy wanted it"
    assert (
        p.decide(UNSURE, saved=True).reason == "policy: confidence_band (0.450 < 0.6); save cap: per_minute (1) reached"
    )


def test_a_save_past_its_cap_counts_in_the_policys_caps() -> None:
    p = policy({"saveCaps": {"perMinute": 0}, "caps": {"perMinute": 1}}, Clock())
    assert p.decide(SURE, saved=True).keep
    assert not p.decide(SURE).keep  # the fall-through keep used the policy's cap
    refused = p.decide(SURE, saved=True)
    assert refused.reason == "save cap: per_minute (0) reached; cap: per_minute (1) reached"
