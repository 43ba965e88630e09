"""A deterministic finance extraction/QA task set of our own making, with gold answers.

Each passage is a short quarterly-results note, credit memo or news item with figures (revenue,
growth, margins, EPS, interest coverage, leverage, dividends, periods, currencies); each question's
answer is an exact number or a short span copied from the passage. Distractors are deliberate:
every passage holds several numbers of the same kind (this year's and last year's EPS, gross and
operating margin), so copying "a number" is not enough.

The set is a pure function of (seed, n_passages, questions_per_passage): Python's `random.Random`
with a fixed seed (its Mersenne Twister stream is stable across Python versions), no hashing, no
dict-order or float-formatting surprises (numbers are made as integers and formatted by hand).
The shipped file convert/data/finance_tasks.json is this generator's output for DEFAULT_SEED; a test
regenerates it byte for byte.

    python -m finllm_edge_convert.taskset --out convert/data/finance_tasks.json          # the shipped set
    python -m finllm_edge_convert.taskset --seed 7 --passages 20 --out /tmp/other.json  # another one
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SCHEMA_VERSION = 1
DEFAULT_SEED = 16
DEFAULT_PASSAGES = 75
DEFAULT_QUESTIONS = 4          # per passage
SHOT_SEED_OFFSET = 100_003     # the few-shot examples come from their own stream, never from the scored set
SHOT_QUESTIONS = 3             # per few-shot passage (one per passage type)

SHIPPED = Path(__file__).resolve().parent / "data" / "finance_tasks.json"

PREFIXES = ["Northwind", "Alder", "Brightwater", "Castell", "Dunmore", "Elmstead", "Fairhaven", "Greystone",
            "Harrow", "Ironbridge", "Juniper", "Kestrel", "Larchmont", "Meridian", "Norcross", "Oakridge",
            "Pemberton", "Quarry Lane", "Redfern", "Silverbeck", "Thornbury", "Upland", "Valemont", "Westgate"]
SUFFIXES = ["Industries", "Holdings", "Systems", "Foods", "Logistics", "Energy", "Pharma", "Retail", "Materials",
            "Networks", "Insurance", "Motors"]
# (name in text, answer, accepted aliases)
CURRENCIES = [("dollars", "dollars", ["dollar", "usd", "us dollars", "$"]),
              ("euros", "euros", ["euro", "eur", "\u20ac"]),
              ("pounds", "pounds", ["pound", "gbp", "pounds sterling", "sterling", "\u00a3"]),
              ("Swiss francs", "Swiss francs", ["swiss franc", "francs", "chf"]),
              ("Canadian dollars", "Canadian dollars", ["canadian dollar", "cad"])]
QUARTERS = [("first", "q1"), ("second", "q2"), ("third", "q3"), ("fourth", "q4")]
SEGMENTS = ["industrial", "services", "consumer", "healthcare", "aerospace", "software", "packaging", "wholesale"]


def _dec(value_x: int, places: int) -> str:
    """An integer in units of 10**-places as a decimal string ('412', '8.4', '1.12')."""
    sign = "-" if value_x < 0 else ""
    v = abs(value_x)
    if places == 0:
        return f"{sign}{v}"
    whole, frac = divmod(v, 10 ** places)
    return f"{sign}{whole}.{frac:0{places}d}"


def _money(millions: int) -> str:
    """412 -> '412', 1250 -> '1,250' (thousands separators as reports print them)."""
    return f"{millions:,}"


def _q(qid: str, question: str, answer: str, kind: str, aliases=()) -> dict:
    return {"id": qid, "question": question, "answer": answer, "kind": kind, "aliases": list(aliases)}


def _results(rng: random.Random, pid: str) -> tuple[str, list[dict]]:
    """A quarterly-results note."""
    company = f"{rng.choice(PREFIXES)} {rng.choice(SUFFIXES)}"
    cur, cur_ans, cur_alias = rng.choice(CURRENCIES)
    qname, qshort = rng.choice(QUARTERS)
    year = rng.randint(2018, 2026)
    prev_rev = rng.randint(120, 2400)
    growth_x10 = rng.randint(-90, 240)                        # -9.0% .. 24.0%
    rev = round(prev_rev * (1000 + growth_x10) / 1000)
    growth_x10 = round((rev - prev_rev) * 1000 / prev_rev)    # the stated growth matches the stated figures
    gm_x10 = rng.randint(180, 640)
    om_x10 = rng.randint(30, gm_x10 - 60)
    op_inc = max(1, round(rev * om_x10 / 1000))
    interest = max(1, round(op_inc / (rng.randint(25, 140) / 10)))
    cov_x10 = round(op_inc * 10 / interest)
    eps_x100 = rng.randint(8, 640)
    eps_prev_x100 = max(1, eps_x100 + rng.choice([-1, 1]) * rng.randint(3, 90))
    verb = "rose" if growth_x10 > 0 else ("fell" if growth_x10 < 0 else "was unchanged")
    g = _dec(abs(growth_x10), 1)
    growth_text = (f"Revenue {verb} {g} percent year over year to {_money(rev)} million {cur}, from "
                   f"{_money(prev_rev)} million {cur} a year earlier." if growth_x10 else
                   f"Revenue was unchanged year over year at {_money(rev)} million {cur}.")
    text = (f"{company} reported results for the {qname} quarter of fiscal {year}. {growth_text} "
            f"Gross margin was {_dec(gm_x10, 1)} percent and operating margin was {_dec(om_x10, 1)} percent, "
            f"giving operating income of {_money(op_inc)} million {cur}. Interest expense was {_money(interest)} "
            f"million {cur}, so interest coverage stood at {_dec(cov_x10, 1)} times. Diluted earnings per share "
            f"were {_dec(eps_x100, 2)} {cur}, compared with {_dec(eps_prev_x100, 2)} {cur} in the same quarter "
            f"of the previous year.")
    qs = [
        _q("revenue", f"What was {company}'s revenue in the quarter, in millions of {cur}?", _money(rev), "number"),
        _q("prior_revenue", "What was revenue a year earlier, in millions?", _money(prev_rev), "number")
        if growth_x10 else None,
        _q("growth", "By how many percent did revenue change year over year?", g, "number") if growth_x10 else None,
        _q("gross_margin", "What was the gross margin, in percent?", _dec(gm_x10, 1), "number"),
        _q("operating_margin", "What was the operating margin, in percent?", _dec(om_x10, 1), "number"),
        _q("operating_income", "What was operating income, in millions?", _money(op_inc), "number"),
        _q("coverage", "What was interest coverage, in times?", _dec(cov_x10, 1), "number"),
        _q("eps", "What were diluted earnings per share this quarter?", _dec(eps_x100, 2), "number"),
        _q("eps_prior", "What were diluted earnings per share a year earlier?", _dec(eps_prev_x100, 2), "number"),
        _q("year", "Which fiscal year do the results cover?", str(year), "number"),
        _q("quarter", "Which quarter do the results cover?", f"{qname} quarter",
           "span", [qname, qshort, f"the {qname} quarter", f"{qname} quarter of fiscal {year}"]),
        _q("currency", "In which currency does the company report?", cur_ans, "span", cur_alias),
        _q("company", "Which company reported these results?", company, "span"),
    ]
    return text, [q for q in qs if q is not None]


def _credit(rng: random.Random, pid: str) -> tuple[str, list[dict]]:
    """A credit memo: leverage, coverage, facility."""
    company = f"{rng.choice(PREFIXES)} {rng.choice(SUFFIXES)}"
    cur, cur_ans, cur_alias = rng.choice(CURRENCIES)
    year = rng.randint(2018, 2026)
    ebitda = rng.randint(40, 900)
    lev_x10 = rng.randint(5, 55)
    net_debt = round(ebitda * lev_x10 / 10)
    lev_x10 = round(net_debt * 10 / ebitda)
    interest = max(1, round(ebitda / (rng.randint(30, 160) / 10)))
    cov_x10 = round(ebitda * 10 / interest)
    facility = rng.choice([100, 150, 200, 250, 300, 400, 500, 750, 1000])
    drawn = rng.choice([0, facility // 4, facility // 2])
    rating = rng.choice(["BBB", "BBB-", "BB+", "BB", "A-", "A"])
    outlook = rng.choice(["stable", "positive", "negative"])
    drawn_text = "The facility was undrawn." if drawn == 0 else f"Of this, {_money(drawn)} million {cur} was drawn."
    text = (f"Credit memo, {company}, fiscal {year}. Trailing EBITDA was {_money(ebitda)} million {cur} against net "
            f"debt of {_money(net_debt)} million {cur}, a leverage ratio of {_dec(lev_x10, 1)} times. EBITDA covered "
            f"interest expense of {_money(interest)} million {cur} {_dec(cov_x10, 1)} times. The company has a "
            f"revolving credit facility of {_money(facility)} million {cur}. {drawn_text} The issuer is rated "
            f"{rating} with a {outlook} outlook.")
    qs = [
        _q("ebitda", "What was trailing EBITDA, in millions?", _money(ebitda), "number"),
        _q("net_debt", "What was net debt, in millions?", _money(net_debt), "number"),
        _q("leverage", "What was the leverage ratio, in times?", _dec(lev_x10, 1), "number"),
        _q("interest", "What was interest expense, in millions?", _money(interest), "number"),
        _q("coverage", "How many times did EBITDA cover interest expense?", _dec(cov_x10, 1), "number"),
        _q("facility", "How large is the revolving credit facility, in millions?", _money(facility), "number"),
        _q("rating", "What is the issuer's rating?", rating, "span"),
        _q("outlook", "What is the rating outlook?", outlook, "span"),
        _q("currency", "In which currency are the figures?", cur_ans, "span", cur_alias),
    ]
    return text, qs


def _news(rng: random.Random, pid: str) -> tuple[str, list[dict]]:
    """A news item: dividend, buyback, segment growth, guidance."""
    company = f"{rng.choice(PREFIXES)} {rng.choice(SUFFIXES)}"
    cur, cur_ans, cur_alias = rng.choice(CURRENCIES)
    qname, qshort = rng.choice(QUARTERS)
    year = rng.randint(2018, 2026)
    div_x100 = rng.randint(5, 180)
    div_prev_x100 = max(1, div_x100 - rng.randint(1, 20))
    buyback = rng.choice([50, 75, 100, 150, 200, 250, 300, 500])
    seg_a, seg_b = rng.sample(SEGMENTS, 2)
    ga_x10 = rng.randint(10, 300)
    gb_x10 = rng.randint(-80, ga_x10 - 5)
    lo = rng.randint(1, 8)
    hi = lo + rng.randint(1, 4)
    gb = f"grew {_dec(gb_x10, 1)} percent" if gb_x10 > 0 else (
        f"declined {_dec(-gb_x10, 1)} percent" if gb_x10 < 0 else "was flat")
    text = (f"{company} raised its quarterly dividend to {_dec(div_x100, 2)} {cur} per share from "
            f"{_dec(div_prev_x100, 2)} {cur} and announced a share buyback of up to {_money(buyback)} million {cur}. "
            f"In the {qname} quarter of {year}, sales in the {seg_a} segment grew {_dec(ga_x10, 1)} percent, while "
            f"the {seg_b} segment {gb}. Management expects full-year revenue growth of {lo} to {hi} percent.")
    qs = [
        _q("dividend", "What is the new quarterly dividend per share?", _dec(div_x100, 2), "number"),
        _q("dividend_prior", "What was the quarterly dividend per share before the increase?",
           _dec(div_prev_x100, 2), "number"),
        _q("buyback", "How large is the share buyback, in millions?", _money(buyback), "number"),
        _q("segment_growth", f"By how many percent did sales in the {seg_a} segment grow?", _dec(ga_x10, 1),
           "number"),
        _q("guidance_low", "What is the low end of the full-year revenue growth guidance, in percent?", str(lo),
           "number"),
        _q("guidance_high", "What is the high end of the full-year revenue growth guidance, in percent?", str(hi),
           "number"),
        _q("fastest_segment", "Which segment grew faster?", seg_a, "span",
           [f"the {seg_a} segment", f"{seg_a} segment"]),
        _q("currency", "In which currency is the dividend paid?", cur_ans, "span", cur_alias),
    ]
    return text, qs


KINDS = [("results", _results), ("credit", _credit), ("news", _news)]


def _passage(rng: random.Random, pid: str, n_questions: int, kind_index: int | None = None) -> dict:
    kind, make = KINDS[rng.randrange(len(KINDS)) if kind_index is None else kind_index]
    text, qs = make(rng, pid)
    if kind_index is None:
        picked = rng.sample(qs, min(n_questions, len(qs)))
    else:            # a few-shot example: numbers and one span, so both answer forms are shown
        picked = rng.sample([q for q in qs if q["kind"] == "number"], n_questions - 1)
        picked += rng.sample([q for q in qs if q["kind"] == "span"], 1)
    for q in picked:
        q["id"] = f"{pid}.{q['id']}"
    return {"id": pid, "type": kind, "text": text, "questions": picked}


def generate(seed: int = DEFAULT_SEED, n_passages: int = DEFAULT_PASSAGES,
             questions_per_passage: int = DEFAULT_QUESTIONS) -> dict:
    """The task set as a JSON-ready dict: few-shot examples (their own stream) and scored passages."""
    if n_passages < 1 or questions_per_passage < 1:
        raise ValueError("n_passages and questions_per_passage must be >= 1")
    rng = random.Random(seed)
    shots_rng = random.Random(seed + SHOT_SEED_OFFSET)
    shots = [_passage(shots_rng, f"shot{i}", SHOT_QUESTIONS, kind_index=i) for i in range(len(KINDS))]
    passages = [_passage(rng, f"p{i:03d}", questions_per_passage) for i in range(n_passages)]
    return {"schema_version": SCHEMA_VERSION, "generator": "finllm_edge_convert.taskset", "seed": seed,
            "n_passages": n_passages, "questions_per_passage": questions_per_passage,
            "n_questions": sum(len(p["questions"]) for p in passages), "shots": shots, "passages": passages}


def dumps(taskset: dict) -> str:
    """The canonical bytes of a task set (what is shipped and what the determinism test compares)."""
    return json.dumps(taskset, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m finllm_edge_convert.taskset", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED}: the "
                   "shipped set)")
    p.add_argument("--passages", type=int, default=DEFAULT_PASSAGES, help=f"passages (default {DEFAULT_PASSAGES})")
    p.add_argument("--questions", type=int, default=DEFAULT_QUESTIONS,
                   help=f"questions per passage (default {DEFAULT_QUESTIONS})")
    p.add_argument("--out", type=Path, required=True, help="output JSON file")
    a = p.parse_args(argv)
    from .atomic import write_text

    write_text(a.out, dumps(generate(a.seed, a.passages, a.questions)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
