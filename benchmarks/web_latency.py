"""Figure 10: in aal-web, the time from a key press to the next item on screen, with 20 headless browsers
labeling at once, against the same browsers' bare key-to-frame time in the same run.

Each browser (Debian's chromium, headless, driven by selenium) logs in as its own annotator and labels with
number keys at a person's quick pace (a key every PERIOD seconds, jittered). The page measures, from the key
event's own timestamp to the animation frame that shows the next item (window.aalLatencies, aal_rpc/web/
static/app.js), so the driver's overhead is not counted. Baseline: the same browsers, the same pace, on a page
that only changes one line of text per key: what any page costs the browser under this load.
Also reported: key press to the label on the coordinator's disk (the acknowledgement the page counts).
Skipped where chromium, chromium-driver or selenium is missing.

`python -m benchmarks --only web_latency`; `python -m benchmarks.web_latency --screenshot docs/web.png` saves
the picture of the page the README shows.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

import click
import numpy as np

from aal_rpc.client import CoordinatorClient
from aal_rpc.data.images import digits_arrays, render_png
from aal_rpc.experiment.processes import ProcessGroup, command, read_address
from aal_rpc.types import Payload
from benchmarks.common import percentiles

PERIOD = 0.6  # seconds between one browser's keys: a quick person (the prefetch has this long to land)
WAIT = 60.0  # seconds any one browser step may take while 20 browsers start on 2 cores
# The baseline page: the same measurement as app.js, for a key that only changes a line of text.
BLANK_PAGE = ("data:text/html,<!doctype html><title>blank</title><p id=t>0</p><script>window.aalLatencies=[];"
              "let n=0;document.addEventListener('keydown',e=>{const s=e.timeStamp;"
              "document.getElementById('t').textContent=String(++n);"
              "requestAnimationFrame(()=>window.aalLatencies.push(performance.now()-s))})</script>")


def browser_binaries() -> tuple[str, str] | None:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    return (chromium, driver) if chromium and driver else None


def open_browser(profile: Path, binaries: tuple[str, str], width: int = 1280, height: int = 900):
    """A headless chromium (Debian's, never a download) driven through chromium-driver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binaries[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                f"--user-data-dir={profile}", "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(executable_path=binaries[1]))


def queue_digits(address: str, n: int) -> None:
    images, _ = digits_arrays()
    with CoordinatorClient(address, retry_for=30) as c:
        batch = []
        for i in range(n):
            x = (images[i % len(images)] / 16.0).astype(np.float32)[None]
            batch.append((str(i), Payload.from_array(x, image=render_png(x)), 0.5))
        for start in range(0, n, 500):
            c.submit_candidates(worker_id="bench", strategy="margin", model_version=0,
                                candidates=batch[start:start + 500])


def start_system(procs: ProcessGroup, tmp: Path, items: int) -> tuple[str, str]:
    """A coordinator with `items` digits queued, and aal-web in front of it: (coordinator address, page URL)."""
    _, address = procs.start_coordinator("coordinator", ["--data-dir", tmp / "coord", "--dataset", "digits",
                                                         "--model", "mlp", "--pool-capacity", str(items)])
    queue_digits(address, items)
    web = procs.start("web", command("web", "--coordinator", address, "--listen", "127.0.0.1:0"), capture_stdout=True)
    return address, f"http://{read_address(web, 'web', procs.log_dir / 'web.log')}/"


def _wait(driver, predicate, what: str) -> None:
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, WAIT, poll_frequency=0.05).until(lambda d: predicate(d), message=what)


def _login(driver, url: str, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, lambda d: d.find_element(By.ID, "login").is_displayed(), "the login form")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "login").submit()
    _wait(driver, lambda d: d.find_element(By.ID, "stage").get_attribute("data-item"), "the first item")


