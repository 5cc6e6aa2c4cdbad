"""labtf.collect against a loopback fake of the APIs and image hosts (no internet)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from labtf.collect import CollectOptions, collect, load_keywords
from labtf.collect.download import Downloader
from labtf.testing.fakeserver import FakeServer
from labtf.collect.http import FetchError, HttpClient, user_agent
from labtf.collect.ledger import Ledger
from labtf.collect.providers import Candidate, make_provider
from labtf.errors import LabtfError


def jpeg(seed: int, size=(80, 60)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


IMAGES = {f"a{i}.jpg": (jpeg(i), "image/jpeg") for i in range(6)}
IMAGES["copy.jpg"] = IMAGES["a0.jpg"]  # same bytes under another URL
IMAGES["b.png"] = (b"", "image/png")
_png = io.BytesIO()
Image.new("RGB", (40, 30), (10, 200, 30)).save(_png, "PNG")
IMAGES["b.png"] = (_png.getvalue(), "image/png")


CONTACT = "tests@example.org https://example.org/labtf-tests"


def fast_client(**kw) -> HttpClient:
    opts = dict(timeout=0.5, total_timeout=5, retries=2, backoff=0.01, rate_per_host=0, max_bytes=1 << 20,
                user_agent=user_agent(CONTACT))
    opts.update(kw)
    return HttpClient(**opts)


@pytest.fixture
def server():
    queries = {"cats": ["a0.jpg", "a1.jpg", "a2.jpg"], "kittens": ["a2.jpg", "a3.jpg", "copy.jpg"],
               "dogs": ["a4.jpg", "a5.jpg", "b.png", "missing.jpg"]}
    with FakeServer(IMAGES, queries, slow_s=1.5) as srv:
        yield srv


def test_openverse_and_wikimedia_parse_and_page(server):
    c = fast_client()
    ov = make_provider("openverse", c, server.base, page_size=2)
    got = list(ov.search("cats", 10))
    assert [g.url for g in got] == [server.url(n) for n in ("a0.jpg", "a1.jpg", "a2.jpg")]
    assert got[0].license == "by" and got[0].license_version == "4.0" and got[0].creator
    assert got[0].landing_url.endswith("/page/a0.jpg")
    wm = make_provider("wikimedia", c, server.base + "/w/api.php")
    wm.search.__func__  # noqa: B018 (exists)
    got = list(wm.candidates("dogs", ["dogs"], 10))
    assert [g.url for g in got] == [server.url(n) for n in ("a4.jpg", "a5.jpg", "b.png", "missing.jpg")]
    assert got[0].license == "CC BY-SA 4.0" and got[0].creator == "artist a4.jpg"
    # paging through 'continue' with a small limit per call
    wm2 = make_provider("wikimedia", c, server.base + "/w/api.php")
    assert len(list(wm2.search("dogs", 3))) == 3
    assert server.hits["/w/api.php"] >= 2
    with pytest.raises(LabtfError, match="unknown provider 'nope'; choose one of"):
        make_provider("nope", c)


def test_rate_limit_applies_to_redirect_targets(server):
    """A redirect to another host waits for that host's rate limit too."""
    c = fast_client(rate_per_host=1000)
    hosts = []
    wait = c.limiter.wait
    c.limiter.wait = lambda host: (hosts.append(host), wait(host))
    assert c.get(server.base + "/away/a1.jpg").body == IMAGES["a1.jpg"][0]
    port = server.base.rsplit(":", 1)[1]
    assert hosts == [f"127.0.0.1:{port}", f"localhost:{port}"]


def test_http_failures(server):
    c = fast_client()
    assert c.get(server.base + "/redirect/a1.jpg").body == IMAGES["a1.jpg"][0]
    with pytest.raises(FetchError, match="HTTP 404") as e:
        c.get(server.base + "/status/404")
    assert server.hits["/status/404"] == 1 and not e.value.retryable  # no retry on 404
    with pytest.raises(FetchError, match=r"HTTP 500 \(after 3 attempt"):
        c.get(server.base + "/status/500")
    assert server.hits["/status/500"] == 3  # 1 + 2 retries
    assert c.get(server.base + "/flaky/2/a1.jpg").attempts == 3
    with pytest.raises(FetchError, match="timed out"):
        fast_client(retries=0).get(server.base + "/slow/a1.jpg")
    with pytest.raises(FetchError, match="not an image"):
        c.get(server.base + "/html", type_prefixes=("image/",))
    with pytest.raises(FetchError, match="too large"):
        c.get(server.base + "/huge", type_prefixes=("image/",))
    with pytest.raises(FetchError, match="connection|closed"):
        fast_client(retries=1).get(server.base + "/drop/a1.jpg")
    assert server.hits["/drop/a1.jpg"] == 2
    with pytest.raises(FetchError, match="scheme"):
        c.get("file:///etc/passwd")


