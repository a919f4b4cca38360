"""`falip serve` in a real headless Chromium (load the page, upload an image, enter boxes and a text, run,
and find the ranking in the page; a bad input shows the library's one-line error), its JSON API and
OpenAPI pages, and every refusal a client can provoke: wrong JSON types, non-finite and huge numbers,
strings for lists, bodies that are not JSON, lying Content-Lengths, stalled and trickling clients (the
server answering others meanwhile), other methods, and `--host` beyond the loopback.

The README's test line installs Chromium and its driver (`scripts/test`), so this never skips. Every
socket goes to 127.0.0.1; loops are bounded in count and time.
"""

import base64
import io
import json
import os
import shutil
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import falip
from falip.datasets.scene_world import make_scene
from falip.web.schema import MAX_MESSAGE
from falip.web.server import example_scene, host_warning, make_server, run

WAIT = 30.0  # seconds any answer may take; the deadlines tested are 1.5 s: only a machine 20x slower fails


@pytest.fixture(scope="module")
def model():
    return falip.load()


@pytest.fixture(scope="module")
def server(model):
    served = make_server(model, "127.0.0.1", 0, quiet=True).start()  # a free port on the loopback interface
    yield model, served.url
    served.stop()


@pytest.fixture(scope="module")
def strict_server(model):
    """A server with a 1.5 s request deadline and a 1 MB body limit, for the slow and lying clients."""
    served = make_server(model, "127.0.0.1", 0, quiet=True, request_timeout=1.5, max_body=2**20).start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = (
        shutil.which("chromium") or shutil.which("chromium-browser"),
        shutil.which("chromedriver"),
    )
    assert binary and driver, (
        "Chromium and chromedriver are needed: run the README's test line (scripts/test), which installs them"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1700",
    ):
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    yield chrome
    chrome.quit()


def no_constant(name):
    raise AssertionError(f"the reply holds {name}, which is not JSON")


def call(url, path, body=None, method=None, headers=None):
    """(status, parsed JSON, headers) of one request; every reply must be strict JSON (no NaN)."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data, {"Content-Type": "application/json", **(headers or {})}
    )
    request.method = method or ("POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as reply:
            status, raw, head = reply.status, reply.read(), reply.headers
    except urllib.error.HTTPError as error:
        status, raw, head = error.code, error.read(), error.headers
    parsed = json.loads(raw, parse_constant=no_constant) if raw and request.method != "HEAD" else None
    return status, parsed, head


def post(url, payload):
    status, data, _ = call(url, "/api/run", payload)
    return status, data


def exchange(port, data=b"", trickle=b"", pause=0.3):
    """Send `data` (then `trickle` a byte at a time) on a raw socket; read until the server closes.
    Returns (seconds from the first byte to the close, status line, body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    start = time.monotonic()
    try:
        sock.sendall(data)
        for byte in trickle:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(pause)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    finally:
        sock.close()
    head, _, body = received.partition(b"\r\n\r\n")
    return time.monotonic() - start, head.split(b"\r\n")[0].decode(), body


def data_url(image, kind="PNG", **options):
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **options)
    return f"data:image/{kind.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def assert_one_line(error):
    assert isinstance(error, str) and error and "\n" not in error, error
    assert "0x" not in error and "object at" not in error and "Traceback" not in error, error
    assert len(error) <= MAX_MESSAGE, len(error)


def test_the_api_ranks_boxes_and_answers_bad_input_in_one_line(server):
    model, url = server
    scene = example_scene(model, 3)
    status, data = post(
        url,
        {
            "image": scene["image"],
            "boxes": scene["boxes"],
            "texts": scene["texts"],
            "labels": scene["labels"],
        },
    )
    assert status == 200 and len(data["ranking"][0]["boxes"]) == len(scene["boxes"])
    scores = [b["score"] for b in data["ranking"][0]["boxes"]]
    assert scores == sorted(scores, reverse=True)
    for payload, code, message in (
        ({"image": scene["image"], "boxes": [], "texts": ["a"]}, 422, "at least one box"),
        (
            {"image": scene["image"], "boxes": [[1, 2, 3]], "texts": ["a"]},
            422,
            "boxes[0]: List should have at least 4",
        ),
        ({"image": scene["image"], "boxes": scene["boxes"], "texts": [""]}, 400, "empty text ''"),
        (
            {"image": scene["image"], "boxes": scene["boxes"], "texts": ["a"], "alpha": "nan"},
            422,
            "alpha: Input should be a valid number",
        ),
        (
            {"image": "data:image/png;base64,AAAA", "boxes": scene["boxes"], "texts": ["a"]},
            400,
            "cannot read the uploaded image",
        ),
        (
            {"image": scene["image"], "boxes": scene["boxes"], "texts": ["a"], "method": "arrow"},
            400,
            "unknown method",
        ),
    ):
        status, data = post(url, payload)
        assert status == code and message in data["error"], data
        assert_one_line(data["error"])


