"""The HTML report in a real browser: headless Chromium, driven over the DevTools protocol on a pipe (no
extra Python package), loads the page from disk, and the test checks that its tables and images
rendered (non-blank screenshots of both, every image decoded) and that nothing was logged as an error.
CI installs Chromium (.ci/run), so there the test never skips."""

import base64
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import expected_report, run_json

from peftbench.store import read_rows

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


class DevTools:
    """The Chrome DevTools protocol over --remote-debugging-pipe: JSON messages ended by NUL, commands
    on the browser's fd 3, answers and events from its fd 4."""

    def __init__(self, binary: str, profile: str):
        command_read, self.command_write = os.pipe()
        self.reply_read, reply_write = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
                 f"--user-data-dir={profile}", "about:blank"]
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{command_read} 4>&{reply_write}', binary, *flags],
            pass_fds=(command_read, reply_write), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(command_read)
        os.close(reply_write)
        self.buffer, self.events, self.next_id = b"", [], 0

    def send(self, method: str, session: str | None = None, timeout: float = 60, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.command_write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(timeout)
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply["error"]
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._receive(timeout))
        return next(e for e in self.events if e.get("method") == event)

    def _receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.reply_read], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "Chromium did not answer in time"
            chunk = os.read(self.reply_read, 1 << 20)
            assert chunk, "Chromium closed the DevTools pipe"
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        os.close(self.command_write)
        os.close(self.reply_read)
        self.process.terminate()
        self.process.wait(timeout=30)


def ink(png: bytes) -> float:
    """Share of pixels that are not (near) white."""
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(png), format="png")[..., :3]
    return float((pixels.min(axis=-1) < 0.9).mean())


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI; .ci/run installs the Debian package `chromium`")
        pytest.skip("no Chromium here (apt-get install chromium)")
    tools = DevTools(CHROMIUM, str(tmp_path / "profile"))
    yield tools
    tools.close()


def test_html_report_renders_tables_and_images_without_errors(grid_store, browser, tmp_path):
    out = tmp_path / "report"
    run_json("report", "--store", grid_store, "--out", out, "--format", "html", "--json")
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        browser.send(f"{domain}.enable", session)
    browser.send("Emulation.setDeviceMetricsOverride", session, width=1280, height=900, deviceScaleFactor=1,
                 mobile=False)
    browser.send("Page.navigate", session, url=(out / "report.html").as_uri())
    browser.wait_for("Page.loadEventFired")
    probe = """JSON.stringify({
        tables: [...document.querySelectorAll('table')].map(t => t.rows.length),
        images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
        table: document.querySelector('table').getBoundingClientRect().toJSON(),
        image: document.images[0].getBoundingClientRect().toJSON(),
        links: document.querySelectorAll('nav a').length})"""
    page = json.loads(browser.send("Runtime.evaluate", session, expression=probe, returnByValue=True)["result"]["value"])
    rows = read_rows(grid_store)
    tables, plots = expected_report(rows)
    # the report's tables and the summary's one table per model x task x data size
    blocks = {(r["model"], r["task"], r["n_train"]) for r in rows if r["kind"] == "train" and r["status"] == "finished"}
    assert len(page["tables"]) == len(tables) + len(blocks) and min(page["tables"]) >= 2  # header and a row each
    # every plot, the summary's score charts (one per block) inside the summary and not in the contents,
    # which list the summary, each table, each other figure and the provenance
    assert len(page["images"]) == len(plots) and len({r for r in plots if r.startswith("scores-")}) == len(blocks)
    assert page["links"] == 1 + len(tables) + len(plots) - len(blocks) + 1
    assert all(done and width > 100 and height > 100 for done, width, height in page["images"])

    def shot(rect: dict | None = None) -> bytes:
        clip = {} if rect is None else {"clip": {**{k: rect[k] for k in ("x", "y", "width", "height")}, "scale": 1},
                                        "captureBeyondViewport": True}
        return base64.b64decode(browser.send("Page.captureScreenshot", session, format="png", **clip)["data"])

    screenshot, table, image = shot(), shot(page["table"]), shot(page["image"])
    folder = Path(os.environ.get("PEFTBENCH_SCREENSHOTS", tmp_path))  # set it to look at them by eye
    for name, png in (("report", screenshot), ("table", table), ("image", image)):
        (folder / f"{name}.png").write_bytes(png)
    assert 0.01 < ink(screenshot) < 0.6  # text and tables on a white page: not blank, not a solid block
    assert ink(table) > 0.05 and ink(image) > 0.05
    errors = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == []
