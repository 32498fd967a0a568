import re

from recaption.recipe import load_recipe
from recaption.runners.local import LocalRunner, RunConfig
from tests.conftest import noise_image, write_jsonl


def test_report_escapes_hostile_text_and_shows_the_run(tmp_path):
    (tmp_path / "in").mkdir()
    noise_image(1).save(tmp_path / "in" / "a.jpg")
    noise_image(2).save(tmp_path / "in" / "b.jpg")
    hostile = '<script>alert("x")</script> a red <img src=x onerror=alert(1)> bike'
    data = write_jsonl(tmp_path / "in" / "p.jsonl", [
        {"image_id": "a", "image_path": "a.jpg", "texts": [hostile]},
        {"image_id": "<b>bold-id</b>", "image_path": "missing.jpg", "texts": ["x"]},
    ])
    LocalRunner(RunConfig(str(data), str(tmp_path / "out"), load_recipe("clean")), show_progress=False).run()
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<script>alert" not in html and "onerror=alert(1)>" not in html
    assert "&lt;b&gt;bold-id&lt;/b&gt;" in html  # the reject example, escaped
    assert "image_check/missing_file" in html
    assert html.count("data:image/jpeg;base64,") >= 1  # gallery thumbnail inline, no external files
    assert re.search(r"<svg [^>]*class=\"chart\"", html)
    assert "http://" not in html and "https://" not in html  # self-contained
