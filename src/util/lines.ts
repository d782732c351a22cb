// Splits bytes into lines without decoding them: LF or CRLF endings, blank lines skipped.
export function splitLines(body: Buffer): Buffer[] {
  const lines: Buffer[] = [];
  let start = 0;
  while (start < body.length) {
    let end = body.indexOf(0x0a, start);
    if (end === -1) end = body.length;
    let last = end;
    if (last > start && body[last - 1] === 0x0d) last -= 1;
    if (last > start) lines.push(body.subarray(start, last));
    start = end + 1;
  }
  return lines;
}
