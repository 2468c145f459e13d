"""The shared keyed-request client (js/src/requests.ts) behind the tooltip's details (rpc.ts) and the
Writers panel (writers.ts), in real Chromium: the two clients' own classes, bundled from js/src with the
project's esbuild and fed "Python" replies by hand, with a 60 ms timeout so the timeout paths take no time.

The widget-level paths (hover, cache, two views on one page, the panel) are in test_frontend.py and
test_writers_panel.py; here are the edge cases that need a clock or a stale payload: a reply after the
timeout, a reply for an old seq, ids of two views, open requests when the payload changes.
"""

from __future__ import annotations

import subprocess

import pytest

from conftest import JS_DIR

pytestmark = pytest.mark.ui

ENTRY = 'export * from "./requests"; export { DetailsClient } from "./rpc"; export { WritersClient } from "./writers";'

# window.rq: the modules; window.mk(kind, prefix): a client whose sends are logged in window.sent
SETUP_JS = """
async (esm) => {
  window.rq = await import(URL.createObjectURL(new Blob([esm], {type: "text/javascript"})));
  window.sent = [];
  window.mk = (kind, prefix) => new window.rq[kind]((m) => window.sent.push(m), 60, prefix);
  window.outcome = (p) => p.then((v) => ({ok: true, v}), (e) => ({ok: false, stale: e instanceof window.rq.StaleError, msg: e.message}));
  window.sleep = (ms) => new Promise((r) => setTimeout(r, ms));
}
"""


@pytest.fixture(scope="module")
def requests_esm(frontend_bundle) -> str:
    """requests.ts + the two clients as one ES module (frontend_bundle: node_modules are installed)."""
    esbuild = JS_DIR / "node_modules" / ".bin" / "esbuild"
    out = subprocess.run(
        [str(esbuild), "--bundle", "--format=esm", "--target=es2020", "--sourcefile=entry.ts", "--loader=ts"],
        input=ENTRY, capture_output=True, text=True, cwd=JS_DIR / "src", check=True,
    )
    return out.stdout


@pytest.fixture()
def page(chromium_browser, requests_esm):
    page = chromium_browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_content("<!DOCTYPE html><html><body></body></html>")
    page.evaluate(SETUP_JS, requests_esm)
    yield page
    assert errors == []
    page.close()


def test_reply_after_the_timeout_is_ignored_and_the_key_asked_again(page):
    r = page.evaluate(
        """async () => {
          const c = mk("DetailsClient", "v1");
          c.setSeq(3);
          const first = await outcome(c.request(3, 4));
          const late = {type: "details", req: sent[0].req, seq: 3, pos: 4, top_ids: [[7]], top_probs: [[0.5]], strings: {"7": "x"}};
          const handled = c.handle(late);
          const cachedAfterLate = c.cached(3, 4) !== undefined;
          const again = c.request(3, 4);  // a new request (the old id is dead)
          c.handle(late);  // the old id's reply still answers nothing
          const stillOpen = await Promise.race([again.then(() => "answered"), sleep(10).then(() => "open")]);
          c.handle({...late, req: sent[1].req, strings: {"7": "y"}});
          const d = await again;
          return {first, handled, cachedAfterLate, ids: sent.map((m) => m.req), stillOpen, top: [d.topIds, [...d.strings]]};
        }"""
    )
    assert r["first"]["ok"] is False and not r["first"]["stale"]
    assert r["first"]["msg"].startswith("no reply from Python after")
    assert r["handled"] is True and r["cachedAfterLate"] is False
    assert r["ids"] == ["v1:1", "v1:2"] and r["stillOpen"] == "open"
    assert r["top"] == [[[7]], [[7, "y"]]]


def test_reply_for_an_old_seq_is_dropped_and_the_current_one_cached(page):
    r = page.evaluate(
        """async () => {
          const c = mk("DetailsClient", "v1");
          c.setSeq(5);
          const p = c.request(5, 2);
          const req = sent[0].req;
          const body = {type: "details", req, pos: 2, top_ids: [[1, 2]], top_probs: [[0.6, 0.3]], strings: {}};
          c.handle({...body, seq: 4});  // Python answered about the payload it showed before
          c.handle({...body, seq: 5, pos: 3});  // another position
          c.handle({...body, seq: 5, run: "after", after_seq: 1});  // another run's list
          const open = await Promise.race([p.then(() => "answered"), sleep(10).then(() => "open")]);
          const twice = c.request(5, 2) === p;  // in flight: the same promise, no second send
          c.handle({...body, seq: 5});
          const d = await p;
          return {open, twice, sends: sent.length, probs: d.topProbs, cached: c.cached(5, 2) === d, hit: await c.request(5, 2) === d};
        }"""
    )
    assert r == {"open": "open", "twice": True, "sends": 1, "probs": [[0.6, 0.3]], "cached": True, "hit": True}


