"""The browser demo (wwbl/app.py): its API called with gradio_client on the bundled models, and the page
rendered by a real headless Chromium (marker ``browser``)."""
import ast
import base64
import fcntl
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wwbl.inference.api import load
from wwbl.inference.pictures import overlay

# The app and its client run in processes of their own: gradio and gradio_client import httpx, after
# which jsonargparse parses train.py's `--trainer.limit_train_batches 1` as 1.0 (test_training.py).
pytestmark = pytest.mark.skipif(not (find_spec("gradio") and find_spec("gradio_client")),
                                reason="the app extra is missing: pip install -e '.[app]'")

ROOT = Path(__file__).resolve().parents[1]
SCENES = ROOT / "data" / "shapes_samples"
CHROMIUM_NAMES = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome", "headless_shell")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python -m wwbl.app`` on the bundled models (its defaults), once for the module on a free port."""
    port = free_port()
    log = (tmp_path_factory.mktemp("app") / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "wwbl.app", "--port", str(port)], cwd=ROOT, env=ENV,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the app did not start: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


def ask(url: str, image: Path, phrases: str, method: str) -> dict:
    """The app's answer through gradio_client (tests/app_client.py, in its own process)."""
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "app_client.py"), url, str(image), phrases, method],
                          env=ENV, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def direct():
    """The same bundled models built independently of the app, through the public facade."""
    checkpoints = ROOT / "checkpoints"
    return load(str(checkpoints / "shapes_g"), clip_checkpoint=str(checkpoints / "shapes_clip"),
                captioner=str(checkpoints / "shapes_blip"))


def pixels(path_or_image) -> np.ndarray:
    with Image.open(path_or_image) if isinstance(path_or_image, str) else path_or_image as image:
        return np.asarray(image.convert("RGB")).astype(int)


def table_rows(table: dict) -> list[tuple[str, float, list[float]]]:
    assert table["headers"] == ["phrase", "score", "box (x1, y1, x2, y2)"]
    return [(phrase, score, json.loads(box)) for phrase, score, box in table["data"]]


def test_wwbl_without_phrases_matches_the_library(server, direct):
    scene = SCENES / "shapes_test_002.png"
    answer = ask(server, scene, "", "g")
    image = Image.open(scene).convert("RGB")
    expected = direct.detect(image)
    assert len(expected.phrases) >= 1
    rows = table_rows(answer["table"])
    assert [row[0] for row in rows] == expected.detections.phrases
    assert [row[1] for row in rows] == pytest.approx(expected.detections.scores.tolist(), abs=5.1e-4)
    np.testing.assert_allclose([row[2] for row in rows], expected.detections.boxes.numpy(), atol=0.051)
    assert np.array_equal(pixels(answer["overlay"]), pixels(overlay(image, expected)))
    assert [item["caption"] for item in answer["gallery"]] == expected.phrases
    for k, item in enumerate(answer["gallery"]):
        assert np.array_equal(pixels(item["image"]), pixels(overlay(image, expected, only=k)))


def test_given_phrases_are_grounded_with_a_training_free_source(server):
    answer = ask(server, SCENES / "shapes_test_001.png", " a white square, ,a purple ring ,", "gem")
    assert [item["caption"] for item in answer["gallery"]] == ["a white square", "a purple ring"]
    rows = table_rows(answer["table"])
    assert rows and {row[0] for row in rows} <= {"a white square", "a purple ring"}
    with Image.open(answer["overlay"]) as shown:
        assert shown.size == (512, 512)  # the 128² scene, enlarged for display


def test_an_unsuitable_source_reports_its_reason(server):
    answer = ask(server, SCENES / "shapes_test_000.png", "a red ring", "gradcam")
    assert "ResNet CLIP" in answer["error"]


def run_app(*code_or_args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *code_or_args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)


def test_main_without_gradio_says_how_to_install_it():
    done = run_app("-c", "import sys; sys.modules['gradio'] = None; from wwbl.app import main; sys.exit(main([]))")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "pip install -e '.[app]'" in done.stderr


def test_only_the_app_module_imports_gradio():
    sources = sorted((ROOT / "wwbl").rglob("*.py")) + [ROOT / "train.py", ROOT / "infer.py"]
    importers = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(name.split(".")[0] in {"gradio", "gradio_client"} for name in names):
                importers.add(str(path.relative_to(ROOT)))
    assert importers == {"wwbl/app.py"}


