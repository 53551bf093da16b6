"""Render the HTML report of a failing setup and photograph it in headless Chromium: docs/html-report-failing.png.

    python docs/html_screenshot.py [SETUP.py] [--height PIXELS]

Needs matplotlib and a Chromium (Debian: `apt-get install chromium`). The screenshot is what a person sees first:
the verdict, the failing probes at the top of the summary, the first failure open with its fix and its plots.
tests/test_render_html.py opens a report the same way in its browser test.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETUP = ROOT / "checks" / "lr_sgd_too_high.py"
OUT = ROOT / "docs" / "html-report-failing.png"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setup", nargs="?", default=str(DEFAULT_SETUP))
    parser.add_argument("--height", type=int, default=2400)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        print("no Chromium found: apt-get install chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        setup = Path(args.setup).resolve().relative_to(ROOT)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nncheck",
                "run",
                str(setup),
                "--budget",
                "fast",
                "-q",
                "-f",
                "html",
                "-o",
                str(html),
            ],
            cwd=ROOT,
            check=False,  # a failing setup exits 1
        )
        subprocess.run(
            [
                exe,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                f"--window-size=1280,{args.height}",
                f"--screenshot={args.out}",
                html.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
