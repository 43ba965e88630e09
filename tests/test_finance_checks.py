"""The extraction checks are pure functions: planted errors are flagged, correct figures are not."""

from __future__ import annotations

import pytest

from finllm_edge.finance import Figure, check_figures, figures_from_json, source_numbers
from finllm_edge.finance.checks import role_of, rounds_to

TEXT = (
    "Acme Corp reported revenue of $120.0 million for FY2024, up from $100.0 million in FY2023. "
    "Net income was $15.0 million, a net margin of 12.5%. Operating income reached $24.0 million "
    "while interest expense was $3.0 million, for an interest coverage of 8.0x."
)


def good_figures() -> list[Figure]:
    return [
        Figure("revenue", 120.0, "millions", "USD", "FY2024", "revenue of $120.0 million"),
        Figure("revenue", 100.0, "millions", "USD", "FY2023", "$100.0 million"),
        Figure("net income", 15.0, "millions", "USD", "FY2024", "Net income was $15.0 million"),
        Figure("net margin", 12.5, "percent", None, "FY2024", "a net margin of 12.5%"),
        Figure("operating income", 24.0, "millions", "USD", "FY2024"),
        Figure("interest expense", 3.0, "millions", "USD", "FY2024"),
        Figure("interest coverage", 8.0, "x", None, "FY2024"),
    ]


def test_source_numbers_scale_sign_unit_and_years():
    nums = source_numbers("Sales were EUR 1.2bn (2023: €950m), a loss of (3.4) and 12% margin; 1,234.5 units in 2024.")
    got = [(n.amount, n.unit, n.currency) for n in nums]
    assert (1.2e9, "amount", "EUR") in got
    assert (950e6, "amount", "EUR") in got
    assert (-3.4, "amount", None) in got
    assert (12.0, "percent", None) in got
    assert (1234.5, "amount", None) in got
    assert all(n.amount != 2024 for n in nums) and all(n.amount != 2023 for n in nums)  # years are periods


def test_correct_figures_pass_with_spans_and_derived_growth():
    report = check_figures(good_figures(), TEXT)
    assert report.warnings == [], report.warnings
    f0 = report.figures[0]
    assert TEXT[f0.span[0]:f0.span[1]] == "revenue of $120.0 million"
    growth = [d for d in report.derived if d.name == "revenue growth"]
    assert growth and growth[0].value == pytest.approx(20.0)
    assert "120" in growth[0].derivation and "100" in growth[0].derivation


def test_planted_wrong_number_is_flagged():
    figs = good_figures()
    figs[2] = Figure("net income", 17.3, "millions", "USD", "FY2024")  # the text says 15.0
    report = check_figures(figs, TEXT)
    codes = report.codes()
    assert "not_in_source" in codes
    flagged = [w for w in report.warnings if w.code == "not_in_source"]
    assert flagged[0].figure == 2 and "17.3" in flagged[0].message
    # the stated margin (12.5%) no longer agrees with 17.3 / 120
    assert any(w.code == "ratio_mismatch" and w.figure == 3 for w in report.warnings)


def test_wrong_scale_is_flagged():
    figs = good_figures()
    figs[0] = Figure("revenue", 120.0, "billions", "USD", "FY2024")
    assert any(w.code == "not_in_source" and w.figure == 0 for w in check_figures(figs, TEXT).warnings)


def test_same_amount_in_another_scale_matches():
    figs = [Figure("revenue", 0.12, "billions", "USD", "FY2024"), Figure("revenue", 120000.0, "thousands", "USD",
                                                                      "FY2024")]
    assert check_figures(figs, TEXT).warnings == []


def test_rounding_allowed_only_towards_less_precision():
    text = "Gross margin was 41.27% on revenue of $1,234 million."
    assert check_figures([Figure("gross margin", 41.3, "percent")], text).warnings == []
    assert check_figures([Figure("revenue", 1.2, "billions", "USD")], text).warnings == []
    more_precise = check_figures([Figure("revenue", 1234.4, "millions", "USD")], text)
    assert more_precise.codes() == ["not_in_source"]


def test_derived_figure_shows_its_derivation():
    text = "Revenue was $200 million and cost of sales $150 million."
    report = check_figures([Figure("gross profit", 50.0, "millions", "USD")], text)
    assert report.warnings == []
    how = report.figures[0].derivation
    assert how and "200" in how and "-" in how


def test_stated_ratio_that_disagrees_is_flagged():
    text = "Revenue of $80.0 million; net income of $8.0 million; net margin of 12.0%."
    figs = [Figure("revenue", 80.0, "millions", "USD"), Figure("net income", 8.0, "millions", "USD"),
            Figure("net margin", 12.0, "percent")]
    report = check_figures(figs, text)
    assert [w.code for w in report.warnings] == ["ratio_mismatch"]
    assert "10" in report.warnings[0].message  # the recomputed 10%


def test_growth_mismatch_and_coverage_recomputed():
    text = "Revenue grew 25% to $150 million in 2024 from $120 million in 2023."
    figs = [Figure("revenue", 150.0, "millions", "USD", "2024"), Figure("revenue", 120.0, "millions", "USD", "2023"),
            Figure("revenue growth", 30.0, "percent", None, "2024")]
    report = check_figures(figs, text)
    assert any(w.code == "ratio_mismatch" and w.figure == 2 for w in report.warnings)
    assert any(w.code == "not_in_source" and w.figure == 2 for w in report.warnings)


def test_currency_unit_and_period_consistency():
    figs = good_figures()
    figs[4] = Figure("operating income", 24.0, "millions", "EUR", "FY2024")
    codes = check_figures(figs, TEXT).codes()
    assert "currency_mismatch" in codes
    figs = good_figures()
    figs[3] = Figure("net margin", 12.5, "millions", "USD", "FY2024")
    assert "unit_mismatch" in check_figures(figs, TEXT).codes()
    figs = [Figure("revenue", 120.0, "millions", "USD", "FY2024"),
            Figure("net income", 15.0, "millions", "USD", "FY2023"), Figure("net margin", 12.5, "percent")]
    assert "period_mismatch" in check_figures(figs, TEXT).codes()


def test_non_numbers_and_unknown_units_are_flagged():
    figs = figures_from_json({"figures": [{"name": "revenue", "value": "lots", "unit": "millions"},
                                          {"name": "revenue", "value": 120.0, "unit": "furlongs"}]})
    codes = check_figures(figs, TEXT).codes()
    assert "not_a_number" in codes and "unit_mismatch" in codes


def test_roles_and_rounding_helpers():
    assert role_of("Net profit margin") == "net_margin"
    assert role_of("Total revenue") == "revenue"
    assert role_of("EBIT") == "operating_income"
    assert rounds_to(12.46, 12.5) and not rounds_to(12.46, 12.4) and rounds_to(3.0, 3)