def test_downloader_statuses_and_resume(server, tmp_path):
    ledger = Ledger(tmp_path / "manifest.jsonl")
    c = fast_client(retries=1)
    cand = lambda path: Candidate(server.base + path, "urls")  # noqa: E731
    jobs = [("cats", cand("/img/a0.jpg")), ("cats", cand("/img/copy.jpg")), ("cats", cand("/html")),
            ("cats", cand("/notimage")), ("cats", cand("/status/404")), ("cats", cand("/huge")),
            ("dogs", cand("/redirect/a1.jpg")), ("dogs", cand("/img/b.png")), ("dogs", cand("/slow/a2.jpg"))]
    counts = Downloader(tmp_path / "images", ledger, c, workers=4).run(jobs)
    assert counts["ok"] == 3 and counts["duplicate"] == 1 and counts["failed"] == 5
    state = ledger.latest()
    ok = [r for r in state.values() if r["status"] == "ok"]
    for r in ok:
        assert (tmp_path / r["path"]).is_file() and len(r["sha256"]) == 64
    assert sorted(p.suffix for p in (tmp_path / "images").rglob("*.*")) == [".jpg", ".jpg", ".png"]
    errors = {r["url"].split("/", 3)[3]: r["error"] for r in state.values() if r["status"] == "failed"}
    assert "not an image" in errors["html"] and "not a decodable image" in errors["notimage"]
    assert "HTTP 404" in errors["status/404"] and "too large" in errors["huge"]
    assert "timed out" in errors["slow/a2.jpg"]
    # resume: nothing fetched again, a torn last line is tolerated
    with open(ledger.path, "ab") as fh:
        fh.write(b'{"url": "torn')
    hits = sum(server.hits.values())
    again = Downloader(tmp_path / "images", Ledger(ledger.path), c).run(jobs)
    assert again["skipped"] == len(jobs) and sum(server.hits.values()) == hits
    Ledger(ledger.path).append({"url": "x", "status": "failed"})
    assert "x" in Ledger(ledger.path).latest()


def test_adopts_file_saved_before_a_crash_and_never_overwrites(server, tmp_path):
    c = fast_client()
    ledger = Ledger(tmp_path / "manifest.jsonl")
    Downloader(tmp_path / "images", ledger, c).run([("cats", Candidate(server.url("a3.jpg"), "urls"))])
    rec = next(iter(ledger.latest().values()))
    ledger.path.unlink()  # crash after the rename, before the record
    (tmp_path / "images" / "cats" / ".part-leftover").write_bytes(b"half")
    counts = Downloader(tmp_path / "images", Ledger(ledger.path), c).run(
        [("cats", Candidate(server.url("a3.jpg"), "urls"))])
    assert counts["ok"] == 1 and not list((tmp_path / "images").rglob(".part-*"))
    assert [p.name for p in (tmp_path / "images" / "cats").iterdir()] == [rec["path"].split("/")[-1]]
    # a different file squatting on the name is kept; the download goes beside it
    target = tmp_path / "images" / "dogs" / (rec["path"].split("/")[-1])
    target.parent.mkdir()
    target.write_bytes(b"curated by hand")
    Downloader(tmp_path / "images", Ledger(tmp_path / "m2.jsonl"), c).run(
        [("dogs", Candidate(server.url("a3.jpg"), "urls"))])
    assert target.read_bytes() == b"curated by hand"
    assert len(list(target.parent.iterdir())) == 2


def test_collect_end_to_end_and_keywords(server, tmp_path):
    kw = tmp_path / "kw.json"
    kw.write_text(json.dumps({"classes": {"cat": ["cats", "kittens"], "dog": ["dogs"]}}))
    out = tmp_path / "work"
    counts = collect(kw, out, providers=("openverse", "wikimedia"), per_class=10,
                     base_urls={"openverse": server.base, "wikimedia": server.base + "/w/api.php"},
                     workers=3, timeout=1, retries=1, backoff=0.01, rate_per_host=50, contact=CONTACT)
    # openverse and wikimedia return the same URLs: each URL once
    assert counts["candidates"] == 9
    assert counts["ok"] == 7 and counts["duplicate"] == 1 and counts["failed"] == 1
    assert counts["per_class"] == {"cat": 4, "dog": 3}
    rep = json.loads((out / "report.json").read_text())
    assert rep["steps"]["collect"]["before"] == 9 and "| collect | 9 | 7 |" in (out / "report.md").read_text()
    # a URL list provider
    urls = tmp_path / "urls.csv"
    urls.write_text(f"label,url,license\ncat,{server.url('a5.jpg')},cc0\n")
    c2 = collect(kw, tmp_path / "w2", providers=("urls",), per_class=10, urls_file=str(urls), classes=["cat"])
    assert c2["ok"] == 1
    assert Ledger(tmp_path / "w2" / "manifest.jsonl").read()[0]["license"] == "cc0"
    txt = tmp_path / "kw.txt"
    txt.write_text("# comment\nflask: three neck flask; 3-neck flask\n")
    assert load_keywords(txt) == {"flask": ["three neck flask", "3-neck flask"]}
    from labtf.collect import DEFAULT_KEYWORDS
    from labtf.lab_apparatus import LAB_APPARATUS_CLASSES
    assert list(load_keywords(DEFAULT_KEYWORDS)) == list(LAB_APPARATUS_CLASSES)
    bad = tmp_path / "bad.json"
    bad.write_text('{"classes": {"x": []}}')
    with pytest.raises(LabtfError, match="needs at least one query"):
        load_keywords(bad)


def test_collect_options_are_checked_before_anything_is_written(tmp_path):
    with pytest.raises(LabtfError, match=r"unknown collect option key\(s\) \['worker'\]; valid keys: "
                                         r"providers, per_class, base_urls, .*, classes$"):
        collect(None, tmp_path / "w", worker=3)
    with pytest.raises(LabtfError, match="unknown provider 'flickr'; choose one of: openverse, urls, "
                                         "wikimedia$"):
        CollectOptions(base_urls={"flickr": "http://127.0.0.1:9"})
    with pytest.raises(LabtfError, match="workers must be at least 1, got 0"):
        collect(None, tmp_path / "w", options=CollectOptions(), workers=0)
    assert not (tmp_path / "w").exists()
    from click.testing import CliRunner

    import cli

    res = CliRunner().invoke(cli.main, ["collect", str(tmp_path / "w"), "--base-url", "flickr=http://x"])
    assert res.exit_code == 2 and res.output.strip().endswith(
        "error: unknown provider 'flickr'; choose one of: openverse, urls, wikimedia")
