"""Headless Chromium driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``): no browser
download, no WebSocket library. Used by tests/test_review_pacs.py to open OHIF and take a screenshot.

Messages are JSON objects separated by NUL bytes, the browser reading fd 3 and writing fd 4.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

__all__ = ["CHROMIUM", "Chromium", "ohif_seg_screenshots"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or ""


class Chromium:
    """``with Chromium() as b: b.open(url); b.evaluate("1+1"); png = b.screenshot()``; stopped by its PID."""

    def __init__(self, width: int = 1280, height: int = 800):
        self.profile = tempfile.mkdtemp(prefix="cdp_profile_")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        cmd = [CHROMIUM, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
               "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-dev-shm-usage",
               "--use-gl=swiftshader", "--enable-unsafe-swiftshader", f"--user-data-dir={self.profile}",
               f"--window-size={width},{height}", "about:blank"]
        # the pipes become the browser's fd 3 (commands) and 4 (answers); `exec` keeps one process, its PID ours
        shell = 'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null 2>&1'
        self.proc = subprocess.Popen(["sh", "-c", shell, *cmd], stdin=to_child_r, stdout=from_child_w,
                                     start_new_session=True)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._id = 0
        self.session = ""
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, timeout: float = 60, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, _, self._buffer = self._buffer.partition(b"\0")
                answer = json.loads(raw)
                if answer.get("id") == self._id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer.get("result", {})
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise TimeoutError(f"Chromium did not answer {method}")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its pipe")
            self._buffer += chunk

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60, step: float = 0.5):
        """Until ``expression`` is truthy in the page (its value), else TimeoutError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(step)
        raise TimeoutError(f"page: {expression[:120]} stayed false for {timeout} s")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _click_button(browser: Chromium, text: str) -> bool:
    return bool(browser.evaluate(
        f"(() => {{ const b = [...document.querySelectorAll('button')].find(x => x.innerText.trim() === {json.dumps(text)}); "
        "if (b) b.click(); return !!b; })()"))


def ohif_seg_screenshots(server: str, study: str, seg_series: str, timeout: float = 90) -> dict:
    """Open OHIF (``<server>/ohif/``) on ``study``, screenshot, open the SEG series ``seg_series`` in the viewport
    (OHIF's own display-set services, as a double click on its thumbnail does), accept its "open this Segmentation?"
    prompt, screenshot again. Returns ``{"before", "after"}`` PNG bytes and the image's geometry on the page:
    ``origin`` (page x, y of pixel (0, 0)'s centre) and ``step`` (page pixels per image column and row)."""
    url = f"{server}/ohif/viewer?StudyInstanceUIDs={study}&hangingprotocolId=default"
    with Chromium() as b:
        b.open(url)
        b.wait_for("document.querySelector('canvas.cornerstone-canvas') !== null && window.services !== undefined", timeout)
        b.wait_for(f"window.services.displaySetService.getActiveDisplaySets().some(d => d.SeriesInstanceUID === {json.dumps(seg_series)})", timeout)
        _click_button(b, "Confirm and Hide")  # OHIF's "investigational use" banner
        b.wait_for("(() => { try { return window.cornerstone.getEnabledElements()[0].viewport.getCurrentImageId() } catch (e) { return '' } })()", timeout)
        time.sleep(1.0)
        before = b.screenshot()
        shown = b.evaluate(f"""(() => {{
            const s = window.services;
            const ds = s.displaySetService.getActiveDisplaySets().find(d => d.SeriesInstanceUID === {json.dumps(seg_series)});
            const state = s.viewportGridService.getState();
            const viewportId = state.activeViewportId || (state.viewports && [...state.viewports.keys()][0]);
            s.viewportGridService.setDisplaySetsForViewport({{viewportId, displaySetInstanceUIDs: [ds.displaySetInstanceUID]}});
            return viewportId; }})()""")
        if not shown:
            raise RuntimeError("OHIF: no viewport to show the SEG in")
        b.wait_for("document.body.innerText.includes('Do you want to open this Segmentation')", timeout)
        _click_button(b, "Yes")
        b.wait_for("!document.body.innerText.includes('Do you want to open this Segmentation')", timeout)
        time.sleep(3.0)  # the labelmap is drawn on the next renders
        after = b.screenshot()
        geometry = b.evaluate("""(() => {
            const vp = window.cornerstone.getEnabledElements()[0].viewport;
            const data = vp.getImageData().imageData;
            const [w, h] = data.getDimensions();
            const p0 = vp.worldToCanvas(data.indexToWorld([0, 0, 0]));
            const p1 = vp.worldToCanvas(data.indexToWorld([w - 1, h - 1, 0]));
            const r = vp.canvas.getBoundingClientRect();
            return JSON.stringify({origin: [r.x + p0[0], r.y + p0[1]], step: [(p1[0] - p0[0]) / (w - 1), (p1[1] - p0[1]) / (h - 1)], size: [w, h]}); })()""")
    return {"before": before, "after": after, **json.loads(geometry)}


def main() -> None:
    """``python tests/chromium_cdp.py --server http://127.0.0.1:8000 --study UID --seg UID --out PNG``: the OHIF
    screenshot of docs/review.md, against a running ``./run.sh review-pacs``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--server", default="http://127.0.0.1:8000")
    parser.add_argument("--study", required=True)
    parser.add_argument("--seg", required=True, help="SeriesInstanceUID of the explanation SEG")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    shots = ohif_seg_screenshots(args.server.rstrip("/"), args.study, args.seg)
    with open(args.out, "wb") as f:
        f.write(shots["after"])
    print(json.dumps({k: v for k, v in shots.items() if k not in ("before", "after")}))


if __name__ == "__main__":
    main()
