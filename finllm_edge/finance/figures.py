"""Typed figures and the numbers of a source text (pure functions, no model).

A `Figure` is what the extraction returns: a value with its unit, currency, period and where it
came from in the source. `source_numbers(text)` finds every number a statement or news item
states ("$1.2 billion", "EUR 310m", "12.5%", "(3.4)", "1,234.5"), with its scale and span, so
that the checks can tell whether a figure appears in the source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Units a figure may carry and the factor to the base amount ("units").
SCALES: dict[str, float] = {"units": 1.0, "thousands": 1e3, "millions": 1e6, "billions": 1e9}
RATIO_UNITS = ("percent", "ratio", "x")
UNITS = tuple(SCALES) + RATIO_UNITS

_SCALE_WORDS = {
    "thousand": 1e3, "thousands": 1e3, "k": 1e3, "000s": 1e3,
    "million": 1e6, "millions": 1e6, "mn": 1e6, "mm": 1e6, "m": 1e6,
    "billion": 1e9, "billions": 1e9, "bn": 1e9, "b": 1e9,
}
_CURRENCY_SIGNS = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}
_CURRENCY_CODES = ("USD", "EUR", "GBP", "JPY", "CHF", "CNY", "INR", "CAD", "AUD", "SEK", "NOK", "DKK")

_NUMBER_RE = re.compile(
    r"(?P<neg>\(|-|−)?"
    r"(?P<cur>[$€£¥]|(?:" + "|".join(_CURRENCY_CODES) + r")\s?)?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?P<close>\))?"
    r"(?:\s?(?P<pct>%|percent\b|per cent\b|pp\b|percentage points?\b)"
    r"|\s?(?P<times>x\b|times\b)"
    r"|\s?(?P<scale>thousands?\b|millions?\b|billions?\b|mn\b|mm\b|bn\b|[kmb]\b|000s\b))?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class SourceNumber:
    """A number stated in the source text."""

    value: float          # as written, sign applied ("(3.4)" -> -3.4)
    scale: float          # 1e6 for "million", 1 when none
    unit: str             # "amount", "percent" or "x"
    currency: str | None  # "USD" for "$", None when none is written next to it
    span: tuple[int, int]
    text: str
    decimals: int         # digits after the decimal point as written

    @property
    def amount(self) -> float:
        return self.value * self.scale


def source_numbers(text: str) -> list[SourceNumber]:
    """Every number of `text`, in order. Years (1900-2100 with no unit) are left out: they are
    periods, not figures."""
    out = []
    for m in _NUMBER_RE.finditer(text):
        raw = m.group("num")
        value = float(raw.replace(",", ""))
        neg = m.group("neg")
        if neg and (neg != "(" or m.group("close")):
            value = -value
        unit = "percent" if m.group("pct") else "x" if m.group("times") else "amount"
        scale = _SCALE_WORDS.get((m.group("scale") or "").lower(), 1.0)
        cur = m.group("cur")
        currency = _CURRENCY_SIGNS.get(cur.strip(), cur.strip().upper()) if cur else None
        if unit == "amount" and scale == 1.0 and not currency and "." not in raw and "," not in raw \
                and 1900 <= value <= 2100:
            continue
        decimals = len(raw.split(".")[1]) if "." in raw else 0
        out.append(SourceNumber(value, scale, unit, currency, (m.start("num"), m.end()), m.group(0).strip(), decimals))
    return out


def currency_of(text: str) -> set[str]:
    """Currencies the text mentions (by sign or ISO code)."""
    found = {code for sign, code in _CURRENCY_SIGNS.items() if sign in text}
    found |= {c for c in _CURRENCY_CODES if re.search(rf"\b{c}\b", text)}
    return found


@dataclass
class Figure:
    """One extracted figure. `value` is in `unit` (value 1.2 with unit "billions" is 1.2e9; 12.5 with
    unit "percent" is 12.5%). `span` is where `source` (the model's quote) or, failing that, the
    matching number sits in the source text (None when neither is found)."""

    name: str
    value: float
    unit: str = "units"
    currency: str | None = None
    period: str | None = None
    source: str | None = None
    span: tuple[int, int] | None = None
    derivation: str | None = None  # how a figure not stated in the source follows from ones that are
    notes: list[str] = field(default_factory=list)

    @property
    def is_ratio(self) -> bool:
        return self.unit in RATIO_UNITS

    @property
    def amount(self) -> float:
        """The value in base units (money amounts), or the value itself for ratios."""
        return self.value * SCALES.get(self.unit, 1.0)

    def as_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "unit": self.unit, "currency": self.currency,
                "period": self.period, "source": self.source, "span": list(self.span) if self.span else None,
                "derivation": self.derivation}