def high_fd(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3/4: no extra dependency)."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        # the browser's ends move above 9, so that the redirections to 3 and 4 cannot clobber them (bash, as
        # dash refuses fds above 9)
        to_browser, from_browser = (high_fd(fd) for fd in (to_browser, from_browser))
        self.log_path = profile.with_suffix(".log")
        self._log = self.log_path.open("wb")
        redirect = f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}'
        self.process = subprocess.Popen(
            ["bash", "-c", redirect, binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1280,1600", "about:blank"],
            pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id = b"", 0
        target = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        try:
            os.write(self._write, json.dumps(message).encode() + b"\0")
        except BrokenPipeError as error:
            raise RuntimeError(f"chromium is gone: {self.log_path.read_text()[-2000:]}") from error
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the DevTools pipe: {self.log_path.read_text()[-2000:]}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def page(self, method: str, **params):
        return self.call(method, session=self.session, **params)

    def evaluate(self, expression: str):
        return self.page("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"waited {timeout} s for {expression}")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self._write)
        os.close(self._read)
        self._log.close()


@pytest.fixture
def chromium() -> str:
    """The browser binary ($WWBL_CHROMIUM or the first of CHROMIUM_NAMES on PATH); skips, saying so, without one."""
    binary = os.environ.get("WWBL_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if binary is None:
        pytest.skip(f"no chromium binary found (looked for {', '.join(CHROMIUM_NAMES)} on PATH and $WWBL_CHROMIUM)")
    return binary


# Where the overlay's pixels are drawn in the page: the element box, less any object-fit letterboxing.
DRAWN_RECT = """(() => {
  const img = document.querySelector('#wwbl-overlay img');
  if (!img || !img.complete || !img.naturalWidth) return null;
  img.scrollIntoView({block: 'center'});
  const r = img.getBoundingClientRect(), fit = getComputedStyle(img).objectFit;
  let s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
  if (fit === 'scale-down') s = Math.min(s, 1);
  const w = fit === 'fill' ? r.width : img.naturalWidth * s, h = fit === 'fill' ? r.height : img.naturalHeight * s;
  return {x: r.x + (r.width - w) / 2 + scrollX, y: r.y + (r.height - h) / 2 + scrollY, width: w, height: h};
})()"""


@pytest.mark.browser
def test_the_page_shows_the_overlay_in_a_real_browser(chromium, server, direct, tmp_path):
    browser = Chromium(chromium, tmp_path / "profile")
    try:
        browser.page("Emulation.setDeviceMetricsOverride", width=1280, height=1600, deviceScaleFactor=1, mobile=False)
        browser.page("Page.navigate", url=server)
        browser.wait_for("!!document.querySelector('#wwbl-run') && !!document.querySelector('#wwbl-image img')")
        browser.evaluate("document.querySelector('#wwbl-run').click()")
        rect = browser.wait_for(DRAWN_RECT)
        time.sleep(0.5)  # let the layout settle after scrolling
        rect = browser.evaluate(DRAWN_RECT)
        shot = browser.page("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                            clip={**rect, "scale": 1})
        page = browser.page("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    finally:
        browser.close()
    screenshot = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    screenshot.save(tmp_path / "overlay_in_browser.png")
    (tmp_path / "page.png").write_bytes(base64.b64decode(page["data"]))  # for a person to look at
    scene = Image.open(SCENES / "shapes_test_000.png").convert("RGB")   # the scene the page opens with
    size = screenshot.size
    expected = overlay(scene, direct.detect(scene)).resize(size, Image.BILINEAR)
    plain = scene.resize(size, Image.BILINEAR)
    to_overlay = np.abs(pixels(screenshot) - pixels(expected)).mean()
    to_plain = np.abs(pixels(screenshot) - pixels(plain)).mean()
    assert min(size) > 100
    print(f"mean |screenshot - overlay| = {to_overlay:.1f}, |screenshot - plain scene| = {to_plain:.1f}")
    assert to_overlay < 12 and to_overlay < to_plain / 2, (to_overlay, to_plain)