BAD_FIELDS = [  # (change to a valid request, status, part of the message)
    ({"texts": 5}, 422, "texts: Input should be a valid list (got 5)"),
    ({"texts": "red"}, 422, "texts: Input should be a valid list (got 'red')"),
    ({"texts": ["a", 7]}, 422, "texts[1]: Input should be a valid string"),
    ({"method": ["falip"]}, 422, "method: Input should be a valid string"),
    ({"boxes": ["1234"]}, 422, "boxes[0]: Input should be a valid list (got '1234')"),
    ({"boxes": [[1, 2, 3, "4"]]}, 422, "boxes[0][3]: Input should be a valid number (got '4')"),
    ({"boxes": [[1, 2, 3, 4, 5]]}, 422, "boxes[0]: List should have at most 4 items"),
    ({"boxes": [[1, 2, 3, 4]] * 65}, 422, "boxes: List should have at most 64 items"),
    ({"boxes": [[1e300, 2, 3, 4]]}, 422, "boxes[0][0]: Input should be less than or equal to 1000000"),
    ({"boxes": [[10, 10, 0, 5]]}, 400, "box 1 has no width or height"),
    ({"boxes": [[5000, 5000, 10, 10]]}, 400, "lies wholly outside"),
    ({"texts": ["a"] * 17}, 422, "texts: List should have at most 16 items"),
    ({"alpha": 1e308}, 422, "alpha: Input should be less than or equal to 10000"),
    ({"alpha": True}, 422, "alpha: Input should be a valid number (got True)"),
    ({"sigma": 1e-300}, 422, "sigma: Input should be greater than or equal to 0.000001 (got 1e-300)"),
    ({"sigma": "100"}, 422, "sigma: Input should be a valid number (got '100')"),
    ({"layers": "8,9"}, 422, "layers: Input should be a valid list"),
    ({"layers": [1.5]}, 422, "layers[0]: Input should be a valid integer"),
    ({"layers": [99]}, 400, "layer 99 does not exist"),
    ({"image": 5}, 422, "image: Input should be a valid string"),
    ({"image": None}, 422, "image: Input should be a valid string (got None)"),
    ({"image": "data:text/plain;base64,AAAA"}, 400, "the image must be a data:image/"),
    ({"image": "data:image/png;base64,***"}, 400, "not valid base64"),
    ({"extra": 1}, 422, "unknown field extra"),
    ({"method": "x" * 2_000_000}, 422, "method: String should have at most 100 characters"),
    ({"texts": ["y" * 2_000_000]}, 422, "texts[0]: String should have at most 1000 characters"),
    ({"image": "data:image/png;base64," + "A" * 2_000_000}, 400, "cannot read the uploaded image"),
]


@pytest.mark.parametrize("change, code, message", BAD_FIELDS, ids=[str(i) for i in range(len(BAD_FIELDS))])
def test_wrong_types_and_values_are_refused_in_one_line(server, change, code, message):
    model, url = server
    scene = example_scene(model, 3)
    payload = {
        "image": scene["image"],
        "boxes": scene["boxes"],
        "texts": ["a photo of a red circle"],
        **change,
    }
    status, data = post(url, payload)
    assert status == code and message in data["error"], data
    assert_one_line(data["error"])  # no heap address, no echoed megabytes


def test_a_missing_image_and_an_undecodable_one_say_so_plainly(server):
    model, url = server
    status, data = post(url, {"boxes": [[1, 2, 3, 4]], "texts": ["a"]})
    assert status == 422 and data["error"] == "choose an image first (or an example scene)"
    junk = "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()
    status, data = post(url, {"image": junk, "boxes": [[1, 2, 3, 4]], "texts": ["a"]})
    assert status == 400 and "BytesIO" not in data["error"]
    assert_one_line(data["error"])


