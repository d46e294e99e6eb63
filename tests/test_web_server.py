"""One worker, held for bounded time: the form's limits are the page's, a job's owner can
cancel it (waiting or running), a job past ``--job-timeout`` ends with an error; and ``serve``
refuses a port it cannot have in one line, before announcing itself."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from web_helpers import raw_request, running

from segrefine.web import create_app
from segrefine.web.app import LIMITS
from segrefine.web.jobs import JobQueue

STATIC = Path(__file__).resolve().parents[1] / "src" / "segrefine" / "web" / "static"


def _until(predicate, seconds: float = 10.0) -> None:
    deadline = time.time() + seconds
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def _endless_network(started: threading.Event | None = None, progress=None):
    """A job that evaluates a network until something stops it, as a refiner's samples do."""
    net = torch.nn.Linear(4, 4)
    progress("working", 0.1)
    if started is not None:
        started.set()
    with torch.no_grad():
        while True:
            net(torch.zeros(1, 4))


def test_the_forms_limits_are_what_the_page_offers():
    page = (STATIC / "index.html").read_text()
    for field, key in (("steps", "steps"), ("samples", "samples"), ("strength", "strength"),
                       ("min-labels", "min_labels"), ("max-iter", "max_iter")):  # fmt: skip
        tag = re.search(rf'<input type="number" id="{field}"[^>]*>', page).group(0)
        lo, hi = (float(re.search(rf'{a}="([^"]+)"', tag).group(1)) for a in ("min", "max"))
        assert (lo, hi) == LIMITS[key], field
    assert LIMITS["steps"][1] * LIMITS["samples"][1] <= 1000  # 1000 x 32 held it for 105 s


def test_a_waiting_job_is_cancelled_at_once_and_never_runs():
    queue = JobQueue()
    gate, ran = threading.Event(), []
    first = queue.submit("t", "a", lambda progress: gate.wait(10))
    second = queue.submit("t", "b", lambda progress: ran.append(1))
    assert queue.cancel(second.id).state == "cancelled" and second.call is None  # input freed
    gate.set()
    _until(lambda: first.state == "done")
    time.sleep(0.1)
    assert not ran and second.state == "cancelled" and queue.cancel("nope") is None
    queue.shutdown()


def test_a_running_job_stops_at_its_next_network_evaluation_and_the_worker_goes_on():
    queue = JobQueue()
    started = threading.Event()
    job = queue.submit("t", "a", _endless_network, started)
    assert started.wait(10)
    queue.cancel(job.id)
    _until(lambda: job.state == "cancelled")
    after = queue.submit("t", "b", lambda progress: torch.nn.Linear(2, 2)(torch.zeros(1, 2)))
    _until(lambda: after.state == "done")  # the hook went with the cancelled job
    queue.shutdown()


def test_a_job_over_its_time_budget_ends_with_an_error_saying_so():
    queue = JobQueue(timeout=0.3)
    job = queue.submit("t", "a", _endless_network, None)
    _until(lambda: job.state == "error")
    assert job.error.startswith("took longer than 0.3 s") and "--job-timeout" in job.error
    assert job.finished - job.started < 5
    queue.shutdown()


def test_only_the_jobs_owner_on_this_site_can_cancel_it_over_http(tmp_path):
    app = create_app(tmp_path, job_timeout=60)
    queue = app.app.state.queue
    gate = threading.Event()
    running_job = queue.submit("t", "a", lambda progress: gate.wait(20))
    waiting = queue.submit("t", "b", lambda progress: None)
    with running(app) as url:
        port = url.rsplit(":", 1)[1]
        mine = {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"}
        path = f"/api/jobs/{waiting.id}"
        code, _, body = raw_request(url, "DELETE", path, {**mine, "Origin": "http://evil.example"})
        assert code == 403 and waiting.state == "queued"  # another site's page: refused
        code, _, body = raw_request(url, "DELETE", path, mine)
        assert code == 200 and json.loads(body)["state"] == "cancelled"
        code, _, body = raw_request(url, "DELETE", "/api/jobs/not-a-job", mine)
        assert code == 404 and "no such job" in json.loads(body)["error"]
        gate.set()
        _until(lambda: running_job.state == "done")
        code, _, body = raw_request(url, "DELETE", f"/api/jobs/{running_job.id}", mine)
        assert code == 409 and "already ended" in json.loads(body)["error"]


@pytest.mark.parametrize("field, value", [("steps", "51"), ("samples", "17"), ("steps", "1000")])
def test_settings_past_the_pages_limits_are_refused(tmp_path, field, value):
    from web_helpers import post

    with running(create_app(tmp_path)) as url:
        code, body = post(f"{url}/api/segment", {"segmenter": "zoo:weizmann-horse",
                                                 "example": "0", field: value})  # fmt: skip
    assert code == 400 and f"{field} must be between" in body["error"]


def test_serve_refuses_a_port_out_of_range_in_one_line(run_cli):
    code, out, err = run_cli("serve", "--port", "70000", "--device", "cpu", "-q")
    assert code == 2 and out == "" and err.strip().count("\n") == 0
    assert err.startswith("segrefine: error: --port must be in 0..65535, got 70000")


def test_serve_says_a_port_is_in_use_without_announcing_itself(run_cli, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, out, err = run_cli("serve", "--port", port, "--runs", tmp_path, "--device", "cpu",
                                 "-q")  # fmt: skip
    assert code == 2 and "web app on" not in out, out
    assert err.strip() == f"segrefine: error: port {port} on 127.0.0.1 is in use (another " \
        "server, or an earlier segrefine serve?)"  # fmt: skip


def test_serve_refuses_a_job_timeout_out_of_range(run_cli):
    code, _, err = run_cli("serve", "--job-timeout", "0", "--device", "cpu", "-q")
    assert code == 2 and "--job-timeout must be in 1..86400" in err
