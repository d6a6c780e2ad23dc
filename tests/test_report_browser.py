"""The HTML report in a real headless Chromium: it loads from file:// without console errors and without fetching
anything, the slider changes the version shown (text, pictures and chart markers), and a screenshot is not blank."""
import io
import shutil
from pathlib import Path

import pytest
from graph_texts import mlp_named
from rundir_fixture import edit_steps, insert_after, widen, write_run

import archgraph
from archgraph.history.report import write_report

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000"]


@pytest.fixture
def driver(tmp_path):
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(60)
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture
def report(tmp_path):
    seed = archgraph.load(ROOT / "examples" / "seeds" / "tiny_cnn.yaml")
    steps = edit_steps(seed, [
        ("add_filters", {"node": "c1", "count": 4, "init": "preserve"}, lambda g: widen(g, "c1", 4)),
        ("insert_layer", {"after": "r3", "op": "conv2d", "kernel_size": 3, "init": "identity"},
         lambda g: insert_after(g, "r3", "c4", {"op": "conv2d", "out_channels": 8, "kernel_size": 3,
                                                "padding": 1})),
        ("prune_channels", {"node": "c2", "indices": [0, 2, 5]}, lambda g: widen(g, "c2", -3)),
    ])
    # strategies add metrics of their own, some not numbers: the page must show them, not fail
    extra = {"gate_means": [0.5, 0.25], "val_extra": None, "lr": 1.37e-5}
    return write_report(write_run(tmp_path / "run", seed, steps, extra_metrics=extra,
                                  config={"name": "my-run", "seed": "seed.yaml"}))


def _state(d):
    return d.execute_script("""
        const marker = document.querySelector('#charts .marker');
        return {title: document.getElementById('version-title').textContent,
                rule: document.getElementById('rule').textContent,
                changes: document.getElementById('changes').textContent,
                graph: document.querySelector('#graph svg') ? document.querySelector('#graph svg').textContent : '',
                diff: document.querySelector('#diff svg') ? document.querySelector('#diff svg').textContent : '',
                slider: document.getElementById('slider').value,
                marker: marker ? marker.getAttribute('x1') : null};""")


def test_report_works_in_chromium(driver, report):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(report.resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "version-title").text.strip())
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    # self-contained: the page made no request of any kind
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0

    last = _state(driver)
    assert last["title"] == "version 3 (4 of 4)" and "prune_channels" in last["rule"]
    assert "pruned -3" in last["diff"]
    metrics = driver.find_element(By.ID, "metrics").text.replace(" ", "").replace("\n", "")
    assert "gate_means[0.5,0.25][0.5,0.25]" in metrics

    slider = driver.find_element(By.ID, "slider")
    slider.click()
    slider.send_keys(Keys.HOME)
    first = _state(driver)
    assert first["title"] == "version 0 (1 of 4)" and first["slider"] == "0"
    assert "seed" in first["rule"] and first["diff"] == ""
    assert first["graph"] != last["graph"] and first["marker"] != last["marker"]

    slider.send_keys(Keys.ARROW_RIGHT)
    second = _state(driver)
    assert second["title"] == "version 1 (2 of 4)"
    assert "add_filters(node=c1, count=4, init=preserve)" in second["rule"]
    assert "widened: c1 +4" in second["changes"] and "widened +4" in second["diff"]
    assert second["graph"] != first["graph"]
    assert float(second["marker"]) > float(first["marker"])

    driver.find_element(By.ID, "next").click()
    assert "added: c4" in _state(driver)["changes"]
    driver.find_element(By.CSS_SELECTOR, ".chip[data-version='0']").click()
    assert _state(driver)["title"] == "version 0 (1 of 4)"

    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    # the log channel really reports errors (so the empty lists above mean something)
    driver.execute_script("console.error('probe from the test')")
    assert any("probe from the test" in e["message"] for e in driver.get_log("browser"))

    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    colours = shot.getcolors(maxcolors=1 << 20)
    assert len(colours) > 200, "the screenshot is (nearly) blank"
    assert max(c for c, _ in colours) < 0.9 * shot.size[0] * shot.size[1]


