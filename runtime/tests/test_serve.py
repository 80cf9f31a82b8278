"""edgeport-run serve through Starlette's TestClient: every endpoint, every class of bad request, the token.

Expected outputs come from the fixture's oracle files (LiteRT's own invoke on the build machine), never from the
service itself.
"""
import io
import json

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from edgeport_runtime.serve.app import Options, create_app


@pytest.fixture
def oracle(bundle):
    return np.load(bundle / "check_inputs.npy"), np.load(bundle / "oracle_tflite-int8.npy")


@pytest.fixture
def client(bundle):
    with TestClient(create_app(str(bundle))) as c:
        yield c


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _error_line(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err and "\n" not in err
    return err


def test_health_answers_ok_with_the_check_passing(client):
    r = client.get("/health")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["status"] == "ok" and d["artifact"] == "tflite-int8" and d["backend"] == "litert"
    assert d["samples"] == 8 and d["max_abs_diff"] == 0.0


def test_predict_json_batch_matches_oracle(client, oracle):
    x, want = oracle
    r = client.post("/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    d = r.json()
    np.testing.assert_array_equal(np.asarray(d["outputs"], np.float32), want)
    assert [row["top"][0]["class"] for row in d["results"]] == list(want.argmax(1))
    assert d["time_ms"]["total"] > 0 and d["time_ms"]["model_ms"] > 0 and d["time_ms"]["batch"] >= len(x)


def test_predict_single_sample_without_batch_dim(client, oracle):
    x, want = oracle
    r = client.post("/predict", json=x[3].tolist())  # a bare array, one sample of shape (8, 8, 1)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.asarray(r.json()["outputs"], np.float32), want[3:4])


def test_predict_npy_body_matches_oracle(client, oracle):
    x, want = oracle
    r = client.post("/predict", content=_npy(x), headers={"Content-Type": "application/x-npy"})
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.asarray(r.json()["outputs"], np.float32), want)


def test_predict_npy_in_npy_out(client, oracle):
    x, want = oracle
    r = client.post("/predict", content=_npy(x), headers={"Content-Type": "application/x-npy",
                                                          "Accept": "application/x-npy"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy", r.text
    np.testing.assert_array_equal(np.load(io.BytesIO(r.content), allow_pickle=False), want)
    assert float(r.headers["x-time-ms"]) > 0 and int(r.headers["x-batch"]) >= len(x)


def test_predict_raw_values_apply_the_bundle_preprocessing(client, oracle):
    x, want = oracle
    raw = (x[:2] * 16).reshape(2, -1)  # digits pixels 0..16, flat rows: what a CSV row holds
    r = client.post("/predict", json={"inputs": raw.tolist(), "raw": True})
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.asarray(r.json()["outputs"], np.float32), want[:2])


def test_predict_flat_sample_is_shaped_like_the_input(client, oracle):
    x, want = oracle
    r = client.post("/predict", json={"inputs": x[5].reshape(-1).tolist()})
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.asarray(r.json()["outputs"], np.float32), want[5:6])


def test_predict_image_upload_gives_the_oracle_class(client, oracle):
    from PIL import Image

    x, want = oracle
    buf = io.BytesIO()
    # digits were 0..16 per pixel; an 8-bit image is mapped onto that range, then scaled by 1/16
    Image.fromarray((x[0, :, :, 0] * 255).round().astype(np.uint8)).save(buf, format="PNG")
    r = client.post("/predict", content=buf.getvalue(), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["top"][0]["class"] == int(want[0].argmax())


def test_predict_top_k_sorted_with_manifest_labels(client, oracle, bundle):
    x, want = oracle
    labels = json.loads((bundle / "manifest.json").read_text())["labels"]
    r = client.post("/predict?top=5", json={"inputs": x[:1].tolist()})
    top = r.json()["results"][0]["top"]
    assert [t["class"] for t in top][:1] == [int(want[0].argmax())] and len(top) == 5
    assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
    assert [t["label"] for t in top] == [labels[t["class"]] for t in top]
    r = client.post("/predict", json={"inputs": x[:1].tolist(), "top": 2})
    assert len(r.json()["results"][0]["top"]) == 2


def _deep(n):
    return "[" * n + "]" * n


BAD = [
    # (id, body, content type, status, words in the error)
    ("wrong-shape", json.dumps({"inputs": [[1.0, 2.0, 3.0]]}), "application/json", 400, "expected shape"),
    ("wrong-rank", json.dumps({"inputs": [[[[[0.5]]]]]}), "application/json", 400, "expected shape"),
    ("strings", json.dumps({"inputs": [["a"] * 64]}), "application/json", 400, "expected numbers"),
    ("booleans", json.dumps({"inputs": [True] * 64}), "application/json", 400, "true/false"),
    ("nulls", json.dumps({"inputs": [None] * 64}), "application/json", 400, "expected numbers"),
    ("ragged", json.dumps({"inputs": [[1.0, 2.0], [1.0]]}), "application/json", 400, "not a rectangular array"),
    ("nan", json.dumps({"inputs": [float("nan")] + [0.0] * 63}), "application/json", 400, "NaN/Inf"),
    ("beyond-float32", json.dumps({"inputs": [1e39] + [0.0] * 63}), "application/json", 400, "NaN/Inf"),
    ("not-json", "{inputs: oops", "application/json", 400, "not valid JSON"),
    ("deep-nesting", _deep(100000), "application/json", 400, "nested too deeply"),
    ("unknown-key", json.dumps({"inputs": [0.0] * 64, "imputs": 1}), "application/json", 400, "unknown JSON key"),
    ("no-inputs", json.dumps({"raw": True}), "application/json", 400, 'no "inputs"'),
    ("scalar", json.dumps({"inputs": 3}), "application/json", 400, "must be an array"),
    ("empty-array", json.dumps({"inputs": []}), "application/json", 400, "empty"),
    ("raw-not-bool", json.dumps({"inputs": [0.0] * 64, "raw": "yes"}), "application/json", 400, "true or false"),
    ("raw-wrong-count", json.dumps({"inputs": [0.0] * 63, "raw": True}), "application/json", 400, "takes 64"),
    ("top-zero", json.dumps({"inputs": [0.0] * 64, "top": 0}), "application/json", 400, "top must be"),
    ("empty-body", "", "application/json", 400, "empty body"),
    ("npy-garbage", "\x93NUMPY garbage", "application/x-npy", 400, "cannot read the body as .npy"),
    ("npy-no-magic", "hello", "application/x-npy", 400, "not a .npy file"),
    ("image-garbage", "not a png", "image/png", 400, "cannot read the image"),
    ("text", "1 2 3", "text/plain", 415, "is not taken"),
    ("multipart", "--x\r\n", "multipart/form-data; boundary=x", 415, "--data-binary"),
]


@pytest.mark.parametrize("body, ctype, status, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_request_gets_4xx_one_line_json(client, body, ctype, status, words):
    r = client.post("/predict", content=body.encode("latin-1"), headers={"Content-Type": ctype})
    assert words in _error_line(r, status)


def test_npy_of_strings_is_refused(client):
    r = client.post("/predict", content=_npy(np.array([["a"] * 64])), headers={"Content-Type": "application/x-npy"})
    assert "expected real numbers" in _error_line(r, 400)


def test_unknown_route_and_method_get_json_errors(client):
    assert "no route GET /nope" in _error_line(client.get("/nope"), 404)
    assert "not allowed" in _error_line(client.get("/predict"), 405)


def test_oversize_body_is_refused_by_length_and_by_stream(bundle):
    with TestClient(create_app(str(bundle), options=Options(max_body_bytes=1000))) as c:
        big = json.dumps({"inputs": [0.0] * 600})  # ~3 KB
        assert "at most 1,000" in _error_line(c.post("/predict", content=big,
                                                     headers={"Content-Type": "application/json"}), 413)

        def chunks():  # no Content-Length: the cap must hold while the body streams in
            for _ in range(10):
                yield b"[" + b"0.0," * 50

        assert "passed 1,000 bytes" in _error_line(c.post("/predict", content=chunks(),
                                                          headers={"Content-Type": "application/json"}), 413)
        assert c.get("/health").status_code == 200


def test_service_keeps_answering_after_every_bad_request(client, oracle):
    x, want = oracle
    for _, body, ctype, status, _ in BAD:
        assert client.post("/predict", content=body.encode("latin-1"), headers={"Content-Type": ctype}
                           ).status_code == status
    r = client.post("/predict", json={"inputs": x.tolist()})
    np.testing.assert_array_equal(np.asarray(r.json()["outputs"], np.float32), want)
    assert client.get("/health").status_code == 200


def test_token_is_required_except_on_health_and_page(bundle, oracle):
    x, want = oracle
    with TestClient(create_app(str(bundle), options=Options(token="s3cret-token"))) as c:
        assert "bearer token" in _error_line(c.post("/predict", json=x[0].tolist()), 401)
        assert c.post("/predict", json=x[0].tolist(), headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/metrics").status_code == 401 and c.get("/info").status_code == 401
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200
        ok = {"Authorization": "Bearer s3cret-token"}
        r = c.post("/predict", json=x[0].tolist(), headers=ok)
        np.testing.assert_array_equal(np.asarray(r.json()["outputs"], np.float32), want[:1])
        assert c.get("/metrics", headers=ok).status_code == 200


def test_info_describes_model_and_service(client, bundle):
    d = client.get("/info").json()
    man = json.loads((bundle / "manifest.json").read_text())
    assert d["inputs"][0]["shape"] == [None, 8, 8, 1] and d["labels"] == man["labels"]
    assert d["artifact"] == "tflite-int8" and {a["name"] for a in d["artifacts"]} == {a["name"] for a in
                                                                                       man["artifacts"]}
    assert d["service"]["max_body_bytes"] == 8 << 20 and d["service"]["micro_batching"] is True


def test_metrics_count_requests_by_status_and_describe_the_model(client, oracle):
    x, _ = oracle
    client.post("/predict", json={"inputs": x.tolist()})
    client.post("/predict", json={"inputs": "nope"})
    client.get("/nope")
    fams = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    counts = {(s.labels["route"], s.labels["status"]): s.value for s in fams["edgeport_requests"].samples
              if s.name == "edgeport_requests_total"}
    assert counts[("/predict", "200")] == 1 and counts[("/predict", "400")] == 1 and counts[("other", "404")] == 1
    lat = {s.labels.get("route"): s.value for s in fams["edgeport_request_duration_seconds"].samples
           if s.name.endswith("_count")}
    assert lat["/predict"] == 2
    assert fams["edgeport_model_load_seconds"].samples[0].value > 0
    info = fams["edgeport_model_info"].samples[0].labels
    assert info["artifact"] == "tflite-int8" and info["backend"] == "litert"
    batches = [s for s in fams["edgeport_batch_samples"].samples if s.name.endswith("_sum")]
    assert batches[0].value == len(x)


def test_page_has_the_upload_and_result_elements(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for element in ('id="file"', 'id="drop"', 'id="numbers"', 'id="topk"', 'id="latency"'):
        assert element in r.text


def test_mutated_bodies_never_get_a_server_error(client, oracle):
    """300 seeded mutations of valid JSON, .npy and PNG bodies: each gets 200 or a 4xx one-line error, never a 5xx."""
    from PIL import Image

    x, want = oracle
    rng = np.random.default_rng(7)
    png = io.BytesIO()
    Image.fromarray((x[0, :, :, 0] * 255).astype(np.uint8)).save(png, format="PNG")
    seeds = [(json.dumps({"inputs": x[:2].tolist()}).encode(), "application/json"),
             (_npy(x[:2]), "application/x-npy"), (png.getvalue(), "image/png")]
    for i in range(300):
        body, ctype = seeds[i % 3]
        b = bytearray(body)
        for _ in range(int(rng.integers(1, 8))):
            op = rng.integers(3)
            pos = int(rng.integers(len(b))) if b else 0
            if op == 0 and b:
                b[pos] = int(rng.integers(256))
            elif op == 1:
                del b[pos:pos + int(rng.integers(1, 64))]
            else:
                b[pos:pos] = bytes(rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8))
        r = client.post("/predict", content=bytes(b), headers={"Content-Type": ctype})
        assert r.status_code == 200 or 400 <= r.status_code < 500, (i, r.status_code, r.text[:200])
        if r.status_code != 200:
            assert "\n" not in r.json()["error"]
    r = client.post("/predict", json={"inputs": x.tolist()})
    np.testing.assert_array_equal(np.asarray(r.json()["outputs"], np.float32), want)
