/** Text forms of raw addresses, as Node's net module prints them, with IPv4-mapped IPv6 folded to IPv4. */

const HEX = "0123456789abcdef";

export function formatIPv4(bytes: Uint8Array, offset: number): string {
  return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
}

function isV4Mapped(b: Uint8Array, o: number): boolean {
  for (let i = 0; i < 10; i++) if (b[o + i] !== 0) return false;
  return b[o + 10] === 0xff && b[o + 11] === 0xff;
}

/** RFC 5952 form: lower case, longest run (>= 2) of zero groups compressed to "::". */
export function formatIPv6(bytes: Uint8Array, offset: number): string {
  if (isV4Mapped(bytes, offset)) return formatIPv4(bytes, offset + 12);
  const groups = new Array<number>(8);
  for (let i = 0; i < 8; i++) groups[i] = (bytes[offset + 2 * i] << 8) | bytes[offset + 2 * i + 1];
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  let out = "";
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      out += "::";
      i += bestLen - 1;
      continue;
    }
    if (out !== "" && !out.endsWith(":")) out += ":";
    out += hex16(groups[i]);
  }
  return out;
}

function hex16(v: number): string {
  if (v === 0) return "0";
  let s = "";
  while (v > 0) { s = HEX[v & 15] + s; v >>>= 4; }
  return s;
}

export function isLoopback(address: string): boolean {
  return address.startsWith("127.") || address === "::1";
}
