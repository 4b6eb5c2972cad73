"""End to end in headless Chromium (Debian's chromium + chromium-driver, which `make test` installs):
the console served by `appliance console` against the running appliance; Live → Alerts → Threshold
tuning, and the teach flow (collected frames → train → report → promote), with a screenshot of
each page (kept in var/screenshots/ to look at)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "var" / "screenshots"


@pytest.fixture(params=["operator"])
def console_server(appliance, request):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "console", "--api-url", appliance.url]
        + [f"--token={appliance.tokens[request.param]}", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "_stcore/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "the console did not start"
        time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(10)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("Debian's chromium and chromium-driver are needed: `make test` installs them (see README)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_click_through_live_alerts_and_threshold_tuning(console_server, appliance):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    SHOTS.mkdir(parents=True, exist_ok=True)
    driver = browser()
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(console_server)
        wait.until(ec.presence_of_element_located((By.XPATH, "//h1[contains(., 'Live')]")))
        wait.until(ec.presence_of_element_located((By.XPATH, f"//h3[contains(., '{appliance.source_id[:20]}')]")))
        wait.until(ec.presence_of_element_located((By.XPATH, "//div[@data-testid='stImage']//img")))
        time.sleep(1)
        driver.save_screenshot(str(SHOTS / "1-live.png"))
        for name, shot, marker in (
            ("Alerts", "2-alerts.png", "//button[.//p[text()='False positive']]"),
            ("Threshold tuning", "3-threshold.png", "//div[@data-testid='stMetric'][.//p[text()='Alerts per hour']]"),
        ):
            driver.find_element(By.XPATH, f"//a[@data-testid='stSidebarNavLink'][.//span[@label='{name}']]").click()
            wait.until(ec.presence_of_element_located((By.XPATH, f"//h1[contains(., '{name}')]")))
            wait.until(ec.presence_of_element_located((By.XPATH, marker)))
            time.sleep(1.5)
            driver.save_screenshot(str(SHOTS / shot))
        page = driver.page_source
        assert "stException" not in page and "Traceback" not in page
        # an operator has no engineer pages in the menu
        links = [a.text for a in driver.find_elements(By.XPATH, "//a[@data-testid='stSidebarNavLink']")]
        assert not any(label in " ".join(links) for label in ("Retrain", "Settings", "Train & evaluate"))
    finally:
        driver.quit()
    for shot in ("1-live.png", "2-alerts.png", "3-threshold.png"):
        assert (SHOTS / shot).stat().st_size > 20_000, shot


@pytest.mark.parametrize("console_server", ["engineer"], indirect=True)
def test_teach_a_new_source_in_the_browser(console_server, appliance, tmp_path):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.helpers.parts import make_parts
    from tests.helpers.waiting import wait_for

    parts = make_parts(tmp_path / "washer", train=60, test_good=0, per_defect=0, size=64)
    line = appliance.app.data / "washer-line"  # inside the data folder: a source the API accepts
    line.mkdir()
    with appliance.api("engineer") as api:
        added = api.post("/sources", json={"url": f"folder:{line}", "source_id": "washer"})
        assert added.status_code == 201 and added.json()["mode"] == "teach"
        for i, f in enumerate(sorted((parts / "train" / "good").rglob("*.png")) * 3):
            shutil.copy(f, line / f"{i:03d}.png")
        assert wait_for(lambda: api.get("/sources/washer/teach").json()["count"] == 60, timeout=60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver = browser()
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(console_server)
        wait.until(ec.presence_of_element_located((By.XPATH, "//h1[contains(., 'Live')]")))
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[contains(., 'Teach mode')]")))
        link = "//a[@data-testid='stSidebarNavLink'][.//span[@label='Teach a source']]"
        wait.until(ec.element_to_be_clickable((By.XPATH, link))).click()
        wait.until(ec.presence_of_element_located((By.XPATH, "//h1[contains(., 'Teach a source')]")))
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[contains(., 'This source is in')]")))
        wait.until(ec.presence_of_element_located((By.XPATH, "//div[@data-testid='stImage']//img")))
        time.sleep(1)
        driver.save_screenshot(str(SHOTS / "4-teach-frames.png"))
        epochs = wait.until(ec.element_to_be_clickable((By.XPATH, "//input[@aria-label='Epochs']")))
        epochs.send_keys("30", Keys.TAB)  # a short run for the test (the default trains 1,500 steps)
        time.sleep(1)
        driver.execute_script("arguments[0].scrollIntoView();", epochs)
        assert "auto: those the surface looks the same in" in driver.page_source  # orientations, by default
        driver.save_screenshot(str(SHOTS / "4b-teach-settings.png"))
        start = "//button[.//p[text()='Train a detector for this source']]"
        wait.until(ec.element_to_be_clickable((By.XPATH, start))).click()
        report = "//div[@data-testid='stMetric'][.//p[text()='Image AUROC']]"
        WebDriverWait(driver, 240).until(ec.presence_of_element_located((By.XPATH, report)))
        # the finished job's page is drawn once more, without the refresh: what was found may be replaced
        steady = WebDriverWait(driver, 60, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))

        def on(xpath: str, act) -> None:
            steady.until(lambda d: act(d.find_element(By.XPATH, xpath)) or True)

        def scroll(element) -> None:
            driver.execute_script("arguments[0].scrollIntoView();", element)

        on(report, scroll)
        time.sleep(2)
        driver.save_screenshot(str(SHOTS / "5-teach-report.png"))
        on("//label[.//p[starts-with(., 'I have read the report')]]", lambda box: box.click())
        promote = "//button[.//p[text()='Promote to the source']]"  # enabled once the box is ticked
        steady.until(lambda d: (button := d.find_element(By.XPATH, promote)).is_enabled() and (button.click() or True))
        done = "//p[contains(., 'washer is now judged by')]"
        wait.until(ec.presence_of_element_located((By.XPATH, done)))
        on(done, scroll)
        time.sleep(1)
        driver.save_screenshot(str(SHOTS / "6-teach-promoted.png"))
        time.sleep(3)  # the finished job's page is not refreshed (every 2 s while it ran): the confirmation stays
        page = driver.page_source
        assert "washer is now judged by" in page
        # the job picker says what became of the job it was picked in (Streamlit kept the first labels)
        assert re.search(r"job \d+: succeeded", page) and not re.search(r"job \d+: (queued|running)", page)
        assert "stException" not in page and "Traceback" not in page
    finally:
        driver.save_screenshot(str(SHOTS / "teach-last.png"))  # where it stopped, when it fails
        driver.quit()
        with appliance.api("engineer") as api:
            status = api.get("/sources").json()["washer"]
            api.delete("/sources/washer")
    assert status["mode"] == "inspecting" and status["own_model"]
    for shot in ("4-teach-frames.png", "5-teach-report.png", "6-teach-promoted.png"):
        assert (SHOTS / shot).stat().st_size > 20_000, shot
