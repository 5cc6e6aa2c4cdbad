"""Hostile hosts and lists against ``labtf collect`` (issue 13), replayed on loopback."""
from __future__ import annotations

import io
import json
import time

import pytest
from PIL import Image

from labtf.collect import CANDIDATES_NAME, STATUS_NAME, collect
from labtf.collect.download import decode_check
from labtf.testing.fakeserver import FakeServer
from labtf.collect.http import FetchError, HttpClient
from labtf.collect.ledger import Ledger
from labtf.errors import LabtfError
from test_collect import CONTACT, IMAGES


def _bomb_png(w: int = 13000, h: int = 13000) -> bytes:
    buf = io.BytesIO()
    Image.new("1", (w, h), 0).save(buf, "PNG")   # 169 MP in a few KB
    return buf.getvalue()


BOMB = _bomb_png()


@pytest.fixture
def server():
    images = dict(IMAGES, **{"bomb.png": (BOMB, "image/png")})
    with FakeServer(images, {"cats": ["a0.jpg", "a1.jpg"]}) as srv:
        yield srv


def test_redirect_to_ftp_is_refused(server):
    """Defect 3: only http(s) redirects are followed."""
    client = HttpClient(timeout=2, retries=2, backoff=0.01, rate_per_host=0)
    with pytest.raises(FetchError, match="redirect to unsupported URL scheme 'ftp'") as exc:
        client.get(server.base + "/ftp")
    assert not exc.value.retryable and server.hits["/ftp"] == 1
    assert client.get(server.base + "/redirect/a0.jpg").body == IMAGES["a0.jpg"][0]


def test_total_deadline_is_enforced_on_a_dripping_host(server):
    """Defect 4: 1 byte/s, no Content-Length; --timeout 1 -> the whole download ends after 3 s."""
    client = HttpClient(timeout=1, retries=3, backoff=0.01, rate_per_host=0)
    t0 = time.monotonic()
    with pytest.raises(FetchError, match=r"timed out.*after [0-9.]+s") as exc:
        client.get(server.base + "/drip/30")
    took = time.monotonic() - t0
    assert 2.5 < took < 4.5, took
    recorded = float(str(exc.value).rsplit(", ", 1)[1].rstrip("s)"))   # the real elapsed time
    assert abs(recorded - took) < 0.5, (str(exc.value), took)


def test_pixel_cap_before_decoding(server, tmp_path):
    """A 169 MP 1-bit PNG (a few KB) is refused from its header, not decoded."""
    decode_check(IMAGES["a0.jpg"][0])   # imports done
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="13000x13000 px, more than 40 MP"):
        decode_check(BOMB)
    assert time.monotonic() - t0 < 1.0
    urls = tmp_path / "urls.csv"
    urls.write_text(f"label,url\ncat,{server.url('bomb.png')}\ncat,{server.url('a0.jpg')}\n")
    counts = collect(None, tmp_path / "w", providers=("urls",), per_class=10,
                     urls_file=str(urls), rate_per_host=0)
    assert counts["ok"] == 1 and counts["failed"] == 1
    rec = [r for r in Ledger(tmp_path / "w" / "manifest.jsonl").read() if r["status"] == "failed"]
    assert "more than 40 MP" in rec[0]["error"]


def test_url_list_supplies_the_classes(server, tmp_path):
    """Walkthrough: `collect work --provider urls --urls urls.csv` takes the list's labels."""
    urls = tmp_path / "urls.csv"
    urls.write_text(f"label,url\nbeaker,{server.url('a0.jpg')}\nflask,{server.url('a1.jpg')}\n"
                    f"flask,{server.url('a2.jpg')}\n")
    counts = collect(None, tmp_path / "w", providers=("urls",), per_class=10,
                     urls_file=str(urls), rate_per_host=0)
    assert counts["per_class"] == {"beaker": 1, "flask": 2}
    bad = tmp_path / "bad.csv"
    bad.write_text(f"label,url\n../up,{server.url('a0.jpg')}\n")
    with pytest.raises(LabtfError, match="not usable as a class folder name"):
        collect(None, tmp_path / "w2", providers=("urls",), per_class=10, urls_file=str(bad))
    assert not (tmp_path / "up").exists()


