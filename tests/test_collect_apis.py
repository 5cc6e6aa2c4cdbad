"""collect against replays of the real search APIs' documented responses (issue 13, "Against
the real search APIs"): Openverse token flow and page sizes, Wikimedia's User-Agent policy,
thumbnails and upload-host concurrency, licence facts and filter, per-query search status."""
from __future__ import annotations

import io
import json
import logging
import urllib.parse

import pytest
from click.testing import CliRunner
from PIL import Image

import cli
from labtf.collect import STATUS_NAME, CollectOptions, collect
from labtf.collect.http import HttpClient, user_agent
from labtf.collect.ledger import Ledger
from labtf.collect.licences import LicenceFilter, licence_permissions, normalise_licence
from labtf.collect.providers import make_provider
from labtf.errors import LabtfError
from labtf.testing.fakeserver import FakeServer
from test_collect import CONTACT, IMAGES, fast_client

SECRET = "s3cret-never-logged-7f3a"
_svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30"><rect width="40" height="30"/></svg>'
_png = io.BytesIO()
Image.new("RGB", (64, 48), (200, 20, 30)).save(_png, "PNG")
API_IMAGES = dict(IMAGES, **{"logo.svg": (_svg, "image/svg+xml"),
                             "logo.svg.png": (_png.getvalue(), "image/png")})


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    for var in ("LABTF_CONTACT", "LABTF_USER_AGENT", "OPENVERSE_CLIENT_ID", "OPENVERSE_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    queries = {"many": [f"a{i % 6}.jpg" for i in range(45)], "cats": ["a0.jpg", "a1.jpg", "a2.jpg"],
               "mixed": ["a0.jpg", "a1.jpg", "a2.jpg", "a3.jpg", "a4.jpg", "a5.jpg"],
               "eight": ["a0.jpg", "a1.jpg", "a2.jpg", "a3.jpg", "a4.jpg", "a5.jpg", "b.png", "logo.svg"],
               "big": [f"x{i}.jpg" for i in range(70)], "dogs": ["b.png"]}
    with FakeServer(API_IMAGES, queries, clients={"cid": SECRET}) as srv:
        yield srv


def _api(server, prefix: str) -> list[dict]:
    return [r for r in server.requests if r["path"].startswith(prefix)]


def _qs(req: dict) -> dict:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(req["path"]).query))


# ---- Openverse -------------------------------------------------------------------------

def test_openverse_anonymous_pages_of_20_and_documented_fields(server):
    server.no_creator = {"a1.jpg"}
    ov = make_provider("openverse", fast_client(), server.base)
    got = list(ov.search("many", 45))
    reqs = _api(server, "/v1/images")
    assert len(got) == 45 and [_qs(r)["page"] for r in reqs] == ["1", "2", "3"]   # page_count stops
    assert {_qs(r)["page_size"] for r in reqs} == {"20"} and not any(r["authorization"] for r in reqs)
    first, nulls = got[0], got[1]
    assert (first.license_id, first.license_url, first.source) == (
        "CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/", "flickr")
    assert first.attribution.startswith('"a0.jpg" by creator of a0.jpg')
    assert nulls.creator == "" and nulls.creator_url == ""       # null -> "", never "None"


def test_openverse_token_flow_and_page_size_500(server, caplog):
    client = fast_client()
    ov = make_provider("openverse", client, server.base, client_id="cid", client_secret=SECRET)
    assert len(list(ov.search("many", 45))) == 45
    posts, gets = _api(server, "/v1/auth_tokens/token/"), _api(server, "/v1/images")
    assert len(posts) == 1 and posts[0]["method"] == "POST"
    assert posts[0]["body"] == "client_id&client_secret&grant_type"
    assert len(gets) == 1 and _qs(gets[0])["page_size"] == "45"
    token = next(iter(server.tokens))
    assert gets[0]["authorization"] == f"Bearer {token}"
    # up to 500 per page with the token (the fake answers 401 above 20 without one)
    server.queries["huge"] = [f"a{i % 6}.jpg" for i in range(600)]
    assert len(list(ov.search("huge", 600))) == 600
    assert [_qs(r)["page_size"] for r in _api(server, "/v1/images")[1:]] == ["500", "500"]
    # a revoked/expired token: one 401, one renewal, the same page again
    server.tokens.clear()
    with caplog.at_level(logging.DEBUG):
        assert len(list(ov.search("cats", 3))) == 3
    assert len(_api(server, "/v1/auth_tokens/token/")) == 2
    assert SECRET not in caplog.text


