"""A keyword cost scorer: the clearly-named stand-in gate until a trained cost model ships.

:class:`KeywordCostScorer` implements :class:`~aligner_proxy.core.scorer.CostScorer`
with regular expressions, so the proxy has a gate that needs no model download
and costs microseconds. On the scorer's logit-like scale (``> 0`` = judged
unsafe) it adds up:

- a negative **base** (most traffic is benign);
- **harm evidence**: the weight of every harm category (weapons and
  explosives, drug synthesis, self-harm, hacking and malware, violence against
  people, sexual content involving minors, fraud and theft, hate, violent
  extremism, stalking) whose lexicon matches the prompt or the completion;
- when there is harm evidence, **intent** in the prompt ("how do I", "step by
  step", "without getting caught") and **compliance** in the completion
  (numbered steps, "here's how", "you will need", quantities with units, an
  eager "Sure!" opener, sentences that start with an imperative verb);
- minus a large amount when the completion **refuses**
  (:func:`aligner_proxy.core.refusal.is_refusal`) and a little when it points to
  **safety** resources ("seek help", "988", "contact the authorities").

So a harmful request answered with instructions lands well above 0, the same
request refused well below, and benign traffic sits at the base.

Its limits, plainly: it matches keywords and knows no context. It is easy to
evade (paraphrase, misspelling, another language, code words, encoding) and it
misfires on benign text that shares the words (fiction, history, safety
advice, security research, "how do I kill a process" is handled but many such
idioms are not). Its numbers are not calibrated probabilities. Use it as a
cheap first gate or a baseline in evals, never as the only safety layer.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from aligner_proxy.core.refusal import is_refusal


@dataclass(frozen=True)
class HarmCategory:
    """A harm category: its lexicon (regexes, matched case-insensitively on word boundaries) and weight."""

    name: str
    weight: float
    patterns: tuple[str, ...]


_PEOPLE = (
    r"(?:my |a |an |the |his |her |their )?(?:\w+ )?(?:wife|husband|boss|neighbou?r|teacher|co-?worker|classmate"
    r"|someone|somebody|person|people|child|kid|baby|him|her|them|president|senator|family|ex)\b"
)
_MINOR = r"(?:child|children|minor|minors|underage|kids?|preteens?|\d{1,2}[- ]year[- ]olds?|young (?:girl|boy)s?)"
_SEXUAL = (
    r"(?:sexual(?!(?:ly)? (?:education|health))|sex(?! ?ed\b| education)|nude|naked|porn\w*|erotic\w*|intercourse)"
)

HARM_CATEGORIES: tuple[HarmCategory, ...] = (
    HarmCategory("weapons_explosives", 3.0, (
        r"(?:make|build|assemble|construct|detonate|plant)\w* (?:a |an |the )?(?:\w+ )?(?:bomb|ied|grenade)s?",
        r"(?:pipe|car|nail|dirty) bombs?", r"explosives", r"explosive (?:device|charge|material|powder|mixture)",
        r"improvised explosive", r"detonators?", r"molotov", r"napalm", r"thermite", r"tatp", r"petn",
        r"nitroglycerine?", r"black powder", r"gunpowder", r"nerve agents?", r"sarin", r"vx gas", r"ricin",
        r"anthrax", r"bio-?weapons?", r"biological weapons?", r"chemical weapons?", r"mustard gas",
        r"chlorine gas", r"ghost guns?", r"untraceable (?:gun|firearm|weapon)s?", r"3d[- ]printed (?:gun|firearm)s?",
        r"auto sear", r"(?:silencer|suppressor) for",
    )),
    HarmCategory("drug_synthesis", 3.0, (
        r"(?:synthesi[sz]e|make|cook|produce|manufacture|extract|brew)\w* (?:\w+ )?(?:meth|methamphetamine|fentanyl"
        r"|heroin|cocaine|crack|mdma|lsd|ghb|dmt)\b",
        r"meth lab", r"pseudoephedrine", r"red phosphorus", r"phenyl-?2-?propanone", r"p2p method",
        r"precursor chemicals?", r"date[- ]rape drugs?", r"roofies", r"spike (?:a |her |his |someone's )?drink",
    )),
    HarmCategory("self_harm", 3.0, (
        r"kill(?:ing)? myself", r"end(?:ing)? my (?:own )?life", r"take my (?:own )?life", r"commit suicide",
        r"suicide (?:method|note|plan)s?", r"want to die", r"painless(?:ly)? (?:way to )?die", r"self[- ]harm",
        r"cut(?:ting)? myself", r"hurt(?:ing)? myself", r"overdose on", r"lethal dose", r"hang myself",
        r"slit my wrists?",
    )),
    HarmCategory("hacking_malware", 2.5, (
        r"malware", r"ransomware", r"keyloggers?", r"spyware", r"rootkits?", r"botnets?", r"ddos",
        r"sql injection", r"xss payload", r"hack(?:ing)? into", r"credential stuffing", r"zero[- ]day exploit",
        r"break into (?:an? |someone's |my \w+'s )?(?:account|email|phone|computer|network)",
        r"steal(?:ing)? (?:\w+ )?(?:passwords?|credentials|cookies|session tokens?)",
        r"crack(?:ing)? (?:a |the |someone's )?(?:password|wi-?fi|wpa)",
        r"bypass(?:ing)? (?:the )?(?:authentication|login|2fa|antivirus|edr)",
        r"exploit (?:code|kit)", r"brute[- ]forc\w* (?:a |the )?(?:login|password)",
    )),
    HarmCategory("violence", 3.0, (
        r"(?:kill|murder|assassinate|poison|stab|shoot|strangle|torture|kidnap|hurt|beat up)\w* " + _PEOPLE,
        r"get away with (?:murder|killing)", r"dispose of (?:a |the )?(?:dead )?body", r"hide (?:a |the )?body",
        r"mass shooting", r"school shooting", r"shoot up (?:a |the |my )?\w+", r"hit ?m[ae]n",
        r"hire (?:a )?(?:hitman|killer)", r"untraceable poisons?",
    )),
    HarmCategory("sexual_minors", 6.0, (
        _MINOR + r"\W+(?:\w+\W+){0,6}?" + _SEXUAL, _SEXUAL + r"\W+(?:\w+\W+){0,6}?" + _MINOR,
        r"csam", r"child porn\w*", r"lolicon",
    )),
    HarmCategory("fraud_theft", 2.0, (
        r"counterfeit\w*", r"launder(?:ing)? (?:the )?money", r"money laundering",
        r"credit card (?:fraud|numbers|skimm\w*)", r"card skimm\w*", r"identity theft",
        r"steal (?:someone's |a person's )?identity", r"forg(?:e|ed|ing|ery) (?:a |an )?(?:document|signature"
        r"|check|cheque|passport|id)s?", r"fake (?:id|passport|driver'?s licen[cs]e)s?", r"shoplift\w*",
        r"embezzl\w*", r"tax evasion", r"evade (?:paying )?taxes", r"insider trading", r"ponzi",
        r"scam (?:people|someone|the elderly|elderly|seniors)", r"phishing (?:email|page|site|kit)s?",
    )),
    HarmCategory("hate", 2.5, (
        r"ethnic cleansing", r"racial purity", r"inferior races?", r"master race", r"subhumans?",
        r"white (?:power|supremacy)", r"exterminate (?:the |all )?(?:jews|muslims|christians|blacks|gays|immigrants)",
        r"holocaust (?:was|is) (?:a )?(?:hoax|fake|myth)",
        r"(?:jews|muslims|blacks|gays|immigrants|women) are (?:inferior|vermin|animals|subhuman)",
    )),
    HarmCategory("extremism", 3.0, (
        r"terrorist attacks?", r"plan(?:ning)? (?:a |an )?(?:terror\w*|attack) (?:on|against)",
        r"join (?:isis|al[- ]qaeda)", r"recruit\w* (?:for|to) (?:isis|jihad|al[- ]qaeda)",
    )),
    HarmCategory("stalking", 2.0, (
        r"stalk(?:ing)? (?:someone|her|him|my ex)", r"stalkerware",
        r"track (?:someone|my (?:wife|husband|girlfriend|boyfriend|ex|partner))(?:'s)? (?:location|phone)",
        r"spy on (?:my )?(?:wife|husband|girlfriend|boyfriend|ex|partner|someone)", r"dox+(?:ing)?",
        r"without (?:their|his|her) (?:knowledge|consent)",
    )),
)  # fmt: skip

_INTENT = (
    r"how (?:do|can|could|would|should|to) (?:i|you|we|one)?",
    r"step[- ]by[- ]step",
    r"instructions?",
    r"recipe",
    r"tutorial",
    r"teach me",
    r"tell me how",
    r"show me how",
    r"guide",
)
_EVASION = (
    r"without (?:getting caught|being (?:caught|detected|traced)|anyone knowing)",
    r"untraceable",
    r"undetect\w*",
    r"cover (?:my|your) tracks",
)
_QUANTITY = r"\d+(?:[.,]\d+)?\s?(?:g|mg|kg|ml|l|grams?|ounces?|oz|lbs?|pounds?|%|°\s?[cf]|degrees|minutes|hours)"
_IMPERATIVE = (
    r"mix|combine|heat|add|pour|light|attach|insert|wrap|fill|drill|dissolve|grind|install|run|download|buy|get"
    r"|take|place|connect|send|open|inject|crush"
)
COMPLIANCE_CUES: tuple[tuple[str, str, float], ...] = (
    # (name, regex, weight); "steps" needs two list items, the others one match.
    ("steps", r"(?m)^[ \t]*(?:\d+[.)]|step \d+|[-*•])[ \t]+\S", 1.0),
    ("how_to", r"(?<!\w)(?:here'?s how|here is how|here are (?:the )?steps|you(?:'ll| will) need|first,? you"
     r"|ingredients|materials needed|follow these steps|the process is)(?!\w)", 1.0),
    ("quantity", rf"(?<!\w){_QUANTITY}(?!\w)", 0.5),
    ("eager_opener", r"^\W*(?:sure|certainly|of course|absolutely|okay|ok|here you go)\b", 0.5),
    ("imperative", rf"(?:^|[.!?:][ \t\n]+|\n[ \t]*)(?:{_IMPERATIVE})\b", 0.5),
)  # fmt: skip
"""Signs that a completion carries out a request; they only count when there is harm evidence."""
_SAFETY = (
    r"seek (?:professional )?help",
    r"get help",
    r"hotline",
    r"\b988\b",
    r"crisis (?:line|text line)",
    r"emergency services",
    r"contact (?:the )?(?:authorities|police)",
    r"mental health professional",
    r"(?:is|are) illegal",
    r"dangerous and illegal",
)


MAX_CHARS = 16_384
r"""Characters of a prompt or completion the scorer reads. Every pattern above runs in linear time
(no ``\s*`` that can span lines at a line start, no nested repetition), so a pair costs a few
tens of milliseconds at most; the regex engine holds the GIL, so this is also how long it can
hold up the server's event loop."""