def _press_keys(drivers, keys: int, seed: int) -> None:
    """Every browser presses `keys` digit keys, one every PERIOD seconds (jittered), all at once."""
    from selenium.webdriver.common.action_chains import ActionChains

    def person(i: int, driver) -> None:
        rng = random.Random(seed * 1000 + i)
        time.sleep(rng.uniform(0, PERIOD))  # people do not press in step
        for _ in range(keys):
            ActionChains(driver).send_keys(str(rng.randrange(10))).perform()
            time.sleep(PERIOD * rng.uniform(0.5, 1.5))

    threads = [threading.Thread(target=person, args=(i, d)) for i, d in enumerate(drivers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _on_all(drivers, fn):
    results = [None] * len(drivers)

    def one(i):
        results[i] = fn(i, drivers[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(drivers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def run(*, browsers: int = 20, keys: int = 40, smoke: bool = False) -> dict:
    if smoke:
        browsers, keys = 2, 5
    binaries = browser_binaries()
    if binaries is None:
        return {"skipped": "no chromium, chromium-driver or selenium (apt-get install chromium chromium-driver)"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        procs = ProcessGroup(tmp / "logs")
        drivers = []
        try:
            address, url = start_system(procs, tmp, items=browsers * (keys + 4) + 100)
            drivers = _on_all([None] * browsers, lambda i, _: open_browser(tmp / f"profile-{i}", binaries))

            _on_all(drivers, lambda i, d: d.get(BLANK_PAGE))
            _press_keys(drivers, keys, seed=1)
            blank = [x for xs in _on_all(drivers, lambda i, d: d.execute_script("return window.aalLatencies"))
                     for x in xs]

            _on_all(drivers, lambda i, d: _login(d, url, f"person-{i}"))
            t0 = time.perf_counter()
            _press_keys(drivers, keys, seed=2)
            elapsed = time.perf_counter() - t0
            acked = browsers * keys
            _on_all(drivers, lambda i, d: _wait(
                d, lambda d: d.execute_script("return window.aalAckLatencies.length") >= keys, "every label saved"))
            shown = [x for xs in _on_all(drivers, lambda i, d: d.execute_script("return window.aalLatencies"))
                     for x in xs]
            saved = [x for xs in _on_all(drivers, lambda i, d: d.execute_script("return window.aalAckLatencies"))
                     for x in xs]
            not_ready = sum(_on_all(drivers, lambda i, d: d.execute_script("return window.aalNotReady")))
            with CoordinatorClient(address, retry_for=10) as admin:
                labeled = admin.stats().labeled
        finally:
            for d in drivers:
                d.quit()
            procs.stop_all()
    next_item, baseline, ack = percentiles(shown), percentiles(blank), percentiles(saved)
    return {"browsers": browsers, "keys_per_browser": keys, "period_seconds": PERIOD,
            "labels_per_second": acked / elapsed, "labels_in_L": labeled, "acknowledged": len(saved),
            "next_item_not_ready": not_ready,
            "next_item_ms": next_item, "blank_page_ms": baseline, "label_saved_ms": ack,
            "p50_ratio": next_item["p50"] / baseline["p50"], "p99_ratio": next_item["p99"] / baseline["p99"]}


def rows(r: dict) -> list[str]:
    """Its rows of the benchmark table (benchmarks/__main__.py)."""
    if "skipped" in r:
        return [f"| 10 | aal-web key to next item | skipped: {r['skipped']} | – | – | – | – |"]
    n, b, s = r["next_item_ms"], r["blank_page_ms"], r["label_saved_ms"]
    return [f"| 10 | aal-web: key press to the next item on screen, {r['browsers']} headless browsers labeling "
            f"at once ({r['labels_per_second']:.0f} labels/s; next item still loading at {r['next_item_not_ready']} "
            f"of {n['count']} keys) | p50 {n['p50']:.1f} / p99 {n['p99']:.1f} ms | "
            f"same browsers, blank page: p50 {b['p50']:.1f} / p99 {b['p99']:.1f} ms | {r['p50_ratio']:.2f}× / "
            f"{r['p99_ratio']:.2f}× | – | – |",
            f"| 10b | aal-web: key press to the label on the coordinator's disk | p50 {s['p50']:.1f} / p99 "
            f"{s['p99']:.1f} ms | – | – | – | – |"]


def screenshot(path: Path) -> None:
    """The page as a person sees it, labeling the bundled digits, saved as a PNG."""
    binaries = browser_binaries()
    if binaries is None:
        raise click.ClickException("needs chromium, chromium-driver and selenium")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        procs = ProcessGroup(tmp / "logs")
        driver = None
        try:
            _, url = start_system(procs, tmp, items=40)
            driver = open_browser(tmp / "profile", binaries, 1200, 860)
            _login(driver, url, "alice")
            for key in "50413":
                before = driver.find_element(By.ID, "stage").get_attribute("data-item")
                ActionChains(driver).send_keys(key).perform()
                _wait(driver, lambda d: d.find_element(By.ID, "stage").get_attribute("data-item") not in ("", before),
                      "the next item")
            _wait(driver, lambda d: d.find_element(By.ID, "stats").get_attribute("data-labels") == "5", "five labels")
            driver.save_screenshot(str(path))
        finally:
            if driver is not None:
                driver.quit()
            procs.stop_all()


@click.command()
@click.option("--smoke", is_flag=True)
@click.option("--screenshot", "shot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Only save a screenshot of the page here.")
def main(smoke: bool, shot: Path | None) -> None:
    if shot is not None:
        screenshot(shot)
        return
    result = run(smoke=smoke)
    click.echo("\n".join(rows(result)))


if __name__ == "__main__":
    main()
