"""Screenshots of a tour page's sections for the docs (docs/tour.md).

    genmodels tour --budget small --out tour
    python benchmarks/tour_screenshots.py tour/index.html docs/figures/tour

Loads the page in headless Chromium (the browser test's DevTools pipe driver,
tests/test_tour_page.py) and writes ``comparison.png`` and ``section-N.png``, each the section's
box at ``--scale`` (the top ``--max-height`` CSS pixels of a long section).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_tour_page import DevTools, _chromium  # noqa: E402

_BOXES = """JSON.stringify([...document.querySelectorAll('section[id]')].map(s => {
  const r = s.getBoundingClientRect();
  return {id: s.id, x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height};
}))"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path, help="a tour's index.html")
    ap.add_argument("out", type=Path, help="folder for the PNGs")
    ap.add_argument("--scale", type=float, default=0.6)
    ap.add_argument("--max-height", type=int, default=2600)
    args = ap.parse_args()
    exe = _chromium()
    if exe is None:
        raise SystemExit("Chromium not found (apt-get install -y chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        browser = DevTools(exe, Path(tmp) / "profile")
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            sid = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            browser.send("Page.enable", session=sid)
            metrics = {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
            browser.send("Emulation.setDeviceMetricsOverride", metrics, session=sid)
            browser.send("Page.navigate", {"url": args.page.resolve().as_uri()}, session=sid)
            browser.wait_for("Page.loadEventFired")
            boxes = json.loads(
                browser.send(
                    "Runtime.evaluate", {"expression": _BOXES, "returnByValue": True}, session=sid
                )["result"]["value"]
            )
            for b in boxes:
                clip = {
                    "x": b["x"],
                    "y": b["y"],
                    "width": b["w"],
                    "height": min(b["h"], args.max_height),
                    "scale": args.scale,
                }
                shot = browser.send(
                    "Page.captureScreenshot",
                    {"format": "png", "clip": clip, "captureBeyondViewport": True},
                    session=sid,
                )
                path = args.out / f"{b['id']}.png"
                path.write_bytes(base64.b64decode(shot["data"]))
                print(path)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