def test_no_candidates_fails_and_is_never_cached(server, tmp_path):
    """0 candidates: non-zero (LabtfError); an empty or failed search is not cached (its status
    is recorded) and the next run searches it again, reusing only the successful ones."""
    kw = tmp_path / "kw.json"
    kw.write_text(json.dumps({"classes": {"cat": ["cats"], "unicorn": ["nothing here"]}}))
    out = tmp_path / "w"
    with pytest.raises(LabtfError, match="without candidates: unicorn"):
        collect(kw, out, providers=("openverse",), per_class=10,
                base_urls={"openverse": server.base}, rate_per_host=0)
    cached = [json.loads(x) for x in (out / CANDIDATES_NAME).read_text().splitlines()]
    assert {r["query"] for r in cached} == {"cats"}     # the empty search is not in the cache
    status = {q["query"]: q for q in json.loads((out / STATUS_NAME).read_text())["queries"]}
    assert status["nothing here"]["status"] == "empty" and status["cats"]["status"] == "ok"
    assert sum(r["status"] == "ok" for r in Ledger(out / "manifest.jsonl").read()) == 2
    server.queries["nothing here"] = ["a3.jpg"]         # the API has results now
    before = [r["path"] for r in server.requests if r["path"].startswith("/v1/images")]
    counts = collect(kw, out, providers=("openverse",), per_class=10,
                     base_urls={"openverse": server.base}, rate_per_host=0)
    again = [r["path"] for r in server.requests if r["path"].startswith("/v1/images")][len(before):]
    assert len(again) == 1 and "nothing+here" in again[0]   # only the empty one searched again
    assert counts["per_class"] == {"cat": 2, "unicorn": 1}
    assert {json.loads(x)["query"] for x in (out / CANDIDATES_NAME).read_text().splitlines()} == \
        {"cats", "nothing here"}
    with pytest.raises(LabtfError, match="no candidates found for any class"):
        collect(kw, tmp_path / "w3", providers=("openverse",), per_class=10,
                base_urls={"openverse": server.base + "/status/500"},
                retries=0, rate_per_host=0)
    assert (tmp_path / "w3" / CANDIDATES_NAME).read_text() == ""
    failed = json.loads((tmp_path / "w3" / STATUS_NAME).read_text())["queries"]
    assert [q["status"] for q in failed] == ["failed", "failed"] and "HTTP 500" in failed[0]["reason"]


def test_openverse_page_size_is_at_most_20_anonymously(server):
    from labtf.collect.providers import make_provider

    server.queries["many"] = [f"a{i % 6}.jpg" for i in range(45)]
    prov = make_provider("openverse", HttpClient(rate_per_host=0), server.base, page_size=50)
    assert len(list(prov.search("many", 45))) == 45
    assert server.hits["/v1/images/"] == 3      # 20 + 20 + 5


def test_api_errors_are_reported_in_the_apis_words(server, caplog):
    """Openverse 401 (page_size over the anonymous cap) and 429 + Retry-After carry ``detail``;
    a Retry-After beyond the time left stops at once instead of retrying after 0.5-2 s."""
    from labtf.collect.providers import make_provider

    client = HttpClient(timeout=2, retries=3, backoff=0.01, rate_per_host=0)
    prov = make_provider("openverse", client, server.base)
    with pytest.raises(FetchError, match="HTTP 401: Authentication credentials were not provided"):
        list(prov.search("unauthorized", 5))
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="HTTP 429: Request was throttled.*wait 3600s") as exc:
        list(prov.search("throttled", 5))
    assert time.monotonic() - t0 < 1.0 and not exc.value.retryable
    assert server.hits["/v1/images/"] == 2          # no blind retries


def test_wikimedia_errors_in_http_200_bodies(server):
    """The Action API's ``{"error": {code, info}}``: ratelimited is retried, others raise."""
    from labtf.collect.providers import make_provider

    client = HttpClient(timeout=2, retries=0, rate_per_host=0, user_agent=f"x ({CONTACT})")
    wiki = make_provider("wikimedia", client, server.base + "/w/api.php", api_waits=(0.05,))
    got = list(wiki.search("api-error-ratelimited", 5))
    assert len(got) == 1 and server.hits["/w/api.php"] == 2
    with pytest.raises(FetchError, match="Wikimedia API error badvalue: fake badvalue"):
        list(wiki.search("api-error-badvalue", 5))
    assert list(wiki.candidates("x", ["api-error-readapidenied"], 5)) == []
    assert "readapidenied" in wiki.failed_queries[0]
