"""The local match-quality estimate: scores, shares and advice from known mixes."""

from __future__ import annotations

from typing import Any

import pytest

from backchannel.quality import WEIGHTS, estimate, identifiers

H = "a" * 64


def conv(event: str = "CompletePayment", **user: Any) -> dict[str, Any]:
    return {"event": event, "user": user}


class TestWeights:
    @pytest.mark.parametrize("destination", ["tiktok", "meta"])
    def test_weights_add_up_to_ten(self, destination: str) -> None:
        """Every identifier present scores exactly 10 on both platforms."""
        assert sum(WEIGHTS[destination].values()) == pytest.approx(10.0)

    def test_full_identity_scores_ten(self) -> None:
        """An event carrying every identifier scores 10 and gets no advice."""
        full = conv(
            email=[H],
            phone=[H],
            external_id=[H],
            ttclid="c",
            ttp="t",
            fbc="f",
            fbp="p",
            ip="81.2.69.160",
            user_agent="UA",
        )
        for destination in ("tiktok", "meta"):
            (result,) = estimate([full], destination)
            assert result.score == 10.0
            assert result.advice == []


class TestIdentifiers:
    def test_ip_counts_only_with_user_agent(self) -> None:
        """ip without user_agent earns nothing (platforms match on the pair)."""
        assert "ip_user_agent" not in identifiers({"ip": "81.2.69.160"}, "tiktok")
        assert "ip_user_agent" in identifiers({"ip": "81.2.69.160", "user_agent": "x"}, "tiktok")

    def test_click_ids_are_per_platform(self) -> None:
        """ttclid is TikTok's click id; fbclid/fbc are Meta's; neither counts for the other."""
        assert "click_id" in identifiers({"ttclid": "c"}, "tiktok")
        assert "click_id" not in identifiers({"ttclid": "c"}, "meta")
        assert "click_id" in identifiers({"fbclid": "f"}, "meta")
        assert "click_id" not in identifiers({"fbc": "f"}, "tiktok")


class TestEstimate:
    def test_known_mix_gives_exact_score_shares_and_advice(self) -> None:
        """4 purchases: all with email, half with phone, one with ttclid -> exact figures."""
        mix = [
            conv(email=[H], phone=[H], ttclid="c"),
            conv(email=[H], phone=[H]),
            conv(email=[H]),
            conv(email=[H], ip="81.2.69.160", user_agent="UA"),
        ]
        (result,) = estimate(mix, "tiktok")
        assert result.events == 4
        assert result.shares["email"] == 1.0
        assert result.shares["phone"] == 0.5
        assert result.shares["click_id"] == 0.25
        # 3*1 + 3*0.5 + 2*0.25 + 0.5*0.25 = 5.125
        assert result.score == pytest.approx(5.12, abs=0.01)
        advice = {a.identifier: a.gain for a in result.advice}
        assert advice["phone"] == 1.5
        assert advice["click_id"] == 1.5
        assert advice["external_id"] == 1.0
        assert str(result.advice[0]) in (
            "add hashed phone: +1.5",
            "add click id (ttclid): +1.5",  # TikTok: its own click id
        )
        assert "email" not in advice

    def test_event_names_are_separate_and_most_frequent_first(self) -> None:
        """Each event name gets its own estimate; the busiest comes first."""
        results = estimate([conv("Lead", email=[H]), conv("CompletePayment"), conv("Lead")], "meta")
        assert [(r.event, r.events) for r in results] == [("Lead", 2), ("CompletePayment", 1)]
        assert results[0].score == 1.5
        assert results[1].score == 0.0
