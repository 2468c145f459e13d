// Colour maps for data (literal colours are fine here: they encode values, not theme).

export type RGB = [number, number, number];

function hex(h: string): RGB {
  const n = parseInt(h.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/** 256-entry RGB lookup table, linearly interpolated between evenly spaced stops. */
function lut(stops: string[]): Uint8Array {
  const rgb = stops.map(hex);
  const out = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (rgb.length - 1);
    const j = Math.min(rgb.length - 2, Math.floor(x));
    const f = x - j;
    for (let c = 0; c < 3; c++) out[i * 3 + c] = Math.round(rgb[j][c] * (1 - f) + rgb[j + 1][c] * f);
  }
  return out;
}

/** Sequential, perceptually uniform (matplotlib viridis, sampled at 11 stops). */
export const VIRIDIS = lut([
  "#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c",
  "#22a884", "#44bf70", "#7ad151", "#bddf26", "#fde725",
]);

/** Diverging (ColorBrewer RdBu): 0 = red (negative), 0.5 = neutral, 1 = blue (positive). */
export const RDBU = lut([
  "#67001f", "#b2182b", "#d6604d", "#f4a582", "#fddbc7", "#f7f7f7",
  "#d1e5f0", "#92c5de", "#4393c3", "#2166ac", "#053061",
]);

export type ColorMap = Uint8Array;

/** Colour for t in [0, 1] (clamped); NaN -> null. */
export function sample(map: ColorMap, t: number): RGB | null {
  if (!Number.isFinite(t)) return null;
  const i = Math.max(0, Math.min(255, Math.round(t * 255))) * 3;
  return [map[i], map[i + 1], map[i + 2]];
}

export function css(c: RGB): string {
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** Relative luminance (WCAG) of an sRGB colour. */
export function luminance(c: RGB): number {
  const lin = (v: number) => {
    const s = v / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
}

/** Black or white, whichever contrasts more with the background colour. */
export function textOn(c: RGB): string {
  const l = luminance(c);
  // contrast with black = (l+0.05)/0.05, with white = 1.05/(l+0.05)
  return (l + 0.05) / 0.05 >= 1.05 / (l + 0.05) ? "#000" : "#fff";
}

/** CSS linear-gradient of a colour map (for legends). */
export function gradientCss(map: ColorMap, reverse = false): string {
  const parts: string[] = [];
  for (let i = 0; i <= 10; i++) {
    const t = i / 10;
    parts.push(`${css(sample(map, reverse ? 1 - t : t)!)} ${i * 10}%`);
  }
  return `linear-gradient(to right, ${parts.join(", ")})`;
}
