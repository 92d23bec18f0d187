#!/usr/bin/env python3
"""The dashboard's behavioural check in headless Chromium, driven over the DevTools protocol.

scripts/dashboard-browser-check.sh fills a throwaway database, serves `detectq dashboard` and runs this
script; it is not meant to be run alone. Standard library only: Chromium is started with
--remote-debugging-pipe and reads the protocol's JSON messages, each ended by a NUL byte, from its fd 3
and writes its own to its fd 4.

One browser session (one cookie jar) logs in through the login form, opens the request list, filters it
to the failed requests, follows one to its page, retries it through the page's form and sees it queued
(and psql agrees), visits the other pages, retries a failure group through its form, accepting the
confirm() the page raises, pauses, resumes and sets a queue on the Queues page, and filters the list by queue. Any console error, uncaught exception, failed or 4xx/5xx subresource, or dialog
nobody expected fails the check. A screenshot of every page visited goes to --screenshots.

Environment: DETECTQ_DASHBOARD_TOKEN (the token typed into the login form) and DATABASE_URL (for psql).
Exit status 0 when every step passed, 1 with a message naming the step otherwise.
"""

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse

WAIT = 30.0  # seconds any one condition may take before the step fails


class CheckFailed(Exception):
    pass


class BrowserGone(CheckFailed):
    pass


class Chromium:
    """A headless Chromium and the DevTools pipe to it, with one page target attached in flat mode."""

    def __init__(self, executable, workdir, log_path, on_event):
        self.executable = executable
        self.workdir = workdir
        self.log_path = log_path
        self.on_event = on_event
        self.process = None
        self.user_data_dir = None
        self.session = None
        self.target = None
        self._next_id = 0
        self._buffer = bytearray()
        self._to_browser = None
        self._from_browser = None

    # -- the process --

    def start(self):
        self.user_data_dir = tempfile.mkdtemp(prefix="chromium-profile.", dir=self.workdir)
        # The child must find the pipes at fds 3 and 4, and pass_fds keeps numbers: move our ends out of
        # the way, then put the child's ends at 3 and 4 for the time of the spawn.
        for fd in (3, 4):
            if _is_open(fd):
                raise CheckFailed(f"descriptor {fd} is already open in this process; the browser needs it")
        commands_r, commands_w = os.pipe()
        answers_r, answers_w = os.pipe()
        commands_r, commands_w, answers_r, answers_w = (_high(fd) for fd in (commands_r, commands_w, answers_r, answers_w))
        os.dup2(commands_r, 3, inheritable=False)
        os.dup2(answers_w, 4, inheritable=False)
        os.close(commands_r)
        os.close(answers_w)
        arguments = [
            self.executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={self.user_data_dir}",
            "--window-size=1440,1800",
            "--hide-scrollbars",
            "about:blank",
        ]
        try:
            with open(self.log_path, "wb") as log:
                # Its own session, so that every process it starts (renderers, zygotes, crash handler) is
                # in one process group to kill at the end.
                self.process = subprocess.Popen(
                    arguments, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(3, 4), start_new_session=True,
                )
        finally:
            os.close(3)
            os.close(4)
        with open(os.path.join(self.workdir, "chromium.pgid"), "w") as pgid:
            pgid.write(f"{self.process.pid}\n")
        self._to_browser = commands_w
        self._from_browser = answers_r
        version = self.call("Browser.getVersion")
        return version.get("product", "?")

    def open_page(self):
        self.target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": self.target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=self.session)

    def stop(self):
        """Closes the browser, kills whatever of its process group is left, and removes its profile."""
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    self.call("Browser.close", timeout=10)
                except Exception:
                    pass
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.remove(os.path.join(self.workdir, "chromium.pgid"))
            except FileNotFoundError:
                pass
        for fd in (self._to_browser, self._from_browser):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._to_browser = self._from_browser = None
        if self.user_data_dir:
            shutil.rmtree(self.user_data_dir, ignore_errors=True)

    # -- the protocol --

    def send(self, method, params=None, session=None):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._to_browser, data):]
        except BrokenPipeError:
            raise BrowserGone(f"Chromium stopped reading its pipe ({self._exit_text()})") from None
        return self._next_id

    def call(self, method, params=None, session=None, timeout=WAIT):
        """Sends a command and handles every message until its answer; returns the answer's result."""
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            message = self.read(deadline)
            if message is None:
                raise CheckFailed(f"{method} got no answer in {timeout:.0f} s")
            if message.get("id") == wanted:
                if "error" in message:
                    raise CheckFailed(f"{method} failed: {message['error'].get('message')} {message['error'].get('data', '')}".rstrip())
                return message.get("result", {})

    def page(self, method, params=None, timeout=WAIT):
        return self.call(method, params, session=self.session, timeout=timeout)

    def read(self, deadline):
        """The next message (events are handed to on_event first), or None once the deadline has passed."""
        while True:
            end = self._buffer.find(b"\0")
            if end >= 0:
                raw = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                message = json.loads(raw)
                if "method" in message:
                    self.on_event(message["method"], message.get("params", {}), message.get("sessionId"))
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserGone(f"Chromium closed its pipe ({self._exit_text()})")
            self._buffer += chunk

    def _exit_text(self):
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"exit status {code}"


