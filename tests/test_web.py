"""`falip serve` in a real headless Chromium: load the page, upload an image, enter boxes and a text,
run, and find the ranking in the page; a bad input shows the library's one-line error.

The README's test line installs Chromium and its driver (`scripts/test`), so this never skips.
"""

import base64
import io
import json
import os
import shutil
import threading
import urllib.request

import numpy as np
import pytest
from PIL import Image

import falip
from falip.datasets.scene_world import make_scene
from falip.web.server import example_scene, make_server, run


@pytest.fixture(scope="module")
def server():
    model = falip.load()
    httpd = make_server(model, "127.0.0.1", 0)  # a free port on the loopback interface
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield model, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


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


def post(url, payload):
    request = urllib.request.Request(
        url + "/api/run", json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def data_url(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


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
    for payload, message in (
        ({"image": scene["image"], "boxes": [], "texts": ["a"]}, "at least one box"),
        ({"image": scene["image"], "boxes": [[1, 2, 3]], "texts": ["a"]}, "box 1: a box needs 4 numbers"),
        ({"image": scene["image"], "boxes": scene["boxes"], "texts": [""]}, "give a text"),
        (
            {"image": scene["image"], "boxes": scene["boxes"], "texts": ["a"], "alpha": "nan"},
            "alpha must be finite",
        ),
        (
            {"image": "data:image/png;base64,AAAA", "boxes": scene["boxes"], "texts": ["a"]},
            "cannot read the uploaded image",
        ),
        (
            {"image": scene["image"], "boxes": scene["boxes"], "texts": ["a"], "method": "arrow"},
            "unknown method",
        ),
    ):
        status, data = post(url, payload)
        assert status == 400 and message in data["error"] and "\n" not in data["error"], data


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
    assert "not OpenAI's CLIP" in browser.find_element(By.ID, "note").text
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
    wait.until(ready.text_to_be_present_in_element((By.ID, "error"), "give a text to look for"))
    assert "Traceback" not in browser.page_source


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
        "layers": "",
    }
    status, page = post(url, payload)
    assert status == 200, page
    on_page = {b["index"]: b["score"] for b in page["ranking"][0]["boxes"]}
    args = ["score", str(path), "--text", text] + [a for b in boxes for a in ("--box", ",".join(map(str, b)))]
    printed = CliRunner().invoke(cli, args)
    assert printed.exit_code == 0, printed.output
    on_cli = {}
    for line in printed.output.splitlines()[1:]:  # "  1.   12.345  box 10,20,30,40"
        rank, score, _, box = line.split()
        on_cli[[",".join(f"{v:g}" for v in b) for b in boxes].index(box)] = float(score)
    assert on_cli.keys() == on_page.keys() == set(range(len(boxes)))
    for i in on_cli:
        assert on_cli[i] == pytest.approx(on_page[i], abs=2e-3), i
    stored = model.score(np.asarray(Image.open(path).convert("RGB")), boxes, [text])[:, 0].tolist()
    assert max(abs(stored[i] - on_cli[i]) for i in on_cli) > 0.05  # the turn matters: not a vacuous check
