"""Deterministic checks of extracted figures against their source (pure functions, no model).

    report = check_figures(figures, text)
    for w in report.warnings: print(w.code, w.message)

1. Every number appears in the source: a figure must equal a number stated in the text (in any
   scale: 1,200 million = $1.2 billion; a figure may be a rounding of the stated number, never
   more precise), or follow from two stated numbers (sum, difference, ratio, growth), in which
   case `figure.derivation` shows how; otherwise a `not_in_source` warning.
2. Units, currency and period are consistent: one currency for the money figures and one the
   text mentions, ratios without a currency, ratios recomputed only from figures of one period.
3. Derived ratios are recomputed (net/gross/operating margin, growth, interest coverage) from the
   extracted base figures; a stated ratio that disagrees beyond its rounding is a
   `ratio_mismatch` warning, and ratios the extraction did not state are added to
   `report.derived` with their derivation.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field

from .figures import SCALES, UNITS, Figure, SourceNumber, currency_of, source_numbers

__all__ = ["CheckWarning", "CheckReport", "check_figures", "match_in_source", "derive_from_source", "ROLES"]


@dataclass(frozen=True)
class CheckWarning:
    code: str            # not_in_source | ratio_mismatch | currency_mismatch | unit_mismatch | period_mismatch | ...
    message: str
    figure: int | None = None  # index into the figures, when the warning is about one


@dataclass
class CheckReport:
    figures: list[Figure]
    warnings: list[CheckWarning] = field(default_factory=list)
    derived: list[Figure] = field(default_factory=list)  # ratios recomputed from the figures

    @property
    def ok(self) -> bool:
        return not self.warnings

    def codes(self) -> list[str]:
        return [w.code for w in self.warnings]


# What a figure is, by its name (first match wins; ratios before the amounts they are built on).
ROLES: list[tuple[str, re.Pattern]] = [
    ("interest_coverage", re.compile(r"coverage", re.I)),
    ("net_margin", re.compile(r"net (profit |income )?margin", re.I)),
    ("gross_margin", re.compile(r"gross (profit )?margin", re.I)),
    ("operating_margin", re.compile(r"(operating|ebit) margin", re.I)),
    ("revenue_growth", re.compile(r"(revenue|sales|turnover).*(growth|increase|change)|growth", re.I)),
    ("gross_profit", re.compile(r"gross profit", re.I)),
    ("operating_income", re.compile(r"operating (income|profit)|\bebit\b", re.I)),
    ("net_income", re.compile(r"net (income|profit|earnings)|profit after tax|net loss", re.I)),
    ("interest_expense", re.compile(r"interest (expense|cost)|finance costs?", re.I)),
    ("revenue", re.compile(r"revenue|sales|turnover", re.I)),
]
RATIO_ROLES = {"interest_coverage", "net_margin", "gross_margin", "operating_margin", "revenue_growth"}
# ratio role -> (numerator role, denominator role, unit, label)
RATIO_DEFS = {
    "net_margin": ("net_income", "revenue", "percent", "net margin = net income / revenue"),
    "gross_margin": ("gross_profit", "revenue", "percent", "gross margin = gross profit / revenue"),
    "operating_margin": ("operating_income", "revenue", "percent", "operating margin = operating income / revenue"),
    "interest_coverage": ("operating_income", "interest_expense", "x",
                          "interest coverage = operating income / interest expense"),
}


def role_of(name: str) -> str | None:
    for role, pattern in ROLES:
        if pattern.search(name or ""):
            return role
    return None


def _decimals(v: float) -> int:
    text = repr(float(v))
    if "e" in text or "E" in text:
        mant, exp = text.lower().split("e")
        d = len(mant.split(".")[1].rstrip("0")) if "." in mant else 0
        return max(0, d - int(exp))
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def rounds_to(exact: float, stated: float) -> bool:
    """`stated` equals `exact`, or `exact` rounded to the decimals `stated` is written with."""
    if math.isclose(exact, stated, rel_tol=1e-9, abs_tol=1e-12):
        return True
    d = min(_decimals(stated), 12)
    return abs(exact - stated) <= 0.5 * 10 ** (-d) + 1e-9 * max(1.0, abs(stated))


def _fmt(v: float) -> str:
    text = f"{v:,.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _show(f: Figure) -> str:
    return f"{_fmt(f.value)} {f.unit}" if f.unit in SCALES and f.unit != "units" else _fmt(f.value)


def match_in_source(fig: Figure, numbers: list[SourceNumber], text: str) -> SourceNumber | None:
    """The stated number `fig` is (or rounds), or None."""
    scale_words = {"thousands": "thousand", "millions": "million", "billions": "billion"}
    for n in numbers:
        if fig.unit == "percent":
            if n.unit == "percent" and rounds_to(n.value, fig.value):
                return n
        elif fig.unit in ("x", "ratio"):
            if n.unit in ("x", "amount") and n.scale == 1.0 and rounds_to(n.value, fig.value):
                return n
        elif n.unit == "amount":
            fig_scale = SCALES.get(fig.unit, 1.0)
            if rounds_to(n.amount / fig_scale, fig.value):
                return n
            # a table "in millions" states bare numbers in the figure's scale
            word = scale_words.get(fig.unit)
            if n.scale == 1.0 and word and re.search(rf"\bin {word}s?\b", text, re.I) and rounds_to(n.value, fig.value):
                return n
    return None


def derive_from_source(fig: Figure, numbers: list[SourceNumber]) -> str | None:
    """How `fig` follows from two stated numbers (a+b, a-b, a/b, growth), or None."""
    if fig.unit == "percent":
        amounts = [n for n in numbers if n.unit == "amount"]
        for a, b in itertools.permutations(amounts, 2):
            if b.amount == 0:
                continue
            if rounds_to(100.0 * a.amount / b.amount, fig.value):
                return f"{a.text} / {b.text} = {_fmt(100.0 * a.amount / b.amount)}%"
            if rounds_to(100.0 * (a.amount - b.amount) / b.amount, fig.value):
                return f"({a.text} - {b.text}) / {b.text} = {_fmt(100.0 * (a.amount - b.amount) / b.amount)}%"
        pcts = [n for n in numbers if n.unit == "percent"]
        for a, b in itertools.permutations(pcts, 2):
            if rounds_to(a.value - b.value, fig.value):
                return f"{a.text} - {b.text} = {_fmt(a.value - b.value)} pp"
        return None
    if fig.unit in ("x", "ratio"):
        amounts = [n for n in numbers if n.unit == "amount"]
        for a, b in itertools.permutations(amounts, 2):
            if b.amount and rounds_to(a.amount / b.amount, fig.value):
                return f"{a.text} / {b.text} = {_fmt(a.amount / b.amount)}x"
        return None
    fig_scale = SCALES.get(fig.unit, 1.0)
    amounts = [n for n in numbers if n.unit == "amount"]
    for a, b in itertools.combinations(amounts, 2):
        for op, v in (("+", a.amount + b.amount), ("-", a.amount - b.amount), ("-", b.amount - a.amount)):
            if math.isclose(v / fig_scale, fig.value, rel_tol=1e-9, abs_tol=1e-12):
                x, y = (a, b) if op == "+" or v == a.amount - b.amount else (b, a)
                return f"{x.text} {op} {y.text} = {_fmt(v)}"
    return None


def _locate_quote(fig: Figure, text: str) -> tuple[int, int] | None:
    if fig.source:
        i = text.find(fig.source)
        if i >= 0:
            return (i, i + len(fig.source))
    return None


def _year(period: str | None) -> int | None:
    m = re.search(r"(19|20)\d{2}", period or "")
    return int(m.group(0)) if m else None


def _check_units(figs: list[Figure], text: str, warnings: list[CheckWarning]) -> None:
    money_currencies = {}
    mentioned = currency_of(text)
    for i, f in enumerate(figs):
        if f.unit not in UNITS:
            warnings.append(CheckWarning("unit_mismatch", f"{f.name}: unknown unit {f.unit!r} (use one of "
                                         f"{', '.join(UNITS)})", i))
            continue
        role = role_of(f.name)
        if f.is_ratio and f.currency:
            warnings.append(CheckWarning("unit_mismatch", f"{f.name}: a {f.unit} figure has no currency, got "
                                         f"{f.currency}", i))
        if role in RATIO_ROLES and not f.is_ratio:
            warnings.append(CheckWarning("unit_mismatch", f"{f.name}: a ratio stated in {f.unit}", i))
        if role and role not in RATIO_ROLES and f.is_ratio:
            warnings.append(CheckWarning("unit_mismatch", f"{f.name}: an amount stated as {f.unit}", i))
        if not f.is_ratio and f.currency:
            money_currencies.setdefault(f.currency.upper(), []).append(i)
            if mentioned and f.currency.upper() not in mentioned:
                warnings.append(CheckWarning("currency_mismatch", f"{f.name}: currency {f.currency} but the "
                                             f"source states {', '.join(sorted(mentioned))}", i))
    if len(money_currencies) > 1:
        warnings.append(CheckWarning("currency_mismatch", "the figures mix currencies: " + ", ".join(
            f"{c} ({len(ix)} figures)" for c, ix in sorted(money_currencies.items()))))


def _recompute(figs: list[Figure], warnings: list[CheckWarning], derived: list[Figure]) -> None:
    by_role: dict[str, list[int]] = {}
    for i, f in enumerate(figs):
        role = role_of(f.name)
        if role and _finite(f.value):
            by_role.setdefault(role, []).append(i)
    # margins and coverage: numerator / denominator of the same period
    for ratio, (num, den, unit, label) in RATIO_DEFS.items():
        for i_num in by_role.get(num, []):
            for i_den in by_role.get(den, []):
                a, b = figs[i_num], figs[i_den]
                if a.period != b.period and a.period and b.period:
                    continue
                if b.amount == 0 or a.is_ratio or b.is_ratio:
                    continue
                value = a.amount / b.amount * (100.0 if unit == "percent" else 1.0)
                stated = [k for k in by_role.get(ratio, []) if figs[k].period in (a.period, None) or not a.period]
                how = (f"{label} = {_show(a)} / {_show(b)} = {_fmt(value)}"
                       f"{'%' if unit == 'percent' else 'x'}")
                for k in stated:
                    if not rounds_to(value, figs[k].value):
                        warnings.append(CheckWarning("ratio_mismatch", f"{figs[k].name}: stated {_fmt(figs[k].value)}"
                                                     f"{'%' if unit == 'percent' else 'x'} but {how}", k))
                if not stated:
                    derived.append(Figure(ratio.replace("_", " "), round(value, 4), unit, None, a.period or b.period,
                                          derivation=how))
    # growth: the same base role in two periods
    for base in ("revenue", "net_income", "operating_income", "gross_profit"):
        dated = [(y, i) for i in by_role.get(base, []) if (y := _year(figs[i].period)) is not None]
        if len(dated) < 2:
            continue
        dated.sort()
        (y0, i0), (y1, i1) = dated[0], dated[-1]
        if y0 == y1 or figs[i0].amount == 0:
            continue
        value = (figs[i1].amount - figs[i0].amount) / abs(figs[i0].amount) * 100.0
        how = (f"{base.replace('_', ' ')} growth {y0}->{y1} = ({_show(figs[i1])} - {_show(figs[i0])}) / "
               f"{_show(figs[i0])} = {_fmt(value)}%")
        stated = by_role.get("revenue_growth", []) if base == "revenue" else []
        for k in stated:
            if not rounds_to(value, figs[k].value):
                warnings.append(CheckWarning("ratio_mismatch", f"{figs[k].name}: stated {_fmt(figs[k].value)}% "
                                             f"but {how}", k))
        if not stated:
            derived.append(Figure(f"{base.replace('_', ' ')} growth", round(value, 4), "percent", None,
                                  f"{y0}-{y1}", derivation=how))
    # a ratio recomputed across periods would be meaningless: say so when that is all there is
    for ratio, (num, den, _unit, _label) in RATIO_DEFS.items():
        for k in by_role.get(ratio, []):
            nums, dens = by_role.get(num, []), by_role.get(den, [])
            if nums and dens and all(figs[a].period and figs[b].period and figs[a].period != figs[b].period
                                     for a in nums for b in dens):
                warnings.append(CheckWarning("period_mismatch", f"{figs[k].name}: its {num.replace('_', ' ')} and "
                                             f"{den.replace('_', ' ')} are for different periods", k))


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_figures(figures: list[Figure], text: str) -> CheckReport:
    """Run every check; fills each figure's span/derivation and returns the warnings."""
    numbers = source_numbers(text)
    warnings: list[CheckWarning] = []
    derived: list[Figure] = []
    for i, f in enumerate(figures):
        if not _finite(f.value):
            warnings.append(CheckWarning("not_a_number", f"{f.name}: value {f.value!r} is not a finite number", i))
            continue
        hit = match_in_source(f, numbers, text)
        f.span = _locate_quote(f, text) or (hit.span if hit else None)
        if hit is None:
            f.derivation = derive_from_source(f, numbers)
            if f.derivation is None:
                warnings.append(CheckWarning("not_in_source", f"{f.name}: {_fmt(f.value)} {f.unit} appears nowhere "
                                             "in the source and does not follow from two numbers that do", i))
        elif f.currency and hit.currency and f.currency.upper() != hit.currency:
            warnings.append(CheckWarning("currency_mismatch", f"{f.name}: currency {f.currency} but the source "
                                         f"writes {hit.text}", i))
    _check_units(figures, text, warnings)
    _recompute(figures, warnings, derived)
    return CheckReport(figures, warnings, derived)