def _is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _high(fd):
    """`fd` moved to a number of at least 10 (close-on-exec), so that 3 and 4 stay free."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Check:
    """The steps, one browser session, and what it saw: navigations, responses, dialogs, console errors."""

    def __init__(self, arguments):
        self.base = arguments.base_url.rstrip("/")
        self.origin = urllib.parse.urlsplit(self.base)
        self.screenshots = arguments.screenshots
        self.token = os.environ["DETECTQ_DASHBOARD_TOKEN"]
        self.database = os.environ["DATABASE_URL"]
        self.browser = Chromium(arguments.browser, arguments.workdir, os.path.join(arguments.screenshots, "chromium.log"), self.event)
        self.step = "starting Chromium"
        self.events = []  # (sequence number, method, params) of the page's events
        self.expected_confirm = None  # the message of the one confirm() the current action may raise
        self.expected_document_status = 200
        self.documents = []  # (URL, status) of every document the page loaded
        self.notes = []
        self.shots = 0

    # -- events --

    def event(self, method, params, session):
        if session != self.browser.session or self.browser.session is None:
            return
        self.events.append((len(self.events), method, params))
        if method == "Page.javascriptDialogOpening":
            self.dialog(params)
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.problem(f"uncaught exception: {text} ({details.get('url', '?')}:{details.get('lineNumber', '?')})")
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(argument.get("value", argument.get("description", ""))) for argument in params.get("args", []))
            if params.get("type") in ("error", "assert"):
                self.problem(f"console.{params['type']}: {text}")
            elif params.get("type") == "warning":
                self.notes.append(f"console.warn during {self.step}: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            where = f" ({entry['url']})" if entry.get("url") else ""
            if entry.get("level") == "error":
                if self.expected_log_entry(entry):
                    self.notes.append(f"expected during {self.step}: {entry.get('source')} {entry.get('text')}{where}")
                    return
                self.problem(f"console error ({entry.get('source')}): {entry.get('text')}{where}")
            elif entry.get("level") == "warning":
                self.notes.append(f"console warning during {self.step} ({entry.get('source')}): {entry.get('text')}{where}")
        elif method == "Network.responseReceived":
            response = params.get("response", {})
            status = response.get("status", 0)
            if params.get("type") == "Document" and params.get("frameId") == self.browser.target:
                self.documents.append((response.get("url"), status))
                if status != self.expected_document_status:
                    self.problem(f"{response.get('url')} answered {status}, not {self.expected_document_status}")
            elif status >= 400:
                self.problem(f"{params.get('type')} {response.get('url')} answered {status}")
        elif method == "Network.loadingFailed":
            if not params.get("canceled"):
                self.problem(f"{params.get('type')} request failed: {params.get('errorText')}{' (blocked: ' + params['blockedReason'] + ')' if params.get('blockedReason') else ''}")

    def expected_log_entry(self, entry):
        """The browser's own line about a document that answered the status the step expects (the
        dashboard answers 401 with its login form): the status itself is checked on the response."""
        status = self.expected_document_status
        return (
            status != 200
            and entry.get("source") == "network"
            and f"status of {status}" in entry.get("text", "")
            and self.documents[-1:] == [(entry.get("url"), status)]
        )

    def dialog(self, params):
        kind, message = params.get("type"), params.get("message", "")
        if kind == "confirm" and self.expected_confirm is not None and message == self.expected_confirm:
            self.expected_confirm = None
            self.browser.send("Page.handleJavaScriptDialog", {"accept": True}, session=self.browser.session)
            return
        # Dismissed so that the page is not left blocked, then the step fails.
        self.browser.send("Page.handleJavaScriptDialog", {"accept": False}, session=self.browser.session)
        self.problem(f"unexpected {kind} dialog: {message!r}")

    def problem(self, text):
        raise CheckFailed(text)

    # -- the page --

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (its JSON value)."""
        result = self.browser.page("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CheckFailed(f"script failed: {details.get('exception', {}).get('description') or details.get('text')}")
        return result.get("result", {}).get("value")

    def navigation(self, act, path, status=200, query=None, timeout=WAIT):
        """Runs `act` (which starts a navigation of the page), waits for the new document to commit and
        fire its load event, and checks where it landed. Returns the new URL."""
        self.expected_document_status = status
        mark = len(self.events)
        act()
        deadline = time.monotonic() + timeout
        url = committed = None
        while True:
            for sequence, method, params in self.events[mark:]:
                if url is None and method == "Page.frameNavigated" and params["frame"]["id"] == self.browser.target:
                    url, committed = params["frame"]["url"], sequence
                elif url is not None and method == "Page.loadEventFired" and sequence > committed:
                    parts = urllib.parse.urlsplit(url)
                    if parts.path != path:
                        raise CheckFailed(f"landed on {url}, not on {path}")
                    found = dict(urllib.parse.parse_qsl(parts.query))
                    for name, value in (query or {}).items():
                        if found.get(name) != value:
                            raise CheckFailed(f"landed on {url}, without {name}={value}")
                    return url
            mark = len(self.events) if url is None else committed
            if self.browser.read(deadline) is None:
                raise CheckFailed(f"no page loaded in {timeout:.0f} s" + (f" after {url} committed" if url else ""))

    def go(self, path, **expect):
        def act():
            result = self.browser.page("Page.navigate", {"url": self.base + path})
            if result.get("errorText"):
                raise CheckFailed(f"navigating to {path}: {result['errorText']}")
        return self.navigation(act, urllib.parse.urlsplit(path).path, **expect)

    def click(self, selector, path, **expect):
        """Follows a link or presses a button the way a user would (an element's click())."""
        def act():
            if not self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; e.click(); return true; }})()"):
                raise CheckFailed(f"nothing on the page matches {selector}")
        return self.navigation(act, path, **expect)

    def submit(self, form_selector, path, **expect):
        """Submits a form through its submit button (requestSubmit: validation and submit listeners run,
        as for a user's press), in one script so that an auto-refresh cannot swap the form in between."""
        def act():
            script = f"""(() => {{
                const form = document.querySelector({json.dumps(form_selector)});
                if (!form) return false;
                form.requestSubmit(form.querySelector('button[type=submit], button:not([type])'));
                return true;
            }})()"""
            if not self.evaluate(script):
                raise CheckFailed(f"no form matches {form_selector}")
        return self.navigation(act, path, **expect)

    def screenshot(self, name):
        self.shots += 1
        data = self.browser.page("Page.captureScreenshot", {"format": "png"})["data"]
        path = os.path.join(self.screenshots, f"{self.shots:02d}-{name}.png")
        with open(path, "wb") as file:
            file.write(base64.b64decode(data))
        return path

    def psql(self, sql, **variables):
        """psql's unaligned answer to `sql` (read from stdin, so that :'name' variables are quoted by psql)."""
        command = ["psql", "-X", "-Atq", "-v", "ON_ERROR_STOP=1", self.database]
        for name, value in variables.items():
            command += ["-v", f"{name}={value}"]
        result = subprocess.run(command, input=sql, capture_output=True, text=True, timeout=WAIT)
        if result.returncode != 0:
            raise CheckFailed(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def page_state(self):
        return self.evaluate("""(() => ({
            title: document.title,
            h1: (document.querySelector('h1') || {}).textContent || '',
            current: [...document.querySelectorAll('header nav a[aria-current=page]')].map(a => a.textContent),
            notice: (document.querySelector('main .notice') || {}).textContent || '',
            state: (document.querySelector('.title-row .pill') || {}).textContent || '',
            bodyScripts: document.body.querySelectorAll('script').length,
        }))()""")

    def done(self, text, shot):
        print(f"  ok  {self.step}: {text} -> {shot}", flush=True)

    # -- the steps --

    def run(self):
        print(f"==> {self.browser.start()} over --remote-debugging-pipe", flush=True)
        self.browser.open_page()

        self.step = "1 log in"
        self.go("/dashboard", status=401)
        login = self.evaluate("""(() => {
            const form = document.querySelector('form[action="/dashboard/login"]');
            return form && { next: form.elements.next.value, field: !!form.elements.token };
        })()""")
        if not login or not login["field"]:
            raise CheckFailed("/dashboard without a session shows no login form")
        if login["next"] != "/dashboard":
            raise CheckFailed(f"the login form would go to {login['next']!r} afterwards, not /dashboard")
        shot = self.screenshot("login")
        print(f"  ok  {self.step}: /dashboard answered 401 with the login form -> {shot}", flush=True)
        self.evaluate("document.querySelector('form[action=\"/dashboard/login\"] input[name=token]').focus()")
        self.browser.page("Input.insertText", {"text": self.token})
        typed = self.evaluate("document.querySelector('input[name=token]').value.length")
        if typed != len(self.token):
            raise CheckFailed(f"typed {len(self.token)} characters into the token field, it holds {typed}")
        self.submit('form[action="/dashboard/login"]', "/dashboard")
        state = self.page_state()
        if state["h1"] == "detectq" or state["current"] != ["Overview"]:
            raise CheckFailed(f"after logging in the page is {state['title']!r} (current: {state['current']}), not the overview")
        cookies = self.browser.page("Network.getCookies", {"urls": [self.base + "/dashboard"]})["cookies"]
        session = [cookie for cookie in cookies if cookie["name"] == "detectq_dashboard"]
        if not session or not session[0]["httpOnly"] or session[0]["sameSite"] != "Strict":
            raise CheckFailed(f"no HttpOnly, SameSite=Strict session cookie after logging in: {[c['name'] for c in cookies]}")
        self.done("logged in through the form; the overview shows, with an HttpOnly SameSite=Strict session cookie", self.screenshot("overview"))

        self.step = "2 request list"
        self.click('header nav a[href="/dashboard/requests"]', "/dashboard/requests")
        rows = self.evaluate("document.querySelectorAll('table.requests tbody tr').length")
        if not rows:
            raise CheckFailed("the request list shows no row")
        self.done(f"followed the Requests link: {rows} rows", self.screenshot("requests"))
        if not self.evaluate("""(() => {
            const select = document.querySelector('form.filters select[name=state]');
            if (!select || ![...select.options].some(o => o.value === 'failed')) return false;
            select.value = 'failed';
            select.dispatchEvent(new Event('change', { bubbles: true }));
            return true;
        })()"""):
            raise CheckFailed("the filter form has no state select with a failed option")
        self.submit("form.filters", "/dashboard/requests", query={"state": "failed"})
        listed = self.evaluate("""[...document.querySelectorAll('table.requests tbody tr')].map(tr => ({
            id: tr.querySelector('td a').textContent.trim(),
            href: tr.querySelector('td a').getAttribute('href'),
            state: tr.querySelector('.pill').textContent.trim(),
            metadata: tr.querySelector('td.metadata').textContent,
        }))""")
        if not listed:
            raise CheckFailed("filtering on state=failed lists no row (the database has failed requests)")
        others = [row for row in listed if row["state"] != "failed"]
        if others:
            raise CheckFailed(f"filtering on state=failed lists {len(others)} rows in other states: {[(r['id'], r['state']) for r in others][:5]}")
        expected = self.psql("SELECT id FROM detectq.requests WHERE state = 'failed' ORDER BY created_at DESC, id DESC LIMIT 50").split()
        if [row["id"] for row in listed] != expected:
            raise CheckFailed(f"the failed rows listed, {[r['id'] for r in listed]}, are not the database's, {expected}")
        hostile = [row for row in listed if '<script>alert(' in row["metadata"]]
        if not hostile:
            raise CheckFailed("no failed row shows the metadata with <script> as text")
        if self.page_state()["bodyScripts"]:
            raise CheckFailed("the page body holds a <script> element: the metadata was not escaped")
        self.done(f"filtered on state=failed: {len(listed)} rows, all failed, as psql lists them; request {hostile[0]['id']}'s <script> metadata shows as text", self.screenshot("requests-failed"))

        self.step = "3 request page"
        request = hostile[0]["id"]
        self.click(f'table.requests tbody a[href="/dashboard/requests/{request}"]', f"/dashboard/requests/{request}")
        state = self.page_state()
        if state["h1"] != f"Request {request}" or state["state"] != "failed":
            raise CheckFailed(f"the request page reads {state['h1']!r} in state {state['state']!r}, not Request {request}, failed")
        if '<script>alert(' not in self.evaluate("(document.querySelector('#submission pre.json') || {}).textContent || ''") or state["bodyScripts"]:
            raise CheckFailed("the request page does not show the <script> metadata as text")
        self.done(f"followed request {request}'s link: failed, its metadata as text", self.screenshot(f"request-{request}-failed"))

        self.step = "4 retry"
        form = f'form[action="/dashboard/requests/{request}/retry"]'
        retry = self.evaluate(f"""(() => {{
            const form = document.querySelector({json.dumps(form)});
            return form && {{ csrf: (form.elements.csrf || {{}}).value || '', confirm: form.getAttribute('data-confirm') }};
        }})()""")
        if not retry:
            raise CheckFailed("the failed request's page has no retry form")
        if len(retry["csrf"]) < 32:
            raise CheckFailed("the retry form carries no CSRF token")
        self.expected_confirm = retry["confirm"]
        self.submit(form, f"/dashboard/requests/{request}", query={"notice": "retried"})
        if self.expected_confirm is not None:
            raise CheckFailed(f"the form asks {retry['confirm']!r} first, but no confirm() came")
        state = self.page_state()
        if state["state"] != "queued" or "queued again" not in state["notice"]:
            raise CheckFailed(f"after the retry the page shows state {state['state']!r} and notice {state['notice']!r}")
        stored = self.psql(f"SELECT state FROM detectq.requests WHERE id = {int(request)}")
        if stored != "queued":
            raise CheckFailed(f"after the retry the database holds request {request} as {stored!r}")
        asked = f"; accepted its confirm {retry['confirm']!r}" if retry["confirm"] else " (the form asks no confirm)"
        self.done(f"submitted the retry form with its CSRF token{asked}: the page and psql say queued", self.screenshot(f"request-{request}-retried"))

        self.step = "5 other pages"
        ids = {
            name: self.psql(f"SELECT id FROM detectq.requests WHERE {condition} ORDER BY id LIMIT 1")
            for name, condition in (
                ("fake-video", "is_fake AND media_type = 'video' AND intelligence"),
                ("fake-audio", "is_fake AND media_type = 'audio' AND zero_retention_mode"),
            )
        }
        self.go("/dashboard/requests?verdict=fake&media_type=video", query={"verdict": "fake", "media_type": "video"})
        shot = self.screenshot("requests-fake-video")
        print(f"  ok  {self.step}: the fake videos' list -> {shot}", flush=True)
        for name, request_id in ids.items():
            if not request_id:
                raise CheckFailed(f"the demo made no {name} request to show")
            self.go(f"/dashboard/requests/{request_id}")
            if self.page_state()["h1"] != f"Request {request_id}":
                raise CheckFailed(f"request {request_id}'s page does not show it")
            shot = self.screenshot(f"request-{request_id}-{name}")
            print(f"  ok  {self.step}: request {request_id} ({name}) -> {shot}", flush=True)

        self.step = "6 failure group retry"
        self.click('header nav a[href="/dashboard/failures"]', "/dashboard/failures")
        group = self.evaluate("""(() => {
            const form = document.querySelector('form[action="/dashboard/failures/retry"]');
            return form && { reason: form.elements.reason.value, confirm: form.getAttribute('data-confirm'), csrf: form.elements.csrf.value };
        })()""")
        if not group:
            raise CheckFailed("the failures page offers no group to retry")
        shot = self.screenshot("failures")
        print(f"  ok  {self.step}: followed the Failures link -> {shot}", flush=True)
        count = int(self.psql("SELECT count(*) FROM detectq.requests WHERE state = 'failed' AND error_message = :'reason'", reason=group["reason"]))
        if not group["confirm"]:
            raise CheckFailed("the group's retry form asks no confirm()")
        self.expected_confirm = group["confirm"]
        self.submit('form[action="/dashboard/failures/retry"]', "/dashboard/failures", query={"notice": "retried", "count": str(count)})
        if self.expected_confirm is not None:
            raise CheckFailed(f"the form asks {group['confirm']!r} first, but no confirm() came")
        notice = self.page_state()["notice"]
        if notice != f"Retried {count} failed request(s); they are queued again.":
            raise CheckFailed(f"after the group retry the notice reads {notice!r}")
        left = int(self.psql("SELECT count(*) FROM detectq.requests WHERE state = 'failed' AND error_message = :'reason'", reason=group["reason"]))
        if left:
            raise CheckFailed(f"{left} requests of the group are still failed in the database")
        self.done(f"accepted the confirm {group['confirm']!r}: the group's {count} failed request(s) queued again, as psql says", self.screenshot("failures-retried"))

        self.step = "7 queues"
        self.click('header nav a[href="/dashboard/queues"]', "/dashboard/queues")
        shown = self.evaluate("""[...document.querySelectorAll('article.queue')].map(a => ({
            name: a.querySelector('h2').textContent.trim(),
            status: a.querySelector('.title-row .pill').textContent.trim(),
            chart: !!a.querySelector('figure svg.chart'),
        }))""")
        expected = self.psql("SELECT name FROM detectq.queues ORDER BY name").split()
        if [queue["name"] for queue in shown] != expected:
            raise CheckFailed(f"the Queues page lists {[q['name'] for q in shown]}, the database {expected}")
        if not {"demo-backfill", "demo-live"} <= set(expected):
            raise CheckFailed(f"the demo's two lanes are not among the queues: {expected}")
        if not all(queue["chart"] for queue in shown):
            raise CheckFailed("a queue has no chart of its claims per minute")
        claims = self.evaluate("""[...document.querySelectorAll('#queue-demo-live .queue-figures tr')]
            .filter(tr => tr.textContent.includes('Claimed, last hour')).map(tr => tr.querySelectorAll('td')[1].textContent.trim())[0]""")
        counted = self.psql("SELECT coalesce(sum(n), 0) FROM detectq.queue_claims WHERE queue = 'demo-live' AND minute >= date_trunc('minute', now()) - interval '59 minutes'")
        if claims != counted or counted == "0":
            raise CheckFailed(f"demo-live shows {claims!r} claims in the last hour, the database counts {counted}")
        self.done(f"followed the Queues link: {', '.join(expected)}, each with its chart; demo-live claimed {claims}, as psql counts", self.screenshot("queues"))

        form = 'form[action="/dashboard/queues/pause"]:has(input[name=name][value="demo-backfill"])'
        confirm = self.evaluate(f"""(() => {{
            const form = document.querySelector({json.dumps(form)});
            if (!form) return null;
            form.elements.reason.focus();
            return form.getAttribute('data-confirm');
        }})()""")
        if not confirm:
            raise CheckFailed("demo-backfill has no pause form asking a confirm()")
        self.browser.page("Input.insertText", {"text": "browser check <pause>"})
        self.expected_confirm = confirm
        self.submit(form, "/dashboard/queues", query={"notice": "queue-paused", "queue": "demo-backfill"})
        if self.expected_confirm is not None:
            raise CheckFailed(f"the pause form asks {confirm!r} first, but no confirm() came")
        stored = self.psql("SELECT pause_reason FROM detectq.queues WHERE name = 'demo-backfill' AND paused_at IS NOT NULL")
        if stored != "browser check <pause>":
            raise CheckFailed(f"after the pause the database holds demo-backfill's pause reason as {stored!r}")
        status = self.evaluate("document.querySelector('#queue-demo-backfill .title-row .pill').textContent.trim()")
        if status != "paused" or "Queue demo-backfill is paused" not in self.page_state()["notice"]:
            raise CheckFailed(f"after the pause demo-backfill shows {status!r} and notice {self.page_state()['notice']!r}")
        self.done(f"typed a reason and accepted the confirm {confirm!r}: demo-backfill paused, with that reason in psql", self.screenshot("queues-paused"))

        form = 'form[action="/dashboard/queues/resume"]:has(input[name=name][value="demo-backfill"])'
        self.expected_confirm = self.evaluate(f"(document.querySelector({json.dumps(form)}) || {{ getAttribute: () => null }}).getAttribute('data-confirm')")
        if not self.expected_confirm:
            raise CheckFailed("the paused demo-backfill offers no resume form asking a confirm()")
        self.submit(form, "/dashboard/queues", query={"notice": "queue-resumed", "queue": "demo-backfill"})
        if self.psql("SELECT paused_at IS NULL FROM detectq.queues WHERE name = 'demo-backfill'") != "t":
            raise CheckFailed("after the resume demo-backfill is still paused in the database")

        form = 'form.settings:has(input[name=name][value="demo-live"])'
        if not self.evaluate(f"""(() => {{
            const form = document.querySelector({json.dumps(form)});
            if (!form) return false;
            form.elements.max_in_flight.value = '3';
            form.elements.rate_limit.value = '2.5';
            form.elements.rate_limit.focus();  // the auto-refresh leaves a page alone while a form has the focus
            return true;
        }})()"""):
            raise CheckFailed("demo-live has no settings form")
        self.submit(form, "/dashboard/queues", query={"notice": "queue-set", "queue": "demo-live"})
        stored = self.psql("SELECT weight || ' ' || max_in_flight || ' ' || rate_limit || ' ' || (group_max_in_flight IS NULL) FROM detectq.queues WHERE name = 'demo-live'")
        if stored != "4 3 2.5 true":
            raise CheckFailed(f"after saving demo-live's settings the database holds weight, max_in_flight, rate_limit, no group cap as {stored!r}")
        self.done("resumed demo-backfill; saved demo-live's max_in_flight 3 and rate 2.5/s through its form, as psql reads them", self.screenshot("queues-set"))

        self.step = "8 request list by queue"
        self.click('header nav a[href="/dashboard/requests"]', "/dashboard/requests")
        if not self.evaluate("""(() => {
            const select = document.querySelector('form.filters select[name=queue]');
            if (!select || ![...select.options].some(o => o.value === 'demo-live')) return false;
            select.value = 'demo-live';
            return true;
        })()"""):
            raise CheckFailed("the filter form has no queue select with demo-live")
        self.submit("form.filters", "/dashboard/requests", query={"queue": "demo-live"})
        listed = self.evaluate("[...document.querySelectorAll('table.requests tbody tr')].map(tr => tr.querySelector('td a').textContent.trim())")
        expected = self.psql("SELECT id FROM detectq.requests WHERE queue = 'demo-live' ORDER BY created_at DESC, id DESC LIMIT 50").split()
        if not listed or listed != expected:
            raise CheckFailed(f"filtering on queue=demo-live lists {listed}, the database {expected}")
        self.done(f"filtered on queue=demo-live: {len(listed)} rows, as psql lists them", self.screenshot("requests-demo-live"))

        # Whatever the last page logs while it settles is still checked: one more round trip through it.
        self.step = "9 end"
        self.evaluate("document.readyState")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the dashboard, e.g. http://127.0.0.1:8080")
    parser.add_argument("--browser", required=True, help="the Chromium executable")
    parser.add_argument("--screenshots", required=True, help="the folder for the screenshots and Chromium's log")
    parser.add_argument("--workdir", required=True, help="a temporary folder for the profile and the browser's pgid file")
    arguments = parser.parse_args()
    os.makedirs(arguments.screenshots, exist_ok=True)
    # A TERM (from timeout(1) or the wrapper) still ends through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    check = Check(arguments)
    started = time.monotonic()
    try:
        check.run()
    except CheckFailed as failure:
        print(f"FAILED at step '{check.step}': {failure}", file=sys.stderr, flush=True)
        _tail(check.browser.log_path)
        return 1
    except Exception:
        traceback.print_exc()
        print(f"FAILED at step '{check.step}': the driver itself broke (above)", file=sys.stderr, flush=True)
        return 1
    finally:
        check.browser.stop()
    for note in check.notes:
        print(f"  note: {note}")
    print(f"==> the dashboard passed the browser check in {time.monotonic() - started:.1f} s; screenshots in {arguments.screenshots}", flush=True)
    return 0


def _tail(path, lines=20):
    try:
        with open(path, errors="replace") as file:
            # Chromium's complaints about the missing D-Bus are noise on a server; the rest is kept.
            text = [line for line in file.read().splitlines() if "dbus/" not in line][-lines:]
    except OSError:
        return
    if text:
        print(f"--- the last lines of {path}:", file=sys.stderr)
        print("\n".join(text), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
