"""JSON output, exactly the shape the README documents ("JSON output"): ``{"nncheck_version", "schema", "setups"}``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nncheck.report import Report


def render(report: Report, **options: Any) -> str:
    return json.dumps(report.to_dict(with_series=options.get("series", True)), indent=2) + "\n"
