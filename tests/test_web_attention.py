"""The web app's attention tab (``serve --attention-model``) on a tiny random Stable Diffusion
folder: the availability flag, one job end to end, the one-line 400s and an app without a
model."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("transformers")

from test_attention import RES, build_tiny_sd  # noqa: E402
from web_helpers import get, post, running, wait  # noqa: E402

from segrefine.attention import load_attention_model  # noqa: E402
from segrefine.web import create_app  # noqa: E402


@pytest.fixture(scope="module")
def attention_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("web_attention")
    model = load_attention_model(build_tiny_sd(root / "sd"), device="cpu", resolution=RES)
    app = create_app(root / "runs", device="cpu", attention_model=model)
    with running(app) as base:
        yield base


def test_flag_and_a_job_end_to_end(attention_server):
    runs = json.loads(get(f"{attention_server}/api/runs")[1])
    assert runs["attention"] is True
    status = json.loads(get(f"{attention_server}/api/attention")[1])
    assert status["available"] is True and status["model"] == "sd"
    code, body = post(
        f"{attention_server}/api/attention",
        {"example": "0", "classes": " horse , sky", "threshold": "0.4"},
    )
    assert code == 200, body
    done = wait(attention_server, body["job"])
    assert done["state"] == "done", done
    assert done["info"]["classes"] == ["background", "horse", "sky"]
    assert done["info"]["width"] == done["info"]["height"] == 128
    assert done["timings"]["attention_s"] > 0
    assert {"input.png", "attention.png", "attention_labels.png",
            "attention_probs.npy"} <= done["files"].keys()  # fmt: skip
    code, data = get(attention_server + done["files"]["attention_labels.png"])
    labels = Image.open(io.BytesIO(data))
    assert code == 200 and labels.mode == "P" and labels.size == (128, 128)
    assert int(np.asarray(labels).max()) <= 2
    code, data = get(attention_server + done["files"]["attention_probs.npy"])
    assert code == 200 and np.load(io.BytesIO(data)).shape == (3, 128, 128)


@pytest.mark.parametrize(
    "fields, says",
    [
        ({"classes": ""}, "give the classes"),
        ({"classes": " , "}, "give the classes"),
        ({"classes": ",".join(f"c{k}" for k in range(21))}, "at most 20"),
        (
            {"classes": ",".join(f"spotted{k} zebra{k} foal{k}" for k in range(20))},
            "longer than the text encoder's limit",
        ),
        ({"classes": "a" * 41}, "over 40 characters"),
        ({"classes": "horse,,sky"}, "empty class name"),
        ({"classes": "horse,Horse"}, "more than once"),
        ({"classes": "horse", "threshold": "1.5"}, "threshold must be between"),
        ({"classes": "horse", "threshold": "nan"}, "threshold must be between"),
        ({"classes": "horse", "threshold": "high"}, "threshold must be a number"),
    ],
)
def test_bad_fields_are_one_line_400s(attention_server, fields, says):
    code, body = post(f"{attention_server}/api/attention", {"example": "0", **fields})
    assert code == 400 and says in body["error"] and "\n" not in body["error"], body


def test_no_image_is_a_400(attention_server):
    code, body = post(f"{attention_server}/api/attention", {"classes": "horse"})
    assert code == 400 and "choose an image" in body["error"]


def test_an_app_without_a_model_has_no_tab(tmp_path):
    with running(create_app(tmp_path / "runs", device="cpu")) as base:
        assert json.loads(get(f"{base}/api/runs")[1])["attention"] is False
        assert json.loads(get(f"{base}/api/attention")[1])["available"] is False
        code, body = post(f"{base}/api/attention", {"example": "0", "classes": "horse"})
        assert code == 404 and "--attention-model" in body["error"]


def test_serve_loads_the_model_once_or_stops_in_one_line(run_cli, tmp_path, monkeypatch):
    import segrefine.web

    served = []
    monkeypatch.setattr(segrefine.web, "serve", lambda *a, **k: served.append(a))
    code, _, err = run_cli("serve", "--runs", tmp_path, "--device", "cpu",
                           "--attention-model", tmp_path / "missing")  # fmt: skip
    errors = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and not served and len(errors) == 1, err
    assert errors[0].startswith("segrefine: error:") and "no such model folder" in errors[0]
    sd = build_tiny_sd(tmp_path / "sd")
    code, _, err = run_cli("serve", "--runs", tmp_path, "--device", "cpu",
                           "--attention-model", sd)  # fmt: skip
    assert code == 0 and len(served) == 1, err
    assert served[0][8].path == sd  # the loaded model, handed to the app
