"""The admin UI's pages with a busy store, timed in a real browser (not part of the test suite: a time bound
belongs here, where nothing else competes for the cores; ``.ci/run`` runs it after the suite):

    .venv/bin/python bench/ui_pages.py            # --help for the knobs

One ``gesso serve --emulator`` on a fresh SQLite store, ``--rows`` spend rows (100,000 by default) written
straight into it for one key, spread over the last 30 days; then Debian's Chromium (headless, driven by Selenium
through chromedriver) signs in and loads each page five times. A page's time is the best of its five loads
(the first warms the database's pages): the navigation's ``loadEventEnd``, and for the overview the later of that
and the end of the fetch that brings its plots' data. Exit status 1 when a page takes ``--limit-ms`` (300) or more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gesso_bench import free_port, http, no_proxy_env, stop, wait_listening

MASTER = "sk-gesso-bench-ui-pages"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PAGES = ("/ui/overview?range=month", "/ui/overview?range=day", "/ui/keys", "/ui/logs",
         "/ui/logs?model=canvas&status=success", "/ui/models")  # fmt: skip


def write_config(path: Path, database: Path) -> None:
    models = "".join(f"  - model_name: {name}\n    litellm_params:\n      model: bedrock/amazon.nova-canvas-v1:0\n"
                     for name in ("nova", "canvas"))  # fmt: skip
    path.write_text(f"model_list:\n{models}general_settings:\n  master_key: {MASTER}\n"
                    f"  database_url: sqlite:///{database}\n")  # fmt: skip


def seed(database_url: str, token: str, rows: int) -> None:
    """``rows`` spend rows for the key, 25 s apart going back from now, alternating two model names."""
    from gesso.proxy import store

    async def write() -> None:
        database, now = store.Store(database_url), store.now()
        try:
            batch = []
            for i in range(rows):
                batch.append({"request_id": uuid.uuid4().hex, "created_at": now - datetime.timedelta(seconds=i * 25),
                              "token_hash": token, "key_alias": "busy", "route": "generations",
                              "model_name": ("nova", "canvas")[i % 2], "deployment": "nova-a", "model_id": "m",
                              "images": 1, "cost": 0.04, "latency_ms": 100.0 + i % 900, "status": "success",
                              "status_code": 200, "error_type": None, "user": None, "prompt": None, "team_id": None,
                              "user_id": None})  # fmt: skip
                if len(batch) == 10_000 or i == rows - 1:
                    async with database.engine.begin() as conn:
                        await conn.execute(store.spend_logs.insert(), batch)
                    batch = []
        finally:
            await database.close()

    asyncio.run(write())


def installed() -> bool:
    """Whether Debian's Chromium and its chromedriver are here (``apt-get install chromium chromium-driver``)."""
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Selenium through its chromedriver, with a throwaway profile (the
    browser tests' too: tests/test_ui_browser.py)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="gesso-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def browse(url: str) -> dict[str, float]:
    """Sign in, then the best of five loads of each page, in ms."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as browser:
        browser.get(url + "/ui/login")
        browser.find_element(By.ID, "key").send_keys(MASTER)
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        WebDriverWait(browser, 10).until(lambda _: "/ui/overview" in browser.current_url)
        timings = {}
        for path in PAGES:
            best = float("inf")
            for _ in range(5):
                browser.get(url + path)
                if path.startswith("/ui/overview"):  # loaded once its plots are drawn (their data fetched)
                    WebDriverWait(browser, 10).until(lambda _: browser.execute_script(
                        "return document.getElementById('overview').dataset.loaded === 'true'"))  # fmt: skip
                    took = browser.execute_script(
                        "const fetched = performance.getEntriesByType('resource').find((e) => e.name.includes("
                        "'/ui/api/'));return Math.max(performance.getEntriesByType('navigation')[0].loadEventEnd, "
                        "fetched.responseEnd);"
                    )  # fmt: skip
                else:
                    took = browser.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd")
                best = min(best, float(took))
            timings[path] = round(best, 1)
        return timings


def run(rows: int, workdir: Path) -> dict[str, float]:
    database, config, log = workdir / "ui.db", workdir / "config.yaml", workdir / "serve.log"
    write_config(config, database)
    port = free_port()
    with log.open("wb") as out:
        command = [sys.executable, "-m", "gesso", "serve", "--config", str(config), "--emulator", "--port", str(port)]
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=no_proxy_env())
    try:
        wait_listening(port, proc, "gesso serve", log)
        status, made = http("POST", f"http://127.0.0.1:{port}/key/generate",
                            {"key_alias": "busy", "max_budget": 10_000.0}, key=MASTER)  # fmt: skip
        if status != 200:
            raise RuntimeError(f"/key/generate answered {status}: {made}")
        seed(f"sqlite:///{database}", made["token"], rows)
        return browse(f"http://127.0.0.1:{port}")
    finally:
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="spend rows written (default %(default)s)")
    parser.add_argument("--limit-ms", type=float, default=300.0, help="each page's bound (default %(default)s)")
    args = parser.parse_args(argv)
    if not installed():
        print("no Chromium here (apt-get install chromium chromium-driver)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gesso-ui-pages-") as workdir:
        timings = run(args.rows, Path(workdir))
    print(f"admin UI, {args.rows:,} spend rows, SQLite, best of five loads in Chromium "
          f"({platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}):")  # fmt: skip
    for path, took in timings.items():
        print(f"  {path:42} {took:7.1f} ms{'' if took < args.limit_ms else f'  over the {args.limit_ms:g} ms bound'}")
    return 0 if all(took < args.limit_ms for took in timings.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
