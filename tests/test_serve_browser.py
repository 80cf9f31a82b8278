"""The page of `edgeport-run serve` in a real headless browser: Debian's Chromium + chromium-driver via Selenium.

`make test` installs chromium and chromium-driver with apt when it runs as root; elsewhere this test fails with
the command to run (it never skips). The service runs the runtime's fixture bundle (a digits MLP); the expected
classes come from the fixture's oracle outputs (LiteRT's own invoke on the build machine).
"""
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).resolve().parents[1] / "runtime" / "tests" / "fixtures" / "bundle"
APT = "apt-get install chromium chromium-driver"
WAIT_S = 60  # page load + one prediction take well under a second idle; a shared CI machine can be much slower


def _binary(*names):
    for name in names:
        path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if path:
            return path
    pytest.fail(f"the browser test needs {' or '.join(names)}: run `sudo {APT}` (make test does it as root)")


@pytest.fixture
def served(tmp_path):
    """`edgeport-run serve` on a copy of the fixture bundle, on a free port; yields its base URL."""
    bundle = tmp_path / "bundle"
    shutil.copytree(FIXTURE, bundle)
    proc = subprocess.Popen([sys.executable, "-m", "edgeport_runtime.cli", "serve", str(bundle), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on http://"):
        proc.kill()
        pytest.fail(f"edgeport-run serve did not start: {line!r} {proc.stderr.read()}")
    yield line.split()[-1], bundle
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = _binary("chromium", "chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=900,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=_binary("chromedriver")), options=opts)
    yield driver
    driver.quit()


def _top_rows(driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#topk .topk-row"))
    return [(r.find_element(By.CSS_SELECTOR, ".label").text, float(r.find_element(By.CSS_SELECTOR, ".score").text))
            for r in driver.find_elements(By.CSS_SELECTOR, "#topk .topk-row")]


def test_page_upload_image_shows_top_k_and_latency(served, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, bundle = served
    x = np.load(bundle / "check_inputs.npy")
    want = np.load(bundle / "oracle_tflite-int8.npy")
    image = tmp_path / "digit.png"
    # digits were 0..16 per pixel; an 8-bit image is mapped onto that range by the bundle's preprocessing
    Image.fromarray((x[0, :, :, 0] * 255).round().astype(np.uint8)).resize((64, 64), Image.NEAREST).save(image)

    browser.get(url + "/")
    WebDriverWait(browser, WAIT_S).until(lambda d: "tflite-int8" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "file").send_keys(str(image))
    rows = _top_rows(browser)
    latency = browser.find_element(By.ID, "latency").text
    shot = tmp_path / "serve_page.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 1000
    assert len(rows) == 5 and rows[0][0] == str(int(want[0].argmax())), rows
    assert [s for _, s in rows] == sorted((s for _, s in rows), reverse=True)
    assert "model" in latency and "round trip" in latency and " ms" in latency
    assert browser.find_element(By.ID, "error").text == ""


def test_page_pasted_numbers_give_the_oracle_class(served, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, bundle = served
    x = np.load(bundle / "check_inputs.npy")
    want = np.load(bundle / "oracle_tflite-int8.npy")
    raw = (x[1] * 16).reshape(-1)  # raw digits pixels (0..16), as a CSV row holds them
    browser.get(url + "/")
    browser.find_element(By.ID, "numbers").send_keys(", ".join(f"{v:g}" for v in raw))
    browser.find_element(By.ID, "send-numbers").click()
    rows = _top_rows(browser)
    browser.save_screenshot(str(tmp_path / "serve_page_numbers.png"))
    print(f"screenshot: {tmp_path / 'serve_page_numbers.png'}")
    assert rows[0][0] == str(int(want[1].argmax())), rows
    # a wrong count of numbers gets the service's one-line error on the page, not a crash
    browser.find_element(By.ID, "numbers").send_keys(", 1")
    browser.find_element(By.ID, "send-numbers").click()
    deadline = time.time() + WAIT_S
    while time.time() < deadline and not browser.find_element(By.ID, "error").text:
        time.sleep(0.1)
    assert browser.find_element(By.ID, "error").text.startswith("400: "), browser.find_element(By.ID, "error").text