def test_report_shows_the_run_name_small_numbers_and_counts(driver, report, tmp_path):
    """Issue 12: the learning rate 1.37e-5 showed as "0", the title was the folder's name, "1 versions"."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get(report.resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "version-title").text.strip())
    assert driver.find_element(By.TAG_NAME, "h1").text == "my-run" and driver.title.startswith("my-run")
    assert "1.37e-5" in driver.find_element(By.ID, "metrics").text
    assert "4 versions" in driver.find_element(By.ID, "run-summary").text
    seed = archgraph.load(ROOT / "examples" / "seeds" / "tiny_cnn.yaml")
    single = write_report(write_run(tmp_path / "single", seed, []))
    driver.get(single.resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "version-title").text.strip())
    summary = driver.find_element(By.ID, "run-summary").text
    assert "1 version " in summary + " " and "1 versions" not in summary
    assert driver.find_element(By.TAG_NAME, "h1").text == "single"


HOSTILE = '<b onmouseover=alert(1)>x</b> <img src=x onerror=alert(2)> "<net>" \'q\' javascript:alert(3)'


def _links_and_handlers(d):
    """Every link target and every event-handler attribute in the page, SVG pictures included."""
    return d.execute_script("""
        const xlink = 'http://www.w3.org/1999/xlink', found = [];
        for (const el of document.querySelectorAll('*')) {
            for (const attr of el.attributes) {
                const name = attr.name.toLowerCase(), value = attr.value.trim().toLowerCase();
                if (name.startsWith('on') || value.startsWith('javascript:') ||
                    (name.endsWith('href') && el.tagName.toLowerCase() !== 'link'))
                    found.push(el.tagName + ' ' + attr.name + '=' + attr.value);
            }
            const href = el.getAttributeNS(xlink, 'href');
            if (href) found.push(el.tagName + ' xlink:href=' + href);
        }
        return found;""")


def _alert_text(d):
    from selenium.common.exceptions import NoAlertPresentException
    try:
        return d.switch_to.alert.text
    except NoAlertPresentException:
        return None


def test_hostile_names_in_the_report_stay_text_in_chromium(driver, tmp_path, capsys):
    """Issue 26: a graph and run named with markup, quotes and a javascript: URL show as literal text in the page
    and in every picture; nothing runs (no alert), no link or event handler appears, on any version."""
    from rundir_fixture import steps_from_rules
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from archgraph.cli import main as cli
    from archgraph.format.yaml_io import dumps
    from archgraph.rules import AddFilters

    seed = mlp_named(HOSTILE)
    run = write_run(tmp_path / "run", seed, steps_from_rules(seed, [AddFilters(node="fc1", count=2)]),
                    config={"name": HOSTILE, "seed": 0})
    out = tmp_path / "r.html"
    assert cli(["report", str(run), "-o", str(out)]) == 0, capsys.readouterr().err
    driver.get(out.resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "version-title").text.strip())

    def no_alert():
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text

    no_alert()
    assert driver.find_element(By.TAG_NAME, "h1").text == HOSTILE
    assert driver.title.startswith(HOSTILE)
    assert driver.find_elements(By.CSS_SELECTOR, "#graph svg"), "no picture in the page"
    slider = driver.find_element(By.ID, "slider")
    slider.click()
    slider.send_keys(Keys.HOME)
    for version in range(2):
        assert driver.find_element(By.ID, "version-title").text.startswith(f"version {version} ")
        assert _links_and_handlers(driver) == []
        # no element the hostile text would have made (the report itself uses neither)
        assert driver.find_elements(By.CSS_SELECTOR, "b, img") == []
        for el in [driver.find_element(By.TAG_NAME, "h1")] + driver.find_elements(By.CSS_SELECTOR, "#graph svg text"):
            ActionChains(driver).move_to_element(el).perform()
        no_alert()
        slider.send_keys(Keys.ARROW_RIGHT)

    # the stand-alone pictures that carry the name (graph and history), opened as pages of their own
    (tmp_path / "g.yaml").write_text(dumps(seed))
    for source, svg in ((tmp_path / "g.yaml", tmp_path / "g.svg"), (run, tmp_path / "h.svg")):
        assert cli(["render", str(source), "-o", str(svg)]) == 0, capsys.readouterr().err
        driver.get(svg.resolve().as_uri())
        texts = driver.execute_script("return [...document.querySelectorAll('text')].map(t => t.textContent)")
        assert any(t.startswith(HOSTILE) for t in texts), texts
        assert _links_and_handlers(driver) == []
        assert driver.execute_script("return document.querySelectorAll('b, img, a').length") == 0
        for el in driver.find_elements(By.TAG_NAME, "text"):
            ActionChains(driver).move_to_element(el).perform()
        no_alert()
    # the log channel reports errors and alert() would be seen (so the checks above mean something)
    driver.execute_script("setTimeout(() => alert('probe'), 0)")
    WebDriverWait(driver, 10).until(lambda d: _alert_text(d) == "probe")
    driver.switch_to.alert.accept()
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