def test_an_image_of_too_many_pixels_is_refused_before_decoding(server):
    _, url = server
    huge = data_url(Image.new("1", (8000, 7000)))  # 56 MP; a 1-bit PNG of a few kB
    status, data = post(url, {"image": huge, "boxes": [[1, 2, 3, 4]], "texts": ["a"]})
    assert status == 400 and "8000 x 7000 pixels" in data["error"] and "50,000,000" in data["error"]


BAD_BODIES = [  # raw bodies: (bytes, status, part of the message)
    (b'{"texts": ["\xff\xfe"]}', 400, "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    (b'{"seed": ' + b"9" * 5000 + b"}", 400, "not JSON that can be read"),
    (b'{"texts": [', 422, "the request body is not JSON"),
    (b"[]", 422, "the request: Input should be a valid dictionary"),
    (b"", 422, "the request body is required"),
]


@pytest.mark.parametrize("body, code, message", BAD_BODIES, ids=[str(i) for i in range(len(BAD_BODIES))])
def test_bodies_that_are_not_json_objects_are_refused_in_one_line(server, body, code, message):
    _, url = server
    status, data, _ = call(url, "/api/run", body, method="POST")
    assert status == code and message in data["error"], data
    assert_one_line(data["error"])


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_refused(server, literal):
    model, url = server
    scene = example_scene(model, 3)
    body = json.dumps(
        {"image": scene["image"], "boxes": scene["boxes"], "texts": ["a"], "alpha": 0.5}
    ).encode()
    status, data, _ = call(url, "/api/run", body.replace(b"0.5", literal))
    assert status == 422 and "alpha: Input should be a finite number" in data["error"], data


def test_the_example_seed_is_a_bounded_whole_number(server):
    model, url = server
    status, data, _ = call(url, "/api/example?seed=3")
    assert status == 200 and data["boxes"] == example_scene(model, 3)["boxes"]
    for query, message in (
        (
            "seed=%C2%B2",
            "seed: Input should be a valid integer, unable to parse string as an integer (got '\u00b2')",
        ),
        ("seed=-1", "seed: Input should be greater than or equal to 0"),
        ("seed=99999999999", "seed: Input should be less than or equal to 2147483647"),
        ("seed=1.5", "seed: Input should be a valid integer"),
    ):
        status, data, _ = call(url, f"/api/example?{query}")
        assert status == 422 and message in data["error"], data
        assert_one_line(data["error"])


def test_other_methods_and_paths_get_json_refusals(server):
    _, url = server
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        status, data, head = call(url, "/api/run", b"{}", method=method)
        assert status == 405 and data["error"] == f"{method} is not allowed on /api/run; use POST"
        assert head["Allow"] == "POST"
    status, data, _ = call(url, "/api/info", b"{}", method="POST")
    assert status == 405 and data["error"].endswith("use GET")
    status, data, _ = call(url, "/etc/passwd")
    assert status == 404 and data["error"] == "no page /etc/passwd"
    status, data, head = call(url, "/", method="HEAD")
    assert status == 200 and head["Content-Type"].startswith("text/html")


def test_the_openapi_schema_describes_the_api_and_its_bounds(server):
    _, url = server
    status, schema, _ = call(url, "/openapi.json")
    assert status == 200 and {"/api/info", "/api/example", "/api/run"} <= set(schema["paths"])
    fields = schema["components"]["schemas"]["RunRequest"]["properties"]
    assert fields["boxes"]["items"]["minItems"] == fields["boxes"]["items"]["maxItems"] == 4
    assert fields["boxes"]["maxItems"] == 64 and fields["texts"]["maxItems"] == 16
    assert [o.get("maximum") for o in fields["alpha"]["anyOf"]] == [10000.0, None]
    assert set(schema["paths"]["/api/run"]["post"]["responses"]) >= {"200", "400", "408", "413", "422"}
    page = urllib.request.urlopen(url + "/docs", timeout=WAIT).read().decode()
    assert "cdn" not in page.lower()  # offline: the Swagger UI files come from this server
    bundle = page.split('src="')[1].split('"')[0]
    assert len(urllib.request.urlopen(url + bundle, timeout=WAIT).read()) > 100_000


