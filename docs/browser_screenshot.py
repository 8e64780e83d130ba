"""Screenshot of the Improvement-Set browser of a curated folder, for the docs.

    python docs/browser_screenshot.py runs/demo/curated/full_s0/ads_esc50 \\
        --world world --train-manifest runs/demo/manifests/train.csv      # writes docs/browser_ads.png

Options after the folder other than --out, --width and --height go to `clapcurate browse`
(e.g. --world / --train-manifest to mark pairs right or wrong, --limit). The page is written to a
temporary folder and opened in headless Chromium.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from clapcurate.browse import PAGE_FILE
from clapcurate.cli import main as clapcurate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' Chromium driver
from headless import Chromium  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("curated")
    parser.add_argument("--out", default=str(Path(__file__).parent / "browser_ads.png"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1100)
    args, browse_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="browser-shot-") as tmp:
        status = clapcurate(["browse", args.curated, "--out", tmp, *browse_args])
        if status:
            return status
        with Chromium(width=args.width, height=args.height) as browser:
            browser.open((Path(tmp) / PAGE_FILE).as_uri())
            errors = browser.console_errors()
            if errors:
                print(f"the page reported errors: {errors}", file=sys.stderr)
                return 1
            browser.screenshot(args.out)
    print(f"screenshot written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
