"""Finance extraction: typed figures from a statement or news item (schema-constrained generation
on the core) and deterministic checks of them against the source (pure functions).

    from finllm_edge.finance import extract, check_figures, Figure
"""

from .checks import CheckReport, CheckWarning, check_figures
from .extract import FIGURES_SCHEMA, Extraction, extract, figures_from_json
from .figures import Figure, SourceNumber, source_numbers

__all__ = ["extract", "Extraction", "FIGURES_SCHEMA", "figures_from_json", "check_figures", "CheckReport",
           "CheckWarning", "Figure", "SourceNumber", "source_numbers"]
