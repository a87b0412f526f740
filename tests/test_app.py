"""``egnn app`` driven by a real headless browser (Chromium through Selenium): the whole labeling loop on real
Omniglot characters, bad input as a message on the page, and nothing written outside the chosen output folder.

Needs the ``app`` extra (Gradio), Selenium, and Chromium with its driver (Debian: ``apt-get install chromium
chromium-driver``); skips, saying which is missing, without them. ``EGNN_APP_SCREENSHOT=PATH`` saves a screenshot
of the page after the first labels (README's picture)."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import read_rows

pytest.importorskip("gradio", reason="the app extra is not installed: pip install -e '.[app]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no Chromium and chromedriver on this machine")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_under(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def page(labeling_folders, tmp_path):
    """The app serving 4 characters (one example each) and 20 images to label; the browser on it."""
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    ckpt, support, pngs = labeling_folders
    images = pngs[0].parent.parent  # the folder of images to label
    home = tmp_path / "home"
    home.mkdir()
    before = files_under(tmp_path)
    port = free_port()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp_path / "tmp"), "PYTHONUNBUFFERED": "1"}
    (tmp_path / "tmp").mkdir()
    server = subprocess.Popen([sys.executable, "-m", "egnn.cli", "app", "--checkpoint", str(ckpt), "--support",
                               str(support), "--images", str(images), "--out", str(tmp_path / "out"), "--port",
                               str(port), "--no-browser", "--suggest", "3"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail(f"the app did not start: {server.stdout.read()}")
            time.sleep(0.5)
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800",
                f"--user-data-dir={tmp_path / 'browser'}"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    browser = webdriver.Chrome(service=Service(DRIVER), options=options)
    browser.get(url)
    try:
        wait_for(browser, lambda b: css(b, "#label"), what="the page to load")
        yield browser, tmp_path, ckpt, support, images, before
    finally:
        browser.quit()
        server.terminate()
        server.wait(timeout=30)


def wait_for(browser, condition, timeout=90, what="the page"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.25).until(lambda b: condition(b),
                                                                      message=f"waiting for {what}")


def css(browser, selector):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, selector)


def status(browser) -> str:
    return " ".join(e.text for e in css(browser, "#status"))


def thumbnails(browser):
    return css(browser, "#gallery button.thumbnail-item")


def click(browser, element):
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def set_text(browser, elem_id, text):
    box = css(browser, f"#{elem_id} textarea")[0]
    box.clear()
    box.send_keys(text)


def selected(browser) -> str:
    return css(browser, "#selected textarea")[0].get_attribute("value")


def test_the_whole_labeling_loop_in_a_browser(page):
    browser, tmp_path, ckpt, support, images, before = page
    click(browser, css(browser, "#label")[0])
    wait_for(browser, lambda b: "by the model" in status(b), what="the first labels")
    assert "0 labeled by you, 20 by the model" in status(browser)
    groups = [e.text for e in css(browser, "#group label")]
    assert groups[0].startswith("★ to label next (3)") and groups[-1] == "unknown (0)"  # suggestions first
    assert len(thumbnails(browser)) == 3
    if os.environ.get("EGNN_APP_SCREENSHOT"):
        browser.save_screenshot(os.environ["EGNN_APP_SCREENSHOT"])
    # accept the first suggestion as the model labeled it
    click(browser, thumbnails(browser)[0])
    wait_for(browser, selected, what="the selected image")
    first = selected(browser)
    click(browser, css(browser, "#accept")[0])
    wait_for(browser, lambda b: "1 labeled by you, 19 by the model" in status(b), what="the relabeling")
    # correct the next one to its true class (its folder's name), chosen in the dropdown
    click(browser, thumbnails(browser)[0])
    wait_for(browser, lambda b: selected(b) not in ("", first), what="the second image")
    second = Path(selected(browser))
    truth = second.parent.name
    click(browser, css(browser, "#class input")[0])  # opens the list of classes
    option = wait_for(browser, lambda b: [o for o in css(b, "#class li[role=option]")
                                          if o.get_attribute("aria-label") == truth], what="the class option")[0]
    click(browser, option)
    click(browser, css(browser, "#label-as")[0])
    wait_for(browser, lambda b: "2 labeled by you, 18 by the model" in status(b), what="the correction")
    # the CSV: written into the output folder and offered for download
    click(browser, css(browser, "#save")[0])
    wait_for(browser, lambda b: "wrote" in status(b), what="the CSV")
    rows = {r["path"]: r for r in read_rows(tmp_path / "out" / "labels.csv")}
    assert len(rows) == 20
    assert rows[str(second)]["label"] == truth and rows[str(second)]["by"] == "person"
    assert rows[first]["by"] == "person" and sum(r["by"] == "person" for r in rows.values()) == 2
    assert css(browser, "#csv a")  # the download link
    # bad input: a file that is not a checkpoint is a message on the page, never a traceback
    bad = tmp_path / "user" / "notes.txt"
    bad.write_text("not a checkpoint")
    set_text(browser, "checkpoint", str(bad))
    click(browser, css(browser, "#label")[0])
    wait_for(browser, lambda b: "Problem:" in status(b), what="the message")
    assert "truncated or corrupt" in status(browser) and "Traceback" not in browser.page_source
    set_text(browser, "checkpoint", str(ckpt))
    set_text(browser, "images", str(tmp_path / "user" / "empty"))
    click(browser, css(browser, "#label")[0])
    wait_for(browser, lambda b: "not found" in status(b), what="the missing folder's message")
    # nothing written outside the output folder (and the notes file this test wrote)
    after = files_under(tmp_path)
    changed = {p for p in after if before.get(p) != after[p]}
    outside = {p for p in changed if not p.is_relative_to(tmp_path / "out") and p != bad
               and not p.is_relative_to(tmp_path / "browser")}
    assert not outside, sorted(map(str, outside))
    assert not any((tmp_path / "home").iterdir()) and not any((tmp_path / "tmp").iterdir())
