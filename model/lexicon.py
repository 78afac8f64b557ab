"""A keyword scorer with the Classifier's interface (`SENTINEL_BASE=lexicon`): no model, no torch.

Not a sentiment model. It exists so the stream and the alert thresholds can be exercised at
hundreds of posts a second end to end (362-523 through `sentinel run` on 2 cores, few scopes:
`bench/scopes.py`, docs/results/scopes_6000.json; 415-423 for 20,000 generated posts through
`SENTINEL_BASE=lexicon sentinel run FILE --summary-json out.json`, docs/results/lexicon_run.json):
dry-running a week of recorded posts against new alert settings, and
the early-warning tests, whose generated posts say plainly which way they lean. Its judgements are
deterministic, so a replay gives the same alerts every time.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

from model.labels import LABELS
from model.scorer import Judgement, ModelInfo, judgement_from_probs

POSITIVE = frozenset("bullish moon pump pumping rally breakout ath buy buying long green surge soaring up".split())
NEGATIVE = frozenset("bearish dump dumping crash rekt sell selling short red fud scam plunge collapse down".split())
_WORD = re.compile(r"[a-z]+")


def judge(text: str) -> Judgement:
    words = _WORD.findall(text.lower())
    pos = sum(w in POSITIVE for w in words)
    neg = sum(w in NEGATIVE for w in words)
    # A softmax over keyword evidence; no evidence leans neutral.
    logits = {"positive": float(pos), "negative": float(neg), "neutral": 0.5}
    top = max(logits.values())
    exp = {k: math.exp(v - top) for k, v in logits.items()}
    total = sum(exp.values())
    return judgement_from_probs([exp[label] / total for label in LABELS])


class LexiconClassifier:
    def __init__(self) -> None:
        self.info = ModelInfo(base="lexicon", adapter=None, device="cpu", dtype="none", quantize="none", load_s=0.0)

    def classify(self, texts: Sequence[str]) -> list[Judgement]:
        return [judge(t) for t in texts]
