"""Open a page in headless Chromium (Debian's chromium and chromium-driver), for the HTML reports' tests.

`open_page` starts Chromium through Selenium with a fresh profile and the
flags that keep it off the network (the machines have none), loads a file,
waits for plotly to draw, and returns what a test checks: the console's
errors, whether an alert opened, each plot's SVG, and a screenshot.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
    "--window-size=1280,1600",
)


@dataclasses.dataclass
class Page:
    errors: list[str]  # SEVERE console entries
    alert: str | None  # the text of an alert that opened, if one did
    plots: dict[str, int]  # id of each plotly div -> <svg> elements in it
    texts: list[str]  # the text of every table cell
    svg_text: str  # every SVG <text> of the plots, joined
    screenshot: Path
    height: int


def open_page(path: Path, screenshot: Path) -> Page:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    profile = tempfile.mkdtemp(prefix="databazel-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(120)
        driver.get(path.resolve().as_uri())
        deadline = time.monotonic() + 60
        count = "return document.querySelectorAll('.plotly-graph-div').length"
        drawn = (
            "return Array.from(document.querySelectorAll('.plotly-graph-div'))"
            ".filter(d => d.querySelector('svg.main-svg')).length"
        )
        while driver.execute_script(drawn) < driver.execute_script(count):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        try:
            alert: str | None = driver.switch_to.alert.text
        except NoAlertPresentException:
            alert = None
        plots = {
            div.get_attribute("id"): len(div.find_elements(By.TAG_NAME, "svg"))
            for div in driver.find_elements(By.CSS_SELECTOR, ".plotly-graph-div")
        }
        texts = [td.text for td in driver.find_elements(By.TAG_NAME, "td")]
        svg_text = driver.execute_script(
            "return Array.from(document.querySelectorAll('.plotly-graph-div svg text'))"
            ".map(t => t.textContent).join('\\n')"
        )
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(max(height, 800), 6000))
        driver.save_screenshot(str(screenshot))
        errors = [
            e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"
        ]
        return Page(errors, alert, plots, texts, svg_text, screenshot, height)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def not_blank(png: Path) -> float:
    """The fraction of the screenshot's pixels that are not the page's white."""
    from PIL import Image

    with Image.open(png) as image:
        histogram = image.convert("L").histogram()
    return sum(histogram[:240]) / sum(histogram)