def test_malformed_http_and_lying_content_lengths(strict_server):
    port = strict_server.port
    for length in (b"abc", b"-1"):
        took, status, body = exchange(
            port, b"POST /api/run HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n{}"
        )
        assert status == "HTTP/1.1 400 Bad Request" and "not valid HTTP/1.1" in json.loads(body)["error"]
    post_head = b"POST /api/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    short = post_head + b"Content-Length: 100\r\n\r\n{}"
    took, status, body = exchange(port, short)
    assert (
        status == "HTTP/1.1 408 Request Timeout"
        and json.loads(body)["error"] == "the request did not arrive within 1.5 s"
    )
    assert took >= 1.4  # not before the deadline
    over = post_head + b"Content-Length: 5000000\r\n\r\n"
    took, status, body = exchange(port, over)  # refused by its Content-Length, before any of it is sent
    assert status == "HTTP/1.1 413 Request Entity Too Large" and "over 1 MB" in json.loads(body)["error"]
    chunk = b"x" * (2**20 + 10)
    chunked = post_head + b"Transfer-Encoding: chunked\r\n\r\n"
    took, status, body = exchange(port, chunked + b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    assert status == "HTTP/1.1 413 Request Entity Too Large" and "over 1 MB" in json.loads(body)["error"]


def test_stalled_and_trickling_clients_time_out_while_others_are_answered(strict_server, model):
    port, url = strict_server.port, strict_server.url
    threads_before = threading.active_count()
    stalled = []
    for i in range(50):  # half-sent headers
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: x\r\nX-Part: " + str(i).encode())
        stalled.append(sock)
    silent = socket.create_connection(("127.0.0.1", port), timeout=WAIT)  # connects, says nothing
    trickle = {}
    body = b'{"texts": ["a slow client"], "boxes": [[1, 2, 3, 4]]}'
    head = (
        b"POST /api/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(body)
    )
    sender = threading.Thread(target=lambda: trickle.update(r=exchange(port, head, body, pause=0.3)))
    sender.start()
    try:
        status, info, _ = call(url, "/api/info")  # answered while 52 clients stall
        assert status == 200 and info["model"] == "toy"
        scene = example_scene(model, 4)
        status, data = post(url, {"image": scene["image"], "boxes": scene["boxes"], "texts": scene["texts"]})
        assert status == 200 and len(data["ranking"][0]["boxes"]) == len(scene["boxes"])
        assert threading.active_count() - threads_before < 10  # no thread per stalled client
        for sock in [*stalled, silent]:
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 408 Request Timeout"), reply[:80]
    finally:
        for sock in [*stalled, silent]:
            sock.close()
        sender.join(timeout=WAIT)
    took, status, reply = trickle["r"]
    assert status == "HTTP/1.1 408 Request Timeout" and 1.4 <= took  # a trickle does not extend the deadline


@pytest.mark.parametrize(
    "host, warned",
    [
        ("0.0.0.0", True),
        ("192.168.1.5", True),
        ("::", True),
        ("example.org", True),
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("::1", False),
        ("localhost", False),
    ],
)
def test_serving_beyond_the_loopback_is_warned(host, warned):
    warning = host_warning(host)
    assert (warning is not None) == warned
    if warned:
        assert host in warning and "reachable from other machines" in warning


def test_falip_serve_prints_the_warning_before_serving(monkeypatch, model):
    import falip.engine.model
    import falip.web.server
    from falip.cli.app import cli

    served = []

    class Stub:
        url = "http://0.0.0.0:7860"

        def serve_forever(self):
            served.append(True)

    monkeypatch.setattr(falip.engine.model, "load", lambda *a, **k: model)
    monkeypatch.setattr(falip.web.server, "make_server", lambda *a, **k: Stub())
    runner = CliRunner()
    result = runner.invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 0 and served, result.output
    assert (
        "warning: serving on 0.0.0.0" in result.stderr and "serving on http://0.0.0.0:7860/" in result.stdout
    )
    result = runner.invoke(cli, ["serve"])
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_the_page_in_chromium_uploads_ranks_and_shows_errors(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    model, url = server
    scene = make_scene("test", 2_000_000 + 5, 128, objects=(3, 4))
    target, expression, _ = sorted(scene.expressions(), key=lambda e: e[2] != "attribute")[0]
    picture = tmp_path / "scene.png"
    scene.pil().resize((384, 384), Image.NEAREST).save(picture)  # a photo-sized upload; boxes scale with it
    boxes = [[round(3 * v, 1) for v in o.box] for o in scene.objects]
    text = f"a photo of {expression}"
    wait = WebDriverWait(browser, 120)

    browser.get(url)
    wait.until(ready.text_to_be_present_in_element((By.ID, "note"), "toy CLIP"))
    note = browser.find_element(By.ID, "note").text
    assert "not OpenAI's CLIP" in note
    assert (
        "FALIP starts from the toy model's setting, tuned on validation scenes (metrics.json): at the "
        "paper's alpha 0.2" in note
    )  # the page says why its setting is not the paper's
    assert "toy CLIP trained on generated shapes" in browser.title
    browser.find_element(By.ID, "image-input").send_keys(str(picture))
    browser.find_element(By.ID, "boxes").send_keys("\n".join(",".join(map(str, b)) for b in boxes))
    browser.find_element(By.ID, "texts").send_keys(text)
    browser.find_element(By.ID, "run").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#ranking tr.ranked")) == len(boxes))
    rows = [
        r.find_elements(By.TAG_NAME, "td")
        for r in browser.find_elements(By.CSS_SELECTOR, "#ranking tr.ranked")
    ]

    expected = run(model, {"image": data_url(Image.open(picture)), "boxes": boxes, "texts": [text]})[
        "ranking"
    ][0]["boxes"]
    shown = [[float(v) for v in cells[1].text.split(", ")] for cells in rows]
    assert shown == [[round(v, 1) for v in b["box"]] for b in expected]  # the page shows the model's ranking
    assert [float(cells[2].text) for cells in rows] == [round(b["score"], 3) for b in expected]
    assert shown[0] == boxes[target]  # and here FALIP picks the object the expression names
    assert "% in the best box" in browser.find_element(By.ID, "caption-plain").text
    for image_id in ("boxes-picture", "attention-plain", "attention-falip"):
        assert browser.find_element(By.ID, image_id).get_attribute("src").startswith("data:image/png;base64,")
    screenshot = tmp_path / "web_demo.png"
    browser.save_screenshot(str(screenshot))
    assert Image.open(screenshot).size[0] >= 1000
    if os.environ.get("FALIP_SCREENSHOT_DIR"):  # how the README's screenshot is made
        shutil.copy(screenshot, os.path.join(os.environ["FALIP_SCREENSHOT_DIR"], "web_demo.png"))

    browser.find_element(By.ID, "texts").clear()
    browser.find_element(By.ID, "run").click()
    wait.until(ready.text_to_be_present_in_element((By.ID, "error"), "empty text"))
    assert "Traceback" not in browser.page_source

    browser.get(url + "/docs")  # the OpenAPI page renders offline, from the server's own Swagger UI files
    wait.until(ready.text_to_be_present_in_element((By.TAG_NAME, "body"), "/api/run"))
    assert "/api/example" in browser.find_element(By.TAG_NAME, "body").text


def test_the_page_and_the_cli_score_an_exif_tagged_photo_alike(server, tmp_path):
    """A phone photo stored sideways with EXIF orientation 6: the page and `falip score` both see it
    upright (one image door), so they give the same scores; its stored pixels would give others."""
    from click.testing import CliRunner

    from falip.cli import cli

    model, url = server
    scene = make_scene("test", 7, 128, objects=(3, 3))
    upright = scene.pil()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": stored is the upright image turned anticlockwise
    path = tmp_path / "phone.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
    boxes = [[round(float(v), 2) for v in o.box] for o in scene.objects]
    text = "a photo of a circle"
    payload = {
        "image": "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode(),
        "boxes": boxes,
        "texts": [text],
        "alpha": 0.2,
        "sigma": 100,
        "layers": None,  # the model's
    }
    status, page = post(url, payload)
    assert status == 200, page
    on_page = {b["index"]: b["score"] for b in page["ranking"][0]["boxes"]}
    args = ["score", str(path), "--text", text] + [a for b in boxes for a in ("--box", ",".join(map(str, b)))]
    printed = CliRunner().invoke(cli, args)
    assert printed.exit_code == 0, printed.output
    on_cli = {}
    ranked = [ln for ln in printed.output.splitlines() if ln.strip() and ln.split()[0].rstrip(".").isdigit()]
    for line in ranked:  # "  1.   12.345  box 10,20,30,40" (after the model and FALIP-setting lines)
        rank, score, _, box = line.split()
        on_cli[[",".join(f"{v:g}" for v in b) for b in boxes].index(box)] = float(score)
    assert on_cli.keys() == on_page.keys() == set(range(len(boxes)))
    for i in on_cli:
        assert on_cli[i] == pytest.approx(on_page[i], abs=2e-3), i
    stored = model.score(np.asarray(Image.open(path).convert("RGB")), boxes, [text])[:, 0].tolist()
    assert max(abs(stored[i] - on_cli[i]) for i in on_cli) > 0.05  # the turn matters: not a vacuous check
