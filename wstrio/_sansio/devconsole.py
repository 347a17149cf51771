"""The development console (``devconsole = true``): a page to try a WebSocket route by hand.

websocketd's ``--devconsole``, without its XSS: the page is a constant.
Nothing of the request (path, query, headers) is written into it; its
script reads ``location`` and puts every message into the page as text
(``textContent``), and a strict Content-Security-Policy allows only this
page's own script and style (by hash) and connections to its own origin.

Served by the static files for a plain browser request (``Accept:
text/html``, no ``Upgrade``) on a ``wstunnel`` or ``process`` route's path,
from a loopback client only, instead of the 426 such a request gets.

Never imports trio.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress

__all__ = ["HEADERS", "PAGE", "is_local", "wants_console"]

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; max-width: 60em; }
input { font: 13px ui-monospace, monospace; width: 36em; }
button { margin: 0 .3em .3em 0; }
#log { font: 13px ui-monospace, monospace; background: #f4f4f4; padding: .6em; white-space: pre-wrap; }
.note { color: #555; }
"""

_SCRIPT = """
"use strict";
const $ = (id) => document.getElementById(id);
const target = new URL(location.href);
target.protocol = target.protocol === "https:" ? "wss:" : "ws:";
target.hash = "";
$("url").value = target.href;
let ws = null;
function stamp() { return new Date().toISOString().slice(11, 23); }
function log(kind, text) { $("log").textContent += stamp() + " " + kind + " " + text + "\\n"; }
function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join(" ");
}
function connect() {
  if (ws && ws.readyState <= 1) { ws.close(1000); }
  ws = new WebSocket($("url").value);
  ws.binaryType = "arraybuffer";
  log("...", "connecting to " + $("url").value);
  ws.onopen = () => log("OPEN", "connected" + (ws.protocol ? " (subprotocol " + ws.protocol + ")" : ""));
  ws.onmessage = (event) => {
    if (typeof event.data === "string") { log("RECV", event.data); }
    else { log("RECV", "binary " + event.data.byteLength + " bytes: " + hex(event.data)); }
  };
  ws.onerror = () => log("ERROR", "the connection failed");
  ws.onclose = (event) => log("CLOSE", event.code + (event.reason ? " " + event.reason : "")
                                        + (event.wasClean ? "" : " (not clean)"));
}
function sendText() {
  if (!ws || ws.readyState !== 1) { log("!", "not connected"); return; }
  ws.send($("text").value); log("SEND", $("text").value);
}
function sendHex() {
  if (!ws || ws.readyState !== 1) { log("!", "not connected"); return; }
  const digits = $("hex").value.replace(/[^0-9a-fA-F]/g, "");
  if (digits.length % 2) { log("!", "an odd number of hex digits"); return; }
  const bytes = new Uint8Array(digits.length / 2);
  for (let i = 0; i < bytes.length; i++) { bytes[i] = parseInt(digits.substr(2 * i, 2), 16); }
  ws.send(bytes.buffer); log("SEND", "binary " + bytes.length + " bytes: " + hex(bytes.buffer));
}
$("connect").addEventListener("click", connect);
$("close").addEventListener("click", () => { if (ws) { ws.close(1000); } });
$("send").addEventListener("click", sendText);
$("sendhex").addEventListener("click", sendHex);
$("text").addEventListener("keydown", (e) => { if (e.key === "Enter") { sendText(); } });
const nav = performance.getEntriesByType("navigation")[0];
const protocol = nav && nav.nextHopProtocol ? nav.nextHopProtocol : "unknown";
$("where").textContent = "This page came over " + protocol + (protocol === "h2"
  ? "; the browser opens its WebSockets over HTTP/2 (RFC 8441) on this connection."
  : "; WebSockets go over HTTP/1.1.");
connect();
"""

PAGE = (
    "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>wstrio dev console</title>"
    f"<style>{_STYLE}</style></head><body>\n"
    "<h1>wstrio dev console</h1>\n"
    "<p class=note>Served because <code>devconsole = true</code>, to loopback clients only. "
    "WebSocket clients connecting here are served as usual.</p>\n"
    "<p id=where class=note></p>\n"
    '<p><input id=url aria-label="WebSocket URL"> <button id=connect>Connect</button>'
    "<button id=close>Close</button></p>\n"
    '<p><input id=text placeholder="a text message" aria-label="text message"> <button id=send>Send text</button></p>\n'
    '<p><input id=hex placeholder="binary, in hex: 48 69 0a" aria-label="binary message in hex">'
    " <button id=sendhex>Send binary</button></p>\n"
    "<pre id=log></pre>\n"
    f"<script>{_SCRIPT}</script>\n</body></html>\n"
).encode()
"""The page: the same bytes for every request."""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        (
            f"default-src 'none'; script-src {_hash(_SCRIPT)}; style-src {_hash(_STYLE)}; connect-src 'self';"
            " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ).encode(),
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
"""The response headers besides the content type."""


def is_local(host: str | None) -> bool:
    """Whether a client address is loopback (``None``: a unix-socket client, local too)."""
    if host is None:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def wants_console(accept: bytes | None) -> bool:
    """Whether an ``Accept`` header is a browser's asking for a page."""
    return accept is not None and b"text/html" in accept.lower()
