// Token text for display: whitespace and control characters made visible. Display only —
// every string produced here still goes into the DOM through textContent (never innerHTML).

const MAP: Record<string, string> = {
  " ": "␣",
  "\n": "↵",
  "\r": "␍",
  "\t": "⇥",
  "\u00a0": "⍽",
};

export function visible(s: string): string {
  if (s === "") return "∅";
  let out = "";
  for (const ch of s) {
    const m = MAP[ch];
    if (m) out += m;
    else {
      const c = ch.codePointAt(0)!;
      out += c < 0x20 || c === 0x7f ? `\\x${c.toString(16).padStart(2, "0")}` : ch;
    }
  }
  return out;
}

/** Cut a display string to at most n characters (by code point), with an ellipsis. */
export function truncate(s: string, n: number): string {
  const cps = Array.from(s);
  if (cps.length <= n) return s;
  if (n <= 1) return "…";
  return cps.slice(0, n - 1).join("") + "…";
}
