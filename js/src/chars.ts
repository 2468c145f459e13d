// Multi-token UTF-8 characters: an emoji or CJK character split into byte tokens shows as `\xf0`
// chips; the payload's meta.chars ({pos: [[char, first, last, n], ...]}, from
// resid_widgets/session/tokens.py) says which character and which of its bytes each token carries.

import type { CharRun } from "./codecs";

/** "😀, bytes 1–2 of 4" ("; "-joined when a token carries parts of several characters). */
export function charRunText(runs: CharRun[] | undefined): string {
  if (!runs || !runs.length) return "";
  return runs
    .map(([ch, first, last, n]) => `${ch}, ${first === last ? `byte ${first}` : `bytes ${first}–${last}`} of ${n}`)
    .join("; ");
}