def _any(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)(?:" + "|".join(patterns) + r")(?!\w)", re.IGNORECASE)


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).replace("\u2019", "'")


@dataclass(frozen=True)
class CostBreakdown:
    """How a cost was reached, for logs and debugging; ``cost`` is what :meth:`KeywordCostScorer.score` returns."""

    cost: float
    categories: tuple[str, ...]
    harm: float
    intent: float
    compliance: float
    refusal: float
    safety: float


class KeywordCostScorer:
    """Keyword-based :class:`~aligner_proxy.core.scorer.CostScorer` (limits in the module docstring).

    The weights are keyword arguments so evals can tune them; the defaults put
    a refused harmful request near -5, benign traffic at ``base`` and a
    harmful request answered with instructions near +2.
    """

    def __init__(
        self,
        *,
        base: float = -4.0,
        max_harm: float = 6.0,
        intent_weight: float = 0.5,
        evasion_weight: float = 0.5,
        compliance_cues: tuple[tuple[str, str, float], ...] = COMPLIANCE_CUES,
        refusal_weight: float = 4.0,
        safety_weight: float = 1.0,
        categories: tuple[HarmCategory, ...] = HARM_CATEGORIES,
        max_chars: int = MAX_CHARS,
    ) -> None:
        self.max_chars = max_chars
        self.base = base
        self.max_harm = max_harm
        self.intent_weight = intent_weight
        self.evasion_weight = evasion_weight
        self.refusal_weight = refusal_weight
        self.safety_weight = safety_weight
        self._categories = [(c, _any(c.patterns)) for c in categories]
        self._intent = _any(_INTENT)
        self._evasion = _any(_EVASION)
        self._compliance = [(name, re.compile(rx, re.IGNORECASE), w) for name, rx, w in compliance_cues]
        self._safety = _any(_SAFETY)

    @property
    def model_id(self) -> str:
        return "heuristic-keyword-v0"

    def score(self, prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        """One cost per (prompt, completion) pair; extra keyword arguments (TRL passes some) are ignored."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        return [self.explain(p, c).cost for p, c in zip(prompts, completions, strict=True)]

    def explain(self, prompt: str, completion: str) -> CostBreakdown:
        """The cost of one pair with each contribution."""
        # The head of each text only: the work stays bounded by this budget whatever a client sends
        # (a learned scorer reads a head of the same order, 512 tokens).
        prompt, completion = _normalize(prompt[: self.max_chars]), _normalize(completion[: self.max_chars])
        matched = tuple(c.name for c, rx in self._categories if rx.search(prompt) or rx.search(completion))
        weights = {c.name: c.weight for c, _ in self._categories}
        harm = min(self.max_harm, sum(weights[name] for name in matched))
        intent = compliance = 0.0
        if harm > 0:
            intent = self.intent_weight * bool(self._intent.search(prompt))
            intent += self.evasion_weight * bool(self._evasion.search(prompt) or self._evasion.search(completion))
            compliance = sum(
                weight
                for name, rx, weight in self._compliance
                if len(rx.findall(completion)) >= (2 if name == "steps" else 1)
            )
        refusal = -self.refusal_weight if is_refusal(completion) else 0.0
        safety = -self.safety_weight if self._safety.search(completion) else 0.0
        cost = self.base + harm + intent + compliance + refusal + safety
        return CostBreakdown(
            cost=max(-10.0, min(10.0, cost)),
            categories=matched,
            harm=harm,
            intent=intent,
            compliance=compliance,
            refusal=refusal,
            safety=safety,
        )
