/** Names and link texts found under /proc. */

/** "1234" (a process directory), not "self", "net" or "01". */
export function isPidName(name: string): boolean {
  const n = name.length;
  if (n === 0 || n > 10) return false;
  const first = name.charCodeAt(0);
  if (first < 0x31 || first > 0x39) return false;
  for (let i = 1; i < n; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

/**
 * The number in an anonymous inode link such as "socket:[12345]" or "net:[4026531840]", given its
 * prefix ("socket:[", "net:["); 0 when the link is anything else (a file path, "pipe:[7]", junk).
 */
export function bracketedInode(link: string, prefix: string): number {
  const n = link.length;
  const start = prefix.length;
  const digits = n - 1 - start;
  if (digits < 1 || digits > 20 || link.charCodeAt(n - 1) !== 0x5d || !link.startsWith(prefix)) return 0;
  let inode = 0;
  for (let i = start; i < n - 1; i++) {
    const d = link.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return 0;
    inode = inode * 10 + d;
  }
  return inode;
}
