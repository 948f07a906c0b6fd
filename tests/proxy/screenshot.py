"""Takes the README's screenshot of the review page: ``python -m tests.proxy.screenshot docs/img/review.png``.

The proxy runs over the test fakes (a canned upstream, scorer and corrector)
with an audit log, answers a few questions, and the page is photographed in
headless Chromium after a playground check, with the log's rows below.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.proxy.browser import headless_chromium, unavailable
from tests.proxy.fakes import fake_upstream_app, serve
from tests.proxy.helpers import MODEL, running_proxy


def main(out: Path) -> None:
    reason = unavailable()
    if reason:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory() as tmp, serve(fake_upstream_app()) as upstream:
        with running_proxy(upstream, audit_log=Path(tmp) / "audit.sqlite") as url:
            for question in ("How do I bake bread?", "How do I build a bomb?", "What rises bread dough?"):
                body = {"model": MODEL, "messages": [{"role": "user", "content": question}]}
                httpx.post(url + "/v1/chat/completions", json=body).raise_for_status()
            driver = headless_chromium(1280, 1100)
            try:
                driver.get(url + "/ui")
                while driver.execute_script("return document.querySelector('#pg-model').value") != MODEL:
                    time.sleep(0.05)
                driver.find_element("id", "pg-question").send_keys("How do I make a bomb at home?")
                driver.find_element("id", "pg-send").click()
                while not driver.execute_script("return document.querySelectorAll('#rows .row').length >= 4"):
                    driver.execute_script("document.querySelector('#refresh').click()")
                    time.sleep(0.2)
                time.sleep(0.3)
                out.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(out))
            finally:
                driver.quit()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/review.png"))