def test_openverse_token_expiry_is_renewed_before_use(server):
    server.token_life = 1
    ov = make_provider("openverse", fast_client(), server.base, client_id="cid", client_secret=SECRET)
    list(ov.search("cats", 3))
    ov._token_until = 0.0      # the clock passed expires_in (minus a margin)
    list(ov.search("cats", 3))
    assert len(_api(server, "/v1/auth_tokens/token/")) == 2
    assert all(r["authorization"] for r in _api(server, "/v1/images"))


def test_openverse_bad_credentials_one_clear_error_without_the_secret(server, tmp_path):
    ov = make_provider("openverse", fast_client(), server.base, client_id="cid", client_secret="wrong")
    with pytest.raises(LabtfError, match=r"token request to .*/v1/auth_tokens/token/ failed: HTTP 401: "
                                         r"invalid_client.*; check --openverse-client-id") as exc:
        list(ov.search("cats", 3))
    assert "wrong" not in str(exc.value)
    with pytest.raises(LabtfError, match="need both"):
        collect(None, tmp_path / "w", openverse_client_id="cid")
    assert not (tmp_path / "w").exists()
    res = CliRunner().invoke(cli.main, ["collect", str(tmp_path / "w"), "--openverse-client-secret", "x"])
    assert res.exit_code == 2
    assert "need both --openverse-client-id and --openverse-client-secret" in res.output