def test_two_views_ids_never_collide_and_a_reply_answers_only_its_view(page):
    r = page.evaluate(
        """async () => {
          const a = mk("DetailsClient", "va"), b = mk("DetailsClient", "vb");
          const wa = mk("WritersClient", "va"), wb = mk("WritersClient", "vb");
          for (const c of [a, b, wa, wb]) c.setSeq(1);
          const pa = a.request(1, 0), pb = b.request(1, 0);
          wa.cell(1, 0, 0); wb.cell(1, 0, 0); a.request(1, 1);
          const ids = sent.map((m) => m.req);
          // every view gets every message (as in the widget): b's reply
          const reply = {type: "details", req: sent[1].req, seq: 1, pos: 0, top_ids: [[9]], top_probs: [[1]], strings: {}};
          const routed = [a.handle(reply), b.handle(reply), wa.handle(reply)];
          const got = await Promise.race([pb.then(() => "b"), sleep(10).then(() => "none")]);
          const aOpen = await Promise.race([pa.then(() => "answered"), sleep(10).then(() => "open")]);
          return {ids, routed, got, aOpen, aCached: a.cached(1, 0) !== undefined};
        }"""
    )
    assert r["ids"] == ["va:1", "vb:1", "va:w1", "vb:w1", "va:2"]
    assert len(set(r["ids"])) == len(r["ids"])
    assert r["routed"] == [True, True, False]  # a writers client does not take a details reply
    assert r["got"] == "b" and r["aOpen"] == "open" and r["aCached"] is False


def test_open_requests_reject_with_stale_error_when_the_payload_changes(page):
    r = page.evaluate(
        """async () => {
          const w = mk("WritersClient", "v1");
          w.setSeq(1);
          const cell = outcome(w.cell(1, 2, 3)), wr = outcome(w.writer(1, 2, 3, 0));
          const asked = sent.map((m) => [m.req, m.labels ?? false]);
          w.setSeq(2);
          const results = [await cell, await wr];
          const late = w.handle({type: "writers", req: sent[0].req, seq: 1, row: 2, pos: 3}, [new ArrayBuffer(8)]);
          // the steered run's details go stale on a new after payload; the plain run's stay open
          const d = mk("DetailsClient", "v1");
          d.setSeq(1); d.setAfterSeq(4);
          const plain = d.request(1, 0), after = outcome(d.request(1, 0, "after", 4));
          d.setAfterSeq(5);
          const afterResult = await after;
          const plainOpen = await Promise.race([plain.then(() => "answered"), sleep(10).then(() => "open")]);
          // an error reply rejects with Python's message
          const err = outcome(d.request(1, 7));
          d.handle({type: "details", req: sent.at(-1).req, error: "position 7 is outside the prompt"});
          return {asked, results, late, cached: w.cachedCell(1, 2, 3) !== undefined, afterResult, plainOpen, err: await err};
        }"""
    )
    assert r["asked"] == [["v1:w1", True], ["v1:w2", True]]  # labels asked until they arrive
    assert [x["stale"] for x in r["results"]] == [True, True]
    assert r["results"][0]["msg"] == "payload changed"
    assert r["late"] is True and r["cached"] is False
    assert r["afterResult"]["stale"] is True and r["afterResult"]["msg"] == "steered payload changed"
    assert r["plainOpen"] == "open"
    assert r["err"] == {"ok": False, "stale": False, "msg": "position 7 is outside the prompt"}


def test_writers_reply_is_decoded_and_labels_are_asked_once(page):
    r = page.evaluate(
        """async () => {
          const w = mk("WritersClient", "v1");
          w.setSeq(1);
          const p = w.cell(1, 0, 1);
          const buf = new Float32Array([0.5, -1, 2, 3, 4, 5]).buffer;  // W = 2 values, then [L=2, 2] strip
          w.handle({type: "writers", req: sent[0].req, seq: 1, row: 0, pos: 1, n_layers: 2, n_heads: 1, direction: "d",
                    lens_value: 1.5, constant: 0.25, labels: ["L0H0", "embed"]}, [new DataView(buf)]);
          const c = await p;
          w.writer(1, 0, 1, 1);
          return {values: [...c.values], strip: [...c.strip], lens: c.lensValue, labels: w.labels,
                  second: sent[1], hit: w.cachedCell(1, 0, 1) === c};
        }"""
    )
    assert r["values"] == [0.5, -1] and r["strip"] == [2, 3, 4, 5] and r["lens"] == 1.5
    assert r["labels"] == ["L0H0", "embed"] and r["hit"] is True
    assert r["second"] == {"type": "writers", "req": "v1:w2", "seq": 1, "row": 0, "pos": 1, "writer": 1}
