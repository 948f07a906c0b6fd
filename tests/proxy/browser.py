"""A headless Chromium for the review page's tests, driven by selenium through Debian's chromedriver.

Only a browser already on the machine is used: ``chromium`` and
``chromedriver`` from the PATH (``apt-get install chromium chromium-driver``;
``make test`` installs them where it can). The driver's path is always given,
so selenium never runs its manager to download one.
"""

from __future__ import annotations

import shutil
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _paths() -> tuple[str | None, str | None]:
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    return browser, shutil.which("chromedriver")


def unavailable() -> str | None:
    """Why no browser test can run here, or ``None`` when one can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    browser, driver = _paths()
    if browser is None or driver is None:
        return "no chromium and chromedriver on the PATH (apt-get install chromium chromium-driver)"
    return None


def headless_chromium(width: int = 1280, height: int = 1000) -> Any:
    """A selenium ``WebDriver`` on a new headless Chromium; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = _paths()
    assert browser is not None and driver is not None, unavailable()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def marked_words(driver: Any, scope: str, kind: str) -> list[str]:
    """The words the diff marks as ``kind`` (``del`` or ``ins``) under the CSS selector ``scope``."""
    texts = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' .diff-' + arguments[1])].map(e => e.textContent)",
        scope,
        kind,
    )
    return [word for text in texts for word in text.split()]
