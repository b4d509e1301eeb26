"""Headless Chromium driven over the DevTools protocol (CDP), for the
dashboard's tests: Debian's `chromium` and python3-websockets, no npm
package at test time.

    with Browser(tmp_path) as b:
        b.navigate("http://127.0.0.1:15014/dashboard/")
        b.wait_js("document.body.dataset.polls >= 1", 20, "the first poll")
        b.screenshot(tmp_path / "page.png")

One page, one websocket to it; CDP answers are matched to requests by id
on a private event loop thread, events are kept (console messages,
exceptions, network requests) for the test to inspect. Every wait is
bounded; the browser profile lives in the test's tmp dir."""
import asyncio
import base64
import itertools
import json
import os
import shutil
import threading
import time
import urllib.request

import websockets

from helpers import read_log, start_process, stop_process, wait_for

CHROMIUM = shutil.which("chromium")


class BrowserError(AssertionError):
    pass


class Browser:
    def __init__(self, tmp_path, width=1400, height=1050):
        self.profile = os.path.join(str(tmp_path), "chromium-profile")
        self.width, self.height = width, height
        self.events = []          # (method, params) of every event, in order
        self._ids = itertools.count(1)
        self._pending = {}
        self._loop = None
        self.proc = None

    # ---- life ----

    def __enter__(self):
        args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--metrics-recording-only",
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", f"--window-size={self.width},{self.height}", "about:blank"]
        self.proc = start_process(args, r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", timeout=60)
        port = int(self.proc.ready_match.group(1))

        def page_ws():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            return pages[0]["webSocketDebuggerUrl"] if pages else None
        url = wait_for(page_ws, 30, 0.2, "chromium's first page")
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        async def connect():
            return await websockets.connect(url, max_size=64 << 20, ping_interval=None)
        self._ws = self._run(connect(), 10)
        asyncio.run_coroutine_threadsafe(self._reader(), self._loop)
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc):
        try:
            self._run(self._ws.close(), 5)
        except Exception:
            pass
        if self._loop:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self.proc:
            stop_process(self.proc, timeout=20)
        return False

    def _run(self, coro, timeout):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _reader(self):
        try:
            async for raw in self._ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self._pending.pop(msg["id"], None)
                    if fut and not fut.done():
                        fut.set_result(msg)
                else:
                    self.events.append((msg.get("method"), msg.get("params", {})))
        except websockets.ConnectionClosed:
            pass

    async def _call(self, method, params):
        i = next(self._ids)
        fut = self._loop.create_future()
        self._pending[i] = fut
        await self._ws.send(json.dumps({"id": i, "method": method, "params": params}))
        return await fut

    # ---- protocol ----

    def send(self, method, timeout=30, **params):
        msg = self._run(self._call(method, params), timeout)
        if "error" in msg:
            raise BrowserError(f"{method}: {msg['error']}")
        return msg.get("result", {})

    def navigate(self, url, timeout=30):
        """Load url and wait for its load event (the fragment may have left)."""
        self.send("Page.navigate", url=url)
        base = url.split("#", 1)[0]
        wait_for(lambda: self.js(f"location.href.split('#')[0] === {base!r} && document.readyState === 'complete'"),
                 timeout, 0.1, f"{base} loaded")

    def js(self, expression):
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_js(self, expression, timeout, what):
        return wait_for(lambda: self.js(expression), timeout, 0.2, what)

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    # ---- what the page did ----

    def problems(self):
        """Console errors, uncaught exceptions and CSP violations so far."""
        out = []
        for method, p in list(self.events):
            if method == "Runtime.exceptionThrown":
                out.append(p["exceptionDetails"].get("text", "") + " " +
                           str(p["exceptionDetails"].get("exception", {}).get("description", "")))
            elif method == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(p["entry"].get("text", ""))
        return out

    def requests(self):
        """(method, url, headers) of every request the page sent."""
        return [(p["request"]["method"], p["request"]["url"], p["request"].get("headers", {}))
                for m, p in list(self.events) if m == "Network.requestWillBeSent"]

    def log(self):
        return read_log(self.proc)