def test_credentials_from_env_never_written(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OPENVERSE_CLIENT_ID", "cid")
    monkeypatch.setenv("OPENVERSE_CLIENT_SECRET", SECRET)
    kw = tmp_path / "kw.json"
    kw.write_text(json.dumps({"classes": {"cat": ["cats"]}}))
    out = tmp_path / "w"
    with caplog.at_level(logging.DEBUG):
        res = CliRunner().invoke(cli.main, ["collect", str(out), "--keywords", str(kw), "--base-url",
                                            f"openverse={server.base}", "--rate", "0"])
    assert res.exit_code == 0, res.output
    assert all(r["authorization"].startswith("Bearer ") for r in _api(server, "/v1/images"))
    for f in out.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    assert SECRET not in caplog.text and SECRET not in res.output


# ---- Wikimedia -------------------------------------------------------------------------

def test_wikimedia_refused_without_contact_before_anything_is_written(server, tmp_path, monkeypatch):
    out = tmp_path / "w"
    with pytest.raises(LabtfError, match=r"wikimedia needs contact details .*--contact"):
        collect(None, out, providers=("wikimedia",))
    res = CliRunner().invoke(cli.main, ["collect", str(out), "--provider", "wikimedia"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "--contact" in res.output and "LABTF_CONTACT" in res.output
    res = CliRunner().invoke(cli.main, ["collect", str(out), "--provider", "wikimedia", "--contact", "bob"])
    assert res.exit_code == 2 and "holds no e-mail address or http(s) URL" in res.output
    res = CliRunner().invoke(cli.main, ["collect", str(out), "--provider", "wikimedia",
                                        "--contact", "a@b.org\r\nX-Evil: 1"])
    assert res.exit_code == 2 and "control characters" in res.output
    assert not out.exists() and not server.requests          # nothing written, nothing asked
    # the live API refuses a User-Agent without contact details: the API's words are shown
    wiki = make_provider("wikimedia", HttpClient(retries=0, rate_per_host=0), server.base + "/w/api.php")
    assert list(wiki.candidates("x", ["cats"], 3)) == []
    assert "HTTP 403: Please set a user-agent" in wiki.failed_queries[0]
    assert {r["user_agent"] for r in server.requests} == {user_agent()}
    # a whole User-Agent with contact details (here from the environment) is enough
    monkeypatch.setenv("LABTF_USER_AGENT", "MyBot/2.0 (https://example.org/bot; bot@example.org)")
    opts = CollectOptions(providers=("wikimedia",))
    assert opts.user_agent.startswith("MyBot/2.0") and user_agent(opts.contact, opts.user_agent) == \
        "MyBot/2.0 (https://example.org/bot; bot@example.org)"


def test_wikimedia_thumbnails_metadata_continue_and_user_agent(server, tmp_path, monkeypatch):
    server.wiki_meta = {"a1.jpg": None,   # no extmetadata at all
                        "a2.jpg": {"LicenseShortName": "Public domain", "AttributionRequired": "false",
                                   "LicenseUrl": None, "Credit": None, "Artist": None, "License": "pd"}}
    monkeypatch.setenv("LABTF_CONTACT", CONTACT)
    kw = tmp_path / "kw.json"
    kw.write_text(json.dumps({"classes": {"thing": ["eight"]}}))
    out = tmp_path / "w"
    counts = collect(kw, out, providers=("wikimedia",), base_urls={"wikimedia": server.base + "/w/api.php"},
                     rate_per_host=0, timeout=2)
    assert counts["ok"] == 8 and counts["failed"] == 0   # the SVG arrived as its PNG rendering
    api = _api(server, "/w/api.php")
    assert _qs(api[0])["iiurlwidth"] == "1024" and _qs(api[0])["maxlag"] == "5"
    assert not [r for r in server.requests if r["path"] == "/img/logo.svg"]   # the SVG never fetched
    assert _api(server, "/img/logo.svg.png")
    assert {r["user_agent"] for r in server.requests} == {user_agent(CONTACT)}
    recs = {r["url"].rsplit("/", 1)[1]: r for r in Ledger(out / "manifest.jsonl").read()}
    a0, a1, a2 = recs["a0.jpg"], recs["a1.jpg"], recs["a2.jpg"]
    assert (a0["license"], a0["license_id"], a0["attribution_required"], a0["credit"]) == (
        "CC BY-SA 4.0", "CC-BY-SA-4.0", True, "Own work")
    assert a0["license_url"] == "https://creativecommons.org/licenses/by-sa/4.0"
    assert a0["creator"] == "artist a0.jpg" and a0["source"] == "wikimedia"
    assert (a1["license"], a1["license_id"], a1["attribution_required"], a1["creator"]) == ("", "", None, "")
    assert (a2["license_id"], a2["attribution_required"], a2["credit"]) == ("PDM", False, "")
    assert recs["logo.svg.png"]["format"] == "PNG"
    # continuation: gsroffset/continue tokens are sent back as given
    wiki = make_provider("wikimedia", fast_client(), server.base + "/w/api.php")
    assert len(list(wiki.search("big", 70))) == 70
    second = _qs(_api(server, "/w/api.php")[-1])
    assert (second["gsroffset"], second["continue"]) == ("50", "gsroffset||")


def test_at_most_two_concurrent_downloads_from_wikimedia_hosts(server, tmp_path):
    """--workers 8: the loopback host serving Wikimedia's files never sees more than 2 at once;
    the same files from a URL list are fetched in parallel (the limit is Wikimedia's)."""
    assert HttpClient()._slots["upload.wikimedia.org"][0] == 2
    server.latency_s = 0.3
    kw = tmp_path / "kw.json"
    kw.write_text(json.dumps({"classes": {"thing": ["mixed"]}}))
    collect(kw, tmp_path / "w", providers=("wikimedia",), contact=CONTACT, workers=8,
            base_urls={"wikimedia": server.base + "/w/api.php"}, rate_per_host=0, timeout=3)
    assert server.max_inflight["img"] == 2
    urls = tmp_path / "urls.csv"
    urls.write_text("label,url\n" + "".join(f"thing,{server.url(f'a{i}.jpg')}\n" for i in range(6)))
    server.max_inflight.clear()
    collect(None, tmp_path / "w2", providers=("urls",), urls_file=str(urls), workers=8, rate_per_host=0,
            timeout=3)
    assert server.max_inflight["img"] >= 3


# ---- licences --------------------------------------------------------------------------

@pytest.mark.parametrize("name, version, url, expected", [
    ("by-sa", "4.0", "", "CC-BY-SA-4.0"),                 # Openverse
    ("CC BY-SA 4.0", "", "", "CC-BY-SA-4.0"),             # Commons LicenseShortName
    ("cc-by-sa-4.0", "", "", "CC-BY-SA-4.0"),             # Commons License
    ("by-nc-nd", "2.0", "", "CC-BY-NC-ND-2.0"),
    ("CC BY-SA 3.0 de", "", "", "CC-BY-SA-3.0-DE"),
    ("CC BY-SA 3.0,2.5,2.0,1.0", "", "", "CC-BY-SA-3.0"),
    ("cc0", "1.0", "", "CC0-1.0"), ("CC0", "", "", "CC0-1.0"),
    ("Public domain", "", "", "PDM"), ("pdm", "1.0", "", "PDM"), ("PD-old", "", "", "PDM"),
    ("GFDL 1.2", "", "", "GFDL"),
    ("", "", "https://creativecommons.org/licenses/by-nc/2.0/", "CC-BY-NC-2.0"),
    ("", "", "https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
    ("Attribution", "", "", "Attribution"), ("", "", "", ""),
])
def test_licence_names_normalised_across_providers(name, version, url, expected):
    assert normalise_licence(name, version, url) == expected


def test_licence_permissions_and_filter():
    assert licence_permissions("CC-BY-NC-SA-4.0") == {"modification"}
    assert licence_permissions("CC-BY-SA-3.0-DE") == {"commercial", "modification"}
    assert licence_permissions("Attribution") is None
    f = LicenceFilter.parse(["commercial,modification"])
    names = ("CC-BY-4.0", "CC-BY-NC-4.0", "CC-BY-ND-4.0", "CC0-1.0", "Attribution", "")
    assert [f.accepts(x) for x in names] == [True, False, False, True, False, False]
    g = LicenceFilter.parse([], ["cc0", "by-sa"])             # no version: every version and port
    assert g.ids == ("CC0-1.0", "CC-BY-SA") and g.accepts("CC-BY-SA-3.0-DE") and not g.accepts("CC-BY-4.0")
    assert not LicenceFilter.parse() and LicenceFilter.parse().accepts("anything")
    with pytest.raises(LabtfError, match="unknown licence permission 'free'; choose from: commercial, "
                                         "modification, no-attribution, no-share-alike"):
        LicenceFilter.parse(["free"])
    with pytest.raises(LabtfError, match=r"unknown licence 'WTFPL'; known: CC-BY, .*CC0-1.0, PDM"):
        LicenceFilter.parse([], ["WTFPL"])


def test_licence_filter_before_download(server, tmp_path):
    server.licences = {"a0.jpg": ("by-nc", "4.0"), "a1.jpg": ("cc0", "1.0"), "a2.jpg": ("by-nd", "4.0"),
                       "a3.jpg": ("pdm", "1.0"), "a4.jpg": ("by-sa", "4.0")}
    kw = tmp_path / "kw.json"
    kw.write_text(json.dumps({"classes": {"thing": ["mixed"], "cat": ["dogs"]}}))
    out = tmp_path / "w"
    res = CliRunner().invoke(cli.main, ["collect", str(out), "--keywords", str(kw), "--base-url",
                                        f"openverse={server.base}", "--rate", "0",
                                        "--licence-allows", "commercial,modification"])
    assert res.exit_code == 0, res.output
    assert "7 candidate(s), 2 refused by licence -> 5 kept" in res.output
    assert server.hits["/img/a0.jpg"] == 0 and server.hits["/img/a2.jpg"] == 0   # never fetched
    rep = json.loads((out / "report.json").read_text())["steps"]["collect"]
    assert rep["licence_filtered"] == 2 and "licence_filtered 2" in (out / "report.md").read_text()
    ids = {r["url"].rsplit("/", 1)[1]: r["license_id"] for r in Ledger(out / "manifest.jsonl").read()}
    assert ids == {"a1.jpg": "CC0-1.0", "a3.jpg": "PDM", "a4.jpg": "CC-BY-SA-4.0", "a5.jpg": "CC-BY-4.0",
                   "b.png": "CC-BY-4.0"}
    # an explicit list; a class left with nothing says it was the filter
    with pytest.raises(LabtfError, match=r"without candidates: cat \(cat: every candidate refused by "
                                         r"the licence filter\)"):
        collect(kw, tmp_path / "w2", base_urls={"openverse": server.base}, rate_per_host=0,
                licences=("CC0", "Public domain"))
    res = CliRunner().invoke(cli.main, ["collect", str(tmp_path / "w3"), "--licence", "WTFPL"])
    assert res.exit_code == 2 and "unknown licence 'WTFPL'" in res.output and not (tmp_path / "w3").exists()


# ---- search status ---------------------------------------------------------------------

def test_search_status_per_query_and_429_stops_the_provider(server, tmp_path):
    kw = tmp_path / "kw.json"
    kw.write_text(json.dumps({"classes": {"cat": ["throttled", "cats"], "dog": ["unauthorized"]}}))
    out = tmp_path / "w"
    with pytest.raises(LabtfError, match="no candidates found for any class .*HTTP 429"):
        collect(kw, out, base_urls={"openverse": server.base}, rate_per_host=0, retries=3)
    assert len(_api(server, "/v1/images")) == 1             # after the 429 nothing more is sent
    rows = json.loads((out / STATUS_NAME).read_text())["queries"]
    by_q = {r["query"]: r for r in rows}
    assert set(by_q) == {"throttled", "cats", "unauthorized"}
    assert by_q["throttled"]["status"] == "failed" and "Retry-After" in by_q["throttled"]["reason"]
    assert by_q["cats"]["status"] == "failed" and by_q["cats"]["reason"].startswith("not sent: openverse")
    assert all({"provider", "label", "count", "time", "seconds"} <= set(r) for r in rows)
    assert by_q["throttled"]["time"].endswith("Z") and by_q["throttled"]["count"] == 0
    # the next run searches the failed queries again (no throttling now)
    kw.write_text(json.dumps({"classes": {"cat": ["cats"], "dog": ["dogs"]}}))
    counts = collect(kw, out, base_urls={"openverse": server.base}, rate_per_host=0)
    rows = {(r["label"], r["query"]): r for r in json.loads((out / STATUS_NAME).read_text())["queries"]}
    assert counts["searches_failed"] == 0 and counts["searches_empty"] == 0
    assert [rows[k]["status"] for k in (("cat", "cats"), ("dog", "dogs"))] == ["ok", "ok"]
    assert rows[("cat", "throttled")]["status"] == "failed"   # kept: that query is not in use now
    assert counts["per_class"] == {"cat": 3, "dog": 1}


def test_cache_from_before_status_files_is_reused(server, tmp_path):
    """A candidates.jsonl written by an older labtf (no search_status.json, complete by
    construction) is reused as it is: no search, same downloads, licence id computed."""
    out = tmp_path / "w"
    out.mkdir()
    old = {"label": "cat", "url": server.url("a0.jpg"), "provider": "openverse", "query": "cats",
           "license": "by-sa", "license_version": "2.0", "creator": "", "landing_url": "", "title": ""}
    (out / "candidates.jsonl").write_text(json.dumps(old) + "\n")
    kw = tmp_path / "kw.json"
    kw.write_text(json.dumps({"classes": {"cat": ["cats"]}}))
    counts = collect(kw, out, base_urls={"openverse": server.base}, rate_per_host=0)
    assert counts["ok"] == 1 and not _api(server, "/v1/images")
    assert Ledger(out / "manifest.jsonl").read()[0]["license_id"] == "CC-BY-SA-2.0"
    status = json.loads((out / STATUS_NAME).read_text())["queries"]
    assert [(q["query"], q["status"], q.get("reused")) for q in status] == [("cats", "ok", True)]
